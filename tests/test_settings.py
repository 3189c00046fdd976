"""The Settings object itself: how it is made, what it refuses, and what it records."""

from __future__ import annotations

import dataclasses
import inspect
import json
import warnings

import numpy as np
import pytest
from PIL import Image

from impasto import ImpastoError, ImpastoWarning, Settings
from impasto import settings as settings_module
from impasto.errors import command_line
from impasto.settings import BadSettingValue, parse_setting
from impasto.api import Result
from impasto.batch.plan import Job
from impasto.layers import conv_layer_names


def test_a_mistyped_keyword_to_the_constructor_is_named_with_a_guess():
    with pytest.raises(ImpastoError) as error:
        Settings(style_weigth=50)  # type: ignore[call-arg]
    assert str(error.value) == "unknown setting style_weigth (did you mean style_weight?); help(impasto.Settings) lists them"
    # Still the dataclass: its signature, positional fields, replace() and equality are as they were.
    assert list(inspect.signature(Settings).parameters)[:2] == ["model", "weights"]
    assert Settings("vgg16").model == "vgg16"
    assert dataclasses.replace(Settings(size=64), size=96) == Settings(size=96)


def test_numpy_numbers_become_python_ones_so_a_summary_is_json():
    settings = Settings(content_weight=np.float32(1.5), size=np.int64(64), seed=np.uint32(3), style_layer_weights=None)
    assert (type(settings.content_weight), type(settings.size), type(settings.seed)) == (float, int, int)
    assert settings.content_weight == 1.5 and settings.size == 64 and settings.seed == 3
    result = Result(image=Image.new("RGB", (8, 8)), losses={}, history=[], seconds=0.0, settings=settings)
    assert json.loads(json.dumps(result.summary()))["settings"]["size"] == 64
    # A fraction given for a count is still refused by name, not rounded into one.
    with pytest.raises(ImpastoError, match=r"^iterations must be a whole number, not 2\.5$"):
        Settings(iterations=np.float64(2.5)).validate()


def test_every_setting_but_the_device_is_one_method_that_identity_and_batch_records_share():
    settings = Settings(device="cuda:1", size=96, flat_content=0.5, upsample_grain=0.5, fine_content_layers="conv3_2")
    every = settings.to_dict_without_device()
    # Where a run happens and how its kernels are launched do not change what it paints.
    assert every == {k: v for k, v in settings.to_dict().items() if k not in ("device", "cuda_graphs")}
    assert settings.replace(cuda_graphs=False).identity() == settings.identity()
    assert settings.identity() == every  # the settings added later are not at their old values, so they are kept
    assert "upsample_grain" not in Settings(upsample_grain=0).identity()  # at 0, as every run before it, it is left out
    assert Settings().identity()["upsample_grain"] == 1  # the default since session 36: kept
    assert "fine_content_layers" not in Settings(fine_content_layers=()).identity()  # none, as every run before session 38
    assert Settings().identity()["fine_content_layers"] == ["conv3_2"]  # the default since session 40: kept
    # Their weight: left out at session 38-39's 1, and wherever there are no fine layers (it paints nothing).
    assert "fine_content_weight" not in Settings(fine_content_layers="conv3_2", fine_content_weight=1.0).identity()
    assert Settings(fine_content_layers="conv3_2", fine_content_weight=0.5).identity()["fine_content_weight"] == 0.5
    assert "fine_content_weight" not in Settings(fine_content_layers=(), fine_content_weight=0.5).identity()
    assert Job(output="a.png", settings=settings).record()["settings"] == every


@pytest.mark.parametrize(
    "model, count, message",
    [
        ("vgg19", 5, "5 style layer weights given for style_layers 'all', which is every conv layer: 16 in vgg19"),
        ("vgg16", 16, "16 style layer weights given for style_layers 'all', which is every conv layer: 13 in vgg16"),
        # No model named: the weights file may yet make it either, so only a count neither has is refused now.
        (None, 5, "which is every conv layer: 13 in vgg16, 16 in vgg19"),
    ],
)
def test_weights_for_all_style_layers_are_counted_before_the_run(model, count, message):
    with pytest.raises(ImpastoError, match=message):
        Settings(model=model, style_layers=("all",), style_layer_weights=(1.0,) * count).validate()


