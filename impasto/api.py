"""The public Python API: everything else (CLI, sweep, batch, web) calls this."""

from __future__ import annotations

import math
import numbers
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, SupportsFloat, Union, cast

import numpy as np
import torch
from PIL import Image

from . import color
from . import weights as W
from .errors import STOP_CALLBACK, STOP_INTERRUPTED, STOP_OUT_OF_MEMORY, USER_STOPS, ImpastoError, Interrupted, NonFiniteLoss, option, warn
from .images import (
    ImageLike, fit_long_side, flatten, load_image, load_image_and_alpha, pil_to_tensor, resize_long_side, resize_tensor,
    tensor_to_pil, with_alpha,
)  # fmt: skip
from .media import FrameRecorder, FrameSaver, check_count, check_frames_folder
from .device import (is_out_of_memory, keep_freed_memory, mixed_precision, precision_name, release_cached_memory, resolve_device,
                     warn_if_emulated, with_autograd)
from .optimize import ExtraLoss, Outcome, Progress, StyleInput, flat_background_notes, optimise, resolve_flat_content
from .scales import check_short_side, min_side
from .style_stats import StatsCache, style_long_side, style_pieces, style_size
from .tiles import choose_tile, out_of_memory_advice
from .settings import INIT_NAMES, Settings, SettingsLike, as_settings
from .layers import conv_layer_names
from .vgg import FeatureExtractor

# A weight is any real number: numpy's scalars and 0-d tensors too (a blend computed from data).
StyleWeight = SupportsFloat
# A style, or a (style, weight) pair as a tuple or as a list (from JSON or YAML).
StyleSpec = Union[ImageLike, tuple[ImageLike, StyleWeight], list[Union[ImageLike, StyleWeight]]]
MaskSpec = Union[ImageLike, Sequence[Optional[ImageLike]]]
Callback = Callable[[Progress], Optional[bool]]

# A painting enlarged more than this for the finest scale has visibly soft strokes
# (a 160 px Starry Night at 512 px: benchmarks/heldout.py); 2x, as a 1024 px scan at
# 2048 px, still looks painted.
MAX_STYLE_UPSCALE = 2.0


@dataclass
class Result:
    """What a run produced. `image` is the final picture at the requested size: RGBA, with
    the photo's transparency, when the photo had any."""

    image: Image.Image
    losses: dict[str, float]
    history: list[dict[str, float]]
    seconds: float
    settings: Settings
    interrupted: bool = False
    stopped_reason: Optional[str] = None
    frames: list[Image.Image] = field(default_factory=list)
    device: str = "cpu"  # where it ran, and in what arithmetic (settings may say "auto")
    precision: str = "fp32"
    # What the run decided for itself that changes the look, one line each (a flat background
    # painted): the CLI prints them, the web page shows them, a batch's index keeps them.
    notes: list[str] = field(default_factory=list)

    @property
    def stopped_early(self) -> bool:
        """Stopped by something other than its user (a loss that stopped being a number, memory):
        not the picture its settings promise, so a caller should say so."""
        return self.interrupted and self.stopped_reason not in USER_STOPS

    @property
    def out_of_memory(self) -> bool:
        return self.interrupted and (self.stopped_reason or "").startswith(STOP_OUT_OF_MEMORY)

    def summary(self) -> dict[str, Any]:
        return {
            "size": list(self.image.size),
            "losses": self.losses,
            "seconds": round(self.seconds, 3),
            "iterations": len(self.history),
            "interrupted": self.interrupted,
            "stopped_reason": self.stopped_reason,
            "device": self.device,
            "precision": self.precision,
            "settings": self.settings.to_dict(),
            "notes": self.notes,
        }


