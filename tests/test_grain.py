"""The painting's grain added where a scale is upsampled (impasto/grain.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from impasto import ImpastoError, Settings
from impasto.grain import fine_detail, painting_grain, random_phase
from impasto.optimize import StyleInput, scale_start

from conftest import smooth_image, textured_image, to_tensor


def noisy_painting(height: int, width: int, grain: float, seed: int = 0) -> torch.Tensor:
    """A mid-grey painting with pixel grain of standard deviation `grain`, a little redder than it is blue."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(1, 1, height, width, generator=g) * grain
    return (torch.tensor([0.55, 0.5, 0.45]).view(1, 3, 1, 1) + noise * torch.tensor([1.0, 0.8, 0.6]).view(1, 3, 1, 1)).clamp(0, 1)


def strength(x: torch.Tensor) -> float:
    return float(x.pow(2).mean().sqrt())


def test_random_phase_keeps_the_spectrum_and_colours_of_the_detail_but_not_its_shapes():
    detail = fine_detail(to_tensor(textured_image(64, 80, seed=3)), (40, 32))
    noise = random_phase(detail, torch.Generator().manual_seed(0))
    assert noise.shape == detail.shape and noise.dtype == torch.float32
    spectrum = lambda x: torch.fft.fft2(x).abs()  # noqa: E731
    # The same power at every frequency but the mean's, which the grain leaves out.
    expected, got = spectrum(detail), spectrum(noise)
    expected[..., 0, 0] = 0
    assert torch.allclose(got, expected, atol=1e-3 * float(expected.max()))
    assert abs(float(noise.mean())) < 1e-6
    # One phase for the three channels: the channels correlate as the painting's do.
    corr = lambda x: torch.corrcoef(x.flatten(1).double() - x.flatten(1).double().mean(1, keepdim=True))  # noqa: E731
    assert torch.allclose(corr(noise[0]), corr(detail[0]), atol=1e-4)
    # ...and none of the painting's layout: another place altogether.
    assert float(torch.nn.functional.cosine_similarity(noise.flatten(), detail.flatten(), dim=0)) < 0.3
    # Another draw is another grain; the same draw the same.
    assert not torch.allclose(noise, random_phase(detail, torch.Generator().manual_seed(1)))
    assert torch.equal(noise, random_phase(detail, torch.Generator().manual_seed(0)))


def test_a_smooth_start_gets_the_paintings_grain_and_a_detailed_one_little():
    settings = Settings()
    smooth = to_tensor(smooth_image(64, 64, (0.2, 0.3, 0.6), (0.3, 0.4, 0.7)))
    coarse = (32, 32)
    grainy, faint = noisy_painting(64, 64, 0.08), noisy_painting(64, 64, 0.02)
    draws = lambda: torch.Generator().manual_seed(0)  # noqa: E731

    on_smooth = painting_grain(smooth, grainy, coarse, settings, draws())
    painting_detail = strength(fine_detail(grainy, coarse))
    # As strong as the painting's own fine detail: the start lacks all of it.
    assert 0.9 * painting_detail < strength(on_smooth) < 1.1 * painting_detail
    # A faint painting gives a faint grain (White noise of one strength would not).
    on_smooth_faint = painting_grain(smooth, faint, coarse, settings, draws())
    assert strength(on_smooth_faint) < 0.35 * strength(on_smooth)
    # A start that already holds detail of the painting's strength gets next to none.
    detailed = (smooth + 1.5 * fine_detail(noisy_painting(64, 64, 0.08, seed=5), coarse)).clamp(0, 1)
    assert strength(painting_grain(detailed, grainy, coarse, settings, draws())) < 0.3 * strength(on_smooth)


def test_the_grain_follows_the_paintings_weights_and_masks():
    # scale_start adds it: from a flat grey coarse scale, without the photo's detail, the start
    # is that grey plus the grain.
    settings = Settings(upsample_detail=0.0, upsample_grain=1.0)
    coarse, fine = (32, 24), (64, 48)
    grey = torch.full((1, 3, 24, 32), 0.5)
    photo = torch.full((1, 3, 48, 64), 0.5)
    grainy = noisy_painting(48, 64, 0.08)

    def grain(*styles: StyleInput) -> torch.Tensor:
        return scale_start(grey, photo, coarse, fine, settings, styles, torch.Generator().manual_seed(0)) - 0.5

    left = torch.zeros(1, 1, 48, 64)
    left[..., :32] = 1
    masked = grain(StyleInput(grainy, mask=left))
    assert strength(masked[..., 36:]) < 1e-6 < strength(masked[..., :28])
    # A painting of weight 0 (and nothing else) paints no grain; upsample_grain 0, none.
    assert strength(grain(StyleInput(grainy, weight=0.0))) == 0
    assert strength(scale_start(grey, photo, coarse, fine, settings.replace(upsample_grain=0.0), [StyleInput(grainy)]) - 0.5) == 0
    # Two paintings blended half and half: between the two on their own.
    faint = noisy_painting(48, 64, 0.01, seed=2)
    alone = [strength(grain(StyleInput(p))) for p in (grainy, faint)]
    assert alone[1] < strength(grain(StyleInput(grainy, 0.5), StyleInput(faint, 0.5))) < alone[0]


def test_upsample_grain_paints_a_grainy_paintings_texture_into_a_smooth_sky(stylizer, make_settings):
    # A smooth photo (a clear sky) and a grainy painting, with no iterations at the finer scale:
    # the output is that scale's start, plain upsampled without the grain, grainy with it.
    sky = smooth_image(64, 64, (0.2, 0.3, 0.6), (0.3, 0.4, 0.7))
    painting = noisy_painting(64, 64, 0.08).permute(0, 2, 3, 1)[0].numpy()
    settings = make_settings(multiscale=True, size=64, min_size=32, initial_iterations=3, iterations=0)
    runs = {g: to_tensor(np.asarray(stylizer.run(sky, painting, settings.replace(upsample_grain=g)).image) / 255.0) for g in (0.0, 1.0)}
    detail = {g: strength(fine_detail(image, (32, 32))) for g, image in runs.items()}
    assert detail[1.0] > 3 * detail[0.0]
    # The same seed, the same grain: a run repeats.
    again = to_tensor(np.asarray(stylizer.run(sky, painting, settings.replace(upsample_grain=1.0)).image) / 255.0)
    assert torch.equal(again, runs[1.0])
    with pytest.raises(ImpastoError, match="upsample_grain must be between 0 and 1"):
        Settings(upsample_grain=2).validate()