@pytest.mark.parametrize("model", [None, "vgg16", "vgg19"])
def test_the_right_count_of_weights_for_all_style_layers_is_accepted(model):
    count = len(conv_layer_names(model or "vgg19"))
    Settings(model=model, style_layers=("all",), style_layer_weights=(1.0,) * count).validate()
    if model is None:  # a vgg16 weights file may decide the model
        Settings(style_layers=("all",), style_layer_weights=(1.0,) * len(conv_layer_names("vgg16"))).validate()


def test_numbers_in_messages_are_written_as_a_user_types_them():
    with pytest.raises(ImpastoError, match=r"^style_scale must be positive, not 0$"):
        Settings(style_scale=0.0).validate()
    with pytest.raises(ImpastoError, match=r"^style_weight must be a non-negative number, not -1$"):
        Settings(style_weight=-1.0).validate()


def test_an_extreme_layer_decay_weights_one_end_of_the_layers_instead_of_failing():
    layers = tuple(conv_layer_names("vgg19"))
    deep = Settings(style_layers=layers, style_layer_decay=1e-21).validate().layer_weights()
    shallow = Settings(style_layers=layers, style_layer_decay=1e21).validate().layer_weights()
    assert deep[-1] == pytest.approx(1.0) and shallow[0] == pytest.approx(1.0)
    # The usual decays are unchanged: decay^-i, normalised to sum 1.
    mild = Settings(style_layers=layers[:3], style_layer_decay=2.0).layer_weights()
    assert mild == pytest.approx((4 / 7, 2 / 7, 1 / 7))
    # A zero explicit weight on the layer the decay favours leaves the others to share it.
    assert Settings(style_layers=layers[:3], style_layer_weights=(1, 1, 0), style_layer_decay=1e-300).layer_weights() == pytest.approx((0, 1, 0))


# -- one rule for text and JSON values, in every shell ---------------------------------------------


def _in_every_shell(name: str, text: str) -> dict[str, object]:
    """`text` for setting `name` as each shell reads it: a sweep's grid, a manifest row, a web form
    field, the command line. Each gives the value, or its one-line refusal."""
    from impasto.batch.plan import resolve_settings
    from impasto.cli import build_run_parser, explicit_settings
    from impasto.sweep import parse_grid
    from impasto.web.options import coerce_settings

    grid_text = text.replace(",", "+")  # a grid joins a list's items with '+': its ',' separates values
    kind, is_list, optional = settings_module.field_kind(name)
    shells = {
        "sweep": lambda: parse_grid(f"{name}={grid_text}")[1][0],
        "batch": lambda: getattr(resolve_settings(Settings(style_layers=("conv1_1", "conv2_1")), {name: text}), name),
        "web": lambda: coerce_settings({name: text})[name],
    }
    if kind is not bool:  # a switch on the command line is a flag (--multiscale, --no-multiscale), not a value
        shells["cli"] = lambda: explicit_settings(build_run_parser().parse_args(["c.png", "s.png", "-o", "o.png", f"--{name.replace('_', '-')}", text]))[name]
    out: dict[str, object] = {}
    for shell, read in shells.items():
        try:
            out[shell] = read()
        except ImpastoError as exc:
            out[shell] = ImpastoError(str(exc))
        except SystemExit:  # argparse's refusal, said on stderr
            out[shell] = SystemExit()
    return out


@pytest.mark.parametrize(
    "name, text, value",
    [
        ("size", "512.0", 512),  # a whole number written with a point
        ("size", " 5e2 ", 500),
        ("multiscale", "yes", True),
        ("style_chain", "Off", False),
        ("style_layers", "conv1_1,conv2_1", ("conv1_1", "conv2_1")),
        ("style_layer_weights", "1,0.5", (1.0, 0.5)),
        ("preserve_color", "none", None),  # a setting that may be None
        ("seed", "default", None),
        ("lr", "0.5", 0.5),
        ("init", "noise", "noise"),
    ],
)
def test_the_same_text_is_the_same_setting_in_every_shell(name, text, value):
    read = _in_every_shell(name, text)
    assert read == {shell: value for shell in read}, read
    assert all(type(v) is type(value) for v in read.values()), read  # 512, not 512.0