def is_style_weight(x: Any) -> bool:
    """A real number, numpy's or a 0-d tensor's too (never a picture: those have pixels); not a bool."""
    if isinstance(x, torch.Tensor):
        return x.ndim == 0 and x.dtype != torch.bool and not x.is_complex()
    if isinstance(x, np.ndarray):
        return x.ndim == 0 and x.dtype.kind in "iuf"
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def normalize_styles(style: Union[StyleSpec, Sequence[StyleSpec]]) -> list[tuple[ImageLike, float]]:
    """Accept one style, a list of styles, or (style, weight) pairs (tuples or lists)."""
    def pair(x: Any) -> bool:
        return isinstance(x, (list, tuple)) and len(x) == 2 and is_style_weight(x[1]) and not is_style_weight(x[0])

    items: list[Any] = list(style) if isinstance(style, (list, tuple)) and not pair(style) else [style]
    out: list[tuple[ImageLike, float]] = []
    for number, item in enumerate(items, 1):
        if pair(item):
            out.append((item[0], float(item[1])))
        elif isinstance(item, (list, tuple)):
            # In a list of styles a sequence can only be a pair; read as a picture it would be "cannot read a list".
            got = f"{item[1]!r} as its weight" if len(item) == 2 else f"{len(item)} items"
            raise ImpastoError(f"style {number}: give a picture or a (picture, weight) pair with a number as the weight, not {got}")
        else:
            out.append((item, 1.0))
    if not out:
        raise ImpastoError("at least one style image is needed")
    if any(not math.isfinite(w) or w < 0 for _, w in out) or sum(w for _, w in out) <= 0:
        raise ImpastoError(f"style blend weights must be non-negative numbers, not all zero (given: {', '.join(f'{w:g}' for _, w in out)})")
    return out


def _out_of_memory(exc: RuntimeError, size: tuple[int, int], device: torch.device, tile: int) -> str:
    """What to tell a user whose device ran out of memory (while a run was prepared or in its
    loop), once its cached memory is handed back; any other RuntimeError is a bug, raised again."""
    if not is_out_of_memory(exc):
        raise exc
    release_cached_memory(device)
    return out_of_memory_advice(*size, device, tile)


def _output_tile(source: Image.Image, settings: Settings, device: torch.device) -> int:
    """The tile the output's size needs on `device` (0: none), or the error that it is too
    small or would need more memory than there is."""
    out_w, out_h = fit_long_side(source.width, source.height, settings.size)
    check_short_side((out_w, out_h), "the output", "photo", settings)
    return choose_tile(out_w, out_h, settings, device)


def _device_key(device: torch.device) -> str:
    """cpu and cpu:0 (or cuda and cuda:N, N the current one) are one device, with one copy of the network."""
    device = resolve_device(str(device))  # cuda -> cuda:N, as a run's own device is named
    return f"{device.type}:{device.index or 0}"


