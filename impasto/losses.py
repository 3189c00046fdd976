"""Content, style and total-variation losses.

Every style loss compares the current features with target *statistics*: the
per-channel mean and the uncentred second moment E[f fᵀ] of one layer. Those
two are linear in the pixels' distribution, so blending several styles is a
weighted sum of their statistics (the statistics of the mixture), and a mask
just weights the pixels they are averaged over.

Each term is divided by the size of its target, so a layer's loss is 0 when it
matches and about 1 when the output has nothing of the target. That makes the
weights mean the same thing for every layer, image size and weights file
(Caffe's 0-255 activations are ~100x torchvision's).
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence

import torch

from .errors import thread_value

EPS = 1e-8

# The dtype the network computed the features in, while the losses are built from their fp32 copies.
_computed_in = threading.local()


@contextlib.contextmanager
def features_computed_in(dtype: Optional[torch.dtype]) -> Iterator[None]:
    """Within it, the losses know their fp32 features hold no more than `dtype`'s precision (a bf16
    network's, upcast), so a Gram product's backward may run in bf16 (see _SelfProduct)."""
    with thread_value(_computed_in, "dtype", dtype):
        yield


@dataclass
class Stats:
    """First and second moments of one layer's features over pixels."""

    mean: torch.Tensor  # (C,)
    moment: torch.Tensor  # (C, C), E[f fᵀ]

    @property
    def cov(self) -> torch.Tensor:
        return self.moment - torch.outer(self.mean, self.mean)


def _flatten(features: torch.Tensor) -> torch.Tensor:
    # (1, C, H, W) -> (C, H*W)
    return features.reshape(features.shape[1], -1)


class _SelfProduct(torch.autograd.Function):
    """f fᵀ with a one-matmul backward.

    Autograd would differentiate f @ f.T as two products (one per operand); the
    result is symmetric, so the gradient is (g + gᵀ) f. The Gram products are
    ~20% of a bf16 iteration at 512 px, so this saves a few percent of every run.

    Features a bf16 network computed have that gradient in bf16 too: the product runs in bf16
    (accumulating in fp32), since its result is rounded to bf16 on its way back into the network
    anyway, at about half the cost of fp32's. The forward product stays fp32: the loss compares
    it with a target to a few parts in a thousand, finer than bf16 rounds.
    """

    @staticmethod
    def forward(ctx: Any, f: torch.Tensor) -> torch.Tensor:
        ctx.low = getattr(_computed_in, "dtype", None) == torch.bfloat16 and f.dtype == torch.float32
        ctx.save_for_backward(f.bfloat16() if ctx.low else f)  # exact: the values came from bf16
        return f @ f.T

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (f,) = ctx.saved_tensors
        if ctx.low:
            return ((grad + grad.T).bfloat16() @ f).float()
        return (grad + grad.T) @ f


