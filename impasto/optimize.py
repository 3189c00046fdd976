"""The optimisation loop: scales, targets, optimisers and progress events.

A run goes coarse to fine. Each scale starts from the previous result
upsampled, recomputes the content and style targets at its own size (the
style image is resized with the output, so strokes keep their size relative
to the picture), and spends its iterations where they are cheap: many at the
coarsest scale, few at the finest. A scale too large for memory is optimised in
overlapping tiles, one after another, blended into one picture (choose_tile).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterator, NamedTuple, Optional, ParamSpec, Sequence, TypeVar, cast

import torch

from . import losses as L
from .errors import STOP_OUT_OF_MEMORY, ImpastoError, NonFiniteLoss, option
from .images import fit_long_side, resize_tensor
from .settings import MIN_TILE, Settings
from .vgg import FeatureExtractor


P = ParamSpec("P")
R = TypeVar("R")


def with_autograd(fn: Callable[P, R]) -> Callable[P, R]:
    """Run `fn` with autograd on whatever the caller's mode (a notebook's torch.no_grad() or
    torch.inference_mode()), and give the caller's mode back after: an optimisation of pixels
    needs gradients, and the caller's own code must not find them switched on."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with torch.inference_mode(False), torch.enable_grad():
            return fn(*args, **kwargs)

    return wrapper


@dataclass
class Progress:
    """One iteration's news. `image` is the picture its `losses` were measured on (for a picture
    cut into tiles, the whole picture as it stood), a tensor of its own: a callback may keep it."""

    scale: int  # 0-based
    scales: int
    size: tuple[int, int]  # (width, height) of this scale
    step: int  # 1-based within the scale
    steps: int
    done: int  # iterations finished over all scales
    total: int
    losses: dict[str, float]
    image: torch.Tensor
    elapsed: float
    tile: int = 0  # 0-based, of `tiles` this scale is cut into (plan_tiles)
    tiles: int = 1
    # The share (0-1) of the run's work done, counted as pixels x iterations: a fine scale's
    # iteration costs many coarse ones. None where the caller does not count it (audio).
    work: Optional[float] = None

    @property
    def is_last(self) -> bool:
        """The run's last iteration (at a coarser scale when the finest has none to run)."""
        return self.done == self.total


@dataclass
class StyleInput:
    image: torch.Tensor  # (1, 3, h, w) in [0, 1], any size
    weight: float = 1.0
    mask: Optional[torch.Tensor] = None  # (1, 1, H, W) in [0, 1] over the output; None = everywhere


@dataclass
class Outcome:
    image: Optional[torch.Tensor] = None  # best image of the last scale reached
    losses: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)


# The shortest side VGG's four poolings leave something of at conv5.
MIN_SCALE_SIDE = 16


def min_side(settings: Optional[Settings] = None) -> int:
    """The shortest side a picture (or a scale, or a painting) may have for the layers used:
    MIN_SCALE_SIDE, or twice it when a layer is past the fifth pooling (pool5)."""
    deep = settings is not None and "pool5" in settings.content_layers + settings.style_layers
    return 2 * MIN_SCALE_SIDE if deep else MIN_SCALE_SIDE


def check_short_side(size: tuple[int, int], picture: str, source: str, settings: Optional[Settings] = None) -> None:
    """Refuse a `picture` ("the output") of `size` too thin for the network, made from a `source` ("photo")."""
    w, h, least = *size, min_side(settings)
    if min(w, h) < least:
        raise ImpastoError(
            f"{picture} would be {w}x{h}: the short side must be at least {least} px "
            f"(a larger {option('size')}, or a less elongated {source})"
        )


def plan_scales(width: int, height: int, settings: Settings) -> list[tuple[int, int]]:
    """(w, h) of each scale, coarse to fine, the last at `settings.size`."""
    long_sides, s = [settings.size], float(settings.size)
    for _ in range(settings.scale_count() - 1):
        s /= settings.scale_factor
        long_sides.append(round(s))
    sizes = [fit_long_side(width, height, side) for side in reversed(long_sides)]
    # A coarse scale of a thin picture (a 12:1 panorama's 128 px is 11 px high) pools away to
    # nothing before conv5: such scales are left out, and the finest is checked by the caller.
    return [wh for wh in sizes[:-1] if min(wh) >= min_side(settings)] + sizes[-1:]


