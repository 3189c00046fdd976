"""The benchmarks' shared pieces: what their tables rest on."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from common import textbook_baseline  # noqa: E402


class IllConditioned:
    """A stand-in objective shaped like Objective's return, with its minimum at 0.3 everywhere.

    Curvatures from 0.01 to 100, so L-BFGS does not converge within a step of 20 iterations
    and each step runs to its end, as on a real image.
    """

    scales = torch.logspace(-2, 2, 192).reshape(1, 3, 8, 8)

    def __call__(self, image: torch.Tensor):
        return (self.scales * (image - 0.3) ** 2).sum() + ((image - 0.3) ** 4).sum(), {}


@pytest.mark.parametrize("evaluations", [1, 7, 20, 66])
def test_textbook_baseline_runs_exactly_the_evaluations_asked(evaluations):
    # L-BFGS evaluates up to 20 times a step: an equal-time comparison with 66 evaluations
    # must not quietly run 80.
    log: list[tuple[float, float]] = []
    image = textbook_baseline(IllConditioned(), torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)), evaluations, log)
    assert len(log) == evaluations
    assert evaluations == 1 or log[-1][1] < log[0][1]  # and it descends
    assert float(image.min()) >= 0 and float(image.max()) <= 1


def test_jitter_moves_a_photo_by_about_one_grey_level_and_the_same_way_for_a_seed():
    from quality import jittered, with_jitter

    photo = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1  # away from the clamp
    assert jittered(photo, 0) is photo  # seed 0: the photo itself
    once, again, other = jittered(photo, 1), jittered(photo, 1), jittered(photo, 2)
    assert torch.equal(once, again) and not torch.equal(once, other)
    assert 0.8 / 255 < float((once - photo).std()) < 1.2 / 255
    assert list(with_jitter({"impasto default": None}, 2).items()) == [
        ("impasto default", (None, 0)), ("impasto default, jitter 1", (None, 1)), ("impasto default, jitter 2", (None, 2))]


def test_jitter_spread_is_each_distances_range_over_the_runs_of_a_pair_as_a_share_of_the_photos_own():
    from quality import jitter_spread

    def record(photo: str, run: str, content: float, style: float) -> dict:
        return {"photo": photo, "painting": "art.jpg", "run": run, "content": content, "style": style, "seconds": 1.0}

    records = [
        record("a.png", "impasto default", 1.0, 0.010),
        record("a.png", "impasto default, jitter 1", 1.1, 0.009),
        record("a.png", "impasto default, jitter 2", 0.95, 0.0105),
        record("b.png", "impasto default", 2.0, 0.020),  # no jittered copies: not in the table
        record("c.png", "impasto default", 0.5, 0.004),
        record("c.png", "impasto default, jitter 1", 0.51, 0.004),
    ]
    lines = jitter_spread(records)
    rows = [line for line in lines if line.startswith("| a /") or line.startswith("| b /") or line.startswith("| c /")]
    assert rows == [
        "| a / art | impasto default | 3 | 0.95-1.1 (15.0%) | 0.009-0.0105 (15.0%) |",
        "| c / art | impasto default | 2 | 0.5-0.51 (2.0%) | 0.004-0.004 (0.0%) |",
    ]
    assert lines[-1] == "| impasto default | 8.5% | 7.5% | 15.0% / 15.0% |"  # medians over the two pairs
    assert jitter_spread(records[3:4]) == []  # nothing jittered: no table


def test_a_summary_compares_one_baseline_and_each_runs_latest_settings_only():
    # Records of several sessions share one file: another baseline, a default since changed,
    # and copies made with it must not be mixed into the table (or into the noise figures).
    from quality import BASELINE, comparable, parse_variant

    def record(run: str, key: str, content: float) -> dict:
        return {"photo": "a.png", "painting": "art.jpg", "run": run, "key": key, "content": content, "style": 0.01, "seconds": 1.0}

    records = [
        record(BASELINE, "baseline-300", 1.0),
        record("impasto default", "old", 2.0),
        record("impasto default, jitter 1", "old-jitter1", 2.5),
        record(BASELINE, "baseline-64", 1.5),  # later in the file, but not the baseline asked for
        record("impasto default", "new", 0.9),
    ]
    kept = {r["run"]: r["content"] for r in comparable(records, "baseline-300")}
    assert kept == {BASELINE: 1.0, "impasto default": 0.9}  # the old default's copy is left out too
    assert {r["run"]: r["content"] for r in comparable(records, "baseline-64")}[BASELINE] == 1.5

    # --variant: settings that default to None, and list settings ('/' between items).
    from impasto import Settings

    _, changed = parse_variant("v=lr:0.5,preserve_color:luminance,style_layers:conv1_1/conv2_1", Settings())
    assert (changed.lr, changed.preserve_color, changed.style_layers) == (0.5, "luminance", ("conv1_1", "conv2_1"))


def test_the_quality_table_gives_each_runs_style_distance_layer_by_layer_and_a_dash_for_older_records():
    from quality import BASELINE, summarise

    layers = {"conv1_1": 0.0001, "conv2_1": 0.0016, "conv3_1": 0.0029, "conv4_1": 0.0008, "conv5_1": 0.014}
    records = [
        {"photo": "a.png", "painting": "art.jpg", "run": BASELINE, "content": 0.188, "style": 0.0029, "seconds": 600.0},  # before session 27
        {"photo": "a.png", "painting": "art.jpg", "run": "impasto default", "content": 0.151, "style": 0.0039, "seconds": 54.0,
         "style_by_layer": layers},
    ]
    rows = [line for line in summarise(records, [BASELINE, "impasto default"]).splitlines() if line.startswith("| a / art")]
    assert rows == [
        f"| a / art | {BASELINE} | 0.188 | 0.0029 | 600 | - |",
        "| a / art | impasto default | 0.151 | 0.0039 | 54 | 0.0001 0.0016 0.0029 0.0008 0.0140 |",
    ]


def test_no_default_runs_the_candidates_alone():
    # --no-default halves a candidate's pass (hours here) where the default's figures are known.
    from quality import variants

    assert list(variants(256, ["g=upsample_grain:1,seed:1"], no_default=True)) == ["g"]
    both = variants(256, ["g=upsample_grain:1,seed:1"])
    assert list(both) == ["impasto default", "g"] and (both["g"].upsample_grain, both["g"].seed) == (1.0, 1)


def test_heldout_keeps_a_picture_of_the_same_settings_with_reuse(tmp_path, monkeypatch, capsys):
    # An hour of pictures here: --reuse keeps what the current default would paint again (the
    # file's name holds the settings' hash) and still puts it on the sheet.
    import os

    import heldout
    from common import IMAGES, WEIGHTS

    if not (WEIGHTS / "vgg19-caffe-features.safetensors").is_file() or not (IMAGES / "chelsea.png").is_file():
        pytest.skip(f"needs the real VGG19 in {WEIGHTS} and the pictures in {IMAGES}")

    def run(*flags: str) -> str:
        monkeypatch.setattr(sys, "argv", ["heldout.py", "--size", "64", "--only", "greyscale_photo", "--out", str(tmp_path), *flags])
        heldout.main()
        return capsys.readouterr().out

    assert "kept" not in run("--reuse")  # nothing to keep yet
    (picture,) = tmp_path.glob("greyscale_photo-64-*.png")
    os.utime(picture, (1, 1))
    (tmp_path / "sheet.jpg").unlink()
    assert f"kept {picture.name}" in run("--reuse")
    assert picture.stat().st_mtime == 1  # not painted again
    assert (tmp_path / "sheet.jpg").is_file()


def test_content_split_puts_an_error_on_the_smooth_half_there_and_the_parts_add_up(vgg19_features):
    from content_split import split

    from impasto.metrics import CONTENT_LAYER, feature_distance
    from impasto.vgg import FeatureExtractor

    extractor = FeatureExtractor("vgg19", vgg19_features, (CONTENT_LAYER,), "max", "torchvision")
    photo = torch.full((1, 3, 64, 128), 0.5)
    photo[..., 64:] = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))  # right half: detail
    detail = torch.zeros(1, 1, 64, 128)
    detail[..., 64:] = 1.0
    target = extractor(photo)[CONTENT_LAYER]
    assert split(photo, target, detail, extractor) == (0.0, 0.0)
    changed = photo.clone()
    changed[..., :, :40] = torch.rand(1, 3, 64, 40, generator=torch.Generator().manual_seed(1))  # the smooth half, off its edge
    on_detail, on_smooth = split(changed, target, detail, extractor)
    assert on_smooth > 0 and on_detail < 0.05 * on_smooth
    assert on_detail + on_smooth == pytest.approx(feature_distance(extractor(changed)[CONTENT_LAYER], target), rel=1e-5)