def _pixel_weights(f: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A (H, W) mask as (1, H*W) weights summing to 1 over the pixels of `f` (C, H*W)."""
    w = mask.reshape(1, -1).to(f.dtype)
    return w / w.sum().clamp_min(EPS)


def feature_stats(features: torch.Tensor, mask: Optional[torch.Tensor] = None) -> Stats:
    """Mean and second moment, optionally weighted by a (H, W) mask in [0, 1]."""
    f = _flatten(features)
    if mask is None:
        n = f.shape[1]
        return Stats(f.mean(dim=1), _SelfProduct.apply(f) / n)
    fw = f * _pixel_weights(f, mask)
    return Stats(fw.sum(dim=1), fw @ f.T)


def blend_stats(stats: Sequence[Stats], weights: Sequence[float]) -> Stats:
    """Statistics of the mixture: the weighted mean of each moment."""
    total = float(sum(weights))
    mean = sum(w / total * s.mean for s, w in zip(stats, weights))
    moment = sum(w / total * s.moment for s, w in zip(stats, weights))
    return Stats(mean, moment)  # type: ignore[arg-type]


def gram(features: torch.Tensor, shift: float = 0.0) -> torch.Tensor:
    """Gram matrix normalised by the number of pixels: E[(f+s)(f+s)ᵀ]."""
    f = _flatten(features) + shift
    return (f @ f.T) / f.shape[1]


def gram_from_stats(stats: Stats, shift: float = 0.0) -> torch.Tensor:
    """Shifted Gram matrix from the moments (Novak & Nikulin 2016's shift, s = -1 in the paper)."""
    if shift == 0.0:
        return stats.moment
    m = stats.mean
    return stats.moment + shift * (m[:, None] + m[None, :]) + shift * shift


def content_loss(features: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Squared feature error relative to the target's energy; `weight` (broadcast over the
    features) scales it pixel by pixel."""
    error = (features - target).pow(2)
    if weight is not None:
        error = error * weight
    return error.mean() / (target.pow(2).mean() + EPS)


def _float64(matrix: torch.Tensor) -> torch.Tensor:
    """The matrix in float64, on the CPU where its device has no float64 (MPS)."""
    # Moved, then converted: one .to(device, dtype) from MPS is broken in some torch releases.
    return matrix.cpu().double() if matrix.device.type == "mps" else matrix.double()


def sqrtm_psd(matrix: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix by eigendecomposition."""
    vals, vecs = torch.linalg.eigh(_float64(matrix))
    root = (vecs * vals.clamp_min(0).sqrt()) @ vecs.T
    return root.to(matrix.device, matrix.dtype)


def trace_sqrtm_psd(matrix: torch.Tensor) -> torch.Tensor:
    """tr(sqrt(A)) = Σ sqrt(λᵢ). Eigenvalues only, so the gradient has no 1/(λᵢ-λⱼ) terms.

    Computed in float64: float32 loses the small eigenvalues of 512x512 covariances.
    """
    vals = torch.linalg.eigvalsh(_float64(matrix))
    floor = vals.detach().abs().max() * 1e-10 + 1e-12
    return vals.clamp_min(floor).sqrt().sum().to(matrix.device, matrix.dtype)


StyleLossFn = Callable[[torch.Tensor], torch.Tensor]


def gram_loss(target: Stats, shift: float = 0.0, mask: Optional[torch.Tensor] = None) -> StyleLossFn:
    """Gatys et al. 2015: squared distance of Gram matrices."""
    target_gram = gram_from_stats(target, shift)
    scale = target_gram.pow(2).sum() + EPS

    def loss(features: torch.Tensor) -> torch.Tensor:
        current = gram_from_stats(feature_stats(features, mask), shift)
        return (current - target_gram).pow(2).sum() / scale

    return loss


def w2_loss(target: Stats, mask: Optional[torch.Tensor] = None) -> StyleLossFn:
    """Squared Wasserstein-2 distance between Gaussian fits of the features.

    W2² = |μ-μₜ|² + tr(Σ) + tr(Σₜ) - 2 tr(sqrt(Σₜ^½ Σ Σₜ^½)).
    """
    target_cov = target.cov
    target_root = sqrtm_psd(target_cov)
    target_trace = torch.trace(target_cov)
    scale = target.mean.pow(2).sum() + target_trace + EPS

    def loss(features: torch.Tensor) -> torch.Tensor:
        f = _flatten(features)
        if f.shape[1] < f.shape[0]:
            # Fewer pixels than channels (the deep layers at the coarse scales): with
            # Σ = X Xᵀ for the weighted, centred features X (C, N), the non-zero
            # eigenvalues of R Σ R = (R X)(R X)ᵀ are those of (R X)ᵀ(R X), an N x N
            # matrix. Same value and gradient, and an eigendecomposition of 40x40
            # instead of 512x512 at conv5_1 of a 128 px scale; the C x C moment is
            # never formed.
            weights = torch.full_like(f[:1], 1.0 / f.shape[1]) if mask is None else _pixel_weights(f, mask)
            mean = (f * weights).sum(dim=1)
            x = (f - mean[:, None]) * weights.sqrt()
            rx = target_root @ x
            cross = trace_sqrtm_psd(rx.T @ rx)
            spread = x.pow(2).sum()
        else:
            stats = feature_stats(features, mask)
            mean, cov = stats.mean, stats.cov
            cross = trace_sqrtm_psd(target_root @ cov @ target_root)
            spread = torch.trace(cov)
        dist = (mean - target.mean).pow(2).sum() + spread + target_trace - 2 * cross
        return dist.clamp_min(0) / scale

    return loss


def meanstd_loss(target: Stats, mask: Optional[torch.Tensor] = None) -> StyleLossFn:
    """Per-channel mean and standard deviation (AdaIN's statistics, Huang & Belongie 2017)."""
    target_std = target.cov.diagonal().clamp_min(0).add(EPS).sqrt()
    scale = target.mean.pow(2).sum() + target_std.pow(2).sum() + EPS

    def loss(features: torch.Tensor) -> torch.Tensor:
        f = _flatten(features)
        if mask is None:
            mean = f.mean(dim=1)
            var = f.var(dim=1, unbiased=False)
        else:
            stats = feature_stats(features, mask)
            mean, var = stats.mean, stats.cov.diagonal()
        std = var.clamp_min(0).add(EPS).sqrt()
        return ((mean - target.mean).pow(2).sum() + (std - target_std).pow(2).sum()) / scale

    return loss


def make_style_loss(kind: str, target: Stats, shift: float = 0.0, mask: Optional[torch.Tensor] = None) -> StyleLossFn:
    if kind == "gram":
        return gram_loss(target, shift, mask)
    if kind == "w2":
        return w2_loss(target, mask)
    if kind == "meanstd":
        return meanstd_loss(target, mask)
    raise ValueError(f"unknown style loss {kind!r}")


def tv_loss(image: torch.Tensor) -> torch.Tensor:
    """Squared total variation: mean squared difference of neighbouring pixels."""
    dx = image[..., :, 1:] - image[..., :, :-1]
    dy = image[..., 1:, :] - image[..., :-1, :]
    return dx.pow(2).mean() + dy.pow(2).mean()


# -- chained inference (Novak & Nikulin 2016) ------------------------------------------------------
#
# Besides each layer's own correlations, the style can be described by the
# correlations between the features of two adjacent layers at the same place:
# E[f_a f_bᵀ], a (C_a, C_b) matrix, with the deeper layer's map resized to the
# shallower one's. Like the Gram matrix it is a pixel average, so blends and
# masks work the same way.


@dataclass
class CrossStats:
    """Means of two layers' features and their cross moment E[f_a f_bᵀ] over the shallower layer's pixels."""

    mean_a: torch.Tensor  # (C_a,)
    mean_b: torch.Tensor  # (C_b,)
    moment: torch.Tensor  # (C_a, C_b)


def align_to(features: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`features` resized (bilinear) to the spatial size of `like`."""
    if features.shape[-2:] == like.shape[-2:]:
        return features
    return torch.nn.functional.interpolate(features, size=tuple(like.shape[-2:]), mode="bilinear", align_corners=False)


def cross_stats(shallow: torch.Tensor, deep: torch.Tensor, mask: Optional[torch.Tensor] = None) -> CrossStats:
    """Cross moments of two layers; `mask` is (H, W) at the shallower layer's size."""
    a, b = _flatten(shallow), _flatten(align_to(deep, shallow))
    if mask is None:
        n = a.shape[1]
        return CrossStats(a.mean(dim=1), b.mean(dim=1), (a @ b.T) / n)
    w = mask.reshape(1, -1).to(a.dtype)
    total = w.sum().clamp_min(EPS)
    return CrossStats((a * w).sum(dim=1) / total, (b * w).sum(dim=1) / total, ((a * w) @ b.T) / total)


def blend_cross_stats(stats: Sequence[CrossStats], weights: Sequence[float]) -> CrossStats:
    total = float(sum(weights))
    parts = [(w / total, s) for s, w in zip(stats, weights)]
    return CrossStats(
        sum(w * s.mean_a for w, s in parts),  # type: ignore[arg-type]
        sum(w * s.mean_b for w, s in parts),  # type: ignore[arg-type]
        sum(w * s.moment for w, s in parts),  # type: ignore[arg-type]
    )


def cross_gram(stats: CrossStats, shift: float = 0.0) -> torch.Tensor:
    """E[(f_a+s)(f_b+s)ᵀ] from the moments, with the same shift as the Gram matrices."""
    if shift == 0.0:
        return stats.moment
    return stats.moment + shift * (stats.mean_a[:, None] + stats.mean_b[None, :]) + shift * shift


ChainLossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def chain_loss(target: CrossStats, shift: float = 0.0, mask: Optional[torch.Tensor] = None) -> ChainLossFn:
    """Squared distance of cross-layer Gram matrices, scaled like gram_loss (0 = match, ~1 = nothing of it)."""
    target_gram = cross_gram(target, shift)
    scale = target_gram.pow(2).sum() + EPS

    def loss(shallow: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
        current = cross_gram(cross_stats(shallow, deep, mask), shift)
        return (current - target_gram).pow(2).sum() / scale

    return loss