def plan_iterations(scales: int, settings: Settings) -> list[int]:
    """Geometric from `initial_iterations` at the coarsest scale to `iterations` at the finest.

    A multiscale run too small for a second scale is all coarsest scale, and gets
    `initial_iterations` (its 50 fine-tuning iterations alone would leave it half painted);
    `--no-multiscale` runs `iterations` at the one scale. (The CLI, a batch row and a sweep,
    which know when `iterations` was given, make such a run take it: Settings.with_given_iterations.)
    """
    if scales == 1:
        return [settings.initial_iterations if settings.multiscale else settings.iterations]
    first, last = max(settings.initial_iterations, 0), max(settings.iterations, 0)
    if first == 0 or last == 0:
        return [round(first + (last - first) * i / (scales - 1)) for i in range(scales)]
    return [round(first * (last / first) ** (i / (scales - 1))) for i in range(scales)]


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():  # with its index, so "auto" and "cuda:0" are one device to a cache
            return torch.device("cuda", torch.cuda.current_device())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):  # torch knows others (meta, xpu, ...) this code was never run on
        raise ImpastoError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ImpastoError(f"{option('device', name)} asked for, but PyTorch sees no CUDA GPU")
    if device.type == "cuda" and device.index is not None and device.index >= (count := torch.cuda.device_count()):
        raise ImpastoError(f"{option('device', name)} asked for, but PyTorch sees {count} CUDA GPU{'s' if count != 1 else ''} (cuda:0..{count - 1})")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ImpastoError(f"{option('device', 'mps')} asked for, but MPS is not available")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


# Bytes per output pixel at the finest scale for a VGG19 forward+backward,
# measured with benchmarks/speed.py (peak RSS growth / pixels). The estimate
# only has to be right within a factor that leaves room.
BYTES_PER_PIXEL = 3000


def estimate_bytes(width: int, height: int) -> int:
    return width * height * BYTES_PER_PIXEL


def available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        # Blocks this process's caching allocator holds but no tensor uses are free to it too:
        # after one large run (a sweep, a batch worker, the web server) they are most of it.
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type == "mps":
        try:  # Metal's working-set limit, less what this process's tensors already hold
            return int(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
        except (AttributeError, RuntimeError):  # a torch without them: the machine's memory, below
            pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        pass
    try:
        # macOS says only how much there is in all: half of it is a guess that still refuses
        # an output needing more than the whole machine, and tiles one that would crowd it.
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: let the run try


# The picture and its copies at the largest scale (start, best, the content, the
# optimiser's state for a tile) outside the network's passes, per pixel.
CANVAS_BYTES_PER_PIXEL = 64
# An automatic tile smaller than this would be mostly overlap: refuse instead.
MIN_AUTO_TILE = 256

Region = tuple[int, int, int, int]  # (x0, y0, x1, y1), pixels of one scale


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is the device running out of memory: CUDA's own error, MPS's and the CPU
    allocator's RuntimeErrors (the up-front estimate is a measurement, not a bound)."""
    text = str(exc)
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)
    )


