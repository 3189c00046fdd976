"""The public API: stopping, colour preservation, style blends and input validation."""

from __future__ import annotations

import re
import time
import urllib.request

import numpy as np
import pytest
import torch

import impasto
from impasto import ImpastoError, Settings, Stylizer
from impasto.api import normalize_styles

from conftest import REDDISH, mean_rgb, run_python, textured_image, to_uint8


def test_callback_returning_false_stops_early(stylizer, make_settings, content_array, style_array):
    settings = make_settings(multiscale=True, size=48, min_size=24, scale_factor=2.0, initial_iterations=6, iterations=4)
    seen = []

    def stop_after_three(progress):
        seen.append(progress.done)
        return False if progress.done == 3 else None

    result = stylizer.run(content_array, style_array, settings, callback=stop_after_three)
    assert seen == [1, 2, 3]
    assert result.interrupted and result.stopped_reason == "stopped by callback"
    assert len(result.history) == 3
    assert result.image.size == (48, 40)  # the coarse image, brought to the requested size


def test_keyboard_interrupt_keeps_the_best_image_so_far(stylizer, make_settings, content_array, style_array):
    settings = make_settings(multiscale=True, size=48, min_size=24, scale_factor=2.0, initial_iterations=8, iterations=4, init="noise")

    def ctrl_c(progress):
        if progress.done == 5:
            raise KeyboardInterrupt

    # Raised, not returned: a caller's loop of runs stops at Ctrl-C as any Python loop does.
    with pytest.raises(impasto.Interrupted) as stop:
        stylizer.run(content_array, style_array, settings, callback=ctrl_c)
    assert isinstance(stop.value, KeyboardInterrupt)
    result = stop.value.result
    assert result.interrupted and result.stopped_reason == "interrupted"
    assert result.image.size == (48, 40)
    assert len(result.history) == 5
    # The losses reported are those of the best image scored, not of the last one.
    assert result.losses["total"] == min(h["total"] for h in result.history)
    assert result.losses["total"] < result.history[0]["total"]


def test_ctrl_c_in_a_loop_of_stylize_calls_ends_the_loop(stylizer, make_settings, content_array, style_array, monkeypatch):
    monkeypatch.setattr(impasto.api, "_default", stylizer)
    finished = []

    def ctrl_c_in_the_second(progress):
        if len(finished) == 1 and progress.done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        for _ in range(3):
            finished.append(impasto.stylize(content_array, style_array, make_settings(iterations=4), callback=ctrl_c_in_the_second))
    assert len(finished) == 1


def test_ctrl_c_during_the_first_iteration_is_a_plain_interrupt(stylizer, make_settings, content_array, style_array, monkeypatch):
    # No iteration finished: the start image is no one's "best so far", so there is no result to carry.
    import impasto.losses

    def ctrl_c(image):
        raise KeyboardInterrupt

    monkeypatch.setattr(impasto.losses, "tv_loss", ctrl_c)
    with pytest.raises(KeyboardInterrupt) as stop:
        stylizer.run(content_array, style_array, make_settings())
    assert not isinstance(stop.value, impasto.Interrupted)


def test_keyboard_interrupt_before_the_first_image_is_passed_on(stylizer, make_settings, content_array, style_array, monkeypatch):
    # A Ctrl-C while the start image is made leaves nothing to keep: the caller (the CLI, a
    # batch worker) must see the interrupt itself, not an error about a missing image.
    import impasto.optimize

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(impasto.optimize, "initial_image", ctrl_c)
    with pytest.raises(KeyboardInterrupt) as stop:
        stylizer.run(content_array, style_array, make_settings())
    # impasto.Interrupted is a KeyboardInterrupt too: the one raised must be the plain one, carrying no result.
    assert not isinstance(stop.value, impasto.Interrupted)


@pytest.mark.parametrize("mode", [None, "luminance", "histogram"])
def test_preserve_color(stylizer, make_settings, content_array, style_array, mode):
    # Start from the (blue) style image and weigh style heavily: only colour preservation keeps the content's red.
    settings = make_settings(preserve_color=mode, init="style", style_weight=1000.0, iterations=10)
    result = stylizer.run(content_array, style_array, settings)
    out, content, style = mean_rgb(result.image), mean_rgb(content_array), mean_rgb(style_array)
    to_content, to_style = np.abs(out - content).max(), np.abs(out - style).max()
    if mode is None:  # the control: without preservation the colours are the style's
        assert to_style < 0.05 < 0.3 < to_content
    else:
        assert to_content < 0.05 < 0.3 < to_style


def test_blend_of_styles_runs_and_weights_matter(stylizer, make_settings, content_array, style_array):
    red_style = textured_image(40, 40, *REDDISH, seed=9)
    settings = make_settings(init="noise", iterations=6, optimizer="adam")
    blended = stylizer.run(content_array, [(style_array, 0.7), (red_style, 0.3)], settings)
    assert blended.image.size == (48, 40)
    assert blended.losses["style"] < blended.history[0]["style"]
    # A style with weight 0 has no say: the run is exactly the single-style run.
    alone = stylizer.run(content_array, style_array, settings)
    with_zero = stylizer.run(content_array, [(style_array, 1.0), (red_style, 0.0)], settings)
    assert np.array_equal(np.asarray(alone.image), np.asarray(with_zero.image))
    assert not np.array_equal(np.asarray(alone.image), np.asarray(blended.image))


