"""Content, style and TV losses against hand-computed values and their defining properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from impasto import losses as L
from impasto.settings import STYLE_LOSSES

from conftest import FAST_STYLE_LAYERS


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# Two channels over 2x2 pixels: [1, 2, 3, 4] and [0, 1, 0, 1].
TINY = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 0.0, 1.0]]).reshape(1, 2, 2, 2)


def test_gram_hand_computed():
    # E[f fᵀ]: (1+4+9+16)/4, (0+2+0+4)/4, (0+1+0+1)/4
    expected = torch.tensor([[7.5, 1.5], [1.5, 0.5]])
    assert torch.allclose(L.gram(TINY), expected)
    assert torch.allclose(L.gram_from_stats(L.feature_stats(TINY)), expected)


def test_shifted_gram_hand_computed():
    # shift -1: [0, 1, 2, 3] and [-1, 0, -1, 0] -> (0+1+4+9)/4, (0+0-2+0)/4, (1+0+1+0)/4
    expected = torch.tensor([[3.5, -0.5], [-0.5, 0.5]])
    assert torch.allclose(L.gram(TINY, shift=-1.0), expected)
    assert torch.allclose(L.gram_from_stats(L.feature_stats(TINY), shift=-1.0), expected)


def test_feature_stats_hand_computed():
    stats = L.feature_stats(TINY)
    assert torch.allclose(stats.mean, torch.tensor([2.5, 0.5]))
    # population covariance: var([1,2,3,4]) = 1.25, var([0,1,0,1]) = 0.25, cov = 1.5 - 2.5*0.5 = 0.25
    assert torch.allclose(stats.cov, torch.tensor([[1.25, 0.25], [0.25, 0.25]]))


@pytest.mark.parametrize("shift", [-1.0, 0.5, 3.0])
def test_shifted_gram_from_stats_equals_gram_of_shifted_features(shift):
    f = torch.randn(1, 5, 6, 7, generator=gen(0), dtype=torch.float64)
    from_stats = L.gram_from_stats(L.feature_stats(f), shift)
    assert torch.allclose(from_stats, L.gram(f + shift), atol=1e-10)
    assert torch.allclose(from_stats, L.gram(f, shift=shift), atol=1e-10)


def test_content_loss_hand_value_and_zero_for_identical():
    target = torch.ones(1, 1, 2, 2)
    features = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2)
    # mean((0, 1, 2, 3)²) / mean(1²) = 14 / 4
    assert L.content_loss(features, target).item() == pytest.approx(3.5, rel=1e-6)
    f = torch.rand(1, 8, 5, 5, generator=gen(1))
    assert L.content_loss(f, f.clone()).item() == 0.0
    # A pixel weight scales each pixel's error: only the last pixel counts, 9 / 4.
    weight = torch.tensor([0.0, 0.0, 0.0, 1.0]).reshape(2, 2)
    assert L.content_loss(features, target, weight).item() == pytest.approx(2.25, rel=1e-6)
    assert L.content_loss(features, target, torch.ones(2, 2)).item() == pytest.approx(3.5, rel=1e-6)


def test_tv_loss_hand_value_and_zero_on_constant():
    image = torch.tensor([[0.0, 1.0], [2.0, 4.0]]).reshape(1, 1, 2, 2)
    # horizontal diffs 1, 2 -> mean square 2.5; vertical diffs 2, 3 -> 6.5
    assert L.tv_loss(image).item() == pytest.approx(9.0)
    assert L.tv_loss(torch.full((1, 3, 7, 5), 0.3)).item() == 0.0


def test_tv_loss_gradient_is_the_formulas():
    # tv_loss is one node with a hand-written backward pass (_TotalVariation).
    image = torch.rand(2, 3, 6, 5, generator=gen(0), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(L.tv_loss, (image,))
    L.tv_loss(image).backward()
    ours, image.grad = image.grad, None
    x = image
    ((x[..., :, 1:] - x[..., :, :-1]).pow(2).mean() + (x[..., 1:, :] - x[..., :-1, :]).pow(2).mean()).backward()
    assert torch.allclose(ours, image.grad)


@pytest.mark.parametrize("kind", STYLE_LOSSES)
def test_style_loss_zero_for_same_statistics_positive_otherwise(kind):
    f = torch.rand(1, 4, 6, 6, generator=gen(2), dtype=torch.float64)
    loss = L.make_style_loss(kind, L.feature_stats(f))
    # Same pixels in other places: statistics are orderless, so still a perfect match.
    shuffled = f.flatten(2)[..., torch.randperm(36, generator=gen(3))].reshape_as(f)
    assert loss(f).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(shuffled).item() == pytest.approx(0.0, abs=1e-6)
    other = torch.rand(1, 4, 6, 6, generator=gen(4), dtype=torch.float64) * 2.0 + 0.5
    assert loss(other).item() > 0.05


def test_meanstd_ignores_channel_correlation_gram_and_w2_do_not():
    base = torch.randn(1, 1, 8, 8, generator=gen(5), dtype=torch.float64)
    correlated = torch.cat([base, base + 1.0], dim=1)
    # Shuffle the second channel alone: per-channel mean and std unchanged, correlation gone.
    second = (base + 1.0).flatten()[torch.randperm(64, generator=gen(6))].reshape_as(base)
    decorrelated = torch.cat([base, second], dim=1)
    target = L.feature_stats(correlated)
    assert L.meanstd_loss(target)(decorrelated).item() == pytest.approx(0.0, abs=1e-6)
    assert L.gram_loss(target)(decorrelated).item() > 1e-2
    assert L.w2_loss(target)(decorrelated).item() > 1e-2


# Rows 2-4 of a 4x4 Hadamard matrix: zero-mean and mutually orthogonal over 4 pixels.
HADAMARD_ROWS = torch.tensor([[1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], dtype=torch.float64)


def independent_features(means, stds) -> torch.Tensor:
    """3 channels over 2x2 pixels with exactly these means and a diagonal covariance diag(std²)."""
    f = torch.tensor(means, dtype=torch.float64)[:, None] + torch.tensor(stds, dtype=torch.float64)[:, None] * HADAMARD_ROWS
    return f.reshape(1, 3, 2, 2)


def test_w2_matches_closed_form_for_diagonal_covariances():
    mu1, sd1 = [0.5, -1.0, 2.0], [1.0, 0.3, 2.0]
    mu2, sd2 = [1.5, 0.0, 1.0], [0.5, 1.3, 0.2]
    target = L.feature_stats(independent_features(mu2, sd2))
    assert torch.allclose(target.cov, torch.diag(torch.tensor(sd2, dtype=torch.float64) ** 2))  # the construction holds
    w2_squared = sum((a - b) ** 2 for a, b in zip(mu1, mu2)) + sum((a - b) ** 2 for a, b in zip(sd1, sd2))
    # The loss is divided by the size of its target, E|μₜ|² + tr Σₜ.
    target_size = sum(m * m for m in mu2) + sum(s * s for s in sd2)
    value = L.w2_loss(target)(independent_features(mu1, sd1)).item()
    assert value * target_size == pytest.approx(w2_squared, rel=1e-6)


def test_w2_is_symmetric_for_general_covariances():
    # W2 is a distance: swapping the roles of output and target changes only the normalisation.
    a = torch.randn(1, 5, 6, 6, generator=gen(7), dtype=torch.float64)
    mix = torch.randn(5, 5, generator=gen(8), dtype=torch.float64)
    b = torch.einsum("ij,bjhw->bihw", mix, torch.randn(1, 5, 6, 6, generator=gen(9), dtype=torch.float64)) + 0.7
    sa, sb = L.feature_stats(a), L.feature_stats(b)

    def size(s):
        return (s.mean.pow(2).sum() + torch.trace(s.cov)).item()

    a_to_b = L.w2_loss(sb)(a).item() * size(sb)
    b_to_a = L.w2_loss(sa)(b).item() * size(sa)
    assert a_to_b > 0.1
    assert a_to_b == pytest.approx(b_to_a, rel=1e-6)


@pytest.mark.parametrize("masked", [False, True])
def test_w2_with_fewer_pixels_than_channels_matches_the_full_formula(masked):
    # Deep layers at coarse scales have fewer pixels than channels; the loss then takes
    # a smaller eigenproblem, which must give the same value and gradient.
    target = L.feature_stats(torch.randn(1, 12, 5, 5, generator=gen(3), dtype=torch.float64) + 0.3)
    mask = torch.rand(2, 3, generator=gen(4), dtype=torch.float64) if masked else None
    x = (torch.randn(1, 12, 2, 3, generator=gen(5), dtype=torch.float64) + 0.5).requires_grad_()
    value = L.w2_loss(target, mask)(x)
    value.backward()
    fast_grad = x.grad.clone()

    x.grad = None
    stats = L.feature_stats(x, mask)
    root = L.sqrtm_psd(target.cov)
    size = target.mean.pow(2).sum() + torch.trace(target.cov)
    full = ((stats.mean - target.mean).pow(2).sum() + torch.trace(stats.cov) + torch.trace(target.cov)
            - 2 * L.trace_sqrtm_psd(root @ stats.cov @ root)) / size
    full.backward()
    # Both routes floor the zero eigenvalues before the square root (seven of the 12x12
    # matrix's, one of the 6x6's after centring), each a bias of a few parts in a million, so
    # both are checked against the exact value.
    vals = torch.linalg.eigvalsh((root @ stats.cov @ root).detach())
    exact = ((stats.mean - target.mean).pow(2).sum() + torch.trace(stats.cov) + torch.trace(target.cov)
             - 2 * vals.clamp_min(0).sqrt().sum()) / size
    assert value.item() > 0.05
    assert value.item() == pytest.approx(exact.item(), rel=1e-5)
    assert full.item() == pytest.approx(exact.item(), rel=1e-4)
    assert torch.allclose(fast_grad, x.grad, rtol=1e-6, atol=1e-9)


def random_psd(n: int, rank: int, seed: int) -> torch.Tensor:
    b = torch.randn(n, rank, generator=gen(seed), dtype=torch.float64)
    return b @ b.T


@pytest.mark.parametrize("rank", [6, 3])
def test_sqrtm_psd_squares_back_and_matches_numpy(rank):
    a = random_psd(6, rank, seed=10 + rank)
    root = L.sqrtm_psd(a)
    assert torch.allclose(root @ root, a, atol=1e-8)
    assert torch.allclose(root, root.T)
    vals, vecs = np.linalg.eigh(a.numpy())
    expected = vecs @ np.diag(np.sqrt(np.clip(vals, 0, None))) @ vecs.T
    assert np.allclose(root.numpy(), expected, atol=1e-7)


def test_trace_sqrtm_psd_equals_trace_of_sqrtm():
    a = random_psd(6, 6, seed=30)
    assert L.trace_sqrtm_psd(a).item() == pytest.approx(torch.trace(L.sqrtm_psd(a)).item(), rel=1e-8)


def test_trace_sqrtm_gradient_is_finite_with_repeated_eigenvalues():
    # d tr(√A)/dA = ½ A^-½; for A = 2I every eigenvalue is repeated.
    a = (2.0 * torch.eye(4, dtype=torch.float64)).requires_grad_(True)
    L.trace_sqrtm_psd(a).backward()
    assert torch.allclose(a.grad, torch.eye(4, dtype=torch.float64) * 0.5 / np.sqrt(2.0))
    b = random_psd(5, 5, seed=20).requires_grad_(True)
    L.trace_sqrtm_psd(b).backward()
    assert torch.allclose(b.grad, 0.5 * torch.linalg.inv(L.sqrtm_psd(b.detach())), atol=1e-6)


def test_blend_stats_is_the_mixture():
    a = torch.randn(1, 3, 2, 3, generator=gen(11), dtype=torch.float64)  # 6 pixels
    b = torch.randn(1, 3, 1, 4, generator=gen(12), dtype=torch.float64) + 2.0  # 4 pixels
    together = torch.cat([a.flatten(2), b.flatten(2)], dim=2).reshape(1, 3, 1, 10)
    pooled = L.feature_stats(together)
    blended = L.blend_stats([L.feature_stats(a), L.feature_stats(b)], [6, 4])
    assert torch.allclose(blended.mean, pooled.mean)
    assert torch.allclose(blended.moment, pooled.moment)
    assert torch.allclose(blended.cov, pooled.cov)


def test_masked_stats_are_the_stats_of_the_masked_pixels():
    f = torch.randn(1, 4, 5, 6, generator=gen(13), dtype=torch.float64)
    mask = (torch.rand(5, 6, generator=gen(14)) > 0.5).double()
    selected = f.flatten(2)[..., mask.flatten().bool()].reshape(1, 4, 1, -1)
    masked, expected = L.feature_stats(f, mask), L.feature_stats(selected)
    assert torch.allclose(masked.mean, expected.mean)
    assert torch.allclose(masked.moment, expected.moment)


@pytest.mark.parametrize("kind", STYLE_LOSSES)
def test_masked_style_loss_ignores_pixels_outside_the_mask(kind):
    f = torch.rand(1, 4, 6, 6, generator=gen(15), dtype=torch.float64)
    target = L.feature_stats(torch.rand(1, 4, 6, 6, generator=gen(16), dtype=torch.float64) + 0.5)
    mask = torch.zeros(6, 6, dtype=torch.float64)
    mask[:, :3] = 1.0
    loss = L.make_style_loss(kind, target, mask=mask)
    changed = f.clone()
    changed[..., 3:] = 5.0  # outside the mask
    assert loss(changed).item() == pytest.approx(loss(f).item(), rel=1e-9)
    changed[..., :3] = 5.0  # inside the mask
    assert loss(changed).item() != pytest.approx(loss(f).item(), rel=1e-3)


@pytest.mark.parametrize("kind", STYLE_LOSSES)
def test_short_optimisation_lowers_style_loss(kind, shallow_extractor, style_array):
    style = torch.from_numpy(style_array).float().permute(2, 0, 1)[None]
    with torch.no_grad():
        targets = {k: L.feature_stats(v) for k, v in shallow_extractor(style).items() if k in FAST_STYLE_LAYERS}
    fns = {layer: L.make_style_loss(kind, stats) for layer, stats in targets.items()}
    image = torch.rand(1, 3, 40, 40, generator=gen(17)).requires_grad_(True)

    def style_loss() -> torch.Tensor:
        feats = shallow_extractor(image)
        return sum(fn(feats[layer]) for layer, fn in fns.items()) / len(fns)

    start = style_loss().item()
    optimizer = torch.optim.Adam([image], lr=0.03)
    for _ in range(20):
        optimizer.zero_grad()
        style_loss().backward()
        optimizer.step()
        with torch.no_grad():
            image.clamp_(0, 1)
    end = style_loss().item()
    assert start > 0.01
    assert end < 0.5 * start


@pytest.mark.parametrize("weighted", [False, True])
def test_content_loss_gradient_matches_plain_autograd(weighted):
    # content_loss has a hand-written backward; it must agree with the formula's.
    f = torch.randn(1, 5, 4, 3, dtype=torch.float64, requires_grad=True)
    target = torch.randn(1, 5, 4, 3, dtype=torch.float64)
    weight = torch.rand(1, 1, 4, 3, dtype=torch.float64) if weighted else None
    L.content_loss(f, target, weight).backward()
    ours = f.grad.clone()
    f.grad = None
    ((f - target).pow(2) * (1 if weight is None else weight)).mean().div(target.pow(2).mean() + L.EPS).backward()
    assert torch.allclose(ours, f.grad)
    assert torch.autograd.gradcheck(lambda x: L.content_loss(x, target, weight), (f.detach().requires_grad_(True),))


def test_feature_stats_gradient_matches_plain_autograd():
    # feature_stats uses a hand-written backward for f fᵀ; it must agree with autograd's.
    from impasto.losses import feature_stats

    f = torch.randn(1, 5, 4, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(5, 5, dtype=torch.float64)
    (feature_stats(f).moment * weight).sum().backward()
    ours = f.grad.clone()
    f.grad = None
    flat = f.reshape(5, -1)
    ((flat @ flat.T / flat.shape[1]) * weight).sum().backward()
    assert torch.allclose(ours, f.grad)
    assert torch.autograd.gradcheck(lambda x: feature_stats(x).moment, (f.detach().requires_grad_(True),))


@pytest.mark.parametrize("shift", [0.0, -1.0])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_gram_loss_and_its_gradient_match_the_formula_by_plain_autograd(layout, shift):
    # The unshifted loss is one autograd node with a hand-written backward pass (_GramDistance).
    torch.manual_seed(0)
    target = L.feature_stats(torch.rand(1, 6, 5, 4, dtype=torch.float64))
    loss_fn = L.gram_loss(target, shift)
    f = torch.randn(1, 6, 5, 4, dtype=torch.float64).contiguous(memory_format=layout).requires_grad_(True)
    loss_fn(f).backward()
    ours = f.grad.clone()
    f.grad = None
    flat = f.reshape(6, -1) + shift
    target_gram = L.gram_from_stats(target, shift)
    formula = ((flat @ flat.T / flat.shape[1] - target_gram) ** 2).sum() / (target_gram**2).sum()
    formula.backward()
    assert loss_fn(f.detach()).item() == pytest.approx(formula.item())
    assert torch.allclose(ours, f.grad)
    assert torch.autograd.gradcheck(loss_fn, (f.detach().clone().requires_grad_(True),))


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_the_gram_loss_computed_with_its_layers_relu_gives_the_loss_the_relu_and_their_summed_gradient(layout):
    # FusableLoss.with_relu: one node for the loss and the ReLU after the layer, whose backward
    # pass adds the loss's gradient into the ReLU's in place.
    torch.manual_seed(0)
    target = L.feature_stats(torch.rand(1, 6, 5, 4, dtype=torch.float64))
    loss_fn = L.gram_loss(target)
    assert isinstance(loss_fn, L.FusableLoss)
    f = torch.randn(1, 6, 5, 4, dtype=torch.float64).contiguous(memory_format=layout)
    downstream = torch.randn(1, 6, 5, 4, dtype=torch.float64)  # what the network after the ReLU makes of it

    def apart(x):
        return loss_fn(x) + (torch.relu(x) * downstream).sum()

    def together(x):
        loss, out = loss_fn.with_relu(x)
        return loss + (out * downstream).sum()

    a, b = f.clone().requires_grad_(True), f.clone().requires_grad_(True)
    apart(a).backward()
    together(b).backward()
    assert together(f).item() == pytest.approx(apart(f).item(), rel=1e-12)
    assert torch.allclose(a.grad, b.grad, rtol=1e-12, atol=1e-15)
    assert b.grad.is_contiguous(memory_format=layout)
    assert torch.equal(loss_fn.with_relu(f)[1], torch.relu(f))
    assert torch.autograd.gradcheck(together, (f.clone().requires_grad_(True),))
    # The ReLU's output alone, or the loss alone, takes part in what is differentiated.
    for use in (lambda x: (loss_fn.with_relu(x)[1] * downstream).sum(), lambda x: loss_fn.with_relu(x)[0]):
        assert torch.autograd.gradcheck(use, (f.clone().requires_grad_(True),))


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_a_cropped_gram_loss_is_the_loss_of_the_crop_with_or_without_its_relu(layout):
    # A tile's style loss leaves out the tile's shared edges (tiles.style_margins); inside the
    # layer's ReLU it must still give the ReLU all of the map.
    torch.manual_seed(1)
    target = L.feature_stats(torch.rand(1, 6, 7, 9, dtype=torch.float64))
    crop = (1, 2, 3, 0)  # top, bottom, left, right
    cropped = L.gram_loss(target).cropped(crop)
    f = torch.randn(1, 6, 7, 9, dtype=torch.float64).contiguous(memory_format=layout)
    downstream = torch.randn(1, 6, 7, 9, dtype=torch.float64)

    def reference(x):  # autograd's, of the crop as a view
        return L.gram_loss(target)(x[..., 1:5, 3:]) + (torch.relu(x) * downstream).sum()

    def together(x):
        loss, out = cropped.with_relu(x)
        return loss + (out * downstream).sum()

    assert cropped(f).item() == pytest.approx(L.gram_loss(target)(f[..., 1:5, 3:]).item(), rel=1e-12)
    a, b = f.clone().requires_grad_(True), f.clone().requires_grad_(True)
    reference(a).backward()
    together(b).backward()
    assert torch.allclose(a.grad, b.grad, rtol=1e-12, atol=1e-15)
    assert torch.autograd.gradcheck(together, (f.clone().requires_grad_(True),))
    assert torch.autograd.gradcheck(cropped, (f.clone().requires_grad_(True),))  # alone: zero outside the crop


def test_a_mixed_precision_gram_loss_with_its_relu_adds_the_two_gradients_no_less_exactly_than_autograd():
    # The loss's gradient is added into the ReLU's in fp32 (oneDNN's addmm on a bf16 output
    # accumulates in fp32) and rounded to bf16 once, where autograd adds two rounded gradients.
    torch.manual_seed(0)
    features = (torch.randn(1, 32, 24, 20) * 3).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    loss_fn = L.gram_loss(L.feature_stats(torch.rand(1, 32, 24, 20)))
    downstream = torch.randn(1, 32, 24, 20).to(torch.bfloat16)

    def gradient(x, together):
        x = x.clone().requires_grad_(True)
        loss, out = loss_fn.with_relu(x) if together else (loss_fn(x), torch.relu(x))
        (loss * 1e3 + (out * downstream.to(x.dtype)).double().sum()).backward()
        return x.grad.double()

    exact = gradient(features.double(), False)
    fused, apart = gradient(features, True), gradient(features, False)
    rounding = float((exact.to(torch.bfloat16).double() - exact).norm())
    assert float((fused - exact).norm()) <= float((apart - exact).norm())
    assert float((fused - exact).norm()) < 2 * rounding
    # fp16's gradient is taken in fp32 (_moments_gradient) and then added: as near as autograd's.
    half = features.to(torch.float16)
    exact = gradient(half.double(), False)
    fused, apart = gradient(half, True), gradient(half, False)
    rounding = float((exact.to(torch.float16).double() - exact).norm())
    assert float((fused - exact).norm()) < 2 * rounding and float((apart - exact).norm()) < 2 * rounding


@pytest.mark.parametrize("shift", [0.0, -1.0])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_mixed_precision_networks_features_score_as_in_fp32_with_their_gradient_in_their_own_dtype_and_layout(dtype, layout, shift):
    # The losses take a bf16 (fp16) network's features as they come, in its layout, not upcast.
    torch.manual_seed(0)
    features = torch.rand(1, 32, 24, 20).relu().to(dtype).contiguous(memory_format=layout)
    loss_fn = L.gram_loss(L.feature_stats(torch.rand(1, 32, 24, 20)), shift)
    low = features.clone().requires_grad_(True)
    value = loss_fn(low)
    value.backward()
    # fp16's moments are taken in fp32; bf16's difference from the target is rounded once to bf16
    # (losses._Reference.bf16_offset), which moves a sum of squares by at most 2⁻⁸ of itself.
    REL = 1e-5 if dtype == torch.float16 else 2**-8
    exact = features.double().contiguous().requires_grad_(True)  # the same values, float64, standard layout
    expected = loss_fn(exact)
    expected.backward()
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(expected.item(), rel=REL)
    assert low.grad.dtype == dtype and low.grad.is_contiguous(memory_format=layout)
    # About as close as the gradient's own trip back into the network rounds it.
    rounding = (exact.grad.to(dtype).double() - exact.grad).norm()
    assert float((low.grad.double() - exact.grad).norm()) < 2 * float(rounding)


@pytest.mark.parametrize("shift", [0.0, -1.0])
def test_bf16_features_near_their_target_read_the_small_gram_loss_and_its_gradient_as_float64_does(shift):
    # Near a match the difference of the Gram matrices is a small part of either; a bf16 product
    # rounded before the subtraction would read it hundreds of percent off.
    torch.manual_seed(0)
    channels, side = 64, 48
    base = torch.rand(1, channels, side, side).relu() * 30  # activations of Caffe's size
    features = base.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    near = features.double() * (1 + 1e-2 * torch.randn_like(base, dtype=torch.float64))
    loss_fn = L.gram_loss(L.feature_stats(near), shift)
    low = features.clone().requires_grad_(True)
    value = loss_fn(low)
    value.backward()
    exact = features.double().contiguous().requires_grad_(True)
    expected = loss_fn(exact)
    expected.backward()
    assert 0 < expected.item() < 1e-6  # nearer than any run ends (a default run: ~1e-2 a layer)
    assert value.item() == pytest.approx(expected.item(), rel=2**-8)
    cos = torch.nn.functional.cosine_similarity(low.grad.double().flatten(), exact.grad.flatten(), dim=0)
    assert cos > 0.999


def test_the_moments_of_a_map_larger_than_one_chunk_are_those_of_all_its_pixels():
    # The forward pass sums MOMENT_CHUNK pixels at a time: the last, partial chunk counts too.
    torch.manual_seed(0)
    side = int((L.MOMENT_CHUNK * 1.5) ** 0.5) + 1
    features = torch.rand(1, 6, side, side).contiguous(memory_format=torch.channels_last)
    stats = L.feature_stats(features)
    flat = features.double().reshape(6, -1)
    assert flat.shape[1] > L.MOMENT_CHUNK and flat.shape[1] % L.MOMENT_CHUNK
    assert torch.allclose(stats.mean.double(), flat.mean(dim=1), rtol=1e-5)
    assert torch.allclose(stats.moment.double(), flat @ flat.T / flat.shape[1], rtol=1e-5)
