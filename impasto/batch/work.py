"""One job, run inside a worker: a local process, the driver itself, or a Ray actor.

A worker holds one Stylizer for its life, so VGG is loaded once and the style
statistics of a style are computed once for all the contents painted in it.
The picture goes back as PNG bytes and the driver writes it, so a cluster needs
no shared file system.
"""

from __future__ import annotations

import io
import os
import re
import socket
import sys
import time
import traceback
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Union

from ..errors import ImpastoError, Interrupted, collect_warnings

if TYPE_CHECKING:  # for the type checker only: the API, and torch with it, is loaded when a run needs it
    from ..api import Stylizer
    from ..settings import Settings

# A batch revisits each style many times, at every scale: keep more statistics than a single run would.
STYLE_CACHE_ENTRIES = 64

# An image as a worker receives it: a path it can read, or (name, bytes) sent by the driver.
Source = Union[str, tuple[str, bytes]]
ProgressFn = Callable[[int, int], None]


def make_stylizer() -> Any:
    from ..api import Stylizer

    stylizer = Stylizer()
    stylizer.style_cache = timed_stats_cache(STYLE_CACHE_ENTRIES)
    return stylizer


def timed_stats_cache(capacity: int) -> Any:
    """A style statistics cache that also adds up the seconds spent computing what it missed
    (from a miss to its put), so a job can report its style-target cost apart from the optimisation."""
    from ..style_stats import StatsCache

    class TimedStatsCache(StatsCache):
        def __init__(self) -> None:
            super().__init__(capacity)
            self.seconds = 0.0
            self._missed_at: Optional[float] = None

        def get(self, key: tuple) -> Any:
            found = super().get(key)
            if found is None:
                self._missed_at = time.perf_counter()
            return found

        def put(self, key: tuple, value: Any) -> None:
            super().put(key, value)
            if self._missed_at is not None:
                self.seconds += time.perf_counter() - self._missed_at
                self._missed_at = None

    return TimedStatsCache()


def load_model(stylizer: Stylizer, settings: Settings) -> float:
    """Load the weights and build the extractor as Stylizer.run would; seconds taken (about 0 once loaded).
    Done before the run so a worker's one-time load is timed apart from its first job's work."""
    from ..device import resolve_device

    start = time.perf_counter()
    stylizer.extractor(stylizer.settings_for_model(settings), resolve_device(settings.device))
    return time.perf_counter() - start


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


# Where Linux tells a program its own resident-memory high-water mark (VmHWM).
PROC_STATUS = "/proc/self/status"


def peak_rss_mib() -> Optional[float]:
    """This program's resident-memory high-water mark in MiB, or None where neither /proc nor
    `resource` tells it (Windows). /proc's first: Linux's getrusage() counts in a started
    program the memory of the process that started it, up to that moment (the benchmark's
    sizes, each in a fresh process after a 2.4 GiB run, all read 2483 MiB)."""
    try:
        with open(PROC_STATUS) as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource  # here, not at the top: `import impasto` loads this module on every platform
    except ImportError:
        return None
    # Linux reports KiB, macOS bytes.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024**2 if sys.platform == "darwin" else 1024)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def open_source(source: Source) -> Any:
    """A PIL image from a path or from bytes, with load_image's checks and messages: RGB, or RGBA
    where the picture has transparency, which a run keeps in its output (a cut-out stays a cut-out)."""

    from ..images import load_image_and_alpha, open_image, with_alpha

    if isinstance(source, str):
        return with_alpha(*load_image_and_alpha(source))
    name, data = source
    return with_alpha(*load_image_and_alpha(open_image(io.BytesIO(data), name)))


def source_name(source: Source) -> str:
    return source if isinstance(source, str) else source[0]


# How Stylizer.run names a painting it was given as a picture rather than a path.
UNNAMED_STYLE = "a style image"


def name_input(message: str, content: str, styles: Sequence[tuple[str, Any]]) -> str:
    """A job's warning, naming the input it concerns where it does not already: in a batch of
    thousands, "a style image is 40x30" says nothing. `styles`: (name, PIL image) of each painting."""
    names = [content] + [name for name, _ in styles]
    if any(name and (mentions(message, name) or mentions(message, os.path.basename(name))) for name in names):
        return message
    if message.startswith(UNNAMED_STYLE):  # which painting: the one of the size it gives, if it gives one
        candidates = [name for name, image in styles if f"{image.width}x{image.height}" in message] or [name for name, _ in styles]
        if len(candidates) == 1:
            return candidates[0] + message[len(UNNAMED_STYLE):]
        return f"{' or '.join(candidates)}: {message}"
    if "photo" in message.lower():
        return f"{content}: {message}"
    return f"{content} in {' + '.join(name for name, _ in styles)}: {message}"


def mentions(message: str, name: str) -> bool:
    """Whether `message` names the file `name` as a whole: "a.png" in "a.png is small" or "/x/a.png: ...",
    not in "data.png" nor "a.png.bak"."""
    if not name:
        return False
    # Not part of a longer name on either side: no letter, digit, "_", "-" or "." joined to it (a
    # sentence's full stop after it is fine).
    return re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w-]|\.\w)", message) is not None