def test_normalize_styles_accepts_every_documented_form(style_path):
    assert normalize_styles(style_path) == [(style_path, 1.0)]
    assert normalize_styles((style_path, 0.5)) == [(style_path, 0.5)]
    assert normalize_styles([style_path, style_path]) == [(style_path, 1.0), (style_path, 1.0)]
    assert normalize_styles([(style_path, 2), (style_path, 1)]) == [(style_path, 2.0), (style_path, 1.0)]
    with pytest.raises(ImpastoError, match="non-negative"):
        normalize_styles([(style_path, 1.0), (style_path, -0.5)])
    with pytest.raises(ImpastoError, match="not all zero"):
        normalize_styles([(style_path, 0.0)])
    with pytest.raises(ImpastoError, match="at least one"):
        normalize_styles([])


def test_paths_and_stylize_function(stylizer, make_settings, content_path, style_path, monkeypatch):
    monkeypatch.setattr(impasto.api, "_default", stylizer)
    image = impasto.stylize(content_path, style_path, make_settings(iterations=2), size=40)
    assert image.size == (40, 33)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(style_layers=("conv1_1", "conv9_9")), "unknown layer 'conv9_9'"),
        (dict(content_layers=("conv5_4",), model="vgg16"), "unknown layer 'conv5_4'"),
        (dict(fine_content_layers=("conv3_5",)), "unknown layer 'conv3_5'"),
        (dict(style_weight=-1.0), "style_weight must be a non-negative"),
        (dict(content_weight=float("nan")), "content_weight"),
        (dict(tv_weight=-0.1), "tv_weight"),
        (dict(fine_content_weight=-0.5), "fine_content_weight must be a non-negative number, not -0.5"),
        (dict(content_weight=0.0, style_weight=0.0), "cannot both be zero"),
        (dict(style_layer_weights=(1.0, -1.0, 1.0)), "non-negative"),
        (dict(style_layer_weights=(1.0, 1.0)), "3 style layers"),
        (dict(style_loss="fancy"), "style_loss must be one of"),
        (dict(pooling="min"), "pooling"),
        (dict(lr=0.0), "lr must be positive"),
        (dict(size=8), "size must be at least"),
        (dict(tile=100), "tile must be 0 (automatic) or at least 128 pixels, not 100"),
        (dict(flat_content=1.5), "flat_content must be between 0 and 1, not 1.5"),
        (dict(multiscale=True, size=512, min_size=128, scale_factor=1.01), "scale_factor=1.01 makes 141 scales from min_size=128 to size=512"),
        (dict(device="tpu"), "unknown device"),
        (dict(device="meta"), "unknown device 'meta'"),  # torch knows it; impasto never ran on it
        # From a notebook, a wrong type is named, not a crash deep inside nor a silent True.
        (dict(size="64"), "size must be a whole number, not '64'"),
        (dict(iterations=2.5), "iterations must be a whole number, not 2.5"),
        (dict(style_weight="50"), "style_weight must be a number, not '50'"),
        (dict(multiscale="no"), "multiscale must be True or False, not 'no'"),
        (dict(init="noize"), "init must be palette, content, noise, style or an image file; 'noize': no such file"),
        # Not finite: a traceback from round(inf), or a run that fails later as "loss became nan".
        (dict(style_scale=float("inf")), "style_scale must be positive, not inf"),
        (dict(lr=float("inf")), "lr must be positive, not inf"),
        (dict(coarse_content=float("inf")), "coarse_content must be above 0, not inf"),
        (dict(gram_shift=float("nan")), "gram_shift must be a number, not nan"),
        (dict(style_layer_weights=(1.0, float("nan"), 1.0)), "style layer weights must be non-negative numbers"),
    ],
)
def test_bad_settings_are_refused_with_a_clear_message(stylizer, make_settings, content_array, style_array, overrides, message):
    with pytest.raises(ImpastoError, match=re.escape(message)):
        stylizer.run(content_array, style_array, make_settings(**overrides))


def test_a_missing_photo_is_reported_before_weights_are_fetched(content_array, tmp_path, monkeypatch):
    attempts = []

    def count_and_fail(url, *args, **kwargs):
        attempts.append(url)
        raise OSError("offline")

    monkeypatch.setattr(urllib.request, "urlopen", count_and_fail)
    with pytest.raises(ImpastoError, match="no such file"):
        Stylizer().run(tmp_path / "typo.jpg", content_array, Settings(device="cpu", size=32))
    assert attempts == []


def test_negative_style_blend_weight(stylizer, make_settings, content_array, style_array):
    with pytest.raises(ImpastoError, match="non-negative"):
        stylizer.run(content_array, [(style_array, 1.0), (style_array, -1.0)], make_settings())


def test_settings_from_dict_rejects_unknown_names():
    assert Settings.from_dict({"size": 64, "style_layers": ["conv1_1"]}).style_layers == ("conv1_1",)
    with pytest.raises(ImpastoError, match="sizes"):
        Settings.from_dict({"sizes": 64})


ABSURD_SIZE_SCRIPT = """
import sys, numpy as np
from impasto import Stylizer, Settings, ImpastoError
try:
    Stylizer(download=False).run(np.full((40, 48, 3), 0.5), np.full((48, 40, 3), 0.5),
                                 Settings(weights=sys.argv[1], device="cpu", size=200_000))
except ImpastoError as exc:
    print(exc)
    sys.exit(3)
"""


def test_absurd_size_is_refused_up_front(synthetic_weights):
    # In a child capped at 6 GiB of address space, so the bug cannot take this machine down.
    start = time.perf_counter()
    done = run_python(["-c", ABSURD_SIZE_SCRIPT, str(synthetic_weights)], memory_gib=6, timeout=120)
    assert done.returncode == 3, done.stderr[-2000:]
    assert "GiB" in done.stdout
    assert time.perf_counter() - start < 60


def test_no_content_layers_is_texture_synthesis(stylizer, make_settings, content_array, style_array):
    # No content layer is allowed (the photo is then only where the run starts): the style falls.
    settings = make_settings(content_layers=(), content_weight=0.0, iterations=4, optimizer="adam")
    result = stylizer.run(content_array, style_array, settings)
    assert result.image.size == (48, 40)
    assert result.losses.get("content", 0.0) == 0.0
    assert result.losses["style"] < result.history[0]["style"]


