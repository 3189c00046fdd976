"""The Settings object itself: how it is made, what it refuses, and what it records."""

from __future__ import annotations

import dataclasses
import inspect
import json

import numpy as np
import pytest
from PIL import Image

from impasto import ImpastoError, Settings
from impasto.api import Result
from impasto.batch.plan import Job
from impasto.vgg import conv_layer_names


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
    settings = Settings(device="cuda:1", size=96, flat_content=0.5)
    every = settings.to_dict_without_device()
    assert every == {k: v for k, v in settings.to_dict().items() if k != "device"}
    assert settings.identity() == every  # flat_content is not at its old value, so it is kept
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
