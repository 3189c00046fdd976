"""Reading and writing video files with imageio-ffmpeg (its bundled ffmpeg binary).

Frames are streamed one at a time, so memory does not grow with the clip's length.
They are read at one constant rate, ffmpeg's frame rate for the stream (exactly, e.g.
30000/1001): a variable-rate clip's frames are repeated where shown longer, so the whole
clip is painted and the output, written at that rate, lasts as long as the input. The
count comes from the same decoding, so counting and reading agree. The audio track is
copied from the input at the end (re-encoded when the output container's players would
not play it), in a second ffmpeg pass that muxes it with the encoded frames.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shlex
import subprocess
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Union

import numpy as np

from ..errors import ImpastoError, first_line, warn

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

# Audio codecs copied into a container as they are; any other is re-encoded (to the codec
# above). ffmpeg's mp4 muxer also takes PCM, FLAC, AC-3 and more, but players (browsers,
# QuickTime, phones) do not play them from an .mp4. Opus in .mp4 plays in browsers, VLC and
# mpv but not in QuickTime, so it is kept in .mp4 only. .mov is QuickTime's own: PCM is native
# there. Containers not named take whatever ffmpeg writes into them (.webm refuses all but
# Opus and Vorbis itself, and is re-encoded then).
COPIED_AUDIO: dict[str, frozenset[str]] = {
    ".mp4": frozenset({"aac", "mp3", "alac", "opus"}),
    ".m4v": frozenset({"aac", "mp3", "alac"}),
    ".mov": frozenset({"aac", "mp3", "alac", "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_s24be", "pcm_s32le", "pcm_s32be",
                       "pcm_f32le", "pcm_f32be", "pcm_u8"}),  # fmt: skip
}

# The frames' colours as HD video states them, converted so and said so in the file. Left to
# itself ffmpeg converts RGB to YUV with BT.601's matrix and writes no colour tags, and players
# take an untagged HD video for BT.709: greens came out 22 levels darker, reds redder.
# (The primaries and transfer go on the frames: ffmpeg takes them from the frames, which come
# from raw RGB without any, over the encoder's options.)
BT709 = ["-vf", "setparams=color_primaries=bt709:color_trc=bt709,scale=out_color_matrix=bt709:out_range=tv",
         "-colorspace", "bt709", "-color_range", "tv"]  # fmt: skip

# Above this, a frame rate ffmpeg guessed for a stream is taken for a timestamp unit (some
# variable-rate files claim "1k tbr") when the frames come far slower: the average is used.
IMPLAUSIBLE_FPS = 100.0


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
    """What the input holds. `frames` is exact: counted by decoding the whole video stream
    at `rate`, as `read_frames` reads it."""

    path: Path
    size: tuple[int, int]  # (width, height) of the decoded frames, rotation applied
    fps: float  # the rate frames are read at and the output is written at (float(rate))
    frames: int  # frames read at that rate
    audio_codec: Optional[str]  # None when there is no audio track
    rate: Fraction = Fraction(0)  # fps exactly (30000/1001, not 29.97)
    file_frames: int = 0  # frames the file holds; differs from `frames` only for a variable frame rate
    hdr: Optional[str] = None  # "HLG" or "PQ" for a high-dynamic-range video (tone-mapped as it is read)

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
    frames_reader = _open_reader(path, reading_options(None))
    try:
        meta = _reader_meta(frames_reader, path)
    finally:
        frames_reader.close()
    rate = _ffmpeg_rate(path) or _header_rate(video[0]) or _fraction(meta.get("fps"))
    if rate is None:  # no rate anywhere (a GIF, say, read by another ffmpeg): the frames' average one
        stored, seconds, _, _ = _count(path, None)
        rate = _fraction(stored / seconds) if stored and seconds else None
        if not stored:
            raise ImpastoError(f"{path}: the video track has no frames")
        if rate is None:
            raise ImpastoError(f"{path}: the video has no frame rate ffmpeg can read, nor a duration to take one from")
    count, seconds, repeated, dropped = _count(path, rate)
    stored = count - repeated + dropped
    if rate > IMPLAUSIBLE_FPS and seconds and stored / seconds < rate / 4:
        rate = _fraction(stored / seconds) or rate
        count = _count(path, rate)[0]
    if not count:
        raise ImpastoError(f"{path}: the video track has no frames")
    if count == 1:
        if _input_format(header).endswith("_pipe") or _input_format(header) in ("image2", "gif", "apng", "webp"):
            # ffmpeg reads a photo as a one-frame video
            raise ImpastoError(f"{path}: is a single picture, not a video; paint it with `impasto PHOTO PAINTING -o OUT`")
        raise ImpastoError(f"{path}: the video has a single frame, so there is no motion to follow; take the frame out "
                           f"(`ffmpeg -i {shlex.quote(str(path))} frame.png`) and paint it as a picture: "
                           "`impasto frame.png PAINTING -o OUT`")  # fmt: skip
    hdr = next((name for name, trc in HDR_TRANSFERS.items() if trc in video[0]), None)
    if hdr and not _has_filters("zscale", "tonemap"):
        warn(f"{path}: an HDR ({hdr}) video, and this ffmpeg cannot tone-map it (no zscale filter), so its colours "
             "are read washed out; convert it to SDR first, or install an ffmpeg built with libzimg")  # fmt: skip
        hdr = None
    return VideoInfo(path, tuple(meta["size"]), float(rate), count, audio_codec, rate, stored, hdr)


# ffmpeg's names of the HDR transfer curves, as its header prints a stream's colours
# ("yuv420p10le(tv, bt2020nc/bt2020/arib-std-b67)"). A phone records HLG by default.
HDR_TRANSFERS = {"HLG": "arib-std-b67", "PQ": "smpte2084"}

def tone_map(hdr: str) -> str:
    """The ffmpeg filter chain that reads an `hdr` ("HLG" or "PQ") video's frames as SDR sRGB.

    As a player shows HDR on an ordinary screen: to linear light with HDR's reference white (203
    nits) as SDR's white, to BT.709's primaries, the highlights rolled off (Möbius: dark and
    middle tones stay as they were, SDR's brightest lose a little), then sRGB. Read as plain
    video instead, an HDR frame's colours come out grey and dim (a red of 200, 40, 40 read as
    146, 68, 52).
    """
    # The input's curve, primaries and matrix are given, not taken from the frames: a file whose
    # container states them while its frames leave some unstated (as remuxed ones can) made
    # zscale stop with "no path between colorspaces". HDR video is BT.2020 in practice.
    return (f"zscale=tin={HDR_TRANSFERS[hdr]}:pin=bt2020:min=bt2020nc:t=linear:p=bt2020:npl=203,format=gbrpf32le,zscale=p=bt709,"
            "tonemap=mobius,zscale=t=iec61966-2-1:m=bt709:r=full,format=rgb24")


@functools.lru_cache(maxsize=None)
def _has_filters(*names: str) -> bool:
    listed = subprocess.run([ffmpeg_exe(), "-hide_banner", "-filters"], capture_output=True, text=True, errors="replace").stdout
    return all(re.search(rf"^\s*\S+\s+{name}\s", listed, re.M) for name in names)


def reading_options(rate: Optional[Fraction]) -> list[str]:
    """ffmpeg output options that pick the video stream and, with a rate, make its frames come
    at that constant rate: what `read_frames` reads, and so what `probe` counts."""
    # 0:V:0: the first video stream that is not a cover picture, as `probe` checks.
    options = ["-map", "0:V:0"]
    if rate is None:
        return options + ["-fps_mode", "passthrough"]
    return options + ["-fps_mode", "cfr", "-r", f"{rate.numerator}/{rate.denominator}"]


def _count(path: Path, rate: Optional[Fraction]) -> tuple[int, float, int, int]:
    """(frames, seconds, repeated, dropped) of the video stream decoded at `rate` (None: as stored)."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostats", "-i", str(path), *reading_options(rate), "-f", "null", "-"]
    done = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    reports = [line for line in done.stderr.splitlines() if line.startswith("frame=")]
    if done.returncode != 0 or not reports:
        raise ImpastoError(f"{path}: ffmpeg cannot decode its video ({_ffmpeg_complaint(done.stderr, path)})")
    fields = dict(re.findall(r"(\w+)=\s*(\S+)", reports[-1]))
    time = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d+)?)", fields.get("time", ""))
    seconds = int(time.group(1)) * 3600 + int(time.group(2)) * 60 + float(time.group(3)) if time else 0.0
    return int(fields.get("frame", 0)), seconds, int(fields.get("dup", 0)), int(fields.get("drop", 0))


