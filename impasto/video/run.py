"""Stylise a video frame by frame with temporal consistency (Ruder, Dosovitskiy & Brox 2016).

Each frame after the first starts from the previous stylised frame warped by the
content's optical flow, and a temporal loss keeps it close to that warped picture
wherever the flow is trusted. Finished frames go to a folder as PNGs as they are
made, so an interrupted run resumes where it stopped and memory stays flat.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from .. import color
from ..api import MaskSpec, StyleSpec, Stylizer, mask_list, normalize_styles
from ..errors import STOP_CALLBACK, STOP_INTERRUPTED, ImpastoError, Interrupted, NonFiniteLoss, option, warn
from ..files import atomic_write
from ..images import ImageLike, check_output_path, fit_long_side, load_image, pil_to_tensor, save_image
from ..device import resolve_device
from ..optimize import Progress, flat_background_notes, resolve_flat_content
from ..scales import check_short_side
from ..settings import Settings, SettingsLike, as_settings
from .flow import FlowEstimator, FrameMotion, require_cv2, warping_error
from .io import VideoInfo, check_video_output, encode, mux_audio, probe, read_frames, tone_map

# Weight of the temporal term: mean over pixels of mask * (image - warped previous)^2,
# in [0, 1] pixel units. Chosen on real clips (see the README's video section).
DEFAULT_TEMPORAL_WEIGHT = 1000.0
# Below this fraction of pixels whose flow can be trusted, a frame is taken for the first of a
# new shot (a cut): it is painted afresh and its pair is left out of the warping error. An
# unrelated picture still "matches" in 15-20% of its pixels; a pan of a third of the frame
# leaves two thirds.
NEW_SHOT_TRUSTED = 0.4
RUN_FILE = "run.json"
FRAME_GLOB = "frame_*.png"


def frame_name(index: int) -> str:
    return f"frame_{index:06d}.png"


@dataclass
class VideoProgress:
    """News of a video run: which frame, and within it (when `step` is set) which iteration."""

    frame: int  # 0-based, counted from the first frame of the range
    frames: int
    step: Optional[Progress] = None  # None: the frame has just finished (or was already on disk)
    resumed: bool = False  # the frame was found on disk and not redone
    elapsed: float = 0.0


@dataclass
class VideoResult:
    output: Optional[Path]  # None when the run stopped before the end
    frames: int  # frames in the output (or done so far)
    fps: float
    size: tuple[int, int]
    audio: bool  # the output carries the input's audio track
    input_audio: bool  # the input has an audio track (True here with audio False: it could not be kept)
    temporal: bool
    warping_error: Optional[float]  # mean over consecutive pairs of stylised frames; None for one frame
    content_warping_error: Optional[float]  # the same for the content frames: the floor set by the flow
    pair_errors: list[float] = field(default_factory=list)
    resumed: int = 0  # frames found on disk and not redone
    cuts: int = 0  # frames taken for the start of a new shot (see NEW_SHOT_TRUSTED)
    seconds: float = 0.0
    frames_dir: Optional[Path] = None
    interrupted: bool = False
    stopped_reason: Optional[str] = None
    notes: list[str] = field(default_factory=list)  # what the run decided for itself (api.Result.notes)

    def summary(self) -> dict[str, Any]:
        return {
            "output": str(self.output) if self.output else None,
            "frames": self.frames,
            "fps": self.fps,
            "size": list(self.size),
            "audio": self.audio,
            "input_audio": self.input_audio,
            "temporal": self.temporal,
            "warping_error": self.warping_error,
            "content_warping_error": self.content_warping_error,
            "resumed": self.resumed,
            "cuts": self.cuts,
            "seconds": round(self.seconds, 3),
            "interrupted": self.interrupted,
            "stopped_reason": self.stopped_reason,
            "notes": self.notes,
        }


VideoCallback = Callable[[VideoProgress], Optional[bool]]


def output_size(source: tuple[int, int], size: Optional[int], settings: Settings) -> tuple[int, int]:
    """(w, h) of the stylised frames: `size` as the long side, or by default the source's,
    capped at the settings' size; both even, as H.264 in yuv420p needs."""
    long_side = size if size is not None else min(max(source), settings.size)
    w, h = fit_long_side(source[0], source[1], long_side)
    check_short_side((w, h), "the frames", "video", settings)
    return w - w % 2, h - h % 2