def read_source(path: str) -> tuple[str, bytes]:
    """The driver's half of sending an image: its bytes, or the error load_image would give."""
    try:
        with open(path, "rb") as handle:
            return path, handle.read()
    except FileNotFoundError:
        raise ImpastoError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImpastoError(f"{path}: is a folder, not an image") from None
    except OSError as exc:
        raise ImpastoError(f"{path}: cannot read it ({exc.strerror or exc.__class__.__name__})") from None


def run_job(
    stylizer: Stylizer,
    settings: dict[str, Any],
    content: Source,
    styles: Sequence[tuple[Source, float]],
    on_progress: Optional[ProgressFn] = None,
) -> dict[str, Any]:
    """Paint one job. Returns {"ok", "png", "losses", "seconds", "note", "notes", "worker", "timings", "warnings"} or
    {"ok": False, "error", "warnings"}.

    Every error becomes a message here: a bad input fails its job, never the worker.
    A Ctrl-C in the middle of a job (the driver running jobs itself) is raised again,
    so that job is not recorded as done with a half-painted picture.
    "timings" splits the job's seconds for benchmarks/batch.py: model load (non-zero on a
    worker's first job), input decoding, style targets (None when the stylizer's cache does
    not time them), the rest of the run, PNG encoding; plus the wall clock at the start and
    end, the worker's peak RSS and its torch threads. "warnings" holds what the job warned of
    (ImpastoWarning), each naming its input: the driver says each once per batch and records
    them, instead of every job of a small painting saying it again.
    """
    said: list[str] = []
    paintings: list[tuple[str, Any]] = []  # (name, picture) of each style read, to name one in a warning
    with collect_warnings(said):
        outcome = _run_job(stylizer, settings, content, styles, on_progress, paintings)
    outcome["warnings"] = list(dict.fromkeys(name_input(message, source_name(content), paintings) for message in said))
    return outcome


def _run_job(
    stylizer: Stylizer,
    settings: dict[str, Any],
    content: Source,
    styles: Sequence[tuple[Source, float]],
    on_progress: Optional[ProgressFn],
    paintings: list[tuple[str, Any]],
) -> dict[str, Any]:
    from ..settings import Settings

    start, started_at = time.perf_counter(), time.time()
    try:
        content_image = open_source(content)
        style_images = []
        for source, weight in styles:
            style_images.append((open_source(source), weight))
            paintings.append((source_name(source), style_images[-1][0]))
        decoded = time.perf_counter()
        job_settings = Settings.from_dict(settings)
        load = load_model(stylizer, job_settings)
        style_before = getattr(stylizer.style_cache, "seconds", None)

        def callback(progress: Any) -> None:
            if on_progress is not None:
                on_progress(progress.done, progress.total)

        run_start = time.perf_counter()
        try:
            result = stylizer.run(content_image, style_images, job_settings, callback=callback)
        except Interrupted:
            # One job's half-painted picture is not the batch's to hand on: the batch stops as at
            # any other Ctrl-C, with the jobs done in its index.
            raise KeyboardInterrupt from None
        if result.out_of_memory:
            # Half painted: not a picture for the data set, and --retry-failed must be able to redo it.
            return {"ok": False, "error": result.stopped_reason, "seconds": round(time.perf_counter() - start, 3), "worker": worker_name()}
        run_seconds = time.perf_counter() - run_start
        # Only a worker's own cache (timed_stats_cache) counts its seconds; a caller's Stylizer may have a plain one.
        style = None if style_before is None else getattr(stylizer.style_cache, "seconds") - style_before
        encode_start = time.perf_counter()
        buffer = io.BytesIO()
        result.image.save(buffer, format="PNG")
        timings = {
            "load": load,
            "decode": decoded - start,
            "style": style,
            "optimise": run_seconds - (style or 0.0),
            "encode": time.perf_counter() - encode_start,
            "started_at": started_at,
            "finished_at": time.time(),
            "peak_rss_mib": peak_rss_mib(),
            "threads": torch_threads(),
        }
        return {
            "ok": True,
            "png": buffer.getvalue(),
            "losses": result.losses,
            "seconds": round(time.perf_counter() - start, 3),
            "note": result.stopped_reason if result.interrupted else None,
            "notes": result.notes,
            "worker": worker_name(),
            "timings": timings,
        }
    except ImpastoError as exc:
        return {"ok": False, "error": str(exc), "seconds": round(time.perf_counter() - start, 3), "worker": worker_name()}
    except Exception as exc:  # a bug or a device failure: keep the worker alive, say where it happened
        where = traceback.extract_tb(exc.__traceback__)[-1]
        message = f"{exc.__class__.__name__}: {exc} (at {os.path.basename(where.filename)}:{where.lineno})"
        return {"ok": False, "error": message, "seconds": round(time.perf_counter() - start, 3), "worker": worker_name()}