def _ffmpeg_rate(path: Path) -> Optional[Fraction]:
    """ffmpeg's frame rate for the stream, exact (the header rounds 30000/1001 to 29.97): the rate
    its constant-rate output takes by default. None when it says none (older ffmpeg, some GIFs)."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostats", "-i", str(path), "-map", "0:V:0", "-vf", "showinfo", "-frames:v", "1",
           "-f", "null", "-"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    match = re.search(r"config in time_base: \S+, frame_rate: (\d+)/(\d+)", done.stderr)
    if not match or not int(match.group(1)) or not int(match.group(2)):
        return None
    return Fraction(int(match.group(1)), int(match.group(2)))


def _header_rate(stream: str) -> Optional[Fraction]:
    """The rate a header's stream line gives: its tbr (ffmpeg's guess), else its fps (the average).
    GIFs have a tbr and no fps."""
    for unit in ("tbr", "fps"):
        match = re.search(rf"(\d+(?:\.\d+)?)(k?) {unit}\b", stream)
        if match and float(match.group(1)) > 0:
            return _fraction(float(match.group(1)) * (1000 if match.group(2) else 1))
    return None


def _fraction(fps: Any) -> Optional[Fraction]:
    """A frame rate in frames a second as a fraction, to 1/100; a rounded NTSC rate (29.97, 23.98,
    59.94, as headers print them) as the one meant (30000/1001, ...). None for no rate."""
    try:
        value = float(fps)
    except (TypeError, ValueError):
        return None
    if not 0 < value < float("inf"):
        return None
    ntsc = Fraction(round(value * 1.001) * 1000, 1001)
    if abs(value - round(value)) > 0.001 and abs(float(ntsc) - value) < 0.006:
        return ntsc
    return Fraction(round(value * 100), 100) or None


def _input_format(header: str) -> str:
    match = re.search(r"^Input #0, ([^,]+)", header, re.MULTILINE)
    return match.group(1) if match else ""


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



# imageio-ffmpeg warns (through logging) whenever the frames it reads differ in size from the
# stream's coded size, which is so for every rotated phone video: expected, and said twice a run.
_SIZE_WARNING = "different from the source frame size"
_quiet = threading.local()


class _SizeWarningFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (getattr(_quiet, "depth", 0) and _SIZE_WARNING in record.getMessage())


_size_warning_filter = _SizeWarningFilter()


@contextmanager
def _quiet_size_warning() -> Iterator[None]:
    """Drop imageio-ffmpeg's frame-size warning, in this thread only, while impasto opens a reader."""
    logger = logging.getLogger("imageio_ffmpeg")
    logger.addFilter(_size_warning_filter)  # once: the same filter is not added twice
    _quiet.depth = getattr(_quiet, "depth", 0) + 1
    try:
        yield
    finally:
        _quiet.depth -= 1


