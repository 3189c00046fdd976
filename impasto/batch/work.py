"""One job, run inside a worker: a local process, the driver itself, or a Ray actor.

A worker holds one Stylizer for its life, so VGG is loaded once and the style
statistics of a style are computed once for all the contents painted in it.
The picture goes back as PNG bytes and the driver writes it, so a cluster needs
no shared file system.
"""

from __future__ import annotations

import io
import os
import resource
import socket
import time
import traceback
from typing import Any, Callable, Optional, Sequence, Union

from ..errors import ImpastoError, Interrupted

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
    from ..optimize import StatsCache

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


def load_model(stylizer: Any, settings: Any) -> float:
    """Load the weights and build the extractor as Stylizer.run would; seconds taken (about 0 once loaded).
    Done before the run so a worker's one-time load is timed apart from its first job's work."""
    from ..optimize import resolve_device

    start = time.perf_counter()
    model = stylizer.weights(settings).model
    stylizer.extractor(settings.for_model(model).validate(), resolve_device(settings.device))
    return time.perf_counter() - start


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def peak_rss_mib() -> float:
    """This process's resident-memory high-water mark (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def open_source(source: Source) -> Any:
    """A PIL image from a path or from bytes, with load_image's checks and messages."""
    from PIL import Image, UnidentifiedImageError

    from ..images import load_image

    if isinstance(source, str):
        return load_image(source)
    name, data = source
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as exc:
        raise ImpastoError(f"{name}: not a readable image ({exc.__class__.__name__})") from None
    return load_image(image)


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
    stylizer: Any,
    settings: dict[str, Any],
    content: Source,
    styles: Sequence[tuple[Source, float]],
    on_progress: Optional[ProgressFn] = None,
) -> dict[str, Any]:
    """Paint one job. Returns {"ok", "png", "losses", "seconds", "note", "worker", "timings"} or {"ok": False, "error"}.

    Every error becomes a message here: a bad input fails its job, never the worker.
    A Ctrl-C in the middle of a job (the driver running jobs itself) is raised again,
    so that job is not recorded as done with a half-painted picture.
    "timings" splits the job's seconds for benchmarks/batch.py: model load (non-zero on a
    worker's first job), input decoding, style targets (None when the stylizer's cache does
    not time them), the rest of the run, PNG encoding; plus the wall clock at the start and
    end, the worker's peak RSS and its torch threads.
    """
    from ..settings import Settings

    start, started_at = time.perf_counter(), time.time()
    try:
        content_image = open_source(content)
        style_images = [(open_source(source), weight) for source, weight in styles]
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
        run_seconds = time.perf_counter() - run_start
        style = None if style_before is None else stylizer.style_cache.seconds - style_before
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
            "worker": worker_name(),
            "timings": timings,
        }
    except ImpastoError as exc:
        return {"ok": False, "error": str(exc), "seconds": round(time.perf_counter() - start, 3), "worker": worker_name()}
    except Exception as exc:  # a bug or a device failure: keep the worker alive, say where it happened
        where = traceback.extract_tb(exc.__traceback__)[-1]
        message = f"{exc.__class__.__name__}: {exc} (at {os.path.basename(where.filename)}:{where.lineno})"
        return {"ok": False, "error": message, "seconds": round(time.perf_counter() - start, 3), "worker": worker_name()}