@dataclass
class _RunState:
    """One Stylizer.run between its steps: the inputs _prepare made ready, what _drive's loop
    reached and why it stopped, for _package to make into a Result."""

    settings: Settings  # as they run: for the weights' model
    device: torch.device
    start: float
    extractor: FeatureExtractor
    alpha: Optional[Image.Image]  # the photo's transparency
    tile: int
    content_size: tuple[int, int]  # (w, h): the output's
    content_t: torch.Tensor
    target_content: torch.Tensor
    styles: list[StyleInput]
    keep_t: Optional[torch.Tensor]
    init_t: Optional[torch.Tensor]
    recorder: Optional[FrameRecorder]
    saver: Optional[FrameSaver]
    outcome: Outcome = field(default_factory=Outcome)
    interrupted: bool = False
    reason: Optional[str] = None
    stop: Optional[KeyboardInterrupt] = None  # a Ctrl-C, raised again once the Result is made
    notes: list[str] = field(default_factory=list)  # Result.notes

    def finish(self, image: torch.Tensor) -> torch.Tensor:
        """`image` as it is handed out (to a callback, as a frame, as the result): the photo's own
        luminance and kept region put back, at `image`'s size."""
        hw = (image.shape[-2], image.shape[-1])
        if self.settings.preserve_color == "luminance":
            image = color.combine_luminance(image, resize_tensor(self.content_t, hw))
        if self.keep_t is not None:
            keep = torch.nn.functional.interpolate(self.keep_t, size=hw, mode="bilinear", align_corners=False)
            image = keep * resize_tensor(self.content_t, hw) + (1 - keep) * image
        return image

    def result(self, weights: W.Weights) -> Result:
        outcome = self.outcome
        assert outcome.image is not None  # there is history, so there is a best picture
        # Enlarged first (a run stopped at a coarse scale), then finished: the kept region and the
        # photo's colours are the photo's at full size, not a blurred copy of them.
        painted = outcome.image
        size = (self.content_t.shape[-2], self.content_t.shape[-1])
        if tuple(painted.shape[-2:]) != size:
            painted = resize_tensor(painted, size)
        final = self.finish(painted)
        image = with_alpha(tensor_to_pil(final), self.alpha)  # a cut-out stays a cut-out
        kept_frames = self.recorder.frames if self.recorder is not None else []
        if kept_frames and not self.interrupted:
            kept_frames[-1] = image  # the last iteration's pixels may not be the best ones kept
        if self.saver is not None and not self.interrupted:
            self.saver.settle(image)
        if self.alpha is not None:  # frames (a GIF) show the picture as it looks on white
            kept_frames = [flatten(with_alpha(frame, self.alpha)) for frame in kept_frames]
        return Result(
            image=image,
            frames=kept_frames,
            losses=dict(outcome.losses),
            history=outcome.history,
            seconds=time.perf_counter() - self.start,
            # What ran: a copy (the caller's object may change after), with the model and the
            # weights file the weights resolved to (settings may leave both to be found).
            settings=self.settings.replace(model=weights.model, weights=str(weights.path)),
            interrupted=self.interrupted,
            stopped_reason=self.reason,
            device=str(self.device),
            precision=precision_name(mixed_precision(self.settings, self.device)),
            notes=list(self.notes),
        )