def _open_reader(path: Path, options: list[str]) -> Any:
    return require_ffmpeg().read_frames(str(path), output_params=options)


def _reader_meta(reader: Any, path: Path) -> dict[str, Any]:
    """The first item an imageio-ffmpeg reader yields, its stream's meta data, or a one-line
    error when ffmpeg cannot start decoding (a damaged file, a filter it refuses)."""
    try:
        with _quiet_size_warning():
            return next(reader)
    except (OSError, RuntimeError, StopIteration) as exc:
        raise ImpastoError(f"{path}: ffmpeg cannot decode its video ({first_line(exc)})") from None


def read_frames(info: VideoInfo, start: int = 0, end: Optional[int] = None) -> Iterator[np.ndarray]:
    """Frames start..end-1 (0-based) as HxWx3 uint8 RGB arrays, decoded one at a time at the
    info's constant rate."""
    options = reading_options(info.rate or _fraction(info.fps))
    reader = _open_reader(info.path, options + (["-vf", tone_map(info.hdr)] if info.hdr else []))
    try:
        w, h = _reader_meta(reader, info.path)["size"]
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


def encode(frames: Iterable[np.ndarray], size: tuple[int, int], fps: Union[float, Fraction], path: Path) -> None:
    """Encode HxWx3 uint8 frames (even width and height) into a video file without audio, at
    `fps` frames a second (a Fraction is kept exact)."""
    codec, options, _ = CONTAINERS[check_video_output(path)]
    writer = require_ffmpeg().write_frames(
        str(path), size, fps=fps, codec=codec, quality=None, macro_block_size=2, pix_fmt_out="yuv420p",
        output_params=options + BT709, ffmpeg_log_level="error",
    )  # fmt: skip
    writer.send(None)  # starts ffmpeg
    try:
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
    finally:
        writer.close()


def mux_audio(video: Path, source: VideoInfo, start_seconds: float, seconds: float, output: Path) -> bool:
    """Write `output`: `video`'s frames with the audio of `source` from `start_seconds`, `seconds` long.

    The audio is copied as it is when the container takes it, its players play it (see
    COPIED_AUDIO) and no cut is needed at its start, else re-encoded.
    Returns False (and writes nothing) when neither works.
    """
    suffix = check_video_output(output)
    _, _, fallback = CONTAINERS[suffix]
    playable = COPIED_AUDIO.get(suffix)
    copy = start_seconds == 0 and (playable is None or source.audio_codec in playable)
    base = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(video)]
    base += ["-ss", f"{start_seconds:.6f}", "-t", f"{seconds:.6f}", "-i", str(source.path)]
    base += ["-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy"]
    # A copied track cut after its start keeps the timestamps of the packets it starts in, which
    # some containers (mkv) honour by delaying the video; re-encoding cuts exactly at the frame.
    for audio_codec in ("copy", fallback) if copy else (fallback,):
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
