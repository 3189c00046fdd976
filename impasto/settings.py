"""The one typed settings object shared by the API, the CLI and the presets."""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import os
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, Mapping, Optional, Union

from .errors import ImpastoError, number, on_command_line, option, warn
from .layers import conv_layer_names, layer_names

MODELS = ("vgg16", "vgg19")
POOLINGS = ("max", "avg")
OPTIMIZERS = ("lbfgs", "adam")
STYLE_LOSSES = ("gram", "w2", "meanstd")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
# "histogram" is the eigenvalue (image analogies) form of the paper's colour transfer,
# "histogram-cholesky" its Cholesky form.
COLOR_MODES = ("luminance", "histogram", "histogram-cholesky")
# style_layers=("all",): every conv layer of the model (Novak & Nikulin 2016), resolved
# once the weights have said which model they are (Settings.for_model).
ALL_LAYERS = "all"
# Below this a tile is mostly its own overlap (48 px at least, tiles.tile_overlap).
MIN_TILE = 128
# More scales than a 4096 px output has at a factor of 1.2 (20) is a mistyped factor, not a plan.
MAX_SCALES = 24

# Gatys et al. 2015: style from the first conv of each block, content from conv4_2.
GATYS_STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")


# Settings added after batch indexes and video frames were first written, with the value
# those runs had, as to_dict gives it (a list for a list setting): Settings.identity leaves them
# out at that value, so earlier work still matches.
ADDED_LATER: dict[str, Any] = {"flat_content": 1.0, "upsample_grain": 0.0, "fine_content_layers": [], "fine_content_weight": 1.0}


def without_unchanged(data: dict[str, Any]) -> dict[str, Any]:
    """`data` (Settings.to_dict's, or part of it) less what earlier runs cannot differ in: each
    setting added later while it holds the value those runs had (ADDED_LATER), and the fine
    content layers' weight where there are none (it then paints nothing)."""
    data = {k: v for k, v in data.items() if k not in ADDED_LATER or v != ADDED_LATER[k]}
    if not data.get("fine_content_layers"):
        data.pop("fine_content_weight", None)
    return data


