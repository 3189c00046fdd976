"""The painting's fine grain, put into an upsampled scale where the picture lacks it.

A scale starts from the coarser result upsampled, which is smooth: it lacks all detail finer
than the coarser scale could hold. The photo's share of that detail is added back
(`upsample_detail`); the painting's (Turner's spray, a canvas's weave) the finer scale has to
grow from nothing, and from a smooth start L-BFGS grows little of it in the finest scale's
few iterations: the rocket with the Shipwreck stayed behind the textbook run on style, short at
conv2_1-conv3_1 (benchmarks/README.md, sessions 27-35). So the start gets noise with the
painting's own fine-detail spectrum: the painting's detail with its phases drawn at random
(random phase noise, Galerne, Gousseau & Morel 2011), which keeps its grain, its strength and
its colours and none of its shapes. Where the picture already holds detail of that strength
(edges, the photo's texture) less is added, so a smooth sky gets the painting's grain and a
textured area keeps its own. White noise of one strength for every painting (sessions 27-33)
gave the Shipwreck its grain but cost The Scream its style, whose fine detail is weak; this
grain is as strong as each painting's.

The default since session 36 (`upsample_grain` 1): on the quality benchmark (benchmarks/README.md)
it won the rocket with the Shipwreck in two draws of the grain (seeds 0 and 1), 10 of 12 pairs
better than the textbook run on both distances in each (9 and a tie without it), and brought every
Shipwreck pair's texture closer (style distance 0.33x-0.34x the textbook's over the 12 pairs,
against 0.37x), for content a little further from the photo (0.93x against 0.92x), the Starry
Night's strong grain most.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from .images import box_mean, resize_tensor
from .scales import min_side
from .settings import Settings
from .style_stats import style_long_side, style_size


def fine_detail(image: torch.Tensor, coarse: tuple[int, int]) -> torch.Tensor:
    """`image` (1, C, H, W) minus its round trip through the (w, h) `coarse` size: the detail
    a picture at that size cannot hold."""
    h, w = image.shape[-2:]
    cw, ch = coarse
    return image - resize_tensor(resize_tensor(image, (ch, cw)), (h, w))


def random_phase(detail: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(1, 3, h, w) noise with the power spectrum and colour correlations of `detail` (1, 3, h, w):
    its Fourier transform with the phase of a white noise, one phase for the three channels (as
    Galerne et al. do, so the colours of the grain stay the painting's). The phase of a real
    noise is antisymmetric, so the result is real, and periodic: it tiles without seams."""
    h, w = detail.shape[-2:]
    phase = torch.fft.fft2(torch.randn(h, w, generator=generator))
    phase = phase / phase.abs().clamp_min(1e-12)
    phase[0, 0] = 0  # no mean: the grain moves no colour
    return torch.fft.ifft2(torch.fft.fft2(detail) * phase).real


def held_detail(start: torch.Tensor, coarse: tuple[int, int]) -> torch.Tensor:
    """How much fine detail the (1, 3, h, w) `start`, upsampled from the (w, h) `coarse` scale,
    holds around each pixel: its own fine detail's strength over a window of 1/32 of the picture."""
    h, w = start.shape[-2:]
    k = max(3, max(w, h) // 32 | 1)
    return box_mean(fine_detail(start, coarse).pow(2).mean(dim=1, keepdim=True), k).clamp_min(0)  # clamped: float32 rounding of the sums


def painting_grain(
    start: torch.Tensor,
    painting: torch.Tensor,
    coarse: tuple[int, int],
    settings: Settings,
    generator: torch.Generator,
    held: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The grain to add to `start` (1, 3, h, w), a scale upsampled from the (w, h) `coarse` one:
    the fine detail of `painting` (1, 3, H, W) at this scale's size (resized as the style loss
    sees it), drawn as random phase noise from `generator` and tiled over the picture, times
    the share of that detail's strength the start lacks around each pixel (`held`: the start's
    `held_detail`, where several paintings share one start)."""
    h, w = start.shape[-2:]
    cw, ch = coarse
    if held is None:
        held = held_detail(start, coarse)
    pw, ph = style_size(painting.shape, style_long_side(max(w, h), settings), min_side(settings))
    # The painting's detail finer than the coarse scale's share of its size.
    detail = fine_detail(resize_tensor(painting.float().cpu(), (ph, pw)), (max(1, pw * cw // w), max(1, ph * ch // h)))
    noise = random_phase(detail, generator).repeat(1, 1, -(-h // ph), -(-w // pw))[..., :h, :w].to(start)
    lacking = (1 - held / detail.pow(2).mean().to(start).clamp_min(1e-12)).clamp_min(0).sqrt()
    return lacking * noise