def stylize_video(
    input: Union[str, os.PathLike],
    style: Union[StyleSpec, Sequence[StyleSpec]],
    output: Union[str, os.PathLike],
    settings: Optional[SettingsLike] = None,
    *,
    temporal: bool = True,
    temporal_weight: float = DEFAULT_TEMPORAL_WEIGHT,
    frame_iterations: Optional[int] = None,
    size: Optional[int] = None,
    start_frame: int = 0,
    end_frame: Optional[int] = None,
    frames_dir: Optional[Union[str, os.PathLike]] = None,
    keep_frames: bool = False,
    overwrite: bool = False,
    masks: Optional[MaskSpec] = None,
    keep_mask: Optional[ImageLike] = None,
    stylizer: Optional[Stylizer] = None,
    callback: Optional[VideoCallback] = None,
) -> VideoResult:
    """Stylise the video `input` into `output`, keeping its frame rate and audio.

    The first frame is a normal run with `settings`. With `temporal` (Ruder et al. 2016)
    every later frame starts from the previous stylised frame warped by the optical flow
    of the content and is held near it by a loss weighted `temporal_weight`, in a
    single-scale run of `frame_iterations` iterations (default: `settings.iterations`).
    Without it each frame is an independent run with `settings` (the per-frame baseline).

    `size` is the output's long side (default: the input's, at most `settings.size`);
    `start_frame`/`end_frame` pick frames start..end-1 (0-based), counted at the constant rate
    the frames are read and written at (a variable-rate input's frames shown longer come again;
    a frame identical to the one before repeats its painting instead of being painted again). Finished frames are PNGs
    in `frames_dir` (default OUTPUT_frames beside the output): a rerun of the same call
    skips them, and the folder is removed after the video is written unless `keep_frames`.
    `callback(VideoProgress)` hears of every iteration and every finished frame; return
    False to stop (the frames done stay on disk); Ctrl-C raises impasto.Interrupted, whose `result`
    is this VideoResult so far. The result's `warping_error` is the
    temporal-consistency metric: the mean squared difference between each stylised frame
    and the previous one warped by the content flow, outside occlusions. A frame that shares
    too little with the one before (a cut) is painted afresh and its pair left out.
    """
    started = time.perf_counter()
    settings = as_settings(settings).validate()
    plan = plan_video(input, style, output, settings, temporal, temporal_weight, frame_iterations, size, start_frame,
                   end_frame, frames_dir, overwrite, masks, keep_mask)  # fmt: skip
    stylizer = stylizer or Stylizer()
    frames = FrameStore(plan.frames_dir, plan.fingerprint, overwrite)
    errors: list[float] = []
    content_errors: list[float] = []
    flows = FlowEstimator()
    previous_content: Optional[np.ndarray] = None
    previous_output: Optional[np.ndarray] = None
    resumed = cuts = done = 0
    count = plan.end - plan.start
    try:
        for index, frame in enumerate(read_frames(plan.info, plan.start, plan.end)):
            content = np.asarray(Image.fromarray(frame).resize(plan.size, Image.Resampling.LANCZOS))
            if index == 0:
                plan.decide_flat_content(content)
            motion = flows.motion(previous_content, content) if previous_content is not None else None
            if motion is not None and motion.trusted < NEW_SHOT_TRUSTED:
                motion, cuts = None, cuts + 1
            stored = frames.load(index)
            if stored is not None:
                stylised = stored
                resumed += 1
            elif previous_output is not None and previous_content is not None and np.array_equal(content, previous_content):
                # The same picture again (a variable-rate clip's frame shown longer, read at a constant
                # rate, or a still): the same painting, not a new run that could only drift from it.
                stylised = previous_output
                frames.save(index, stylised)
            else:
                painted = stylise_frame(stylizer, plan, index, content, motion, previous_output, callback, started)
                if painted is None:
                    return plan.result(index, errors, content_errors, resumed, cuts, started, stopped=plan.stopped_reason)
                stylised = painted
                frames.save(index, stylised)
            if motion is not None:
                assert previous_output is not None and previous_content is not None  # motion is between two frames
                # Measured before the frame is counted, then recorded with it, so a Ctrl-C cannot fall
                # between the count and its pair's errors and leave the report a pair short.
                pair = warping_error(previous_output, stylised, motion), warping_error(previous_content, content, motion)
                errors.append(pair[0])
                content_errors.append(pair[1])
            done = index + 1  # on disk: counted as done even if Ctrl-C comes before the next frame
            if callback is not None and callback(VideoProgress(index, count, None, stored is not None, time.perf_counter() - started)) is False:
                return plan.result(index + 1, errors, content_errors, resumed, cuts, started, stopped=STOP_CALLBACK)
            previous_content, previous_output = content, stylised
    except KeyboardInterrupt as stop:
        # Ctrl-C, in a frame's run or between frames: the video's result so far (its frames are
        # on disk for a rerun), not a frame's own.
        raise Interrupted(plan.result(done, errors, content_errors, resumed, cuts, started, stopped=STOP_INTERRUPTED)) from stop
    # The count probed beforehand is ffmpeg's; what decoding gave is what the video holds.
    audio = write_video(plan, frames, done)
    if not keep_frames:
        frames.remove()
    result = plan.result(done, errors, content_errors, resumed, cuts, started)
    result.output, result.audio = plan.output, audio
    return result