def _is_kind(value: Any, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:  # numpy's integers too; a bool is not a count
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    return isinstance(value, kind)


# How a message names each kind _scalar_kinds() can give.
_KIND_NAMES = {int: "a whole number", float: "a number", bool: "True or False", str: "text", type(None): "None"}


@functools.lru_cache(maxsize=None)
def field_kind(name: str) -> tuple[type, bool, bool]:
    """(the type of one value, whether the setting is a list of them, whether it may be None), from
    Settings' annotation: Optional[tuple[float, ...]] gives (float, True, True), int (int, False, False).
    KeyError for a name that is not a setting."""
    hint = typing.get_type_hints(Settings)[name]
    parts = typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else (hint,)
    (hint,) = [part for part in parts if part is not type(None)]
    if typing.get_origin(hint) is tuple:
        return typing.get_args(hint)[0], True, type(None) in parts
    return hint, False, type(None) in parts


@functools.lru_cache(maxsize=1)
def _scalar_kinds() -> dict[str, tuple[type, ...]]:
    """The scalar settings and the types each accepts (`Optional[int]`: int or None), from the
    annotations: "50" or "no" from a notebook is named, not turned into a crash or into True."""
    kinds: dict[str, tuple[type, ...]] = {}
    for f in fields(Settings):
        kind, is_list, optional = field_kind(f.name)
        if not is_list and kind in (int, float, bool, str):
            kinds[f.name] = (kind, type(None)) if optional else (kind,)
    return kinds


# Text that gives None to a setting that may be None (its default behaviour): a form sends its
# empty fields as "", a grid or a CSV cell says none or default.
NONE_WORDS = ("none", "default", "")
TRUE_WORDS, FALSE_WORDS = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


class BadSettingValue(ImpastoError):
    """A value parse_setting cannot read as its setting's type. The message is a manifest row's
    ("size: 'big' is not a whole number"); must() says it in validate's words ("size must be ...")."""

    def __init__(self, name: str, value: Any, wanted: str) -> None:
        super().__init__(f"{name}: {value!r} is not {wanted}")
        self.name, self.value, self.wanted = name, value, wanted

    def __reduce__(self) -> Any:  # pickled whole (Exception's own passes the message alone to __init__)
        return type(self), (self.name, self.value, self.wanted)

    def must(self) -> str:
        return f"{self.name} must be {self.wanted}, not {self.value!r}"


def parse_style(text: str) -> tuple[str, float]:
    """`painting.jpg:0.7` -> (path, 0.7); a colon not followed by a number is part of the path."""
    path, sep, weight = text.rpartition(":")
    if sep and path:
        try:
            return path, float(weight)
        except ValueError:
            if Path(path).is_file() and not Path(text).exists():
                raise ImpastoError(f"{text}: the weight after ':' must be a number, such as {path}:0.5") from None
    return text, 1.0


def typed_list(value: tuple[Any, ...]) -> str:
    """A list setting as it is typed on the command line: items joined by commas, `none` when empty
    (what parse_setting reads back)."""
    return ",".join(map(str, value)) or "none"


def parse_setting(name: str, value: Any, list_sep: str = ",", other_sep: Optional[str] = None) -> Any:
    """`value` as the setting `name` takes it: text (a command line's, a grid's, a CSV cell's, a form
    field's) or a JSON value. The one rule of every shell, so that the same text is the same setting
    in all of them:

    - a whole number may be written 512.0 or 5e2 (2.5 is refused); a number must be finite;
    - a switch is true/false, yes/no, on/off or 1/0 (any case; JSON's true, false, 1 and 0 too);
    - a setting that may be None is None for none, default, empty text or null;
    - a list setting takes a list, or text with `list_sep` between its items (a grid's values are
      separated by ',', so a sweep joins a list's items with '+'); `other_sep` is taken where the
      text has no `list_sep` (a CSV cell may join them with '+', which needs no quotes);
    - text for a text setting is kept, stripped; any other value is left to Settings to take (a path
      object, a torch.device) or refuse.

    Raises BadSettingValue, or ImpastoError for a name that is not a setting."""
    check_names([name])
    kind, is_list, optional = field_kind(name)
    if optional and (value is None or (isinstance(value, str) and value.strip().lower() in NONE_WORDS)):
        return None
    if not is_list:
        return _parse_one(name, kind, value)
    if isinstance(value, str) and other_sep and list_sep not in value:
        list_sep = other_sep
    items = value.split(list_sep) if isinstance(value, str) else value
    if isinstance(items, (bytes, Mapping)) or not isinstance(items, Iterable):  # a numpy array from a notebook is a list
        raise BadSettingValue(name, value, f"a list, or text with {list_sep!r} between the items")
    return tuple(_parse_one(name, kind, item) for item in items if not (isinstance(item, str) and not item.strip()))


def _parse_one(name: str, kind: type, value: Any) -> Any:
    text = value.strip() if isinstance(value, str) else None
    shown = value if text is None else text
    if kind is bool:
        if isinstance(value, bool):
            return value
        if text is not None and text.lower() in TRUE_WORDS + FALSE_WORDS:
            return text.lower() in TRUE_WORDS
        if isinstance(value, numbers.Real) and value in (0, 1):
            return bool(value)
        raise BadSettingValue(name, shown, "true or false")
    if kind is int:
        whole = _as_number(shown)
        if isinstance(whole, float) and math.isfinite(whole) and whole.is_integer():
            whole = int(whole)
        if not isinstance(whole, int):
            raise BadSettingValue(name, shown, "a whole number")
        return whole
    if kind is float:
        real = _as_number(shown)
        if real is None:
            raise BadSettingValue(name, shown, "a number")
        if not math.isfinite(real):  # no setting takes one, and text such as "nan" is more often a slip
            raise BadSettingValue(name, shown, "a finite number")
        return float(real)
    return shown


def _as_number(value: Any) -> Union[int, float, None]:
    """A number from a number or its text (an int kept exact: a seed may have 19 digits); None if neither."""
    if isinstance(value, bool):  # True is not a count
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str):
        for convert in (int, float):
            try:
                return convert(value)
            except ValueError:
                pass
    return None


