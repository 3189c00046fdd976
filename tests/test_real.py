"""With the genuine VGG weights and real pictures from ../shared: the method actually works."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from impasto import Settings, Stylizer
from impasto import weights as W
from impasto.images import load_image, pil_to_tensor, resize_long_side, resize_tensor
from impasto.optimize import Objective, StyleInput

from conftest import REAL_IMAGES, REAL_WEIGHTS, require


@pytest.mark.parametrize("model", ["vgg16", "vgg19"])
def test_real_weights_are_found_in_a_folder_and_read_as_caffe(model, monkeypatch):
    path = require(REAL_WEIGHTS / f"{model}-caffe-features.safetensors")
    monkeypatch.setenv("IMPASTO_WEIGHTS", str(REAL_WEIGHTS))
    weights = W.load_for(model)
    assert weights.path == path
    assert (weights.model, weights.convention) == (model, "caffe")
    assert set(weights.state_dict) == {f"{i}.{kind}" for i in W.conv_indices(model) for kind in ("weight", "bias")}


def luminance_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.mean(1).flatten().numpy(), b.mean(1).flatten().numpy())[0, 1])


def test_starry_night_cat():
    weights = require(REAL_WEIGHTS / "vgg19-caffe-features.safetensors")
    photo, painting = require(REAL_IMAGES / "chelsea.png"), require(REAL_IMAGES / "starry_night.jpg")
    settings = Settings(weights=str(weights), size=128, multiscale=False, iterations=30, device="cpu", seed=0)
    stylizer = Stylizer(download=False)
    result = stylizer.run(photo, painting, settings)
    assert not result.interrupted
    assert result.image.size == (128, 85)

    # Score the content photo, the result and the painting with the run's own objective at the output size.
    content = pil_to_tensor(resize_long_side(load_image(photo), 128))
    style = pil_to_tensor(resize_long_side(load_image(painting), 128))
    h, w = content.shape[-2:]
    objective = Objective(stylizer.extractor(settings, torch.device("cpu")), settings, content, [StyleInput(style)], (w, h))
    output, painting_resized = pil_to_tensor(result.image), resize_tensor(style, (h, w))
    with torch.no_grad():
        photo_losses = {k: float(v) for k, v in objective(content)[1].items()}
        result_losses = {k: float(v) for k, v in objective(output)[1].items()}
        painting_losses = {k: float(v) for k, v in objective(painting_resized)[1].items()}

    # Much more of the painting's style than the photo had ...
    assert result_losses["style"] < photo_losses["style"] / 8
    # ... while still the photo's content: nearer to it than the painting is, and the same picture.
    assert result_losses["content"] < 0.6 * painting_losses["content"]
    assert luminance_correlation(output, content) > 0.6
    assert luminance_correlation(painting_resized, content) < 0.2


@pytest.fixture(scope="module")
def converged():
    """A 40-iteration fp32 run at 128 px and the fp32 objective it minimised: the reference
    both mixed-precision tests measure against, run once for the two of them."""
    weights = require(REAL_WEIGHTS / "vgg19-caffe-features.safetensors")
    photo, painting = require(REAL_IMAGES / "chelsea.png"), require(REAL_IMAGES / "starry_night.jpg")
    settings = Settings(weights=str(weights), size=128, multiscale=False, iterations=40, device="cpu", seed=0, precision="fp32")
    stylizer = Stylizer(download=False)
    content, style = (pil_to_tensor(resize_long_side(load_image(p), 128)) for p in (photo, painting))
    objective = Objective(stylizer.extractor(settings, torch.device("cpu")), settings, content, [StyleInput(style)],
                          (content.shape[-1], content.shape[-2]))  # fmt: skip
    image = pil_to_tensor(stylizer.run(photo, painting, settings).image)
    return SimpleNamespace(stylizer=stylizer, settings=settings, photo=photo, painting=painting, content=content,
                           objective=objective, image=image)  # fmt: skip


def test_fp16_mixed_precision_keeps_the_gradient_near_convergence(converged, monkeypatch):
    # A CUDA run's default arithmetic (--precision auto), checked here on the CPU. Near
    # convergence the fp16 backward pass underflows: the scaled loss must give the fp32 gradient.
    import impasto.descent as O

    def grad(dtype):
        x = converged.image.clone().requires_grad_(True)
        value, _ = O.gradient(converged.objective, x, dtype)
        return float(value.detach()), x.grad.flatten()

    exact_value, exact = grad(None)
    value, mixed = grad(torch.float16)
    assert value == pytest.approx(exact_value, rel=0.01)
    assert float(torch.nn.functional.cosine_similarity(mixed, exact, dim=0)) > 0.999
    assert float((mixed - exact).norm() / exact.norm()) < 0.05
    # The point is one where scaling matters: unscaled, the fp16 gradient fails the checks above.
    # By how much depends on the CPU's fp16 arithmetic: emulated, most of it underflows (a cosine
    # below 0.9); with native AVX512-FP16, a relative error of 0.32 (cosine 0.95), six times the
    # bound the scaled gradient keeps.
    monkeypatch.setattr(O, "LOSS_SCALE", 1.0)
    _, unscaled = grad(torch.float16)
    cosine = float(torch.nn.functional.cosine_similarity(unscaled, exact, dim=0))
    error = float((unscaled - exact).norm() / exact.norm())
    assert cosine < 0.99 and error > 0.2


def test_bf16_mixed_precision_gives_the_fp32_result(converged):
    # A CPU run's default arithmetic where the CPU has native bf16: the picture it ends on
    # must score, by the fp32 objective, as well as the fp32 run's (bf16 keeps fp32's
    # range, so there is no underflow to scale against, only 8 bits of mantissa).
    from impasto.device import native_bf16_cpu

    if not native_bf16_cpu():  # the default never runs bf16 there; emulated, this test took 290 s of CI's 850
        pytest.skip("this CPU emulates bf16 (no AVX512-BF16 or AMX): checked where a run's default is bf16")
    def score(image: torch.Tensor) -> float:
        with torch.no_grad():
            return float(converged.objective(image)[0])

    bf16 = converged.stylizer.run(converged.photo, converged.painting, converged.settings.replace(precision="bf16"))
    assert bf16.precision == "bf16"  # the run this test is about, not an fp32 one in its place
    scored = {"fp32": score(converged.image), "bf16": score(pil_to_tensor(bf16.image))}
    assert scored["fp32"] < 0.5 * score(converged.content)  # the runs went somewhere
    assert scored["bf16"] < 1.05 * scored["fp32"]