@dataclass
class VideoPlan:
    """Everything decided before the first frame: inputs checked, sizes and settings fixed."""

    info: VideoInfo
    output: Path
    styles: list[tuple[Image.Image, float]]
    masks: Optional[list[Optional[Image.Image]]]
    keep_mask: Optional[Image.Image]
    first_settings: Settings  # the first frame, and every frame without temporal consistency
    next_settings: Settings  # later frames in temporal mode
    temporal: bool
    temporal_weight: float
    size: tuple[int, int]
    start: int
    end: int
    frames_dir: Path
    fingerprint: dict[str, Any]
    overwrite: bool = False
    stopped_reason: Optional[str] = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.info.hdr:  # the output is not what a phone shows the input as on its own HDR screen: say why
            self.notes.append(f"{self.info.path} is HDR video ({self.info.hdr}): its frames were read tone-mapped to SDR, as an "
                              "ordinary screen shows them, and the output is SDR")  # fmt: skip

    def decide_flat_content(self, first: np.ndarray) -> None:
        """The default flat_content decided once, on the first frame: frame by frame, a
        background near the threshold would flicker between two looks."""
        if self.first_settings.flat_content is None:
            asked = self.first_settings
            self.first_settings = resolve_flat_content(asked, pil_to_tensor(Image.fromarray(first), torch.device("cpu")))
            self.next_settings = self.next_settings.replace(flat_content=self.first_settings.flat_content)
            self.notes += flat_background_notes(asked, self.first_settings, "the first frame")

    def result(self, done: int, errors: list[float], content_errors: list[float], resumed: int, cuts: int, started: float,
               stopped: Optional[str] = None) -> VideoResult:  # fmt: skip
        return VideoResult(
            output=None, frames=done, fps=self.info.fps, size=self.size, audio=False, input_audio=self.info.has_audio,
            temporal=self.temporal,
            warping_error=_mean(errors), content_warping_error=_mean(content_errors), pair_errors=list(errors),
            resumed=resumed, cuts=cuts, seconds=time.perf_counter() - started, frames_dir=self.frames_dir,
            interrupted=stopped is not None, stopped_reason=stopped, notes=list(self.notes),
        )  # fmt: skip