def test_init_image_is_where_the_run_starts(stylizer, make_settings, content_array, style_array):
    # With no iterations the result is the start image itself: the given picture, not the content.
    settings = make_settings(multiscale=False, iterations=0)
    start = np.zeros_like(content_array)
    start[..., 2] = 0.9  # a flat blue picture, at another size than the output
    result = stylizer.run(content_array, style_array, settings, init_image=start[::2, ::2])
    assert np.abs(mean_rgb(result.image) - np.array([0.0, 0.0, 0.9])).max() < 0.02


def test_extra_loss_is_added_to_the_objective_and_pulls_the_image(stylizer, make_settings, content_array, style_array):
    # A heavy penalty towards black must darken the picture and show up in the reported losses.
    settings = make_settings(multiscale=True, size=48, min_size=24, scale_factor=2.0, initial_iterations=6, iterations=6)
    seen_sizes = set()

    def towards_black(image):
        seen_sizes.add(tuple(image.shape[-2:]))
        return {"dark": 200.0 * image.pow(2).mean()}

    plain = stylizer.run(content_array, style_array, settings)
    pulled = stylizer.run(content_array, style_array, settings, extra_loss=towards_black)
    assert "dark" in pulled.losses and "dark" not in plain.losses
    assert mean_rgb(pulled.image).mean() < mean_rgb(plain.image).mean() - 0.1
    assert len(seen_sizes) == 2  # called at both scales, with that scale's image


def test_a_much_enlarged_painting_warns_through_python_warnings(stylizer, make_settings, content_array, style_array):
    settings = make_settings(size=48)
    with pytest.warns(impasto.ImpastoWarning, match=r"is 10x8 but is used at 48 px") as caught:
        stylizer.run(content_array, style_array[:16:2, :20:2], settings)
    assert caught[0].filename == __file__  # Python's warning line points at the caller's code
    # Its advice is the keyword a Python caller types; the CLI's test sees --style-scale 0.42.
    assert "style_scale=0.42" in str(caught[0].message) and "--" not in str(caught[0].message)


def test_a_black_mask_and_a_wholly_transparent_photo_warn(stylizer, make_settings, content_array, style_array):
    settings = make_settings(size=48, iterations=2, initial_iterations=2)
    black = np.zeros(content_array.shape[:2], np.uint8)
    with pytest.warns(impasto.ImpastoWarning, match="the mask of style 2 is black everywhere"):
        stylizer.run(content_array, [style_array, style_array], settings, masks=[None, black])
    clear = np.dstack([to_uint8(content_array), np.zeros(content_array.shape[:2], np.uint8)])
    with pytest.warns(impasto.ImpastoWarning, match="transparent everywhere"):
        result = stylizer.run(clear, style_array, settings)
    assert result.image.mode == "RGBA" and result.image.getchannel("A").getextrema() == (0, 0)


def test_numpy_weights_and_pathlib_paths_are_taken_as_given(tmp_path):
    from impasto.api import normalize_styles

    assert normalize_styles(("a.png", np.float32(0.5))) == [("a.png", 0.5)]
    assert normalize_styles([("a.png", np.float64(0.7)), ("b.png", 0.3)]) == [("a.png", 0.7), ("b.png", 0.3)]
    settings = Settings(weights=tmp_path / "w.safetensors", init=tmp_path / "start.png")
    assert settings.weights == str(tmp_path / "w.safetensors") and settings.init == str(tmp_path / "start.png")


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_a_run_inside_the_callers_no_grad_works_and_leaves_it_as_it_was(make_settings, mode):
    # A notebook that scores pictures under torch.no_grad() or inference_mode() calls impasto there too.
    import torch

    settings = make_settings(iterations=3)
    context = torch.no_grad() if mode == "no_grad" else torch.inference_mode()
    with context:
        result = impasto.Stylizer(download=False).run(textured_image(32, 32, seed=1), textured_image(32, 32, seed=2), settings)
        assert not torch.is_grad_enabled()
        assert mode != "inference_mode" or torch.is_inference_mode_enabled()
    assert result.losses["total"] < result.history[0]["total"]


def test_pool5_needs_twice_the_short_side_and_gets_it(make_settings):
    # pool5 is a fifth halving: a 16-31 px side that conv5 takes leaves it nothing.
    settings = make_settings(style_layers=("conv1_1", "pool5"), iterations=2)
    stylizer = impasto.Stylizer(download=False)
    with pytest.raises(ImpastoError, match=r"the output would be 120x20: the short side must be at least 32 px"):
        stylizer.run(textured_image(20, 120, seed=1), textured_image(32, 32, seed=2), settings, size=120)
    # A coarse scale too thin for it is left out, and a thin painting enlarged, instead of a crash.
    result = stylizer.run(textured_image(40, 256, seed=1), textured_image(12, 200, seed=2), settings,
                          size=256, multiscale=True, min_size=64, initial_iterations=2)  # fmt: skip
    assert result.image.size == (256, 40) and {h["scale"] for h in result.history} == {0}


def test_no_iterations_at_the_output_size_reports_no_losses_rather_than_a_coarser_scales(make_settings):
    # The picture is then the coarse result upsampled: the coarse scale's losses (its own size,
    # its boosted content weight) would describe another picture.
    settings = make_settings(multiscale=True, size=48, min_size=24, scale_factor=2.0, initial_iterations=3, iterations=0)
    result = impasto.Stylizer(download=False).run(textured_image(40, 48, seed=1), textured_image(32, 32, seed=2), settings)
    assert result.image.size == (48, 40) and len(result.history) == 3 and result.losses == {}


