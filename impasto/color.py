"""Colour preservation (Gatys, Bethge, Hertzmann & Shechtman 2016).

Both methods work on (1, 3, H, W) RGB tensors in [0, 1].
"""

from __future__ import annotations

from typing import Sequence

import torch

# NTSC YIQ, as in the paper's luminance-only transfer.
_RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]]
)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def _apply(matrix: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,bjhw->bihw", matrix.to(image), image)


def rgb_to_yiq(image: torch.Tensor) -> torch.Tensor:
    return _apply(_RGB_TO_YIQ, image)


def yiq_to_rgb(image: torch.Tensor) -> torch.Tensor:
    return _apply(_YIQ_TO_RGB, image)


def luminance(image: torch.Tensor) -> torch.Tensor:
    """Y channel repeated three times, so the network sees a grey image."""
    return rgb_to_yiq(image)[:, :1].expand(-1, 3, -1, -1).contiguous()


def match_luminance(style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Style luminance moved to the content's mean brightness, its contrast kept.

    The paper also rescales the style's luminance to the content's standard deviation.
    We don't: the style's contrast is its brush strokes, and a soft photo (a cat's fur:
    half the std of The Starry Night) scaled them down to a faint, washed-out texture.
    """
    ys, yc = luminance(style)[:, :1], luminance(content)[:, :1]
    matched = ys - ys.mean() + yc.mean()
    return matched.clamp(0, 1).expand(-1, 3, -1, -1).contiguous()


def combine_luminance(stylised_grey: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Output's Y with the content's I and Q (content resized to match beforehand)."""
    yiq = rgb_to_yiq(content)
    yiq = torch.cat([rgb_to_yiq(stylised_grey)[:, :1], yiq[:, 1:]], dim=1)
    return yiq_to_rgb(yiq).clamp(0, 1)


def _pixels(image: torch.Tensor) -> torch.Tensor:
    """(1, 3, H, W) -> (3, H*W) in float64 on the CPU: MPS has no float64, and the pictures
    are small enough to move."""
    return image.detach().reshape(3, -1).cpu().double()  # moved, then converted (see losses._float64)


def colour_stats(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The colour mean (3, 1) and covariance (3, 3) of an image."""
    pixels = _pixels(image)
    return pixels.mean(1, keepdim=True), torch.cov(pixels)


def mixture_stats(images: Sequence[torch.Tensor], weights: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """The colour mean and covariance of the images' pixels pooled, each image counting by its
    weight (not by its size): the palette of several paintings blended."""
    total = float(sum(weights))
    mean, second = torch.zeros(3, 1, dtype=torch.float64), torch.zeros(3, 3, dtype=torch.float64)
    for image, weight in zip(images, weights):
        mu, cov = colour_stats(image)
        mean += weight / total * mu
        second += weight / total * (cov + mu @ mu.T)
    return mean, second - mean @ mean.T


def match_histogram(source: torch.Tensor, reference: torch.Tensor, mode: str = "eigen") -> torch.Tensor:
    """Give `source` the colour mean and covariance of `reference`.

    x' = A (x - μs) + μr with A Σs Aᵀ = Σr. `eigen` uses A = Σr^½ Σs^-½ (the
    paper's "image analogies" form, it preserves hue better); `cholesky` uses
    A = Lr Ls⁻¹.
    """
    return match_colour_stats(source, *colour_stats(reference), mode=mode)


def in_palette(image: torch.Tensor, paintings: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """`image` in the paintings' colours: its colour mean and covariance made those of the
    paintings (blended by their weights). The start of a run with `init` palette."""
    return match_colour_stats(image, *mixture_stats(paintings, weights))


def match_colour_stats(source: torch.Tensor, mu_r: torch.Tensor, cov_r: torch.Tensor, mode: str = "eigen") -> torch.Tensor:
    """match_histogram, given the reference's colour mean and covariance (colour_stats)."""
    s = _pixels(source)
    mu_s = s.mean(1, keepdim=True)
    eye = torch.eye(3, dtype=s.dtype) * 1e-5
    cov_s = torch.cov(s) + eye
    cov_r = cov_r + eye
    if mode == "cholesky":
        a = torch.linalg.cholesky(cov_r) @ torch.linalg.inv(torch.linalg.cholesky(cov_s))
    elif mode == "eigen":
        a = _sym_power(cov_r, 0.5) @ _sym_power(cov_s, -0.5)
    else:
        raise ValueError(f"unknown histogram matching mode {mode!r}")
    out = a @ (s - mu_s) + mu_r
    return out.reshape(source.shape).to(source.device, source.dtype).clamp(0, 1)


def _sym_power(matrix: torch.Tensor, power: float) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(matrix)
    return (vecs * vals.clamp_min(1e-12).pow(power)) @ vecs.T