@pytest.mark.parametrize(
    "name, text, sweep, batch, web",
    [
        ("size", "2.5", "grid size: '2.5' is not a whole number", "size: '2.5' is not a whole number", "size must be a whole number, not '2.5'"),
        ("style_weight", "lots", "grid style_weight: 'lots' is not a number", "style_weight: 'lots' is not a number",
         "style_weight must be a number, not 'lots'"),
        ("style_weight", "nan", "grid style_weight: 'nan' is not a finite number", "style_weight: 'nan' is not a finite number",
         "style_weight must be a finite number, not 'nan'"),
        ("multiscale", "maybe", "grid multiscale: 'maybe' is not true or false", "multiscale: 'maybe' is not true or false",
         "multiscale must be true or false, not 'maybe'"),
        ("iterations", "none", "grid iterations: 'none' is not a whole number", "iterations: 'none' is not a whole number",
         "iterations must be a whole number, not 'none'"),  # none only for a setting that may be None
    ],
)  # fmt: skip
def test_the_same_bad_text_is_refused_in_every_shell_in_its_own_words(capsys, name, text, sweep, batch, web):
    read = _in_every_shell(name, text)
    assert {shell: str(v) for shell, v in read.items() if shell != "cli"} == {"sweep": sweep, "batch": batch, "web": web}
    if "cli" in read:
        assert isinstance(read["cli"], SystemExit)
        err = capsys.readouterr().err
        assert f"argument --{name.replace('_', '-')}: invalid " in err and repr(text) in err, err


def test_parse_setting_takes_json_values_as_the_same_rule():
    assert parse_setting("size", 512.0) == 512 and type(parse_setting("size", np.float64(512))) is int
    assert parse_setting("multiscale", 0) is False and parse_setting("multiscale", True) is True
    assert parse_setting("style_layers", ["conv1_1", " conv2_1 "]) == ("conv1_1", "conv2_1")
    assert parse_setting("seed", None) is None and parse_setting("seed", "") is None
    assert parse_setting("seed", "12345678901234567890") == 12345678901234567890  # exact, not through a float
    assert parse_setting("style_layers", "conv1_1+conv2_1", list_sep="+") == ("conv1_1", "conv2_1")
    for name, value in (("size", 2.5), ("size", True), ("size", None), ("multiscale", 2), ("style_layers", 5)):
        with pytest.raises(BadSettingValue):
            parse_setting(name, value)
    with pytest.raises(ImpastoError, match=r"^unknown setting style_weigth \(did you mean style_weight\?\)"):
        parse_setting("style_weigth", "5")


def test_a_setting_given_as_none_on_the_command_line_is_kept_over_a_preset():
    from impasto.cli import build_run_parser, settings_from_args

    args = build_run_parser().parse_args(["c.png", "s.png", "-o", "o.png", "--seed", "none", "--preset", "fast"])
    assert settings_from_args(args).seed is None  # a seed drawn afresh, as seed=none in a grid
    assert settings_from_args(build_run_parser().parse_args(["c.png", "s.png", "-o", "o.png"])).seed == 0


# -- settings built from given values: one function, and its has-no-effect warnings ----------------