def test_a_very_thin_painting_is_not_shrunk_below_what_the_run_enlarges_it_to(make_settings):
    # 1000x20 at a 512 px output: the run uses it at 819x16 (its short side at the 16 px the
    # network needs); shrinking it first to 512x10 and enlarging that again blurred its detail.
    import torch

    settings = make_settings(size=512)
    style = impasto.Stylizer(download=False)._style_input(textured_image(20, 1000, seed=3), 1.0, settings, torch.device("cpu"))
    assert tuple(style.image.shape[-2:]) == (16, 819)


def test_a_run_leaves_the_callers_random_numbers_alone(stylizer, make_settings, content_array, style_array):
    # A data-augmentation loop draws its own random crops between runs: a run must not reseed them.
    torch.manual_seed(1)
    # A new Stylizer: its first run builds the network too, whose layers start from random weights.
    Stylizer(download=False).run(content_array, style_array, make_settings(iterations=2, seed=0))
    after_run = torch.rand(3)
    torch.manual_seed(1)
    assert torch.equal(after_run, torch.rand(3))


def test_a_loss_that_is_not_finite_at_once_is_an_error(stylizer, make_settings, content_array, style_array):
    # Finite as a float64 setting, infinite in fp32: there is no "best picture so far" to give back.
    with pytest.raises(impasto.NonFiniteLoss, match="the loss became inf at iteration 1"):
        stylizer.run(content_array, style_array, make_settings(style_weight=1e39))


def test_stylize_warns_when_the_loss_blows_up_part_way(stylizer, make_settings, content_array, style_array, monkeypatch):
    import impasto.losses

    calls = {"n": 0}
    real_tv = impasto.losses.tv_loss

    def tv_that_blows_up(image):
        calls["n"] += 1
        return real_tv(image) * (float("nan") if calls["n"] > 3 else 1.0)

    monkeypatch.setattr(impasto.losses, "tv_loss", tv_that_blows_up)
    monkeypatch.setattr(impasto.api, "_default", stylizer)
    with pytest.warns(impasto.ImpastoWarning, match="the loss became nan at iteration 4.*best picture before it"):
        image = impasto.stylize(content_array, style_array, make_settings(optimizer="adam", lr=0.01, iterations=8))
    assert image.size == (48, 40)


class ExtractorOutOfMemory:
    """Wraps an extractor so that its `fail_at`-th call raises the device's out-of-memory error."""

    def __init__(self, extractor, fail_at, error):
        self.extractor, self.fail_at, self.error, self.calls = extractor, fail_at, error, 0

    def __call__(self, image, relu_with=None):
        self.calls += 1
        if self.calls == self.fail_at:
            raise self.error
        return self.extractor(image, relu_with)

    def __getattr__(self, name):
        return getattr(self.extractor, name)


@pytest.mark.parametrize("error", [torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                                   RuntimeError("MPS backend out of memory (MPS allocated: 17.8 GB)")])  # fmt: skip
def test_running_out_of_memory_part_way_keeps_the_best_picture(stylizer, make_settings, content_array, style_array,
                                                              monkeypatch, error):  # fmt: skip
    real = stylizer.extractor
    monkeypatch.setattr(stylizer, "extractor", lambda settings, device: ExtractorOutOfMemory(real(settings, device), 6, error))
    settings = make_settings(iterations=8, multiscale=False)
    result = stylizer.run(content_array, style_array, settings)
    assert result.interrupted and result.image.size == (48, 40)
    # 48 px is already less than a tile can be: only a smaller size is advice.
    assert result.stopped_reason == "out of memory on cpu for a 48x40 output; a smaller size needs less"
    assert 0 < len(result.history) < 8
    # Before any iteration there is no picture to keep: a one-line error with the same advice.
    monkeypatch.setattr(stylizer, "extractor", lambda settings, device: ExtractorOutOfMemory(real(settings, device), 1, error))
    with pytest.raises(ImpastoError, match=r"^out of memory on cpu for a 48x40 output; a smaller size needs less$"):
        stylizer.run(content_array, style_array, settings)


def test_running_out_of_memory_while_the_network_is_loaded_is_the_same_one_line_error(stylizer, make_settings, content_array,
                                                                                      style_array, monkeypatch):  # fmt: skip
    # On a GPU that another process fills, moving the network there is what runs out.
    def no_room(settings, device):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 MiB")

    monkeypatch.setattr(stylizer, "extractor", no_room)
    with pytest.raises(ImpastoError, match=r"^out of memory on cpu for a 48x40 output; a smaller size needs less$"):
        stylizer.run(content_array, style_array, make_settings(iterations=2))
    monkeypatch.setattr(stylizer, "extractor", lambda settings, device: 1 / 0)  # any other error is a bug: its traceback stays
    with pytest.raises(ZeroDivisionError):
        stylizer.run(content_array, style_array, make_settings(iterations=2))


