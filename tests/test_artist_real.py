"""Artist controls on real pictures with the genuine VGG19 (skipped without ../shared)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from impasto import Settings, Stylizer, color
from impasto.images import load_image, resize_long_side

from conftest import REAL_IMAGES, REAL_WEIGHTS, require

SIZE = 80


def colour_stats(image) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of the RGB values in [0, 1]."""
    a = np.asarray(image.convert("RGB"), dtype=np.float64).reshape(-1, 3) / 255.0
    return a.mean(0), np.cov(a.T)


def yiq_stats(image) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of the YIQ values (the paper's luminance and chroma)."""
    rgb = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0).permute(2, 0, 1)[None]
    a = color.rgb_to_yiq(rgb)[0].reshape(3, -1).numpy()
    return a.mean(1), np.cov(a)


def chroma_stats(image) -> tuple[np.ndarray, np.ndarray]:
    m, c = yiq_stats(image)
    return m[1:], c[1:, 1:]


def distances(image, reference, stats=colour_stats) -> tuple[float, float]:
    (m, c), (mr, cr) = stats(image), reference
    return float(np.linalg.norm(m - mr)), float(np.linalg.norm(c - cr))


@pytest.fixture(scope="module")
def real_pair():
    weights = require(REAL_WEIGHTS / "vgg19-caffe-features.safetensors")
    photo, painting = require(REAL_IMAGES / "chelsea.png"), require(REAL_IMAGES / "starry_night.jpg")
    return weights, photo, painting


@pytest.fixture(scope="module")
def colour_runs(real_pair):
    weights, photo, painting = real_pair
    stylizer = Stylizer(download=False)
    base = Settings(weights=str(weights), size=SIZE, multiscale=False, iterations=15, device="cpu", style_weight=100.0, seed=0)
    return {mode: stylizer.run(photo, painting, base.replace(preserve_color=mode)).image for mode in (None, "luminance", "histogram", "histogram-cholesky")}


@pytest.mark.parametrize("mode", ["luminance", "histogram", "histogram-cholesky"])
def test_preserved_colours_are_the_photos_not_the_paintings(real_pair, colour_runs, mode):
    _, photo, painting = real_pair
    # Luminance mode keeps the painting's contrast on purpose (its brush strokes), so its
    # colours are judged on the chroma (I and Q) alone; the histogram modes on all of RGB.
    stats = chroma_stats if mode == "luminance" else colour_stats
    content = stats(resize_long_side(load_image(photo), SIZE))
    style = stats(resize_long_side(load_image(painting), SIZE))
    mean_to_content, cov_to_content = distances(colour_runs[mode], content, stats)
    mean_to_style, cov_to_style = distances(colour_runs[mode], style, stats)
    # Close to the cat's colours, far from The Starry Night's (which are 0.28 apart in mean).
    assert mean_to_content < 0.03 and mean_to_content < 0.15 * mean_to_style
    assert cov_to_content < 0.025 and cov_to_content < 0.3 * cov_to_style
    # The control: the same run without preservation drifts visibly towards the painting's colours.
    plain_mean, plain_cov = distances(colour_runs[None], content, stats)
    assert plain_mean > 2.5 * mean_to_content
    assert plain_cov > 1.5 * cov_to_content


def test_luminance_mode_keeps_the_paintings_stroke_contrast(real_pair, colour_runs):
    """The photo's colours, not its softness: the strokes stay as strong as without preservation."""
    _, photo, _ = real_pair
    brightness_std = lambda image: float(np.sqrt(yiq_stats(image)[1][0, 0]))  # noqa: E731
    photo_std = brightness_std(resize_long_side(load_image(photo), SIZE))
    kept, plain = brightness_std(colour_runs["luminance"]), brightness_std(colour_runs[None])
    assert kept > 1.2 * photo_std and kept > 0.85 * plain, (kept, plain, photo_std)


def test_masked_style_lands_where_the_mask_is_white(real_pair, tmp_path):
    """Gatys et al. 2017 spatial control: the painting's texture on the left half only."""
    weights, photo, painting = real_pair
    content = resize_long_side(load_image(photo), SIZE)
    w, h = content.size
    mask = np.zeros((h // 2, w // 2), dtype=np.uint8)  # half size: impasto stretches it
    mask[:, : w // 4] = 255
    settings = Settings(weights=str(weights), size=SIZE, multiscale=False, iterations=15, device="cpu", style_weight=100.0)
    result = Stylizer(download=False).run(photo, painting, settings, masks=[mask])
    out = np.asarray(result.image, dtype=np.float64) / 255.0
    src = np.asarray(content, dtype=np.float64) / 255.0
    change = np.abs(out - src).mean(axis=2)
    left, right = change[:, : w // 2 - 6].mean(), change[:, w // 2 + 6 :].mean()
    assert left > 2.5 * right, (left, right)