def _mean(values: list[float]) -> Optional[float]:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def plan_video(input: Union[str, os.PathLike], style: Any, output: Union[str, os.PathLike], settings: Settings, temporal: bool,
             temporal_weight: float, frame_iterations: Optional[int], size: Optional[int], start: int, end: Optional[int],
             frames_dir: Optional[Union[str, os.PathLike]], overwrite: bool, masks: Any, keep_mask: Any) -> VideoPlan:  # fmt: skip
    """Check every input and output before any work, so a long run cannot fail at its end."""
    require_cv2()  # before anything is written: a missing extra is said at once
    output = Path(output)
    check_video_output(output)
    check_output_path(output, overwrite)
    if not (np.isfinite(temporal_weight) and temporal_weight >= 0):
        raise ImpastoError(f"{option('temporal_weight')} must be a non-negative number, not {temporal_weight}")
    if frame_iterations is not None and frame_iterations < 1:
        raise ImpastoError(f"{option('frame_iterations')} must be at least 1, not {frame_iterations}")
    if size is not None and size < 16:
        raise ImpastoError(f"{option('size')} must be at least 16 pixels, not {size}")
    if start < 0:
        raise ImpastoError(f"{option('start_frame')} must be zero or more, not {start}")
    info = probe(input)
    end = info.frames if end is None else min(end, info.frames)
    if start >= info.frames:
        raise ImpastoError(f"{info.path}: start-frame {start} is past the end (the video has {info.frames} frames, numbered from 0)")
    if end <= start:
        raise ImpastoError(f"{info.path}: no frames in the range {start}..{end} (the video has {info.frames}, numbered from 0)")
    styles = [(load_image(image), weight) for image, weight in normalize_styles(style)]
    mask_images = None if masks is None else [None if m is None else load_image(m) for m in mask_list(masks, len(styles))]
    keep_image = None if keep_mask is None else load_image(keep_mask)
    w, h = output_size(info.size, size, settings)
    first = settings.replace(size=max(w, h)).validate()
    # Later frames start from a picture that is already painted: coarse scales would repaint
    # it from a blurred copy, so they run once at full size (see the README for the measurement).
    following = first.replace(multiscale=False, iterations=frame_iterations or settings.iterations)
    if temporal and following.iterations < 1:
        # With no iterations a later frame is only the previous one carried along the motion:
        # the painting would smear over the clip instead of following it.
        raise ImpastoError(f"{option('iterations')} 0 would leave every frame after the first unpainted; "
                           f"give {option('frame_iterations')} N (at least 1) for the later frames")
    folder = Path(frames_dir) if frames_dir is not None else output.with_name(output.stem + "_frames")
    if folder.exists() and not folder.is_dir():
        raise ImpastoError(f"{folder}: exists and is not a folder (choose another {option('frames_dir')})")
    if not folder.parent.exists():
        raise ImpastoError(f"{folder}: folder {folder.parent} does not exist")
    fingerprint = {
        "input": str(info.path.resolve()),
        "input_bytes": info.path.stat().st_size,
        "start": start,
        "end": end,
        "size": [w, h],
        "temporal": temporal,
        "temporal_weight": temporal_weight if temporal else None,
        "frame_iterations": following.iterations if temporal else None,
        # The device does not change what a frame should look like, so a run may resume on another.
        "settings": first.identity(),
        "styles": [[_image_digest(image), weight] for image, weight in styles],
        "masks": None if mask_images is None else [None if m is None else _image_digest(m) for m in mask_images],
        "keep_mask": None if keep_image is None else _image_digest(keep_image),
    }
    if info.hdr:  # only then, so a run of SDR frames begun before HDR was tone-mapped still resumes
        fingerprint["tone_map"] = tone_map(info.hdr)
    return VideoPlan(info, output, styles, mask_images, keep_image, first, following, temporal, temporal_weight, (w, h), start,
               end, folder, fingerprint, overwrite)  # fmt: skip


def _image_digest(image: Image.Image) -> str:
    return hashlib.sha1(image.tobytes()).hexdigest()[:16] + f"-{image.width}x{image.height}"