def test_threads_sharing_a_stylizer_get_one_network(make_settings, monkeypatch):
    # The web server's workers share one Stylizer: two jobs starting together must not load two copies.
    import threading

    import impasto.api

    real = impasto.api.FeatureExtractor

    def slow(*args, **kwargs):
        time.sleep(0.2)  # long enough for the other thread to ask in between
        return real(*args, **kwargs)

    monkeypatch.setattr(impasto.api, "FeatureExtractor", slow)
    shared = Stylizer(download=False)
    got = []
    threads = [threading.Thread(target=lambda: got.append(shared.extractor(make_settings(), torch.device("cpu")))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 2 and got[0] is got[1]


def test_one_copy_of_the_weights_serves_every_choice_of_layers(stylizer, make_settings):
    device = torch.device("cpu")
    a = stylizer.extractor(make_settings(), device)
    b = stylizer.extractor(make_settings(style_layers=("conv1_1", "conv4_1"), pooling="max"), device)
    assert a is not b and a.depth != b.depth
    conv_a = [m.weight for m in a.features if isinstance(m, torch.nn.Conv2d)]
    conv_b = [m.weight for m in b.features if isinstance(m, torch.nn.Conv2d)]
    assert conv_a and conv_b  # else the check below holds of nothing
    assert all(x.data_ptr() == y.data_ptr() for x, y in zip(conv_a, conv_b))
    assert isinstance(b.features[4], torch.nn.MaxPool2d) and isinstance(a.features[4], torch.nn.AvgPool2d)


def test_a_callbacks_picture_is_the_one_its_losses_measure(stylizer, make_settings, content_array, style_array):
    settings = make_settings(iterations=3, init="content")
    seen = []
    stylizer.run(content_array, style_array, settings, callback=lambda p: seen.append((p.image.clone(), p.image, dict(p.losses))))
    start = impasto.images.pil_to_tensor(impasto.images.load_image(content_array))
    # The first iteration's losses are those of the start (here the photo), so its picture is the photo.
    assert torch.allclose(seen[0][0], torch.nn.functional.interpolate(start, size=(40, 48), mode="bilinear", antialias=True), atol=0.02)
    assert not torch.equal(seen[0][0], seen[-1][0])
    # Each is a picture of its own, not one tensor that keeps changing under the caller.
    assert torch.equal(seen[0][0], seen[0][1])
    # Scored again by the run's own objective, each picture gives the losses handed out with it (the
    # first L-BFGS step is too small for the check above to tell the scored pixels from the step's result).
    cpu = torch.device("cpu")
    objective = impasto.optimize.Objective(stylizer.extractor(settings, cpu), settings, start,
                                           [stylizer._style_input(style_array, 1.0, settings, cpu)], (48, 40))  # fmt: skip
    with torch.no_grad():
        rescored = [float(objective(image)[0]) for image, _, _ in seen]
    assert rescored == pytest.approx([losses["total"] for _, _, losses in seen], rel=1e-4)
    assert rescored[-1] < 0.99 * rescored[0]  # the pictures differ enough for this to tell them apart


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda run: run(style_weigth=50), "unknown setting style_weigth (did you mean style_weight?)"),
        (lambda run: run(preset="fast"), "preset is not a setting: pass the preset's name as the settings"),
        (lambda run: run(settings=3), "settings must be a Settings, a preset's name or a dict, not int"),
        (lambda run: run(style_layer_weights="1,x"), "style_layer_weights must be numbers"),
        (lambda run: run(style_layers=None), "style_layers must be layer names"),
    ],
)
def test_mistakes_in_settings_from_python_are_one_line_errors(stylizer, make_settings, content_array, style_array, call, message):
    def run(settings=None, **overrides):
        return stylizer.run(content_array, style_array, settings if settings is not None else make_settings(), **overrides)

    with pytest.raises(ImpastoError) as error:
        call(run)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_settings_can_be_a_preset_name_a_dict_or_name_a_torch_device(stylizer, make_settings, content_array, style_array, synthetic_weights):
    assert Settings.from_preset("fast", iterations=3).iterations == 3
    assert impasto.settings.as_settings("fast") == Settings.from_preset("fast")
    as_dict = make_settings(iterations=2).to_dict() | {"device": torch.device("cpu")}
    result = stylizer.run(content_array, style_array, as_dict)
    assert result.image.size == (48, 40) and result.settings.device == "cpu"


def test_a_result_says_where_and_how_it_ran_and_keeps_its_own_settings(stylizer, make_settings, content_array, style_array):
    settings = make_settings(iterations=2, precision="auto")
    result = stylizer.run(content_array, style_array, settings)
    assert result.device == "cpu"
    assert result.precision == ("bf16" if impasto.device.native_bf16_cpu() else "fp32")
    assert result.summary()["precision"] == result.precision
    settings.style_weight = 1234.0  # the caller's object changes later; the record of the run does not
    assert result.settings.style_weight != 1234.0


def test_a_batch_or_a_normalised_tensor_is_refused_not_misread():
    with pytest.raises(ImpastoError, match="batch of 2 pictures"):
        impasto.load_image(torch.rand(2, 3, 32, 32))
    normalised = (torch.rand(3, 32, 32) - 0.45) / 0.225
    with pytest.raises(ImpastoError, match="ImageNet-normalised"):
        impasto.load_image(normalised)
    assert impasto.load_image(torch.rand(1, 3, 32, 32)).size == (32, 32)


def test_help_on_settings_explains_each_field():
    doc = Settings.__doc__
    assert "style_weight (default 30.0): weight of the style loss" in doc
    assert "preserve_color (default None):" in doc


def test_the_picture_kept_at_ctrl_c_is_the_best_one_scored(stylizer, make_settings, content_array, style_array):
    seen = []

    def ctrl_c(progress):
        seen.append((progress.losses["total"], progress.image.clone()))
        if progress.done == 5:
            raise KeyboardInterrupt

    # Adam with a large step overshoots: the loss rises again before the Ctrl-C (L-BFGS here fell at
    # every one of the five iterations, so its best was its last and "the last" would have passed).
    with pytest.raises(impasto.Interrupted) as stop:
        stylizer.run(content_array, style_array, make_settings(iterations=8, init="noise", optimizer="adam", lr=0.5), callback=ctrl_c)
    best_loss, best_image = min(seen, key=lambda item: item[0])
    assert best_loss < 0.9 * seen[-1][0]  # the best is not the last: the check below tells them apart
    assert stop.value.result.losses["total"] == best_loss
    assert np.array_equal(np.asarray(stop.value.result.image), np.asarray(impasto.images.tensor_to_pil(best_image)))