def release_cached_memory(device: torch.device) -> None:
    """Hand the caching allocator's free blocks back, so what runs next (or another process) has them."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


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


# Local contrast (standard deviation of luminance, 0-1) at and above which an area of the
# photo counts as detailed: its content weight is whole. 0.05 is ~13 grey levels; the
# white quarter of benchmarks/heldout.py's cut-out has 0, the coffee cup beside it more.
FLAT_CONTRAST = 0.05


def flat_weights(content: torch.Tensor, floor: float) -> torch.Tensor:
    """(1, 1, H, W) content weights for a (1, 3, H, W) photo: `floor` where it is flat, 1 where
    its local contrast reaches FLAT_CONTRAST, in proportion between.

    On a flat area the content loss holds the painting's larger shapes back and leaves a
    regular pattern of small cells (benchmarks/README.md, held-out inputs); there is nothing
    of the photo to keep there, so a lower weight lets the painting fill it.
    """
    # In float64: E[y²] - E[y]² of a flat area is rounding noise in float32 (weights of ~0.002, not 0).
    luma = content.cpu().double().mean(dim=1, keepdim=True)  # moved, then converted (see losses._float64)
    k = max(3, max(content.shape[-2:]) // 16 | 1)  # a window of 1/16 of the picture, odd
    mean = box_mean(luma, k)
    spread = (box_mean(luma * luma, k) - mean * mean).clamp_min(0).sqrt()
    return (spread / FLAT_CONTRAST).clamp(floor, 1.0).to(content.device, content.dtype)


def box_mean(x: torch.Tensor, k: int) -> torch.Tensor:
    """The mean of each (N, C, H, W) value's k x k neighbourhood (k odd), over the part inside the
    picture: avg_pool2d's count_include_pad=False, from an integral image, so its cost does not
    grow with the window (avg_pool2d's 1/16-of-the-picture window took 18 s at 1024 px)."""
    h, w = x.shape[-2:]
    integral = torch.nn.functional.pad(x.cumsum(-2).cumsum(-1), (1, 0, 1, 0))

    def span(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        centre = torch.arange(n, device=x.device)
        return (centre - k // 2).clamp_min(0), (centre + k // 2 + 1).clamp_max(n)

    (top, bottom), (left, right) = span(h), span(w)
    rows_hi, rows_lo = integral[..., bottom, :], integral[..., top, :]
    total = rows_hi[..., right] - rows_hi[..., left] - rows_lo[..., right] + rows_lo[..., left]
    count = ((bottom - top)[:, None] * (right - left)[None, :]).to(x.dtype)
    return total / count


class Objective:
    """The weighted sum of content, style and TV losses at one scale."""

    def __init__(
        self,
        extractor: FeatureExtractor,
        settings: Settings,
        content: torch.Tensor,
        styles: Sequence[StyleInput],
        size: tuple[int, int],
        cache: Optional["StatsCache"] = None,
        extra_loss: Optional["ExtraLoss"] = None,
        region: Optional[Region] = None,
        tile: int = 0,
    ) -> None:
        """The objective of the (w, h) `size` scale; with `region`, of that tile of it: the
        content target is the tile's, the style targets the whole picture's (so strokes keep
        their size), computed in `tile`-sized pieces where the style image is that large."""
        self.extractor = extractor
        self.extra_loss = extra_loss
        self.settings = settings
        w, h = size
        x0, y0, x1, y1 = region or (0, 0, w, h)
        pairs = chain_pairs(settings)
        with torch.no_grad():
            photo = resize_tensor(content, (h, w))
            content_feats = extractor(photo[..., y0:y1, x0:x1])
            self.content_targets = {k: content_feats[k].detach() for k in settings.content_layers}
            # None (one weight everywhere) unless asked: the default's objective is as it was.
            self.content_weights: dict[str, Optional[torch.Tensor]] = {k: None for k in settings.content_layers}
            if settings.flat_content < 1:
                flat = flat_weights(photo, settings.flat_content)[..., y0:y1, x0:x1]  # of the whole picture: a tile's edge is not an edge of the photo
                for k in settings.content_layers:
                    self.content_weights[k] = _mask_like(flat, content_feats[k])
            per_style, per_style_chain = [], []
            for style in styles:
                sw, sh = style_size(style.image.shape, style_long_side(max(w, h), settings), min_side(settings))
                stats, chain = style_statistics(extractor, style.image, (sh, sw), settings.style_layers, pairs, cache, tile)
                per_style.append(stats)
                per_style_chain.append(chain)
        if region is not None:
            # One crop per mask tensor: styles sharing a mask must still share it (_group_by_mask).
            crops = {id(s.mask): _crop_mask(s.mask, size, region) for s in styles if s.mask is not None}
            styles = [StyleInput(s.image, s.weight, crops.get(id(s.mask))) for s in styles]
        self.style_losses: list[tuple[str, float, L.StyleLossFn]] = []
        layer_weights = settings.layer_weights()
        groups = _group_by_mask(styles)
        for layer, lw in zip(settings.style_layers, layer_weights):
            for mask, members in groups:
                target = L.blend_stats([per_style[i][layer] for i in members], [styles[i].weight for i in members])
                fn = L.make_style_loss(settings.style_loss, target, settings.gram_shift, _mask_like(mask, content_feats[layer]))
                self.style_losses.append((layer, lw / len(groups), fn))
        # Chained inference: one cross-layer term per adjacent pair, weighted like its shallower layer.
        self.chain_losses: list[tuple[str, str, float, L.ChainLossFn]] = []
        for (a, b), lw in zip(pairs, layer_weights):
            for mask, members in groups:
                cross = L.blend_cross_stats([per_style_chain[i][(a, b)] for i in members], [styles[i].weight for i in members])
                chain_fn = L.chain_loss(cross, settings.gram_shift, _mask_like(mask, content_feats[a]))
                self.chain_losses.append((a, b, lw / len(groups), chain_fn))

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total, parts, _ = self._evaluate(image)
        return total, parts

    def terms(self, image: torch.Tensor) -> dict[str, float]:
        """The objective at `image` split into its weighted terms: total, content, tv, one per
        style layer (and chained pair), and any extra loss; they sum to the total. For seeing
        which terms a run spends its iterations on (benchmarks/fine_scale.py)."""
        with torch.no_grad():
            total, parts, weighted = self._evaluate(image)
        s = self.settings
        out = {"total": float(total), "content": s.content_weight * float(parts["content"]), "tv": s.tv_weight * float(parts["tv"])}
        for name, value in weighted:
            out[name] = out.get(name, 0.0) + s.style_weight * float(value)
        out.update({k: float(v) for k, v in parts.items() if k not in ("content", "style", "tv")})
        return out

    def _evaluate(self, image: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[tuple[str, torch.Tensor]]]:
        feats = self.extractor(image)
        with autocast_off(image.device):
            return self._losses(image, {k: v.float() for k, v in feats.items()})

    def _losses(self, image: torch.Tensor, feats: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[tuple[str, torch.Tensor]]]:
        # In fp32 even under mixed precision: a Gram matrix sums products over every pixel and
        # overflows fp16 (65504) at the first layers, and its backward needs one dtype.
        s = self.settings
        if self.content_targets:
            content = cast(torch.Tensor, sum(L.content_loss(feats[k], t, self.content_weights[k]) for k, t in self.content_targets.items())) / len(self.content_targets)
        else:  # no content layers: texture synthesis
            content = image.new_zeros(())
        # Style terms, each already times its layer weight; named so terms() can report them.
        weighted = [(layer, w * fn(feats[layer])) for layer, w, fn in self.style_losses]
        weighted += [(f"{a}x{b}", w * fn(feats[a], feats[b])) for a, b, w, fn in self.chain_losses]
        style = cast(torch.Tensor, sum(v for _, v in weighted)) if weighted else image.new_zeros(())
        tv = L.tv_loss(image.float())
        total = s.content_weight * content + s.style_weight * style + s.tv_weight * tv
        parts = {"content": content, "style": style, "tv": tv}
        if self.extra_loss is not None:
            for name, value in self.extra_loss(image).items():
                total = total + value
                parts[name] = value
        return total, parts, weighted


def scale_settings(settings: Settings, long_side: int, final: int) -> Settings:
    """The settings for the scale whose long side is `long_side`, of an output `final` long:
    the content weight times `settings.coarse_content` at a quarter of the output's size or
    less, easing geometrically to the user's own weight at the output's size.

    The coarse scales decide the layout, and there a face is a few feature pixels that the
    style term readily paints over; the finer scales cannot move it back. Tied to the size
    ratio rather than to the scale's rank, so a scale barely smaller than the output (362 px
    before 512 with --scale-factor 1.41) is barely boosted; and the finest scale keeps the
    user's weights, so the objective a run ends on is the one they asked for.
    """
    if settings.coarse_content == 1 or long_side >= final:
        return settings
    depth = min(1.0, math.log(final / long_side) / math.log(4))
    return settings.replace(content_weight=settings.content_weight * settings.coarse_content**depth)


def photo_detail(content: torch.Tensor, coarse: tuple[int, int], fine: tuple[int, int]) -> torch.Tensor:
    """The photo at the (w, h) `fine` size minus its round trip through `coarse`: the detail
    an upsampled coarse result lacks, which the finest scale would otherwise rebuild slowly."""
    (cw, ch), (fw, fh) = coarse, fine
    sharp = resize_tensor(content, (fh, fw))
    return sharp - resize_tensor(resize_tensor(content, (ch, cw)), (fh, fw))


def scale_start(
    image: torch.Tensor, content: torch.Tensor, coarse: Optional[tuple[int, int]], fine: tuple[int, int], settings: Settings
) -> torch.Tensor:
    """The start of the (w, h) `fine` scale from the result at `coarse` (None: the first scale).

    The coarse scale cannot hold the photo's fine detail, and the finer scale is slow to
    rebuild it through the content loss (benchmarks/fine_scale.py): so it is put back here,
    `settings.upsample_detail` of it. Not for texture synthesis, where there is no photo to keep.
    """
    w, h = fine
    start = resize_tensor(image, (h, w))
    if coarse is not None and settings.upsample_detail > 0 and settings.content_layers and settings.content_weight > 0:
        start = (start + settings.upsample_detail * photo_detail(content, coarse, fine)).clamp(0, 1)
    return start


def _crop_mask(mask: torch.Tensor, size: tuple[int, int], region: Region) -> torch.Tensor:
    """The part of a (1, 1, H, W) output mask over `region` of the (w, h) `size` scale."""
    w, h = size
    x0, y0, x1, y1 = region
    return torch.nn.functional.interpolate(mask, size=(h, w), mode="bilinear", align_corners=False)[..., y0:y1, x0:x1]


def _mask_like(mask: Optional[torch.Tensor], features: torch.Tensor) -> Optional[torch.Tensor]:
    """A (1, 1, H, W) output mask as (h, w) at a layer's resolution, or None for everywhere."""
    if mask is None:
        return None
    return torch.nn.functional.interpolate(mask, size=tuple(features.shape[-2:]), mode="bilinear", align_corners=False)[0, 0]


def _group_by_mask(styles: Sequence[StyleInput]) -> list[tuple[Optional[torch.Tensor], list[int]]]:
    """Styles without a mask blend into one target, and so do styles sharing one mask tensor
    (the API gives every unmasked style the same "not kept" mask under --keep-mask);
    each other masked style is its own region."""
    groups: list[tuple[Optional[torch.Tensor], list[int]]] = []
    unmasked = [i for i, s in enumerate(styles) if s.mask is None]
    if unmasked:
        groups.append((None, unmasked))
    for i, s in enumerate(styles):
        if s.mask is not None:
            for mask, members in groups:
                if mask is s.mask:
                    members.append(i)
                    break
            else:
                groups.append((s.mask, [i]))
    # A region whose styles all weigh 0 has no painting to match: it keeps the photo, not a 0/0 blend.
    return [(mask, members) for mask, members in groups if sum(styles[i].weight for i in members) > 0]


def chain_pairs(settings: Settings) -> list[tuple[str, str]]:
    """Adjacent style layers, shallow first, for chained inference (empty when it is off)."""
    if not settings.style_chain:
        return []
    return list(zip(settings.style_layers[:-1], settings.style_layers[1:]))


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


def initial_image(settings: Settings, content: torch.Tensor, styles: Sequence[StyleInput], size: tuple[int, int], init_image: Optional[torch.Tensor]) -> torch.Tensor:
    w, h = size
    if init_image is not None:  # given explicitly, or by a file path in settings.init
        return resize_tensor(init_image, (h, w))
    if settings.init == "content":
        return resize_tensor(content, (h, w))
    if settings.init == "noise":
        g = seeded_generator(settings.seed)
        # Noise around the content's mean colour converges faster than uniform noise.
        noise = torch.rand(1, 3, h, w, generator=g).to(content)
        return (content.mean(dim=(2, 3), keepdim=True) + (noise - 0.5) * 0.5).clamp(0, 1)
    if settings.init == "style":
        return resize_tensor(styles[0].image, (h, w))
    raise ImpastoError(f"init {settings.init!r}: no image given")


def make_optimizer(settings: Settings, param: torch.Tensor) -> torch.optim.Optimizer:
    if settings.optimizer == "lbfgs":
        # One iteration per step() so the loop can clamp, report and stop between them;
        # L-BFGS keeps its history across calls.
        return torch.optim.LBFGS([param], lr=settings.learning_rate(), max_iter=1, history_size=50, tolerance_grad=0.0, tolerance_change=0.0)
    return torch.optim.Adam([param], lr=settings.learning_rate())


ExtraLoss = Callable[[torch.Tensor], dict[str, torch.Tensor]]


class Step(NamedTuple):
    """One optimiser iteration: its 1-based number, the losses of the pixels it scored, and those pixels."""

    number: int
    losses: dict[str, float]
    scored: torch.Tensor


# fp16 gradients of these losses underflow to noise near convergence (the per-element
# gradient is divided by each layer's size): the loss is multiplied by this before the
# backward pass and the gradient divided after, as a gradient scaler does for training.
LOSS_SCALE = 2.0**16


def native_bf16_cpu() -> bool:
    """Whether this CPU computes in bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slower."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


# The --precision values that mean mixed precision, and the autocast dtype of each.
AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def mixed_precision(settings: Settings, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype of the network's passes, or None for plain fp32.

    auto: fp16 on CUDA; bf16 on a CPU with native bf16, where it makes a default
    run 1.6x faster and the result's fp32-scored loss is unchanged (benchmarks/precision.py).
    """
    precision = settings.precision
    if precision == "auto":
        if device.type == "cuda":
            precision = "fp16"
        elif device.type == "cpu" and native_bf16_cpu():
            precision = "bf16"
    return AUTOCAST_DTYPES.get(precision)


def precision_name(dtype: Optional[torch.dtype]) -> str:
    """The --precision value of an autocast dtype (None: fp32)."""
    return {v: k for k, v in AUTOCAST_DTYPES.items()}.get(dtype, "fp32")  # type: ignore[arg-type]


def autocast_to(device: torch.device, dtype: Optional[torch.dtype]) -> contextlib.AbstractContextManager:
    """Mixed precision in `dtype` on the device, or a no-op context for None (plain fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    try:
        return torch.autocast(device_type=device.type, dtype=dtype)
    except RuntimeError:  # a torch without autocast for this device (MPS before 2.5 or so)
        raise ImpastoError(
            f"{option('precision', precision_name(dtype))} is not available on {device.type} with torch {torch.__version__}; "
            f"use {option('precision', 'fp32')}"
        ) from None


def autocast_off(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast switched off (for a pass in fp32 inside a mixed-precision one); nothing to switch
    off on a device whose torch has no autocast, which older ones refuse even to disable."""
    try:
        return torch.autocast(device_type=device.type, enabled=False)
    except RuntimeError:
        return contextlib.nullcontext()


class LossScale:
    """fp16's loss scale through one descent, as a gradient scaler keeps it: lowered by an
    overflow, it stays lowered, so the next iteration does not pay a second backward pass
    again; after GROWTH_INTERVAL iterations without one it is doubled again (up to LOSS_SCALE),
    since small gradients near convergence need it high."""

    GROWTH_INTERVAL = 20

    def __init__(self, autocast: Optional[torch.dtype]) -> None:
        self.value = LOSS_SCALE if autocast == torch.float16 else 1.0
        self.good = 0.0  # the last value that did not overflow (0: none yet)
        self.streak = 0

    def overflowed(self) -> None:
        # Right after a growth, back to what worked; else down by 256, a few passes at most.
        self.value = self.good if 0 < self.good < self.value else max(1.0, self.value / 256)
        self.streak = 0

    def succeeded(self) -> None:
        self.good, self.streak = self.value, self.streak + 1
        if self.streak >= self.GROWTH_INTERVAL and self.value < LOSS_SCALE:
            self.value, self.streak = min(LOSS_SCALE, self.value * 2), 0


def gradient(
    score: Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]],
    param: torch.Tensor,
    autocast: Optional[torch.dtype] = None,
    loss_scale: Optional[LossScale] = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`score(param)` with its gradient in `param.grad`; under fp16 autocast, through a scaled loss."""
    loss_scale = loss_scale or LossScale(autocast)
    while True:
        scale = loss_scale.value
        param.grad = None
        with autocast_to(param.device, autocast):
            value, parts = score(param)
        (value * scale).backward()
        if scale == 1.0 or not torch.isfinite(value) or param.grad is None or bool(torch.isfinite(param.grad).all()):
            break
        loss_scale.overflowed()  # an fp16 overflow in the backward pass: redo it scaled less
    if autocast == torch.float16:
        loss_scale.succeeded()
    if scale != 1.0:
        assert param.grad is not None
        param.grad.div_(scale)
    return value, parts


def descend(
    score: Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]],
    param: torch.Tensor,
    steps: int,
    settings: Settings,
    bounds: Optional[tuple[float, float]] = (0.0, 1.0),
    autocast: Optional[torch.dtype] = None,
) -> Iterator[Step]:
    """Minimise `score(param)` in place for `steps` iterations with the settings' optimiser.

    The one descent loop of the project: images and audio spectrograms both go
    through it. It yields a Step after each iteration (the caller tracks the best
    and reports), keeps `param` within `bounds`, and raises NonFiniteLoss the
    moment the loss stops being a number. With `autocast` (a dtype) `score` runs
    under mixed precision and the gradient is computed with a scaled loss.
    """
    param.requires_grad_(True)
    optimizer = make_optimizer(settings, param)
    last: dict[str, float] = {}
    loss_scale = LossScale(autocast)

    def closure() -> torch.Tensor:
        value, parts = gradient(score, param, autocast, loss_scale)
        last.clear()
        last.update({k: float(v.detach()) for k, v in parts.items()})
        last["total"] = float(value.detach())
        return value

    for number in range(1, steps + 1):
        before = param.detach().clone()  # what `closure` scores during this step
        optimizer.step(closure)  # type: ignore[arg-type]  # torch's stub says float; LBFGS takes a tensor
        if not all(math.isfinite(v) for v in last.values()):
            hint = f"a lower {option('lr')} or smaller weights" + (f", or {option('precision', 'fp32')}" if autocast is not None else "")
            raise NonFiniteLoss(f"the loss became {last.get('total')} at iteration {number}; try {hint}", before)
        if bounds is not None:
            with torch.no_grad():
                param.clamp_(*bounds)
        yield Step(number, dict(last), before)


def optimise(
    extractor: FeatureExtractor,
    settings: Settings,
    content: torch.Tensor,
    styles: Sequence[StyleInput],
    outcome: Outcome,
    init_image: Optional[torch.Tensor] = None,
    cache: Optional[StatsCache] = None,
    extra_loss: Optional[ExtraLoss] = None,
) -> Iterator[Progress]:
    """Yield a Progress per iteration, keeping `outcome` up to date as it goes.

    `outcome` holds the best image and losses so far, so a caller that stops
    early (Ctrl-C, a cancel) still has them. Raises NonFiniteLoss if the loss
    blows up; `outcome` then holds the last good image. `extra_loss(image)`
    returns further weighted terms (for example video's temporal loss), called
    with the image at each scale's size.
    """
    width, height = content.shape[-1], content.shape[-2]
    sizes = plan_scales(width, height, settings)
    steps = plan_iterations(len(sizes), settings)
    device = content.device
    tile = choose_tile(*sizes[-1], settings, device)
    if tile and extra_loss is not None:
        raise ImpastoError(f"a {sizes[-1][0]}x{sizes[-1][1]} output would be cut into tiles, which an extra loss (video's temporal term) cannot follow; choose a smaller {option('size')}")
    # The smallest pieces any painting needs serve them all.
    pieces = min((p for s in styles if (p := style_pieces(s.image.shape, max(sizes[-1]), settings, device, tile))), default=0)
    tiles_per_scale = [plan_tiles(w, h, tile) for w, h in sizes]
    if tile and cache is None:
        cache = StatsCache()  # each tile's objective needs the same style statistics: take them once
    total = sum(n * len(tiles) for n, tiles in zip(steps, tiles_per_scale))
    # Pixels x iterations: what an iteration costs grows with its pixels, so a progress GIF
    # spread by this gives the finest scale, most of the time, its share of the frames.
    work_total = sum(n * (x1 - x0) * (y1 - y0) for n, tiles in zip(steps, tiles_per_scale) for x0, y0, x1, y1 in tiles)
    work_done = 0
    # No torch.manual_seed here: nothing below draws from the global generator (a noise start
    # has its own), and reseeding it would repeat the caller's own random draws after each run.
    autocast = mixed_precision(settings, device)
    start = time.perf_counter()
    done = 0
    history = outcome.history
    image = initial_image(settings, content, styles, sizes[0], init_image)
    outcome.image = image.clone()
    for index, (size, n, tiles) in enumerate(zip(sizes, steps, tiles_per_scale)):
        # The picture of this scale, holding the best pixels found so far (of each tile).
        canvas = scale_start(outcome.image, content, sizes[index - 1] if index else None, size, settings).contiguous()
        outcome.image = canvas
        if n == 0:
            outcome.losses = {}  # a coarser scale's losses (its own weights, its own size) do not describe this picture
        whole = len(tiles) == 1
        settings_here = scale_settings(settings, max(size), max(sizes[-1]))
        kept: list[tuple[int, dict[str, float]]] = []  # (area, best losses) of each tile done
        for number, region in enumerate(tiles):
            x0, y0, x1, y1 = region
            objective = Objective(extractor, settings_here, content, styles, size, cache, extra_loss, None if whole else region, pieces)
            param = canvas[..., y0:y1, x0:x1].clone()
            # A tile is pasted over what was there before it, by its blend weights.
            under = None if whole else param.clone()
            weight = None if whole else blend_weights(region, tile_overlap(tile), size, device)
            best: dict[str, float] = {}

            def keep(pixels: torch.Tensor, losses: dict[str, float]) -> None:
                canvas[..., y0:y1, x0:x1] = pixels if whole else under + weight * (pixels - under)  # type: ignore[operator]
                outcome.losses = losses
                best.clear()
                best.update(losses)

            try:
                for step in descend_keeping_best(objective, param, n, settings, keep, autocast=autocast):
                    done += 1
                    work_done += (x1 - x0) * (y1 - y0)
                    # The content weight of this scale (coarse_content raises it below the output's size),
                    # so a plot can weight each row's terms as they added up to its total.
                    history.append({"scale": index, "iteration": done, **step.losses, "content_weight": settings_here.content_weight})
                    # The pixels the step's losses were measured on (a copy of their own), not the
                    # step's result, so a callback sees a picture and losses that belong together.
                    # A tiled scale shows the whole canvas: copied, since later tiles paint on it.
                    shown = step.scored if whole else canvas.clone()
                    yield Progress(index, len(sizes), size, number * n + step.number, n * len(tiles), done, total, step.losses, shown,
                                   time.perf_counter() - start, number, len(tiles), work_done / work_total)
            except NonFiniteLoss as exc:
                where = f"scale {index + 1}" + ("" if whole else f", tile {number + 1} of {len(tiles)}")
                raise NonFiniteLoss(f"at {where}: {exc}", canvas) from None
            kept.append(((x1 - x0) * (y1 - y0), dict(best)))
        if not whole and all(losses for _, losses in kept):
            # A summary for the caller: the tiles' own objectives, weighted by area. Each is
            # normalised by its own part of the photo, so it is not the whole picture's objective.
            area = sum(a for a, _ in kept)
            outcome.losses = {k: sum(a * losses[k] for a, losses in kept) / area for k in kept[0][1]}


def seeded_generator(seed: Optional[int]) -> torch.Generator:
    """A CPU generator of its own, so a run's draws repeat for a seed (None: fresh entropy)
    without moving torch's global generator under the caller."""
    generator = torch.Generator(device="cpu")
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def descend_keeping_best(
    score: Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]],
    param: torch.Tensor,
    steps: int,
    settings: Settings,
    keep: Callable[[torch.Tensor, dict[str, float]], None],
    bounds: Optional[tuple[float, float]] = (0.0, 1.0),
    autocast: Optional[torch.dtype] = None,
) -> Iterator[Step]:
    """descend(), calling `keep(param, losses)` each time a step scores better than any before,
    so a run stopped at any point (a callback, Ctrl-C, a loss that blows up) has its best."""
    best_value = math.inf
    for step in descend(score, param, steps, settings, bounds=bounds, autocast=autocast):
        if step.losses["total"] < best_value:
            best_value = step.losses["total"]
            keep(step.scored, step.losses)
        yield step
    if steps > 0:
        # The final parameters were never scored; score them so "best" is honest.
        with torch.no_grad(), autocast_to(param.device, autocast):
            value, parts = score(param.detach())
        final = {k: float(v) for k, v in parts.items()} | {"total": float(value)}
        if math.isfinite(final["total"]) and final["total"] <= best_value:
            keep(param.detach().clone(), final)