class FrameStore:
    """The folder of finished frames: PNGs named by index, and run.json saying which run made them."""

    def __init__(self, folder: Path, fingerprint: dict[str, Any], overwrite: bool) -> None:
        self.folder = folder
        stored = self._read_fingerprint()
        existing = sorted(folder.glob(FRAME_GLOB)) if folder.is_dir() else []
        if folder.is_dir() and stored is None and any(folder.iterdir()):
            raise ImpastoError(f"{folder}: exists and is not an impasto frames folder (choose another {option('frames_dir')} or empty it)")
        if stored is not None and stored != fingerprint:
            changed = sorted(k for k in set(stored) | set(fingerprint) if stored.get(k) != fingerprint.get(k))
            if not overwrite:
                raise ImpastoError(
                    f"{folder}: holds {len(existing)} frames of a different run (changed: {', '.join(changed)}); "
                    "pass --overwrite to replace them, or choose another --frames-dir"
                )
            self._clear()
        folder.mkdir(exist_ok=True)
        text = json.dumps(fingerprint, indent=1, sort_keys=True)
        # A stray temporary file would make the folder look foreign to the next run (see above).
        with atomic_write(folder / RUN_FILE) as tmp:
            tmp.write_text(text + "\n")

    def _read_fingerprint(self) -> Optional[dict[str, Any]]:
        path = self.folder / RUN_FILE
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {"unreadable": True}

    def _clear(self) -> None:
        for path in self.folder.glob(FRAME_GLOB):
            path.unlink()

    def path(self, index: int) -> Path:
        return self.folder / frame_name(index)

    def load(self, index: int) -> Optional[np.ndarray]:
        path = self.path(index)
        if not path.is_file():
            return None
        try:
            with Image.open(path) as image:
                return np.asarray(image.convert("RGB"))
        except OSError:  # damaged by something else than us (our writes are atomic): redo it
            return None

    def save(self, index: int, frame: np.ndarray) -> None:
        save_image(Image.fromarray(frame), self.path(index), overwrite=True)

    def frames(self, count: int) -> Iterator[np.ndarray]:
        for index in range(count):
            frame = self.load(index)
            if frame is None:
                raise ImpastoError(f"{self.path(index)}: frame missing or unreadable; run again to redo it")
            yield frame

    def remove(self) -> None:
        self._clear()
        (self.folder / RUN_FILE).unlink(missing_ok=True)
        try:
            self.folder.rmdir()
        except OSError:  # the user put something else there: leave it
            pass


def stylise_frame(stylizer: Stylizer, plan: VideoPlan, index: int, content: np.ndarray, motion: Optional[FrameMotion],
                  previous: Optional[np.ndarray], callback: Optional[VideoCallback], started: float) -> Optional[np.ndarray]:  # fmt: skip
    """One stylised frame as an HxWx3 uint8 array, or None if the run was stopped during it."""
    count = plan.end - plan.start
    init, extra, settings = None, None, plan.first_settings
    if plan.temporal and motion is not None and previous is not None:
        warped = motion.carry(previous, content)  # what came in from outside is masked out of the loss
        init, settings = warped, plan.next_settings
        if plan.temporal_weight > 0:
            extra = temporal_loss(warped, motion.mask, plan.temporal_weight, settings)

    def on_step(progress: Progress) -> Optional[bool]:
        if callback is None:
            return None
        return callback(VideoProgress(index, count, progress, False, time.perf_counter() - started))

    try:
        result = stylizer.run(content, plan.styles, settings, callback=on_step, masks=plan.masks, keep_mask=plan.keep_mask,
                              init_image=init, extra_loss=extra)  # fmt: skip
    except NonFiniteLoss as exc:
        # Not a number from the first iteration: the frame keeps where it started (the previous
        # frame carried along the motion, or the photo), and the video goes on, as below.
        warn(f"frame {index}: {exc}; it keeps its starting picture")
        return init if init is not None else content
    if result.interrupted and result.stopped_reason == STOP_CALLBACK:
        plan.stopped_reason = result.stopped_reason
        return None
    if result.out_of_memory:
        # Every later frame is the same size and would run out too: stop here, with the finished
        # frames kept for the same command run where there is more memory (a smaller size or tiles
        # change the frames' fingerprint, so they start afresh); the half-painted one is not kept.
        kept = f"the {index} finished frames are" if index != 1 else "the 1 finished frame is"
        kept += f" kept in {plan.frames_dir} (the same command, run where there is more memory, resumes from them)"
        raise ImpastoError(f"frame {index}: {result.stopped_reason}" + (f"; {kept}" if index else ""))
    if result.interrupted:
        # The loss stopped being a number: the frame's best picture so far is kept, as a single
        # picture's is, and the video goes on (a rerun, seeded alike, would only meet it again).
        warn(f"frame {index}: {result.stopped_reason}; its best picture so far is kept")
    return np.asarray(result.image)


