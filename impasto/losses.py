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

The features come as the network made them: in its mixed-precision dtype (bf16, fp16) and
its memory layout (channels-last on CPU and CUDA). Every loss computes in fp32 whatever they
come in (bf16's Gram difference from one bf16 product that rounds the difference, not the
matrix: _Reference.bf16_offset), and hands its gradient back in their own dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, cast

import torch

EPS = 1e-8

@dataclass
class Stats:
    """First and second moments of one layer's features over pixels."""

    mean: torch.Tensor  # (C,)
    moment: torch.Tensor  # (C, C), E[f fᵀ]

    @property
    def cov(self) -> torch.Tensor:
        return self.moment - torch.outer(self.mean, self.mean)


def _flatten(features: torch.Tensor) -> torch.Tensor:
    """(1, C, H, W) -> (C, H*W), a view in either layout: of a channels-last map it is the
    transpose of a contiguous (H*W, C) matrix, which the products take as it is (a copy of
    conv1_1's map to the standard layout, and its gradient's back, cost ~20 ms an iteration)."""
    return features.flatten(2)[0]


def _wide(x: torch.Tensor) -> torch.Tensor:
    """`x` in fp32, or as it is in float64: the precision every loss computes in."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


# Pixels a time in the moments' forward pass on a CPU: an fp32 copy of 8192 x C values stays in
# cache, where one of conv1_1's whole 512 px map goes through memory (14 ms against 25 here). A
# GPU takes the map whole: its memory is fast, and each chunk would cost kernel launches.
MOMENT_CHUNK = 8192


class _Moments(torch.autograd.Function):
    """The mean and the second moment E[f fᵀ] of (1, C, H, W) features over pixels, in fp32
    (float64 for float64), for features in any dtype and layout.

    The features of a mixed-precision network come in as they are: converting each map to fp32
    and to the standard layout for the losses, and each gradient back, took ~20% of a bf16
    iteration at 512 px (benchmarks/HISTORY.md, session 22). The forward pass upcasts the pixels
    a chunk at a time instead, since the loss compares the moment with its target more finely
    than bf16 rounds. The gradient: _moments_gradient.
    """

    @staticmethod
    def forward(ctx: Any, features: torch.Tensor, reference: Optional["_Reference"] = None, with_mean: bool = True) -> tuple[Optional[torch.Tensor], torch.Tensor]:
        ctx.set_materialize_grads(False)  # a caller may use the moment alone, or the mean alone
        ctx.save_for_backward(features)
        return _moments(features, reference, with_mean)

    @staticmethod
    def backward(ctx: Any, grad_mean: Optional[torch.Tensor], grad_moment: Optional[torch.Tensor]) -> tuple[Optional[torch.Tensor], None, None]:
        (features,) = ctx.saved_tensors
        n = _flatten(features).shape[1]
        both = None if grad_moment is None else (grad_moment + grad_moment.T) / n
        spread = None if grad_mean is None else grad_mean / n
        return _moments_gradient(features, both, spread), None, None


def _moments(features: torch.Tensor, reference: Optional["_Reference"], with_mean: bool) -> tuple[Optional[torch.Tensor], torch.Tensor]:
    """_Moments' forward pass: (the mean or None, E[f fᵀ], less `reference`'s moment if given)."""
    pixels = _flatten(features).T  # (N, C): contiguous for a channels-last map
    n, channels = pixels.shape
    if reference is not None and pixels.dtype == torch.bfloat16:
        moment = reference.bf16_offset(pixels)
        mean = pixels.sum(0, dtype=torch.float32) / n if with_mean else None
        return mean, moment
    total = _wide(pixels.new_zeros(channels))
    moment = _wide(pixels.new_zeros(channels, channels))
    size = MOMENT_CHUNK if pixels.device.type == "cpu" else max(1, n)
    ones = _wide(pixels.new_ones(min(size, n)))
    for chunk in pixels.split(size):
        wide = _wide(chunk)
        moment.addmm_(wide.T, wide)
        if with_mean:
            total.addmv_(wide.T, ones[: len(wide)])  # BLAS's sum: 1-2 ms less than sum() at conv1_1
    moment /= n
    return (total / n if with_mean else None), (moment if reference is None else moment - reference.moment)


def _moments_gradient(
    features: torch.Tensor, both: Optional[torch.Tensor], spread: Optional[torch.Tensor], into: Optional[torch.Tensor] = None
) -> Optional[torch.Tensor]:
    """The features' gradient from `both` (C, C, symmetric: the moment's gradient plus its
    transpose, over the pixel count) and `spread` (C: the mean's, over the pixel count), in the
    features' dtype and layout; or, given `into` (a gradient of the features' shape), added to
    it in place and `into` returned. Autograd would differentiate f fᵀ as two products (one per
    operand); it is symmetric, so its gradient is one, `both` f, taken in bf16 for bf16 features
    (accumulating in fp32) at about half fp32's cost, being rounded to bf16 on its way back into
    the network anyway; fp16's is taken in fp32, and so is any with a mean's (a shifted Gram,
    W2): bf16's product, rounded before the mean's part is added, came out 2.5x as far off."""
    f = _flatten(features)
    work = torch.bfloat16 if f.dtype == torch.bfloat16 and spread is None else torch.promote_types(f.dtype, torch.float32)
    if into is not None:
        if both is None:
            return into
        if spread is None and into.dtype == work:
            # The product adds itself to `into` (in fp32, rounded once): no gradient of the
            # map's size is made and then added, a pass through memory each (conv1_1's map is
            # 32 MB in bf16 at 512 px).
            g = _flatten(into)
            both = both.to(work)
            if g.stride(1) == 1:
                g.addmm_(both, f.to(work))
            else:  # channels-last: (H*W, C) rows
                g.T.addmm_(f.T.to(work), both)
            return into
        return into.add_(cast(torch.Tensor, _moments_gradient(features, both, spread)))
    grad: Optional[torch.Tensor] = None
    if both is not None:
        both = both.to(work)
        # The product whose result has the features' own layout, so the network's
        # gradients add up without a reorder.
        grad = both @ f.to(work) if f.stride(1) == 1 else (f.T.to(work) @ both).T
    if spread is not None:
        spread = spread[:, None].to(work)
        grad = spread.expand_as(f) if grad is None else grad + spread
    return None if grad is None else grad.to(features.dtype).reshape(features.shape)


class _Reference:
    """A target moment that E[f fᵀ] is compared with, and what bf16 products need of it for each
    pixel count (each scale's own), made once rather than at every call (~1-2 ms an iteration)."""

    def __init__(self, moment: torch.Tensor) -> None:
        self.moment = moment
        self._splits: dict[tuple[int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def bf16_offset(self, pixels: torch.Tensor) -> torch.Tensor:
        """E[f fᵀ] - the moment in fp32 for bf16 pixels (N, C), from one bf16 product.

        A bf16 product sums in fp32 but rounds its result to bf16, 3 significant digits: near a
        match the Gram loss's difference is a small part of the matrix, and would drown in that
        rounding. So the product subtracts the reference itself before it rounds (oneDNN's addmm
        adds its bf16 input in fp32, which tests/test_losses.py checks; cuBLAS's computes in fp32
        too, not measured here), and what the reference lost to bf16 is taken off after in fp32:
        the difference comes out to bf16's precision *of the difference*. The reference's bf16
        part carries the product's error at 2⁻¹⁸ of the matrix at worst, and the product costs a
        sixth of the fp32 one's (~6 ms against ~35 for a 512 px iteration's five layers here).
        """
        n = pixels.shape[0]
        key = (n, pixels.device)
        if key not in self._splits:
            scaled = self.moment.to(pixels.device) * n
            high = scaled.to(torch.bfloat16)
            self._splits[key] = (-high, (high.float() - scaled) / n)
        negative_high, rest = self._splits[key]
        return torch.add(rest, torch.addmm(negative_high, pixels.T, pixels).float(), alpha=1 / n)


# (top, bottom, left, right) pixels of a map that a loss leaves out.
Crop = tuple[int, int, int, int]


def crop_map(features: torch.Tensor, crop: Optional[Crop]) -> torch.Tensor:
    """A view of a (..., H, W) map without its `crop` border (all of it for None)."""
    if crop is None:
        return features
    top, bottom, left, right = crop
    h, w = features.shape[-2:]
    return features[..., top : h - bottom, left : w - right]


class _GramDistance(torch.autograd.Function):
    """|E[f fᵀ] - reference|² / scale, the unshifted, unmasked Gram loss, as one node: the
    difference is kept for the backward pass, which is then one product (the difference is
    symmetric) instead of autograd's chain of a square, a sum, a transpose and three scalings of
    C x C matrices, each ~0.1 ms at the 512-channel layers.

    With `relu`, the node is also the ReLU that follows the layer in the network, and returns
    (the loss, relu(f)): the map's two gradients, the loss's and the network's through the ReLU,
    then meet inside this node's backward pass, the product adding itself to the ReLU's gradient,
    instead of autograd making each at the map's size and adding them (~10 ms of a 512 px
    iteration here, 6%; benchmarks/README.md, session 26). Else it returns (the loss, None).

    With `crop` (top, bottom, left, right pixels), the loss is the map's without that border
    (a tile's edges, tiles.style_margins), and the ReLU still all of it."""

    @staticmethod
    def forward(
        ctx: Any, features: torch.Tensor, reference: _Reference, scale: torch.Tensor, relu: bool = False, crop: Optional[Crop] = None
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        ctx.set_materialize_grads(False)  # the ReLU's output may take no part in the loss
        ctx.crop = crop
        _, diff = _moments(crop_map(features, crop), reference, with_mean=False)
        ctx.save_for_backward(features, diff, scale)
        flat = diff.reshape(-1)
        return torch.dot(flat, flat) / scale, torch.relu(features) if relu else None

    @staticmethod
    def backward(ctx: Any, grad: Optional[torch.Tensor], grad_relu: Optional[torch.Tensor]) -> tuple[Optional[torch.Tensor], None, None, None, None]:
        features, diff, scale = ctx.saved_tensors
        inner = crop_map(features, ctx.crop)
        n = inner[0, 0].numel()  # its pixels (a sound's map has one axis, a picture's two)
        # d|D|²/dM = 2D, and the moment's gradient plus its transpose is twice that again.
        both = None if grad is None else diff * (4 * grad / (scale * n))
        if grad_relu is None:
            if ctx.crop is None or both is None:
                return _moments_gradient(features, both, None), None, None, None, None
            whole = torch.zeros_like(features)
            crop_map(whole, ctx.crop).copy_(cast(torch.Tensor, _moments_gradient(inner, both, None)))
            return whole, None, None, None, None
        into = torch.ops.aten.threshold_backward(grad_relu, features, 0)
        if not (into.is_contiguous() or into.is_contiguous(memory_format=torch.channels_last)):
            into = into.contiguous()  # the product writes into it through a (C, H*W) view
        if ctx.crop is None or both is None:
            return _moments_gradient(features, both, None, into), None, None, None, None
        # The crop's gradient, made then added: a crop of `into` is no (C, H*W) view to write through.
        crop_map(into, ctx.crop).add_(cast(torch.Tensor, _moments_gradient(inner, both, None)))
        return into, None, None, None, None


def _pixel_weights(f: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A (H, W) mask as (1, H*W) weights summing to 1 over the pixels of `f` (C, H*W)."""
    w = mask.reshape(1, -1).to(f.dtype)
    return w / w.sum().clamp_min(EPS)


def feature_stats(features: torch.Tensor, mask: Optional[torch.Tensor] = None) -> Stats:
    """Mean and second moment, optionally weighted by a (H, W) mask in [0, 1]."""
    if mask is None:
        return Stats(*_Moments.apply(features))  # type: ignore[misc]  # the mean is there with_mean
    f = _wide(_flatten(features))
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
    f = _wide(_flatten(features)) + shift
    return (f @ f.T) / f.shape[1]


def gram_from_stats(stats: Stats, shift: float = 0.0) -> torch.Tensor:
    """Shifted Gram matrix from the moments (Novak & Nikulin 2016's shift, s = -1 in the paper)."""
    if shift == 0.0:
        return stats.moment
    m = stats.mean
    return stats.moment + shift * (m[:, None] + m[None, :]) + shift * shift


class _SquaredError(torch.autograd.Function):
    """mean(w (f - t)²) in fp32 (float64 for float64) for features in any dtype and layout, its
    gradient handed back in theirs. Autograd's chain for the same (a subtraction, a square, a
    mean, then the gradient's cast) took 9-13 ms of a bf16 512 px iteration at conv4_2 alone,
    against ~2 here: one pass each way, and no intermediate of the features' size kept."""

    @staticmethod
    def forward(ctx: Any, features: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor]) -> torch.Tensor:
        diff = _wide(features) - target  # in the features' layout: so is their gradient
        weighted = diff if weight is None else diff * weight
        ctx.save_for_backward(weighted)
        ctx.dtype = features.dtype
        return (weighted * diff).sum() / diff.numel() if weight is not None else torch.linalg.vector_norm(diff).square() / diff.numel()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (weighted,) = ctx.saved_tensors
        return (weighted * (2 * grad / weighted.numel())).to(ctx.dtype), None, None


def content_loss(
    features: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor] = None, energy: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Squared feature error relative to the target's energy (`energy`, E[t²], if the caller
    keeps it: a pass over the target less per call); `weight` (broadcast over the features)
    scales it pixel by pixel."""
    energy = target.pow(2).mean() if energy is None else energy
    return _SquaredError.apply(features, target, weight) / (energy + EPS)


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


class FusableLoss:
    """The unshifted, unmasked Gram loss (_GramDistance), which can also be computed as part of
    the ReLU after its layer: `with_relu(f)` returns (the loss, relu(f)) from one autograd node."""

    def __init__(self, reference: "_Reference", scale: torch.Tensor, crop: Optional[Crop] = None) -> None:
        self._reference, self._scale, self._crop = reference, scale, crop

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        return _GramDistance.apply(features, self._reference, self._scale, False, self._crop)[0]

    def with_relu(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _GramDistance.apply(features, self._reference, self._scale, True, self._crop)

    def cropped(self, crop: Crop) -> "FusableLoss":
        """The same loss of the map without `crop` (top, bottom, left, right pixels)."""
        return FusableLoss(self._reference, self._scale, crop)


def gram_loss(target: Stats, shift: float = 0.0, mask: Optional[torch.Tensor] = None) -> StyleLossFn:
    """Gatys et al. 2015: squared distance of Gram matrices."""
    target_gram = gram_from_stats(target, shift)
    scale = target_gram.pow(2).sum() + EPS
    reference = _Reference(target.moment)
    if mask is None and shift == 0.0:
        return FusableLoss(reference, scale)

    def loss(features: torch.Tensor) -> torch.Tensor:
        if mask is None:
            # The difference from the target as one quantity, so that a mixed-precision network's
            # features get it to bf16's precision of the difference, not of the matrix
            # (_Reference.bf16_offset). Shifted: E[(f+s)(f+s)ᵀ] - its target is the moments'
            # difference plus s (Δμ 1ᵀ + 1 Δμᵀ).
            mean, diff = _Moments.apply(features, reference, True)
            dm = mean - target.mean
            diff = diff + shift * (dm[:, None] + dm[None, :])
        else:
            diff = gram_from_stats(feature_stats(features, mask), shift) - target_gram
        return diff.pow(2).sum() / scale

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
            f = _wide(f)
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
        f = _wide(_flatten(features))
        if mask is None:
            mean = f.mean(dim=1)
            var = f.var(dim=1, unbiased=False)
        else:
            stats = feature_stats(features, mask)
            mean, var = stats.mean, stats.cov.diagonal()
        std = var.clamp_min(0).add(EPS).sqrt()
        return ((mean - target.mean).pow(2).sum() + (std - target_std).pow(2).sum()) / scale

    return loss


# The style losses whose passes a CUDA graph can record (optimize.uses_cuda_graph): W2's
# eigendecomposition reads its convergence on the host.
CAPTURABLE_STYLE_LOSSES = ("gram", "meanstd")


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
    return _TotalVariation.apply(image)


class _TotalVariation(torch.autograd.Function):
    """tv_loss as one node: autograd's chain (two differences of shifted views, squares, means,
    then zero-padded copies of each gradient added up) took 3.2 ms forward and back for a 512 px
    picture here, this 1.1 (benchmarks/README.md, session 26)."""

    @staticmethod
    def forward(ctx: Any, image: torch.Tensor) -> torch.Tensor:
        dx = image[..., :, 1:] - image[..., :, :-1]
        dy = image[..., 1:, :] - image[..., :-1, :]
        ctx.save_for_backward(dx, dy)
        ctx.shape = image.shape
        return torch.linalg.vector_norm(dx).square() / dx.numel() + torch.linalg.vector_norm(dy).square() / dy.numel()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        dx, dy = ctx.saved_tensors
        out = dx.new_zeros(ctx.shape)
        gx, gy = dx * (2 * grad / dx.numel()), dy * (2 * grad / dy.numel())
        out[..., :, 1:] += gx
        out[..., :, :-1] -= gx
        out[..., 1:, :] += gy
        out[..., :-1, :] -= gy
        return out


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
    a, b = _wide(_flatten(shallow)), _wide(_flatten(align_to(deep, shallow)))
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
