"""Reading and writing video files with imageio-ffmpeg (its bundled ffmpeg binary).

Frames are streamed one at a time, so memory does not grow with the clip's length.
The audio track is copied from the input at the end, in a second ffmpeg pass that
muxes it with the encoded frames.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import numpy as np

from ..errors import ImpastoError

INSTALL_HINT = "pip install 'impasto[video]'"

# Output container -> (video codec, extra ffmpeg output options, audio codec to re-encode to
# when the input's audio cannot be copied into this container as it is).
CONTAINERS: dict[str, tuple[str, list[str], str]] = {
    ".mp4": ("libx264", ["-crf", "18", "-preset", "medium"], "aac"),
    ".m4v": ("libx264", ["-crf", "18", "-preset", "medium"], "aac"),
    ".mov": ("libx264", ["-crf", "18", "-preset", "medium"], "aac"),
    ".mkv": ("libx264", ["-crf", "18", "-preset", "medium"], "aac"),
    ".avi": ("libx264", ["-crf", "18", "-preset", "medium"], "aac"),
    ".webm": ("libvpx-vp9", ["-crf", "30", "-b:v", "0"], "libopus"),
}


def require_ffmpeg() -> Any:
    """The imageio_ffmpeg module, or a clear error naming the extra to install."""
    try:
        import imageio_ffmpeg
    except ImportError:
        raise ImpastoError(f"video needs imageio-ffmpeg and OpenCV: {INSTALL_HINT}") from None
    return imageio_ffmpeg


def ffmpeg_exe() -> str:
    try:
        return require_ffmpeg().get_ffmpeg_exe()
    except RuntimeError as exc:  # no bundled binary for this platform and none on PATH
        raise ImpastoError(f"no ffmpeg binary found ({exc}); reinstall with {INSTALL_HINT}") from None


@dataclass
class VideoInfo:
    """What the input holds. `frames` is exact: counted by decoding the whole video stream."""

    path: Path
    size: tuple[int, int]  # (width, height) of the decoded frames, rotation applied
    fps: float
    frames: int
    audio_codec: Optional[str]  # None when there is no audio track

    @property
    def has_audio(self) -> bool:
        return self.audio_codec is not None


def probe(path: os.PathLike | str) -> VideoInfo:
    """Size, frame rate, frame count and audio of a video file, or an ImpastoError saying what is wrong."""
    path = Path(path)
    if not path.exists():
        raise ImpastoError(f"{path}: no such file")
    if path.is_dir():
        raise ImpastoError(f"{path}: is a folder, not a video")
    header = _ffmpeg_header(path)
    streams = [line.strip() for line in header.splitlines() if line.strip().startswith("Stream #")]
    video = [s for s in streams if " Video: " in s and "(attached pic)" not in s]
    if not streams and "Input #" in header:
        raise ImpastoError(f"{path}: holds no video frames (the file has no tracks)")
    if not streams:
        raise ImpastoError(f"{path}: not a video ffmpeg can read ({_ffmpeg_complaint(header, path)})")
    if not video:
        raise ImpastoError(f"{path}: has no video track (only {', '.join(_stream_kinds(streams))})")
    audio = [s for s in streams if " Audio: " in s]
    audio_codec = audio[0].split(" Audio: ", 1)[1].split()[0].rstrip(",") if audio else None
    ffmpeg = require_ffmpeg()
    frames_reader = ffmpeg.read_frames(str(path))
    try:
        meta = next(frames_reader)
    except (OSError, RuntimeError, StopIteration) as exc:
        raise ImpastoError(f"{path}: ffmpeg cannot decode its video ({_first_line(exc)})") from None
    finally:
        frames_reader.close()
    try:
        count, _seconds = ffmpeg.count_frames_and_secs(str(path))
    except RuntimeError as exc:
        raise ImpastoError(f"{path}: ffmpeg cannot decode its video ({_first_line(exc)})") from None
    if not count:
        raise ImpastoError(f"{path}: the video track has no frames")
    if count == 1:  # ffmpeg reads a photo as a one-frame video
        raise ImpastoError(f"{path}: is a single picture, not a video; paint it with `impasto PHOTO PAINTING -o OUT`")
    fps = float(meta.get("fps") or 0)
    if fps <= 0:
        raise ImpastoError(f"{path}: the video has no frame rate ffmpeg can read")
    return VideoInfo(path, tuple(meta["size"]), fps, int(count), audio_codec)


def _ffmpeg_header(path: Path) -> str:
    """ffmpeg's description of an input (it exits non-zero since no output is given: expected)."""
    done = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True, errors="replace")
    return done.stderr