def test_a_result_names_the_model_and_weights_that_ran(stylizer, make_settings, content_array, style_array, synthetic_weights):
    result = stylizer.run(content_array, style_array, make_settings(iterations=1, model=None))
    assert result.settings.model == "vgg19" and result.settings.weights == str(synthetic_weights)


def test_ctrl_c_while_the_painting_is_made_into_a_picture_keeps_it(stylizer, make_settings, content_array, style_array, monkeypatch):
    real, calls = impasto.api.tensor_to_pil, {"n": 0}

    def ctrl_c_once(tensor):
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt
        return real(tensor)

    monkeypatch.setattr(impasto.api, "tensor_to_pil", ctrl_c_once)
    with pytest.raises(impasto.Interrupted) as stop:
        stylizer.run(content_array, style_array, make_settings(iterations=3))
    assert stop.value.result.image.size == (48, 40) and len(stop.value.result.history) == 3


def test_style_weight_pairs_may_be_lists_and_weights_any_real_number(style_path):
    # A blend read from JSON or YAML has lists; a weight computed from data is a numpy scalar or a 0-d tensor.
    assert normalize_styles([[style_path, 0.5]]) == [(style_path, 0.5)]
    assert normalize_styles([style_path, 0.5]) == [(style_path, 0.5)]
    blend = normalize_styles([(style_path, torch.tensor(0.25)), [style_path, np.array(0.75)], (style_path, np.int64(2))])
    assert blend == [(style_path, 0.25), (style_path, 0.75), (style_path, 2.0)]
    assert all(type(weight) is float for _, weight in blend)
    assert normalize_styles((style_path, torch.tensor(0.5))) == [(style_path, 0.5)]


@pytest.mark.parametrize(
    "styles, message",
    [
        (lambda p: [(p, "0.5")], "style 1: give a picture or a (picture, weight) pair with a number as the weight, not '0.5' as its weight"),
        (lambda p: [p, (p, True)], "style 2: give a picture or a (picture, weight) pair with a number as the weight, not True as its weight"),
        (lambda p: [(p, 0.5, 1.0)], "style 1: give a picture or a (picture, weight) pair with a number as the weight, not 3 items"),
        (lambda p: [(p, torch.tensor([0.5, 0.5]))], "not tensor([0.5000, 0.5000]) as its weight"),
    ],
)
def test_a_style_pair_without_a_number_for_its_weight_is_refused_by_its_place(style_path, styles, message):
    with pytest.raises(ImpastoError) as error:
        normalize_styles(styles(style_path))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_lone_mask_serves_a_lone_style_and_a_wrong_count_is_named():
    from PIL import Image

    from impasto.api import attach_masks
    from impasto.optimize import StyleInput

    def styles(n):
        return [StyleInput(torch.rand(1, 3, 16, 16)) for _ in range(n)]

    left = np.zeros((10, 12), np.uint8)
    left[:, :6] = 255
    for mask in (left, Image.fromarray(left), torch.from_numpy(left)):
        one = styles(1)
        attach_masks(one, mask, None, (12, 10), torch.device("cpu"))
        assert one[0].mask is not None and one[0].mask.shape == (1, 1, 10, 12)
        assert float(one[0].mask[..., :5].min()) == 1.0 and float(one[0].mask[..., 7:].max()) == 0.0
    with pytest.raises(ImpastoError, match=r"^one mask given for 2 styles: give a list of one mask per style \(None: everywhere\)$"):
        attach_masks(styles(2), left, None, (12, 10), torch.device("cpu"))
    with pytest.raises(ImpastoError, match=r"^1 masks given for 2 styles: give one per style \(None: everywhere\)$"):
        attach_masks(styles(2), [left], None, (12, 10), torch.device("cpu"))