class Stylizer:
    """Holds loaded weights and feature extractors so many runs share them.

    One Stylizer per process is the intended use: a notebook, a sweep or a
    batch worker loads VGG once and reuses it. Runs may share it from several threads
    (the web server's workers): its caches are locked.
    """

    def __init__(self, download: bool = True) -> None:
        self.download = download
        self._weights: dict[str, W.Weights] = {}
        self._extractors: dict[tuple, FeatureExtractor] = {}
        # Two threads asking for the same network at once must get one copy of its weights, not two.
        self._lock = threading.RLock()
        # Style statistics outlive a run, so a sweep or a re-run computes them once.
        self.style_cache = StatsCache()

    def weights(self, settings: Settings) -> W.Weights:
        # By the file the weights come from, not as spelt: ./w/x.safetensors, w/x.safetensors, the
        # folder w or $IMPASTO_WEIGHTS naming it, with or without model='vgg19', are one copy in memory.
        with self._lock:
            path, model = W.locate(settings.model, settings.weights, self.download)
            key = os.path.realpath(path)
            if key not in self._weights:
                self._weights[key] = W.load(path)
            weights = self._weights[key]
        W.require_model(path, weights.model, model)
        return weights

    def settings_for_model(self, settings: Settings) -> Settings:
        """`settings` as they run on the weights they name: validated, with "all" style layers spelled
        out for the weights' model (loaded, if they were not yet)."""
        return settings.for_model(self.weights(settings).model).validate()

    def check(self, content: ImageLike, settings: Optional[SettingsLike] = None, **overrides: Any) -> Settings:
        """What `run` checks before its work, without the work: the settings, the device, the
        output's size and memory, the weights and their model. Returns the settings as they
        would run (a sweep checks every cell so, before its first)."""
        settings = as_settings(settings, overrides).validate()
        _output_tile(load_image(content), settings, resolve_device(settings.device))
        return self.settings_for_model(settings)

    def extractor(self, settings: Settings, device: torch.device) -> FeatureExtractor:
        with self._lock:
            return self._extractor(settings, device)

    def _extractor(self, settings: Settings, device: torch.device) -> FeatureExtractor:
        weights = self.weights(settings)
        # One copy of the weights per device: every choice of layers and pooling shares the conv
        # layers of a whole network (a sweep over layers would otherwise hold one copy per cell).
        whole_key = (weights.model, str(weights.path), _device_key(device))
        if whole_key not in self._extractors:
            whole = FeatureExtractor(weights.model, weights.state_dict, conv_layer_names(weights.model)[-1:], "max", weights.convention)
            # In the device's layout now, under the lock: the extractors that share its convs inherit
            # it, so no run reorders weights that another thread's run is using (that crashed).
            self._extractors[whole_key] = whole.to(device).in_fastest_format(device)
        layers = tuple(dict.fromkeys(settings.content_layers + settings.fine_content_layers + settings.style_layers))
        key = (*whole_key, settings.pooling, layers)
        if key not in self._extractors:
            self._extractors[key] = FeatureExtractor(
                weights.model, weights.state_dict, layers, settings.pooling, weights.convention, share=self._extractors[whole_key]
            ).to(device)
        return self._extractors[key]

    @with_autograd
    def run(
        self,
        content: ImageLike,
        style: Union[StyleSpec, Sequence[StyleSpec]],
        settings: Optional[SettingsLike] = None,
        callback: Optional[Callback] = None,
        masks: Optional[MaskSpec] = None,
        keep_mask: Optional[ImageLike] = None,
        frames: int = 0,
        init_image: Optional[ImageLike] = None,
        extra_loss: Optional[ExtraLoss] = None,
        save_every: int = 0,
        frames_dir: Union[str, os.PathLike, None] = None,
        overwrite: bool = False,
        **overrides: Any,
    ) -> Result:
        """Stylise `content`. `callback(progress)` is called each iteration; return False to stop.

        Spatial control (Gatys et al. 2017): `masks` gives one mask per style
        (None = everywhere), or is the one style's mask; white is where that style
        applies. `keep_mask`: white regions keep the content untouched. Masks are
        greyscale images of any size, stretched to the output's. `frames=N` keeps N
        pictures spread evenly over the run's work (pixels x iterations), at the
        output size, in `Result.frames` (for impasto.media.write_gif).
        `init_image` is a picture to start from (any size; it overrides
        `settings.init`), and `extra_loss(image) -> {name: weighted term}` adds
        terms to the objective at every scale (video's temporal loss uses both).

        `save_every=N` writes the picture every N iterations, and at the last (the run's
        picture, as a GIF's last frame is), into the folder `frames_dir` (made if missing) as
        00010.png ..., each at the output's size (the coarse scales enlarged) and with the
        photo's transparency. A folder that already holds frames is refused unless
        `overwrite=True`, which replaces them all.
        The folder is checked before any work; a run stopped early leaves the frames it wrote.

        `settings` is a Settings, a preset's name or a dict of settings; keyword
        `overrides` change single ones.

        A run stopped by the callback returns with `interrupted=True`. One whose loss
        stops being a number returns the best picture before that, also with
        `interrupted=True` and the reason in `stopped_reason` (NonFiniteLoss if no
        iteration succeeded). Ctrl-C raises `impasto.Interrupted`, a KeyboardInterrupt
        whose `result` holds the best picture so far.
        """
        state = self._prepare(content, style, settings, overrides, masks, keep_mask, frames, init_image, save_every, frames_dir, overwrite)
        self._drive(state, callback, extra_loss)
        return self._package(state)

    def _prepare(
        self,
        content: ImageLike,
        style: Union[StyleSpec, Sequence[StyleSpec]],
        settings: Optional[SettingsLike],
        overrides: dict[str, Any],
        masks: Optional[MaskSpec],
        keep_mask: Optional[ImageLike],
        frames: int,
        init_image: Optional[ImageLike],
        save_every: int,
        frames_dir: Union[str, os.PathLike, None],
        overwrite: bool,
    ) -> _RunState:
        """Everything up to the first iteration: the inputs read and checked, the targets, masks
        and colours made, then the network loaded."""
        settings = as_settings(settings, overrides).validate()
        # The counts and the frames' folder before the inputs are read: a typo fails at once.
        check_count("frames", frames)
        frames_folder = check_frames_folder(save_every, frames_dir, overwrite)
        device = resolve_device(settings.device)
        warn_if_emulated(settings.precision, device)
        if device.type == "cpu":
            keep_freed_memory()
        start = time.perf_counter()
        # Inputs and memory first: a typo or an absurd size fails at once, before
        # weights are loaded (or downloaded) and before any large image is made.
        source, alpha = load_image_and_alpha(content)
        if alpha is not None and alpha.getextrema()[1] == 0:
            warn("the photo is transparent everywhere, so the picture will be too; it is painted as it looks on white")
        tile = _output_tile(source, settings, device)
        content_img = resize_long_side(source, settings.size)
        try:
            content_t = pil_to_tensor(content_img, device)
            asked, settings = settings, resolve_flat_content(settings, content_t)
            notes = flat_background_notes(asked, settings)
            style_specs = normalize_styles(style)
            styles = [self._style_input(image, weight, settings, device) for image, weight in style_specs]
            keep_t = attach_masks(styles, masks, keep_mask, content_img.size, device)
            init_t = load_init_image(init_image, settings, device)
            target_content, init_t = colour_targets(settings, content_t, styles, init_t)

            settings = self.settings_for_model(settings)
            extractor = self.extractor(settings, device)
        except RuntimeError as exc:  # the pictures or the network put on a GPU another process fills
            raise ImpastoError(_out_of_memory(exc, content_img.size, device, tile)) from None
        return _RunState(
            settings=settings,
            device=device,
            start=start,
            extractor=extractor,
            alpha=alpha,
            tile=tile,
            content_size=content_img.size,
            content_t=content_t,
            target_content=target_content,
            styles=styles,
            keep_t=keep_t,
            init_t=init_t,
            recorder=FrameRecorder(frames, content_img.size) if frames else None,
            saver=FrameSaver(int(save_every), frames_folder, content_img.size, alpha, overwrite) if frames_folder is not None else None,
            notes=notes,
        )

    def _drive(self, state: _RunState, callback: Optional[Callback], extra_loss: Optional[ExtraLoss]) -> None:
        """The optimisation loop, to its end or to a stop: the callback's False, Ctrl-C, a loss that
        stops being a number, the device out of memory. A stop after an iteration has painted keeps
        the best picture so far (`state.interrupted`, `state.reason`); before, it is raised."""
        if state.saver is not None:
            state.saver.begin()
        outcome = state.outcome
        try:
            for progress in optimise(state.extractor, state.settings, state.target_content, state.styles, outcome, state.init_t,
                                     self.style_cache, extra_loss):  # fmt: skip
                if callback is not None or state.recorder is not None or state.saver is not None:
                    progress.image = state.finish(progress.image)
                if state.recorder is not None:
                    state.recorder(progress)
                if state.saver is not None:  # before the callback, which may look at the frame written
                    state.saver(progress)
                if callback is not None:
                    if callback(progress) is False:
                        state.interrupted, state.reason = True, STOP_CALLBACK
                        break
        except KeyboardInterrupt as exc:
            if not outcome.history:  # nothing painted yet: the start image is no one's "best so far"
                raise
            state.interrupted, state.reason, state.stop = True, STOP_INTERRUPTED, exc
        except NonFiniteLoss as exc:
            if not outcome.history:  # the very first iteration blew up: there is no picture to give
                raise
            state.interrupted, state.reason = True, str(exc)
        except RuntimeError as exc:
            advice = _out_of_memory(exc, state.content_size, state.device, state.tile)
            if not outcome.history:
                raise ImpastoError(advice) from None
            state.interrupted, state.reason = True, advice  # the best picture so far is still worth having

    def _package(self, state: _RunState) -> Result:
        """The run's Result; raised inside impasto.Interrupted when Ctrl-C stopped the run."""
        weights = self.weights(state.settings)
        try:
            result = state.result(weights)
        except KeyboardInterrupt as exc:
            # Ctrl-C once the painting is done, while it is made into a picture: the work is not
            # lost for that (a second Ctrl-C, during this second try, stops at once).
            state.interrupted, state.reason, state.stop = True, STOP_INTERRUPTED, exc
            result = state.result(weights)
        if state.stop is not None:
            raise Interrupted(result) from state.stop
        return result

    def _style_input(self, image: ImageLike, weight: float, settings: Settings, device: torch.device) -> StyleInput:
        img = load_image(image)
        style_pieces((img.height, img.width), settings.size, settings, device)  # memory first, as for the output
        # Never needed larger than its size at the finest scale (for a very thin painting, the
        # size its short side is enlarged to there, not less: shrunk further, detail is lost).
        needed = style_long_side(settings.size, settings)
        w, h = style_size((img.height, img.width), needed, min_side(settings))
        if w < img.width and h < img.height:
            img = img.resize((w, h), Image.Resampling.LANCZOS, reducing_gap=3.0)
        elif max(img.size) * MAX_STYLE_UPSCALE < needed:
            name = image if isinstance(image, (str, Path)) else "a style image"
            warn(
                f"{name} is {img.width}x{img.height} but is used at {needed} px on its long side, so its strokes "
                f"will be soft: a larger scan keeps them crisp, or "
                f"{option('style_scale', round(max(img.size) * MAX_STYLE_UPSCALE / settings.size, 2))} paints finer ones"
            )
        return StyleInput(pil_to_tensor(img, device), weight)


