"""Coarse to fine: the size of each scale, the iterations each gets, and the settings that
differ by scale."""

from __future__ import annotations

import math
from typing import Optional

from .errors import ImpastoError, option
from .images import fit_long_side
from .settings import Settings


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


def scale_settings(settings: Settings, long_side: int, final: int) -> Settings:
    """The settings for the scale whose long side is `long_side`, of an output `final` long:
    the content weight times `settings.coarse_content` at a quarter of the output's size or
    less, easing geometrically to the user's own weight at the output's size.

    The coarse scales decide the layout, and there a face is a few feature pixels that the
    style term readily paints over; the finer scales cannot move it back. Tied to the size
    ratio rather than to the scale's rank, so a scale barely smaller than the output (362 px
    before 512 with --scale-factor 1.41) is barely boosted; and the finest scale keeps the
    user's weights, so the objective a run ends on is the one they asked for.

    The fine content layers are left out below the output's size: held from the coarse scales
    on, they pin the photo's mid-level structure before the painting's large shapes have
    formed (the rocket with the Shipwreck loses its deep style; benchmarks/README.md, session 38).
    """
    if long_side >= final:
        return settings
    if settings.fine_content_layers:
        settings = settings.replace(fine_content_layers=())
    if settings.coarse_content == 1:
        return settings
    depth = min(1.0, math.log(final / long_side) / math.log(4))
    return settings.replace(content_weight=settings.content_weight * settings.coarse_content**depth)
