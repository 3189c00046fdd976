"""A painting's feature statistics (the style targets): at which size, in how many pieces
when it is larger than memory allows whole, and cached across the runs that share them."""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from typing import Optional, Sequence

import torch

from . import losses as L
from .errors import ImpastoError, option
from .images import fit_long_side, resize_tensor
from .scales import MIN_SCALE_SIDE, min_side
from .settings import Settings
from .tiles import choose_tile
from .vgg import FeatureExtractor


def style_long_side(output_long_side: int, settings: Settings) -> int:
    """The painting's long side for an output (or scale) `output_long_side` px long."""
    return max(min_side(settings), round(output_long_side * settings.style_scale))


def style_size(shape: Sequence[int], long_side: int, least: int = MIN_SCALE_SIDE) -> tuple[int, int]:
    """(w, h) for a style image of `shape` (..., H, W) at `long_side`, but with a short side of
    at least `least` (min_side): a panorama or a strip squeezed thinner would pool away to
    nothing before conv5."""
    w, h = fit_long_side(shape[-1], shape[-2], long_side)
    if min(w, h) < least:
        grow = least / min(w, h)
        w, h = max(least, round(w * grow)), max(least, round(h * grow))
    return w, h


def style_pieces(shape: Sequence[int], final: int, settings: Settings, device: torch.device, tile: int = 0) -> int:
    """The side of the pieces the statistics of a style image of `shape` (..., H, W) are taken
    in (0: whole) for an output `final` px long: the output's tile, or for a painting used
    larger than free memory allows whole (a high --style-scale), the largest piece that fits.
    Refused when not even those would fit."""
    if tile:
        return tile
    w, h = style_size(shape, style_long_side(final, settings), min_side(settings))
    try:
        return choose_tile(w, h, settings.replace(tile=0), device)
    except ImpastoError:
        raise ImpastoError(
            f"the painting would be used at {w}x{h} px ({option('style_scale', settings.style_scale)} of a {final} px "
            f"output), more than free memory allows; choose a smaller {option('style_scale')}"
        ) from None


class StatsCache:
    """Style statistics by (extractor, style pixels, size, layers), so runs that share a style
    (a sweep, a notebook re-run with other weights) compute them once. Small LRU."""

    def __init__(self, capacity: int = 16) -> None:
        self.capacity = capacity
        self._items: "OrderedDict[tuple, tuple[dict, dict]]" = OrderedDict()
        self.hits = 0
        self._lock = threading.Lock()  # the web server's workers share one cache

    @staticmethod
    def fingerprint(image: torch.Tensor) -> str:
        data = image.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
        return hashlib.sha1(data).hexdigest() + str(tuple(image.shape))

    def get(self, key: tuple) -> Optional[tuple[dict, dict]]:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            return None

    def put(self, key: tuple, value: tuple[dict, dict]) -> None:
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)


def style_statistics(
    extractor: FeatureExtractor,
    image: torch.Tensor,
    size_hw: tuple[int, int],
    layers: Sequence[str],
    pairs: Sequence[tuple[str, str]] = (),
    cache: Optional[StatsCache] = None,
    tile: int = 0,
) -> tuple[dict[str, L.Stats], dict[tuple[str, str], L.CrossStats]]:
    """Per-layer statistics and adjacent-layer cross statistics of a style image at `size_hw`;
    larger than `tile` (> 0) on a side, taken piece by piece so that memory stays a tile's."""
    key = None
    if cache is not None:
        key = (extractor, cache.fingerprint(image), tuple(size_hw), tuple(layers), tuple(pairs), tile)
        found = cache.get(key)
        if found is not None:
            return found
    with torch.no_grad():
        resized = resize_tensor(image, size_hw)
        if tile > 0 and max(size_hw) > tile:
            stats, chain = _statistics_in_pieces(extractor, resized, tile, layers, pairs)
        else:
            feats = extractor(resized)
            stats = {k: L.feature_stats(feats[k]) for k in layers}
            chain = {(a, b): L.cross_stats(feats[a], feats[b]) for a, b in pairs}
    if cache is not None and key is not None:
        cache.put(key, (stats, chain))
    return stats, chain


# Context around each piece of a style image, so that its features near the cut are
# nearly those of the whole image; only the piece's own pixels are counted.
PIECE_MARGIN = 64


def _statistics_in_pieces(
    extractor: FeatureExtractor, image: torch.Tensor, tile: int, layers: Sequence[str], pairs: Sequence[tuple[str, str]]
) -> tuple[dict[str, L.Stats], dict[tuple[str, str], L.CrossStats]]:
    """Statistics are averages over pixels, so those of the whole are the pixel-weighted
    blend of those of disjoint pieces."""
    h, w = image.shape[-2:]
    parts: list[tuple[float, dict[str, L.Stats], dict[tuple[str, str], L.CrossStats]]] = []
    for y0, y1 in _pieces(h, tile):
        for x0, x1 in _pieces(w, tile):
            ey0, ey1, ex0, ex1 = max(0, y0 - PIECE_MARGIN), min(h, y1 + PIECE_MARGIN), max(0, x0 - PIECE_MARGIN), min(w, x1 + PIECE_MARGIN)
            feats = extractor(image[..., ey0:ey1, ex0:ex1])

            def own(f: torch.Tensor) -> torch.Tensor:
                # The piece's own pixels at this layer's resolution (a pooled layer is smaller).
                fh, fw = f.shape[-2:]
                top, left = round((y0 - ey0) * fh / (ey1 - ey0)), round((x0 - ex0) * fw / (ex1 - ex0))
                bottom, right = round((y1 - ey0) * fh / (ey1 - ey0)), round((x1 - ex0) * fw / (ex1 - ex0))
                return f[..., top : max(bottom, top + 1), left : max(right, left + 1)]

            stats = {k: L.feature_stats(own(feats[k])) for k in layers}
            chain = {(a, b): L.cross_stats(own(feats[a]), own(feats[b])) for a, b in pairs}
            parts.append(((y1 - y0) * (x1 - x0), stats, chain))
    weights = [p[0] for p in parts]
    return (
        {k: L.blend_stats([p[1][k] for p in parts], weights) for k in layers},
        {pair: L.blend_cross_stats([p[2][pair] for p in parts], weights) for pair in pairs},
    )


def _pieces(length: int, tile: int) -> list[tuple[int, int]]:
    n = math.ceil(length / tile)
    return [(round(i * length / n), round((i + 1) * length / n)) for i in range(n)]