def load_mask(mask: ImageLike, size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """A greyscale mask resized to the output: white = this style applies."""
    img = load_image(mask).convert("L")
    if img.getextrema()[1] == 1:  # a 0/1 mask of integers (mask.astype(np.uint8)): 1 means white
        img = img.point(lambda v: v * 255)
    img = img.resize(size, Image.Resampling.BILINEAR)
    return pil_to_tensor(img.convert("RGB"), device)[:, :1]


_default: Optional[Stylizer] = None


def default_stylizer() -> Stylizer:
    global _default
    if _default is None:
        _default = Stylizer()
    return _default


def stylize(
    content: ImageLike,
    style: Union[StyleSpec, Sequence[StyleSpec]],
    settings: Optional[SettingsLike] = None,
    callback: Optional[Callback] = None,
    save_every: int = 0,
    frames_dir: Union[str, os.PathLike, None] = None,
    overwrite: bool = False,
    **overrides: Any,
) -> Image.Image:
    """Paint `content` in the style of `style` and return the picture (a PIL image, RGBA
    when the photo has transparency).

    `style` is an image, a list of images, or (image, weight) pairs to blend.
    Images are paths, PIL images, HxWx3 or 3xHxW arrays, or 3xHxW / 1x3xHxW tensors,
    in 0-1 or 0-255. `settings` is a Settings, a preset's name ("fast") or a dict;
    keyword overrides change single settings: ``stylize(a, b, size=768, style_weight=50)``
    (help(impasto.Settings) lists them). `callback(progress)` is called each iteration
    and stops the run by returning False. `save_every=N` writes the picture every N iterations,
    and at the last, into the folder `frames_dir` (00010.png ..., at the output's size); a folder
    that holds frames already is refused unless `overwrite=True`.

    Mistakes raise ImpastoError with a one-line message; Ctrl-C raises
    impasto.Interrupted, whose `result.image` is the best picture so far. If the loss
    stops being a number part-way, the best picture before it is returned with a warning.
    Masks, a start image, frames for a GIF and the losses need Stylizer().run, which
    returns a Result.
    """
    result = default_stylizer().run(
        content, style, settings, callback, save_every=save_every, frames_dir=frames_dir, overwrite=overwrite, **overrides
    )
    if result.stopped_early:
        warn(f"{result.stopped_reason}; the best picture before it is returned")
    return result.image


def mask_list(masks: MaskSpec, count: int) -> list[Optional[ImageLike]]:
    """One mask per style (None: everywhere); a lone mask, not in a list, is a lone style's."""
    # Only a list or a tuple is a list of masks: an array's len() is its rows, a path's its letters.
    if not isinstance(masks, (list, tuple)) and count != 1:
        raise ImpastoError(f"one mask given for {count} styles: give a list of one mask per style (None: everywhere)")
    given = cast(list[Optional[ImageLike]], list(masks) if isinstance(masks, (list, tuple)) else [masks])
    if len(given) != count:
        raise ImpastoError(f"{len(given)} masks given for {count} styles: give one per style (None: everywhere)")
    return given


def attach_masks(
    styles: Sequence[StyleInput],
    masks: Optional[MaskSpec],
    keep_mask: Optional[ImageLike],
    size: tuple[int, int],
    device: torch.device,
) -> Optional[torch.Tensor]:
    """Give each style its mask (Gatys et al. 2017) and return the keep mask as a tensor, if any."""
    if masks is not None:
        for number, (s, mask) in enumerate(zip(styles, mask_list(masks, len(styles))), 1):
            if mask is not None:
                s.mask = load_mask(mask, size, device)
                if float(s.mask.max()) <= 0:
                    warn(f"the mask of style {number} is black everywhere, so that painting is used nowhere")
                elif s.weight == 0:
                    warn(f"style {number} has weight 0, so its mask's region is matched to no painting")
    keep_t: Optional[torch.Tensor] = None
    if keep_mask is not None:
        # Style is matched only outside the kept region (its statistics are taken over
        # those pixels), and the kept pixels are the content's in every picture handed out.
        keep_t = load_mask(keep_mask, size, device)
        free = 1.0 - keep_t
        if float(free.max()) <= 0:
            raise ImpastoError("the keep mask is white everywhere: nothing is left to paint")
        for s in styles:
            # One shared tensor for the unmasked styles, so they still blend into one target.
            s.mask = free if s.mask is None else s.mask * free
    return keep_t


def load_init_image(init_image: Optional[ImageLike], settings: Settings, device: torch.device) -> Optional[torch.Tensor]:
    """The picture to start from when it is not the content, noise or the style."""
    if init_image is not None:
        return pil_to_tensor(load_image(init_image), device)
    if settings.init in INIT_NAMES:
        return None
    return pil_to_tensor(load_image(settings.init), device)  # a file: Settings.validate found it there


def colour_targets(
    settings: Settings, content: torch.Tensor, styles: Sequence[StyleInput], init: Optional[torch.Tensor]
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The content target and start for `settings.preserve_color`; the styles' images are recoloured in place."""
    target_content = content
    if settings.preserve_color == "luminance":
        target_content = color.luminance(content)
        for s in styles:
            s.image = color.match_luminance(s.image, content)
        if init is not None:
            init = color.luminance(init)
    elif settings.preserve_color in ("histogram", "histogram-cholesky"):
        mode = "cholesky" if settings.preserve_color == "histogram-cholesky" else "eigen"
        for s in styles:
            s.image = color.match_histogram(s.image, content, mode=mode)
    return target_content, init