def _stream_kinds(streams: list[str]) -> list[str]:
    kinds = []
    for s in streams:
        match = re.search(r": (Video|Audio|Subtitle|Data|Attachment): ", s)
        kinds.append((match.group(1).lower() if match else "unknown") + " track")
    return sorted(set(kinds))


def _ffmpeg_complaint(header: str, path: Path) -> str:
    # ffmpeg ends by saying it was given no output file, which is our doing; the line before is the reason.
    lines = [line.strip() for line in header.splitlines() if line.strip() and "output file" not in line]
    return lines[-1].replace(f"{path}: ", "") if lines else "ffmpeg could not open it"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def read_frames(info: VideoInfo, start: int = 0, end: Optional[int] = None) -> Iterator[np.ndarray]:
    """Frames start..end-1 (0-based) as HxWx3 uint8 RGB arrays, decoded one at a time."""
    reader = require_ffmpeg().read_frames(str(info.path))
    try:
        meta = next(reader)
        w, h = meta["size"]
        for index, raw in enumerate(reader):
            if end is not None and index >= end:
                break
            if index >= start:
                yield np.frombuffer(raw, dtype=np.uint8).reshape(h, w, 3)
    finally:
        reader.close()


def check_video_output(path: os.PathLike | str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in CONTAINERS:
        raise ImpastoError(f"{path}: unknown video extension {suffix!r} (use {', '.join(CONTAINERS)})")
    return suffix


def encode(frames: Iterable[np.ndarray], size: tuple[int, int], fps: float, path: Path) -> None:
    """Encode HxWx3 uint8 frames (even width and height) into a video file without audio."""
    codec, options, _ = CONTAINERS[check_video_output(path)]
    writer = require_ffmpeg().write_frames(
        str(path), size, fps=fps, codec=codec, quality=None, macro_block_size=2, pix_fmt_out="yuv420p",
        output_params=options, ffmpeg_log_level="error",
    )  # fmt: skip
    writer.send(None)  # starts ffmpeg
    try:
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
    finally:
        writer.close()


def mux_audio(video: Path, source: VideoInfo, start_seconds: float, seconds: float, output: Path) -> bool:
    """Write `output`: `video`'s frames with the audio of `source` from `start_seconds`, `seconds` long.

    The audio is copied as it is when the container takes it and no cut is needed at its
    start, else re-encoded.
    Returns False (and writes nothing) when neither works.
    """
    _, _, fallback = CONTAINERS[check_video_output(output)]
    base = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(video)]
    base += ["-ss", f"{start_seconds:.6f}", "-t", f"{seconds:.6f}", "-i", str(source.path)]
    base += ["-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy"]
    # A copied track cut after its start keeps the timestamps of the packets it starts in, which
    # some containers (mkv) honour by delaying the video; re-encoding cuts exactly at the frame.
    for audio_codec in ("copy", fallback) if start_seconds == 0 else (fallback,):
        # No -shortest: -t already bounds the audio, and a track shorter than the picture would cut frames.
        done = subprocess.run(base + ["-c:a", audio_codec, str(output)], capture_output=True, text=True)
        if done.returncode == 0:
            return True
    if output.exists():
        output.unlink()
    return False


def audio_codec_of(path: os.PathLike | str) -> Optional[str]:
    """The codec of a file's first audio track, None without one (for checks and tests)."""
    streams = [line for line in _ffmpeg_header(Path(path)).splitlines() if " Audio: " in line]
    return streams[0].split(" Audio: ", 1)[1].split()[0].rstrip(",") if streams else None