def temporal_loss(warped: np.ndarray, mask: np.ndarray, weight: float, settings: Settings) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """Ruder et al.'s short-term temporal loss: weight * mean(mask * (image - warped)^2).

    The core calls it at every scale with the current picture; target and mask are
    resized to it (and cached per size).
    """
    device = resolve_device(settings.device)
    target = pil_to_tensor(Image.fromarray(warped), device)
    if settings.preserve_color == "luminance":
        target = color.luminance(target)  # the picture optimised is then the luminance only
    mask_t = torch.from_numpy(mask)[None, None].to(device)
    sized: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def loss(image: torch.Tensor) -> dict[str, torch.Tensor]:
        hw = (image.shape[-2], image.shape[-1])
        if hw not in sized:
            interp = torch.nn.functional.interpolate
            sized[hw] = (interp(target, size=hw, mode="bilinear", align_corners=False),
                         interp(mask_t, size=hw, mode="bilinear", align_corners=False))  # fmt: skip
        t, m = sized[hw]
        return {"temporal": weight * (m * (image.float() - t) ** 2).mean()}

    return loss


def write_video(plan: VideoPlan, frames: FrameStore, count: int) -> bool:
    """Encode the stored frames into the output, with the input's audio when it has one.

    Written under a temporary name and renamed, so a failure never leaves a half file.
    Returns whether audio was kept.
    """
    if count == 0:
        raise ImpastoError(f"{plan.info.path}: ffmpeg decoded no frames from {plan.start} on")
    output = plan.output
    silent = output.with_name(f".{output.stem}.video{os.getpid()}{output.suffix}")
    muxed = output.with_name(f".{output.stem}.muxed{os.getpid()}{output.suffix}")
    try:
        rate = plan.info.rate or plan.info.fps  # the rate the frames were read at, exactly
        encode(frames.frames(count), plan.size, rate, silent)
        audio = False
        if plan.info.has_audio:
            audio = mux_audio(silent, plan.info, plan.start / plan.info.fps, count / plan.info.fps, muxed)
        check_output_path(output, plan.overwrite)  # it may have appeared during a long run
        os.replace(muxed if audio else silent, output)
        return audio
    finally:
        for tmp in (silent, muxed):
            tmp.unlink(missing_ok=True)


def measure_warping_error(content_video: Union[str, os.PathLike], stylised_video: Union[str, os.PathLike],
                          start_frame: int = 0) -> tuple[Optional[float], Optional[float]]:  # fmt: skip
    """(stylised, content) mean warping errors of an encoded result against the video it was made from.

    The flow comes from `content_video` (from `start_frame` on, resized to the result's size),
    as during a run; this measures the file a viewer sees, codec and all, and so works for
    a video made by any tool. Pairs across a cut (see NEW_SHOT_TRUSTED) are left out, as in
    a run's report.
    """
    content_info, stylised_info = probe(content_video), probe(stylised_video)
    flows = FlowEstimator()
    errors: list[float] = []
    content_errors: list[float] = []
    previous: Optional[tuple[np.ndarray, np.ndarray]] = None
    pairs = zip(read_frames(content_info, start_frame), read_frames(stylised_info))
    for content_frame, stylised in pairs:
        h, w = stylised.shape[:2]
        content = np.asarray(Image.fromarray(content_frame).resize((w, h), Image.Resampling.LANCZOS))
        if previous is not None:
            motion = flows.motion(previous[0], content)
            if motion.trusted < NEW_SHOT_TRUSTED:
                previous = (content, stylised)
                continue
            errors.append(warping_error(previous[1], stylised, motion))
            content_errors.append(warping_error(previous[0], content, motion))
        previous = (content, stylised)
    return _mean(errors), _mean(content_errors)