def test_from_given_puts_the_preset_under_the_given_values_and_checks_them():
    settings = Settings.from_given("fast", {"size": 64, "iterations": 7})
    assert (settings.size, settings.min_size, settings.iterations) == (64, 128, 7)
    assert settings.initial_iterations == 7  # 64 px is one scale: the iterations given are run there
    assert Settings.from_given("fast", {"size": 64, "iterations": 7}, honour_iterations=False).initial_iterations == 60
    under = Settings.from_given("novak2016", {}, under={"size": 96, "gram_shift": 0.5})
    assert (under.size, under.gram_shift) == (96, -1.0)  # the preset replaces what it sets of `under`
    assert Settings.from_given(None, {"weights": "w.pth"}, under={"model": "vgg16"}).model is None  # the file decides
    with pytest.raises(ImpastoError, match="unknown preset 'novak'"):
        Settings.from_given("novak", {})
    with pytest.raises(ImpastoError, match=r"^size must be at least 16 pixels"):
        Settings.from_given(None, {"size": 8})


def test_an_option_that_changes_nothing_is_warned_of_from_python_too():
    settings = Settings(multiscale=False, style_loss="w2")
    with pytest.warns(ImpastoWarning) as caught:
        settings.warn_unused({"min_size", "upsample_detail", "gram_shift", "size"})
    assert [str(w.message) for w in caught] == [
        "min_size, upsample_detail only apply to coarse-to-fine runs: with multiscale=False they change nothing",
        "gram_shift only applies to the Gram loss: with style_loss='w2' it changes nothing",
    ]
    with command_line():  # the command line names them as its flags
        assert settings.unused_notes({"scale_factor"}) == [
            "--scale-factor only applies to coarse-to-fine runs: with --no-multiscale it changes nothing"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Settings().warn_unused({"min_size", "gram_shift"})  # they apply: nothing to say
        Settings.from_given(None, {"gram_shift": -1.0})  # building alone says nothing: the shell asks


def test_the_command_line_and_a_web_job_warn_through_settings(synthetic_weights):
    from impasto.cli import build_run_parser, settings_from_args
    from impasto.web.options import SettingsResolver

    args = build_run_parser().parse_args(["c.png", "s.png", "-o", "o.png", "--style-loss", "meanstd", "--gram-shift", "-1"])
    with pytest.warns(ImpastoWarning, match=r"^gram_shift only applies to the Gram loss: with style_loss='meanstd'"):
        settings_from_args(args)
    resolver = SettingsResolver({"weights": str(synthetic_weights), "multiscale": False})
    with pytest.warns(ImpastoWarning, match=r"^gram_shift only applies"):
        resolver({"settings": {"style_loss": "w2", "gram_shift": -1}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # The page sends every field it shows: one left at the value it has anyway is not a choice.
        resolver({"settings": {"min_size": Settings().min_size, "size": 64}})


def test_a_sweep_warns_once_of_a_swept_setting_that_changes_nothing(stylizer, make_settings, content_array, style_array):
    import impasto

    with pytest.warns(ImpastoWarning) as caught:
        impasto.sweep(content_array, style_array, {"gram_shift": [0, -1]}, make_settings(iterations=1, initial_iterations=1), stylizer,
                      style_loss="meanstd")  # fmt: skip
    said = [str(w.message) for w in caught if "gram_shift" in str(w.message)]
    assert said == ["gram_shift only applies to the Gram loss: with style_loss='meanstd' it changes nothing"]


def test_a_batch_of_many_rows_warns_once_naming_a_row(tmp_path):
    from impasto.batch.plan import jobs_from_rows, plan

    rows = [{"content": f"photo{i}.png", "style": "painting.png", "gram_shift": "-1", "seed": i % 3} for i in range(1000)]
    with pytest.warns(ImpastoWarning) as caught:
        jobs = plan(jobs_from_rows(rows, folder=tmp_path), Settings(style_loss="w2"))
    assert [str(w.message) for w in caught] == [
        "job 1 and 999 other jobs: gram_shift only applies to the Gram loss: with style_loss='w2' it changes nothing"]
    assert all(job.error is None and job.settings.gram_shift == -1 for job in jobs)
    # What the batch's own settings (the command line's options) make useless was said by the command line.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain = [{k: v for k, v in row.items() if k != "gram_shift"} for row in rows[:3]]
        plan(jobs_from_rows(plain, folder=tmp_path), Settings(style_loss="w2", gram_shift=-1.0), fixed={"gram_shift"})