def test_weights_are_loaded_once_however_their_path_is_spelt(tmp_path, monkeypatch):
    loads = []
    monkeypatch.setattr(impasto.api.W, "load", lambda path: loads.append(path) or impasto.api.W.Weights("vgg19", "caffe", {}, path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w").mkdir()
    for name in ("vgg19-caffe-features.safetensors", "y.safetensors"):
        (tmp_path / "w" / name).touch()
    x = "w/vgg19-caffe-features.safetensors"
    stylizer = Stylizer(download=False)
    spellings = (f"./{x}", x, str(tmp_path / x), f"w/../{x}", "w", "./w/")  # the folder too: the file found in it
    same = [stylizer.weights(Settings(weights=spelt)) for spelt in spellings]
    same.append(stylizer.weights(Settings(weights=x, model="vgg19")))  # the model it holds, named or not
    monkeypatch.setenv("IMPASTO_WEIGHTS", x)
    same.append(stylizer.weights(Settings()))  # the same file, named by the environment
    assert len(loads) == 1 and all(w is same[0] for w in same)
    assert stylizer.weights(Settings(weights="w/y.safetensors")) is not same[0] and len(loads) == 2
    with pytest.raises(ImpastoError, match=r"holds vgg19 weights but model='vgg16' was asked for"):
        stylizer.weights(Settings(weights=x, model="vgg16"))  # a cached copy is still checked against the model asked for


def test_cpu_and_cpu0_are_one_device_with_one_network(stylizer, make_settings):
    assert stylizer.extractor(make_settings(), torch.device("cpu")) is stylizer.extractor(make_settings(), torch.device("cpu:0"))


def test_a_shared_network_is_in_the_devices_layout_before_any_run_uses_it(make_settings):
    # Put in channels-last by the first run that used it, it was reordered under another thread's
    # running convolutions: two web jobs starting at once crashed the server or gave NaN.
    stylizer = Stylizer(download=False)
    for layers in (("conv1_1", "conv2_1"), ("conv3_1",)):
        extractor = stylizer.extractor(make_settings(style_layers=layers), torch.device("cpu"))
        convs = [m.weight for m in extractor.features if isinstance(m, torch.nn.Conv2d)]
        assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)


THREADS_SCRIPT = """
import sys, threading, numpy as np
from impasto import Stylizer, Settings
stylizer, out = Stylizer(download=False), {}
def run(i):
    settings = Settings(weights=sys.argv[1], device="cpu", size=48, multiscale=False, iterations=3, precision="fp32",
                        style_layers=("conv1_1", "conv2_1", "conv3_1")[: i + 2])
    photo = np.random.default_rng(i).random((40, 48, 3))
    out[i] = stylizer.run(photo, photo[::-1].copy(), settings).losses["total"]
threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
for t in threads: t.start()
for t in threads: t.join()
print(sorted(out.items()))
sys.exit(0 if len(out) == 2 and all(np.isfinite(v) for v in out.values()) else 5)
"""


def test_two_threads_may_share_a_fresh_stylizer(synthetic_weights):
    # In a child process: a crash is this test's failure, not the end of the test run.
    done = run_python(["-c", THREADS_SCRIPT, str(synthetic_weights)], timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("frames", ["3", 2.5, True, -1])
def test_frames_must_be_a_whole_number(stylizer, make_settings, content_array, style_array, frames):
    with pytest.raises(ImpastoError, match=r"^frames must be a whole number, zero or more, not "):
        stylizer.run(content_array, style_array, make_settings(), frames=frames)


# -- save_every: frames written during the run ------------------------------------------------------

# Two scales (24x20, then 48x40), three iterations each.
TWO_SCALES = dict(multiscale=True, size=48, min_size=24, scale_factor=2.0, initial_iterations=3, iterations=3)


def frame_names(folder):
    return sorted(path.name for path in folder.iterdir())


def test_save_every_writes_frames_at_the_outputs_size_cut_out_as_the_photo(stylizer, make_settings, content_array, style_array, tmp_path):
    from PIL import Image

    photo = np.dstack([to_uint8(content_array), np.full(content_array.shape[:2], 255, np.uint8)])
    photo[:, :12, 3] = 0  # the left quarter is transparent
    seen = {}
    settings = make_settings(**TWO_SCALES, optimizer="adam")  # small steps, each better: the best are the final pixels
    result = stylizer.run(photo, style_array, settings, callback=lambda p: seen.setdefault(p.done, p.image.clone()),
                          save_every=2, frames_dir=tmp_path / "frames")  # fmt: skip
    assert frame_names(tmp_path / "frames") == ["00002.png", "00004.png", "00006.png"]
    for name in frame_names(tmp_path / "frames"):  # 00002 is the coarse scale's, enlarged
        frame = np.asarray(Image.open(tmp_path / "frames" / name))
        assert frame.shape == (40, 48, 4) and frame[:, :11, 3].max() == 0 and frame[:, 13:, 3].min() == 255
    middle = Image.open(tmp_path / "frames" / "00004.png").convert("RGB")
    assert np.array_equal(np.asarray(middle), np.asarray(impasto.images.tensor_to_pil(seen[4])))  # the picture a callback sees
    # The last is the run's picture, as a GIF's last frame is: the best pixels kept, which are
    # those after the last iteration's step here, not the ones it scored.
    last = np.asarray(Image.open(tmp_path / "frames" / "00006.png"))
    assert np.array_equal(last, np.asarray(result.image))
    assert not np.array_equal(last[..., :3], np.asarray(impasto.images.tensor_to_pil(seen[6])))


def test_stylize_saves_frames_too_each_the_picture_handed_out(stylizer, make_settings, content_array, style_array, tmp_path, monkeypatch):
    # No callback: the frames are still the finished picture, the photo's colours put back
    # (the picture optimised under preserve_color="luminance" has none).
    monkeypatch.setattr(impasto.api, "_default", stylizer)
    settings = make_settings(**TWO_SCALES, preserve_color="luminance", init="style", style_weight=1000.0)
    impasto.stylize(content_array, style_array, settings, save_every=4, frames_dir=tmp_path / "frames")
    assert frame_names(tmp_path / "frames") == ["00004.png", "00006.png"]  # every 4th, and the last
    for name in frame_names(tmp_path / "frames"):
        assert np.abs(mean_rgb(impasto.load_image(tmp_path / "frames" / name)) - mean_rgb(content_array)).max() < 0.05


@pytest.mark.parametrize(
    "case, message",
    [
        ("a file", "{tmp}/frames: exists and is not a folder (save_every writes its frames there)"),
        ("earlier frames", "{tmp}/frames: already holds frames (pass overwrite=True to replace them)"),
        ("no parent", "{tmp}/missing/frames: folder {tmp}/missing does not exist"),
        ("no folder", "save_every=2 needs frames_dir, the folder to write the frames in"),
    ],
)
def test_the_frames_folder_is_checked_before_the_inputs_are_read(stylizer, make_settings, content_array, style_array, tmp_path,
                                                                 monkeypatch, case, message):  # fmt: skip
    def too_late(*args, **kwargs):
        pytest.fail("the inputs were read before the frames' folder was checked")

    monkeypatch.setattr(impasto.api, "load_image_and_alpha", too_late)
    monkeypatch.setattr(stylizer, "weights", too_late)
    folder = tmp_path / ("missing/frames" if case == "no parent" else "frames")
    if case == "a file":
        folder.write_bytes(b"not a folder")
    elif case == "earlier frames":
        folder.mkdir()
        (folder / "00002.png").write_bytes(b"an earlier frame")
    with pytest.raises(ImpastoError, match=f"^{re.escape(message.format(tmp=tmp_path))}$"):
        stylizer.run(content_array, style_array, make_settings(), save_every=2, frames_dir=None if case == "no folder" else folder)
    if case == "earlier frames":
        assert frame_names(folder) == ["00002.png"] and (folder / "00002.png").read_bytes() == b"an earlier frame"


@pytest.mark.parametrize(
    "given, message",
    [
        (dict(save_every=-1), "save_every must be a whole number, zero or more, not -1"),
        (dict(save_every=2.5), "save_every must be a whole number, zero or more, not 2.5"),
        (dict(save_every="3"), "save_every must be a whole number, zero or more, not '3'"),
        (dict(save_every=True), "save_every must be a whole number, zero or more, not True"),
        (dict(save_every=2, overwrite="no"), "overwrite must be True or False, not 'no'"),
        (dict(save_every=2, frames_dir=3), "frames_dir must be the path of a folder, not 3"),
        (dict(save_every=2, frames_dir=""), "frames_dir must be the path of a folder, not ''"),
    ],
)
def test_bad_save_every_values_are_one_line_errors(stylizer, make_settings, content_array, style_array, tmp_path, given, message):
    with pytest.raises(ImpastoError, match=f"^{re.escape(message)}$"):
        stylizer.run(content_array, style_array, make_settings(), **({"frames_dir": tmp_path / "frames"} | given))
    assert not (tmp_path / "frames").exists()


def test_overwrite_replaces_an_earlier_runs_frames_as_a_set(stylizer, make_settings, content_array, style_array, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for name in ("00002.png", "00008.png"):  # 00008: a longer run's, which must not trail after this run's
        (folder / name).write_bytes(b"an earlier frame")
    (folder / "notes.txt").write_text("not a frame")
    (folder / "2024_trip.png").write_bytes(b"a picture of the user's own, named with digits")
    stylizer.run(content_array, style_array, make_settings(**TWO_SCALES), save_every=2, frames_dir=folder, overwrite=True)
    assert frame_names(folder) == ["00002.png", "00004.png", "00006.png", "2024_trip.png", "notes.txt"]
    assert impasto.load_image(folder / "00002.png").size == (48, 40)


def test_a_folder_of_the_users_own_pictures_is_not_taken_for_frames(stylizer, make_settings, content_array, style_array, tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    (folder / "2024_trip.png").write_bytes(b"a picture of the user's own")
    stylizer.run(content_array, style_array, make_settings(iterations=2), save_every=2, frames_dir=folder)
    assert (folder / "2024_trip.png").read_bytes() == b"a picture of the user's own"
    assert "00002.png" in frame_names(folder)


def test_a_run_stopped_early_leaves_the_frames_it_wrote(stylizer, make_settings, content_array, style_array, tmp_path):
    settings = make_settings(iterations=8)
    result = stylizer.run(content_array, style_array, settings, callback=lambda p: False if p.done == 3 else None,
                          save_every=1, frames_dir=tmp_path / "stopped")  # fmt: skip
    # The iteration the callback stopped at was painted: its frame is written before the callback sees it.
    assert result.interrupted and frame_names(tmp_path / "stopped") == ["00001.png", "00002.png", "00003.png"]

    def ctrl_c(progress):
        if progress.done == 5:
            raise KeyboardInterrupt

    with pytest.raises(impasto.Interrupted):
        stylizer.run(content_array, style_array, settings, callback=ctrl_c, save_every=2, frames_dir=tmp_path / "ctrl-c")
    assert frame_names(tmp_path / "ctrl-c") == ["00002.png", "00004.png"]


def test_a_frame_that_cannot_be_written_does_not_lose_the_painting(stylizer, make_settings, content_array, style_array, tmp_path, monkeypatch):
    import errno

    import impasto.media

    real_save, written = impasto.media.save_image, []

    def disk_fills_up(image, path, overwrite=False):
        if len(written) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(path)
        return real_save(image, path, overwrite=overwrite)

    monkeypatch.setattr(impasto.media, "save_image", disk_fills_up)
    with pytest.warns(impasto.ImpastoWarning, match=r"00003\.png: could not write this frame \(No space left on device\); the run goes on"):
        result = stylizer.run(content_array, style_array, make_settings(iterations=6), save_every=1, frames_dir=tmp_path / "frames")
    assert not result.interrupted and len(result.history) == 6  # painted to the end
    assert frame_names(tmp_path / "frames") == ["00001.png", "00002.png"]  # and no more tried after the failure


def test_a_frames_folder_without_save_every_is_said_to_change_nothing(stylizer, make_settings, content_array, style_array, tmp_path):
    with pytest.warns(impasto.ImpastoWarning, match=r"frames_dir=.* changes nothing without save_every=N"):
        stylizer.run(content_array, style_array, make_settings(iterations=2), frames_dir=tmp_path / "frames")
    assert not (tmp_path / "frames").exists()


def test_a_photo_with_a_flat_background_is_painted_there_and_the_result_says_so(stylizer, make_settings, style_array):
    from conftest import textured_image

    photo = textured_image(40, 48, seed=4)
    cut_out = photo.copy()
    cut_out[:, :12] = 1.0  # a product shot's background, flattened on white
    settings = make_settings(iterations=2)
    assert settings.flat_content is None  # the default: decided for each photo
    decided = stylizer.run(cut_out, style_array, settings)
    assert decided.settings.flat_content == impasto.optimize.FLAT_BACKGROUND_FLOOR
    # Said in the result, with what to pass to have it weighed like the rest (as typed in Python here).
    [note] = decided.notes
    assert "flat background" in note and "flat_content=1" in note and decided.summary()["notes"] == [note]
    plain = stylizer.run(photo, style_array, settings)
    assert plain.settings.flat_content == 1.0 and plain.notes == []
    asked = stylizer.run(cut_out, style_array, settings.replace(flat_content=1.0))
    assert asked.settings.flat_content == 1.0 and asked.notes == []
    # Asked for, the same value is no news either.
    assert stylizer.run(cut_out, style_array, settings.replace(flat_content=0.1)).notes == []
