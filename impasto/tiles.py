"""Tiles: a scale too large for memory is optimised in overlapping tiles, one after another,
blended into one picture. How large a tile may be, where the tiles lie, how they blend."""

from __future__ import annotations

import math
from typing import Sequence

import torch

from .device import BYTES_PER_PIXEL, available_bytes, estimate_bytes
from .errors import STOP_OUT_OF_MEMORY, ImpastoError, option
from .losses import Crop
from .settings import MIN_TILE, Settings


# The picture and its copies at the largest scale (start, best, the content, the
# optimiser's state for a tile) outside the network's passes, per pixel.
CANVAS_BYTES_PER_PIXEL = 64


# An automatic tile smaller than this would be mostly overlap: refuse instead.
MIN_AUTO_TILE = 256


Region = tuple[int, int, int, int]  # (x0, y0, x1, y1), pixels of one scale


def out_of_memory_advice(width: int, height: int, device: torch.device, tile: int) -> str:
    """A run's stopped_reason (or error) when the device ran out of memory; `tile`: the one in use (0: none)."""
    smaller = (tile or max(width, height)) // 2 // 64 * 64  # half what ran: a quarter of the memory for the passes
    tiles = f", or tiles ({option('tile', smaller)})" if smaller >= MIN_TILE else ""
    return f"{STOP_OUT_OF_MEMORY} on {device} for a {width}x{height} output; a smaller {option('size')}{tiles} needs less"


def choose_tile(width: int, height: int, settings: Settings, device: torch.device) -> int:
    """The tile side for a `width` x `height` output: 0 to run every scale whole.

    Automatic (settings.tile == 0): whole when the finest scale's passes fit in free
    memory, else the largest tile that fits beside the picture. Raises a clear error,
    with the memory needed, when not even that fits.
    """
    have = available_bytes(device)
    canvas = width * height * CANVAS_BYTES_PER_PIXEL
    tile = settings.tile
    if tile == 0:
        if canvas + estimate_bytes(width, height) <= have:
            return 0
        # Tiles take at most 80% of what is free: their estimate is a measurement, not a bound.
        tile = int(math.sqrt(max(0.8 * have - canvas, 0) / BYTES_PER_PIXEL)) // 64 * 64
    if settings.tile == 0 and tile < MIN_AUTO_TILE:
        tile = MIN_AUTO_TILE  # past the 80% margin: used if it fits at all, else named in the error below
    need = canvas + estimate_bytes(min(tile, width), min(tile, height))
    if need > have:
        gib = 1024**3
        whole = (canvas + estimate_bytes(width, height)) / gib
        raise ImpastoError(
            f"a {width}x{height} output needs about {whole:.1f} GiB, or {need / gib:.1f} GiB in {tile} px tiles, "
            f"but only {have / gib:.1f} GiB is free on {device.type}; choose a smaller {option('size')}"
        )
    return 0 if tile >= max(width, height) else tile


def plan_tiles(width: int, height: int, tile: int) -> list[Region]:
    """Overlapping regions, each at most `tile` on a side, covering the picture row by row
    (one region, the whole picture, when it fits). Spread evenly, so no tile is a sliver."""
    if tile <= 0 or max(width, height) <= tile:
        return [(0, 0, width, height)]
    overlap = tile_overlap(tile)
    xs, ys = _tile_spans(width, tile, overlap), _tile_spans(height, tile, overlap)
    return [(x0, y0, x1, y1) for y0, y1 in ys for x0, x1 in xs]


# VGG's zero padding disturbs a tile's edge over a distance set by the network, not by the
# tile: past this, a wider overlap is only more work (4 tiles of a 4096 px print did 1.4x
# its pixels with a quarter of 2432 px; 1.12x with this).
MAX_TILE_OVERLAP = 192


def tile_overlap(tile: int) -> int:
    # A quarter of the tile leaves room to cut the disturbed edge off and blend
    # (blend_weights): a third of the overlap is 16-64 px.
    return min(max(48, tile // 4), MAX_TILE_OVERLAP)


def style_margins(region: Region, size: tuple[int, int], overlap: int) -> Crop:
    """(top, bottom, left, right) picture pixels of a tile that its style losses leave out: half
    the overlap on each side shared with another tile, none on the picture's own edges.

    There the network's zero padding disturbs the tile's features, and blend_weights keeps
    little of the tile: its first third goes to the tile before it, its last fades out for
    the one after. Measured with them, a tile's statistics are bent by its edges (at 768 px in
    384 px tiles the whole picture ended 3.7x farther from the painting on VGG16's style
    distance than the same run whole; without them, 1.2x: benchmarks/README.md).
    """
    x0, y0, x1, y1 = region
    width, height = size
    m = overlap // 2
    return (m if y0 > 0 else 0, m if y1 < height else 0, m if x0 > 0 else 0, m if x1 < width else 0)


def layer_crop(shape: Sequence[int], layer: str, margins: Crop) -> Crop:
    """The picture-pixel `margins` (style_margins) of a map of `layer` with `shape` (..., H, W),
    in its own pixels; at least one feature pixel is always kept."""
    stride = layer_stride(layer)
    h, w = shape[-2:]
    top, bottom, left, right = (m // stride for m in margins)
    return min(top, (h - 1) // 2), min(bottom, (h - 1) // 2), min(left, (w - 1) // 2), min(right, (w - 1) // 2)


def layer_stride(layer: str) -> int:
    """Picture pixels per feature pixel of a VGG layer ("conv3_1": 4, "pool3": 8)."""
    block = int(layer[4])
    return 2**block if layer.startswith("pool") else 2 ** (block - 1)


def _tile_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    if length <= tile:
        return [(0, length)]
    n = math.ceil((length - overlap) / (tile - overlap))
    size = math.ceil((length + (n - 1) * overlap) / n)
    starts = [round(i * (length - size) / (n - 1)) for i in range(n)]
    return [(a, a + size) for a in starts]


def blend_weights(region: Region, overlap: int, size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """(1, 1, h, w) weights of a tile's pixels when pasted over the (w, h) `size` picture.

    A tile's outermost pixels are its worst: VGG pads the tile with zeros there, and the
    optimiser bends them to suit. So each overlap is cut in thirds. On the sides shared
    with tiles still to come (right and below, in plan_tiles' order) the tile fades out
    over its last third: those tiles start from its result, easing into the unpainted
    picture there rather than meeting it at a hard edge they would have to repaint. On
    the sides shared with tiles done before it, the tile leaves their result in the first
    third, fades in over the second and has the last, their fading one, to itself.
    """
    x0, y0, x1, y1 = region
    width, height = size
    third = overlap // 3

    def ramp(n: int, after_another: bool, before_another: bool) -> torch.Tensor:
        r = torch.ones(n)
        if after_another:
            r[:third] = 0
            r[third : 2 * third] = torch.linspace(0, 1, third + 2)[1:-1]
        if before_another:
            r[n - third :] = torch.linspace(1, 0, third + 2)[1:-1]
        return r

    wy, wx = ramp(y1 - y0, y0 > 0, y1 < height), ramp(x1 - x0, x0 > 0, x1 < width)
    return torch.minimum(wy[:, None], wx[None, :])[None, None].to(device)