# The starts `init` names; anything else is a picture file.
INIT_NAMES = ("palette", "content", "noise", "style")
# Settings only a coarse-to-fine run reads: given with multiscale off, they change nothing.
MULTISCALE_ONLY = ("min_size", "scale_factor", "initial_iterations", "coarse_content", "upsample_detail", "upsample_grain")


@dataclass
class Settings:
    """Every knob of a run. Field docs double as the CLI's --help text."""

    # -- network
    model: Optional[str] = field(
        default=None, metadata={"help": "backbone: vgg16 or vgg19 (default vgg19, or the model of a --weights file)"}
    )
    weights: Optional[str] = field(
        default=None,
        metadata={"help": "weights file or folder (else $IMPASTO_WEIGHTS, the cache, then download)"},
    )
    pooling: str = field(default="avg", metadata={"help": "pooling in the network: max or avg (Gatys 2015 prefers avg)"})
    device: str = field(default="auto", metadata={"help": "auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps"})
    precision: str = field(
        default="auto",
        metadata={
            "help": "arithmetic of the network's passes (the losses are always fp32): auto is fp16 mixed precision "
            "on CUDA (the loss scaled against fp16 underflow), bf16 on a CPU that has it natively (AVX512-BF16, AMX) "
            "and fp32 elsewhere; fp16 or bf16 on a CPU without it is emulated, ~20x slower, for checks only"
        },
    )
    cuda_graphs: bool = field(
        default=True,
        metadata={
            "help": "on CUDA, record each scale's network and loss passes once as a CUDA graph and replay it: "
            "the same arithmetic, launched at a fraction of the host's cost (off: launch each kernel, for profiling)"
        },
    )

    # -- losses
    content_layers: tuple[str, ...] = field(default=("conv4_2",), metadata={"help": "layers whose features the output keeps"})
    fine_content_layers: tuple[str, ...] = field(
        default=("conv3_2",),
        metadata={
            "help": "content layers added at the output's own scale only, on top of the content layers, at "
            "fine_content_weight where the photo has detail and half that where it is smooth: once the coarser scales have "
            "settled the layout, they keep fine features that the painting's texture would cover (an eye, a "
            "mouth, a tower's lattice) under a strong painting; none: the content layers alone"
        },
    )
    fine_content_weight: float = field(
        default=0.5,
        metadata={
            "help": "weight of the fine content layers as a share of the content layers' (higher keeps more of the "
            "photo's fine detail and paints less of the painting over it)"
        },
    )
    style_layers: tuple[str, ...] = field(default=GATYS_STYLE_LAYERS, metadata={"help": "layers whose statistics the output matches"})
    style_layer_weights: Optional[tuple[float, ...]] = field(
        default=None, metadata={"help": "one weight per style layer (normalised to sum 1; default equal)"}
    )
    style_loss: str = field(
        default="gram",
        metadata={
            "help": "gram: Gram matrices (Gatys et al. 2015); w2: Wasserstein-2 between Gaussian fits "
            "(mean+covariance, as in crowsonkb/style-transfer-pytorch); meanstd: per-channel mean and std "
            "(AdaIN statistics, Huang & Belongie 2017)"
        },
    )
    content_weight: float = field(default=1.0, metadata={"help": "weight of the content loss"})
    style_weight: float = field(default=30.0, metadata={"help": "weight of the style loss (content:style ratio = content_weight/style_weight)"})
    tv_weight: float = field(default=2.0, metadata={"help": "weight of the total-variation (smoothness) loss"})
    gram_shift: float = field(
        default=0.0, metadata={"help": "activation shift added before the Gram matrix (Novak & Nikulin 2016 use -1)"}
    )
    style_layer_decay: float = field(
        default=1.0,
        metadata={
            "help": "geometric layer weighting: the i-th style layer's weight is multiplied by decay^-i, so >1 "
            "weights deeper layers less (Novak & Nikulin 2016, with --style-layers all)"
        },
    )
    style_chain: bool = field(
        default=False,
        metadata={
            "help": "chained inference (Novak & Nikulin 2016): also match the cross-correlations between the "
            "features of each pair of adjacent style layers"
        },
    )

    # -- optimisation
    optimizer: str = field(default="lbfgs", metadata={"help": "lbfgs or adam"})
    iterations: int = field(
        default=50,
        metadata={
            "help": "iterations at the finest scale, the output's (with --no-multiscale, at the one scale); an "
            "output too small for a second scale (under --min-size x --scale-factor) is one scale and gets --initial-iterations instead "
            "(on the command line, an --iterations given is run there)"
        },
    )
    initial_iterations: int = field(
        default=100,
        metadata={
            "help": "iterations at the coarsest scale (scales between get a geometric blend); an output too "
            "small for a second scale (under --min-size x --scale-factor) is one scale, and gets these (on the command line, unless "
            "--iterations is given)"
        },
    )
    lr: Optional[float] = field(default=None, metadata={"help": "learning rate (default 1 for lbfgs, 0.02 for adam)"})
    init: str = field(default="palette", metadata={"help": "start image: palette (the photo in the painting's colours: their mean "
                      "and covariance matched; the photo itself with --preserve-color), content (the photo as it is), noise, style "
                      "or a file path"})
    seed: Optional[int] = field(
        default=0, metadata={"help": "seed of the painting's grain (upsample_grain), the start's noise (init noise) and other random draws; CPU runs are repeatable "
        "with the same number of threads (a sum split over other threads rounds differently)"}
    )

    # -- sizes
    size: int = field(default=512, metadata={"help": "output long side in pixels"})
    style_scale: float = field(
        default=1.0,
        metadata={"help": "style image long side relative to the output's at every scale: >1 larger strokes, <1 finer"},
    )
    min_size: int = field(default=128, metadata={"help": "long side of the coarsest scale"})
    scale_factor: float = field(default=2.0, metadata={"help": "ratio between successive scales"})
    upsample_detail: float = field(
        default=1.0,
        metadata={
            "help": "when a scale is upsampled, add back this share (0-1) of the photo's fine detail that "
            "the coarser scale could not hold (0: plain upsampling; no effect without a content layer)"
        },
    )
    upsample_grain: float = field(
        default=1.0,
        metadata={
            "help": "when a scale is upsampled, add this share (0-1) of the painting's fine grain where the picture "
            "lacks it (the painting's fine detail with random phases, Galerne et al. 2011), for the finer scale to "
            "shape into the painting's own texture: a smooth sky gets Turner's spray; lower keeps a little more of the "
            "photo and paints a grainy painting's texture less closely (0: the smooth upsampled picture)"
        },
    )
    coarse_content: float = field(
        default=12.0,
        metadata={
            "help": "content weight multiplier at scales a quarter of the output's size or smaller, easing to 1 "
            "at the output's size: higher keeps the photo's layout (faces, outlines) where the painting's "
            "own shapes would cover it"
        },
    )
    flat_content: Optional[float] = field(
        default=None,
        metadata={
            "help": "content weight where the photo is flat (a clear sky, a backdrop), as a share (0-1) of the "
            "weight elsewhere: below 1 such areas are painted freely instead of in a regular pattern of small "
            "cells; 1 keeps one weight everywhere; default: 0.1 on a photo with a flat background (a tenth or "
            "more of it of one colour, as a cut-out on white or a studio backdrop has, a camera's noise aside), else 1"
        },
    )
    multiscale: bool = field(default=True, metadata={"help": "coarse-to-fine optimisation (off: one scale at --size)"})
    tile: int = field(
        default=0,
        metadata={
            "help": "cut scales wider or taller than this many pixels into overlapping tiles, optimised one at a "
            "time and blended (for prints larger than memory); 0: only when a scale would not fit, in the "
            "largest tiles that do"
        },
    )

    # -- colour
    preserve_color: Optional[str] = field(
        default=None,
        metadata={"help": "keep the content's colours (Gatys et al. 2016): luminance, histogram or histogram-cholesky (default: off)"},
    )

    def __post_init__(self) -> None:
        # numpy's scalars (a value read from an array) as Python's, so that to_dict and a Result's
        # summary() stay JSON; a float stays a float, so validate still names 2.5 given for a count.
        for name in _scalar_kinds():
            value = getattr(self, name)
            if type(value) not in (int, float, bool) and isinstance(value, numbers.Real):
                setattr(self, name, int(value) if isinstance(value, numbers.Integral) else float(value))
        for name in ("weights", "init"):  # paths as pathlib gives them
            if isinstance(getattr(self, name), os.PathLike):
                setattr(self, name, os.fspath(getattr(self, name)))
        if type(self.device).__module__.startswith("torch"):  # torch.device("cuda:0"), or a tensor's .device
            self.device = str(self.device)
        # Lists (JSON, a notebook) and comma-separated text become tuples: two Settings of the same layers
        # compare equal however they were given, and a copy made by replace() shares no list to change.
        for name in ("content_layers", "fine_content_layers", "style_layers"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = tuple(v.strip() for v in value.split(",") if v.strip())
            if isinstance(value, (list, tuple)) and [str(v).lower() for v in value] == ["none"]:
                value = ()  # --content-layers none: no layers (an empty value is hard to give on a command line)
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise ImpastoError(f"{option(name)} must be layer names (a list, or text with commas), not {value!r}")
            setattr(self, name, tuple(value))
        if self.style_layer_weights is not None:
            w = self.style_layer_weights
            if isinstance(w, str):
                w = [v for v in w.split(",") if v.strip()]
            try:
                self.style_layer_weights = tuple(float(v) for v in w)
            except (TypeError, ValueError):
                raise ImpastoError(f"{option('style_layer_weights')} must be numbers, one per style layer, not {w!r}") from None

    # -- helpers
    def replace(self, **changes: Any) -> "Settings":
        check_names(changes)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    def to_dict_without_device(self) -> dict[str, Any]:
        """Every setting but the device and how its work is launched: where a run happened, not
        what it painted (a batch resumed on another machine keeps its jobs)."""
        return {k: v for k, v in self.to_dict().items() if k not in ("device", "cuda_graphs")}

    def identity(self) -> dict[str, Any]:
        """What decides the picture, for matching a run against earlier ones (a batch's index,
        a video's frames on disk): every setting but the device, less those added later
        while they hold the value every earlier run had."""
        return without_unchanged(self.to_dict_without_device())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Settings":
        check_names(data)
        return cls(**data)

    def model_name(self) -> str:
        return self.model or "vgg19"

    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return 1.0 if self.optimizer == "lbfgs" else 0.02

    def scale_count(self) -> int:
        """How many scales a run paints: the output's, and below it one per `scale_factor` while
        the long side stays at `min_size` or above (1% under it is allowed for rounding)."""
        if not self.multiscale or self.size <= self.min_size * 0.99:
            return 1
        return 1 + math.floor(math.log(self.size / (self.min_size * 0.99)) / math.log(self.scale_factor))

    def with_given_iterations(self, given: "Collection[str]") -> "Settings":
        """A run of one scale (the output's) takes `iterations` when it was given (typed on the
        command line, a manifest's column): without that, it gets `initial_iterations`, since
        the default's 50 alone would leave it half painted (scales.plan_iterations). A
        Settings alone cannot tell 50 given on purpose from the default left alone."""
        if self.multiscale and "iterations" in given and self.scale_count() == 1:
            return self.replace(initial_iterations=self.iterations)
        return self

    @classmethod
    def from_given(
        cls, preset: Optional[str], given: Mapping[str, Any], under: Optional[Mapping[str, Any]] = None, honour_iterations: bool = True
    ) -> "Settings":
        """A run's settings from a shell: the values `given` (typed on a command line, a manifest row's,
        a job's request) over the preset's, over `under` (a batch's own settings, which a row's preset
        replaces), checked by validate().

        A weights file given without a model decides the model. An `iterations` given is run even at
        a size of one scale (with_given_iterations), unless `honour_iterations` is False: the web page
        sends both its step fields every time, and greys out the one a run of one scale leaves unused.
        """
        from .presets import preset_settings

        values = dict(under or {}) | (preset_settings(preset) if preset is not None else {}) | dict(given)
        if given.get("weights") and "model" not in given:
            values["model"] = None
        try:
            settings = cls.from_dict(values)
        except (TypeError, ValueError) as exc:
            raise ImpastoError(f"bad setting: {exc}") from None
        settings.validate()
        return settings.with_given_iterations(given) if honour_iterations else settings

    def unused(self, given: Collection[str]) -> list[str]:
        """The settings named in `given` that change nothing in a run of these settings."""
        names = [] if self.multiscale else [name for name in MULTISCALE_ONLY if name in given]
        return names + (["gram_shift"] if "gram_shift" in given and self.style_loss != "gram" else [])

    def unused_notes(self, given: Collection[str]) -> list[str]:
        """unused(given) in a line per reason, naming settings as the reader gives them (flags or keywords)."""
        unused = self.unused(given)
        notes = []
        coarse = [name for name in unused if name in MULTISCALE_ONLY]
        if coarse:
            verb, pronoun = ("apply", "they change") if len(coarse) > 1 else ("applies", "it changes")
            off = "--no-multiscale" if on_command_line() else option("multiscale", False)
            notes.append(f"{', '.join(option(name) for name in coarse)} only {verb} to coarse-to-fine runs: with {off} {pronoun} nothing")
        if "gram_shift" in unused:
            notes.append(f"{option('gram_shift')} only applies to the Gram loss: with {option('style_loss', self.style_loss)} it changes nothing")
        return notes

    def warn_unused(self, given: Collection[str], said: Optional[set[str]] = None) -> None:
        """Warn of the settings in `given` that change nothing here: asked for, and silently without
        effect, they would leave the user wondering why. `said` holds what was said already (a sweep's
        cells share one, so each line is said once), and gets what this says."""
        for note in self.unused_notes(given):
            if said is None or note not in said:
                warn(note)
                if said is not None:
                    said.add(note)

    def layer_weights(self) -> tuple[float, ...]:
        raw = self.style_layer_weights or tuple(1.0 for _ in self.style_layers)
        # The decay multiplies explicit weights too, so a preset's decay composes with them.
        # decay^-i taken relative to the largest that counts, so an extreme decay puts the weight on
        # one end of the layers instead of overflowing (1e-21 ** -15 is not a float).
        logs = [-i * math.log(self.style_layer_decay) for i in range(len(raw))]
        top = max((lg for lg, w in zip(logs, raw) if w > 0), default=0.0)
        raw = tuple(w * math.exp(lg - top) for lg, w in zip(logs, raw))
        total = sum(raw)
        return tuple(w / total for w in raw)

    def for_model(self, model: str) -> "Settings":
        """These settings with style_layers=("all",) spelled out for `model`."""
        if self.style_layers != (ALL_LAYERS,):
            return self
        return self.replace(style_layers=tuple(conv_layer_names(model)))

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "Settings":
        """A named preset (see impasto.presets) with `overrides` on top."""
        from .presets import preset_settings

        check_names(overrides)
        return cls(**(preset_settings(name) | overrides))

    def validate(self) -> "Settings":
        """Raise ImpastoError with one clear line for the first bad value."""

        def choice(name: str, options: tuple[str, ...]) -> None:
            if getattr(self, name) not in options:
                raise ImpastoError(f"{option(name)} must be one of {', '.join(options)}, not {getattr(self, name)!r}")

        for name, kinds in _scalar_kinds().items():
            value = getattr(self, name)
            if not any(_is_kind(value, kind) for kind in kinds):
                wanted = " or ".join(_KIND_NAMES[k] for k in kinds)
                raise ImpastoError(f"{option(name)} must be {wanted}, not {value!r}")
        if self.model is not None:
            choice("model", MODELS)
        choice("pooling", POOLINGS)
        choice("optimizer", OPTIMIZERS)
        choice("style_loss", STYLE_LOSSES)
        choice("precision", PRECISIONS)
        if self.preserve_color is not None:
            choice("preserve_color", COLOR_MODES)
        names = layer_names(self.model_name())
        if ALL_LAYERS in self.style_layers and self.style_layers != (ALL_LAYERS,):
            raise ImpastoError(f"{option('style_layers')} 'all' stands alone: give it or a list of layer names, not both")
        for layer in self.content_layers + self.fine_content_layers + tuple(v for v in self.style_layers if v != ALL_LAYERS):
            if layer not in names:
                convs = [n for n in names if n.startswith("conv")]
                blocks = [[n for n in convs if n.startswith(f"conv{b}_")] for b in sorted({n[4] for n in convs})]
                ranges = ", ".join(f"{b[0]}-{b[-1].split('_')[1]}" for b in blocks)
                raise ImpastoError(f"unknown layer {layer!r} for {self.model_name()}; its layers are {ranges} "
                                   f"(and reluN_M after each convN_M, poolN after each block)")  # fmt: skip
        if not self.style_layers:
            raise ImpastoError("at least one style layer is needed")
        if self.style_chain and len(self.style_layers) < 2 and self.style_layers != (ALL_LAYERS,):
            raise ImpastoError(f"{option('style_chain')} needs at least two style layers (it correlates adjacent ones)")
        if not (math.isfinite(self.style_layer_decay) and self.style_layer_decay > 0):
            raise ImpastoError(f"{option('style_layer_decay')} must be a positive number, not {number(self.style_layer_decay)}")
        if self.style_layer_weights is not None and self.style_layers == (ALL_LAYERS,):
            # Checked now, not once the weights have said which model they are (after a download,
            # perhaps): with no model named, a weights file may yet make it either.
            counts = {m: len(conv_layer_names(m)) for m in ((self.model,) if self.model else MODELS)}
            if len(self.style_layer_weights) not in counts.values():
                layers = ", ".join(f"{n} in {m}" for m, n in counts.items())
                raise ImpastoError(
                    f"{len(self.style_layer_weights)} style layer weights given for {option('style_layers')} 'all', "
                    f"which is every conv layer: {layers}"
                )
        if self.style_layer_weights is not None and self.style_layers != (ALL_LAYERS,):
            if len(self.style_layer_weights) != len(self.style_layers):
                raise ImpastoError(
                    f"{len(self.style_layer_weights)} style layer weights given for {len(self.style_layers)} style layers"
                )
            if any(not math.isfinite(w) or w < 0 for w in self.style_layer_weights) or sum(self.style_layer_weights) <= 0:
                raise ImpastoError("style layer weights must be non-negative numbers, not all zero")
        for name in ("content_weight", "style_weight", "tv_weight", "fine_content_weight"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ImpastoError(f"{option(name)} must be a non-negative number, not {number(value)}")
        if not math.isfinite(self.gram_shift):
            raise ImpastoError(f"{option('gram_shift')} must be a number, not {number(self.gram_shift)}")
        if self.content_weight == 0 and self.style_weight == 0:
            raise ImpastoError(f"{option('content_weight')} and {option('style_weight')} cannot both be zero")
        for name in ("iterations", "initial_iterations"):
            if getattr(self, name) < 0:
                raise ImpastoError(f"{option(name)} must be zero or more, not {getattr(self, name)}")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise ImpastoError(f"{option('seed')} must be between 0 and 2**63-1, not {number(self.seed)}")
        if self.init not in INIT_NAMES and not os.path.isfile(self.init):
            # Checked here, not only when a run starts: a sweep or a batch checks every cell first.
            raise ImpastoError(f"{option('init')} must be {', '.join(INIT_NAMES)} or an image file; {self.init!r}: no such file")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ImpastoError(f"{option('lr')} must be positive, not {number(self.lr)}")
        if self.size < 16:
            raise ImpastoError(f"{option('size')} must be at least 16 pixels, not {number(self.size)}")
        if not (math.isfinite(self.style_scale) and self.style_scale > 0):
            raise ImpastoError(f"{option('style_scale')} must be positive, not {number(self.style_scale)}")
        if self.min_size < 16:
            raise ImpastoError(f"{option('min_size')} must be at least 16 pixels, not {number(self.min_size)}")
        for name in ("upsample_detail", "upsample_grain"):
            if not (0 <= getattr(self, name) <= 1):
                raise ImpastoError(f"{option(name)} must be between 0 and 1, not {number(getattr(self, name))}")
        if not (math.isfinite(self.coarse_content) and self.coarse_content > 0):
            raise ImpastoError(f"{option('coarse_content')} must be above 0, not {number(self.coarse_content)}")
        if self.flat_content is not None and not (0 <= self.flat_content <= 1):
            raise ImpastoError(f"{option('flat_content')} must be between 0 and 1, not {number(self.flat_content)}")
        if self.tile != 0 and self.tile < MIN_TILE:
            raise ImpastoError(f"{option('tile')} must be 0 (automatic) or at least {MIN_TILE} pixels, not {number(self.tile)}")
        if not (math.isfinite(self.scale_factor) and self.scale_factor > 1):
            raise ImpastoError(f"{option('scale_factor')} must be above 1, not {number(self.scale_factor)}")
        # A factor just above 1 is a typo more often than a wish: 1.01 from 128 to 512 px would
        # be 141 scales, each with its own iterations: hours of work.
        if (scales := self.scale_count()) > MAX_SCALES:
            raise ImpastoError(
                f"{option('scale_factor', self.scale_factor)} makes {scales} scales from {option('min_size', self.min_size)} to "
                f"{option('size', self.size)}; at most {MAX_SCALES} are allowed: choose a larger one (2 by default)"
            )
        return self


# What a run's `settings` may be: the object, a preset's name, or a dict of settings.
SettingsLike = Union[Settings, str, dict[str, Any]]


def as_settings(settings: Optional[SettingsLike], overrides: Optional[dict[str, Any]] = None) -> Settings:
    """A run's settings from a Settings, a preset's name or a dict, with `overrides` on top."""
    if settings is None:
        settings = Settings()
    elif isinstance(settings, str):
        settings = Settings.from_preset(settings)
    elif isinstance(settings, dict):
        settings = Settings.from_dict(settings)
    elif not isinstance(settings, Settings):
        raise ImpastoError(f"settings must be a Settings, a preset's name or a dict, not {type(settings).__name__}")
    return settings.replace(**overrides) if overrides else settings


def check_names(names: Any) -> None:
    """Refuse names that are not settings, with a guess for a typo: a mistyped keyword from a
    notebook (style_weigth=50) gets the same one line as a mistyped flag."""
    import difflib

    known = [f.name for f in fields(Settings)]
    unknown = sorted(set(names) - set(known))
    if not unknown:
        return
    if unknown == ["preset"]:
        raise ImpastoError("preset is not a setting: pass the preset's name as the settings, "
                           "as in stylize(photo, painting, 'fast'), or Settings.from_preset('fast', ...)")  # fmt: skip
    guesses = [g for name in unknown for g in difflib.get_close_matches(name, known, n=1, cutoff=0.7)]
    hint = f" (did you mean {', '.join(guesses)}?)" if guesses else ""
    where = "impasto --help" if on_command_line() else "help(impasto.Settings)"
    raise ImpastoError(f"unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}{hint}; {where} lists them")


def _document_fields() -> None:
    """Settings' docstring lists its fields with their help, so help(impasto.Settings) tells a
    notebook user what the CLI's --help tells a shell user."""
    lines = [f"    {f.name} (default {f.default!r}): {f.metadata.get('help', '')}" for f in fields(Settings)]
    Settings.__doc__ = (Settings.__doc__ or "") + "\n\n    Attributes:\n" + "\n".join(lines) + "\n"


_document_fields()


def _check_keywords(generated: Callable[..., None]) -> Callable[..., None]:
    """The dataclass's own __init__, but a mistyped keyword (Settings(style_weigth=50)) gets
    check_names' one line with its guess, not Python's bare TypeError."""

    @functools.wraps(generated)
    def __init__(self: Settings, *args: Any, **kwargs: Any) -> None:
        check_names(kwargs)
        generated(self, *args, **kwargs)

    return __init__


# Set after the class is made: defined in its body, it would stop the dataclass writing its own.
setattr(Settings, "__init__", _check_keywords(Settings.__init__))
