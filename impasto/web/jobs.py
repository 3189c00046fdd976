"""Jobs of the web app: kept on disk, run one by one (or N at a time) by worker threads.

A job is a folder named by its id (a uuid4) in the data directory:

    job.json        status, request, settings, timestamps, progress, error
    content.png     the photo, as decoded and re-encoded by the server
    style-0.png ..  the style images
    result.png      the picture (for a cancelled or interrupted job: the best one so far)
    progress.gif    the picture forming
    frames/NNN.jpg  the GIF's frames, at the output size

Nothing the client sends is used as a path: the names above are fixed and the id
is made here. job.json is rewritten atomically, so a crash leaves the old or the
new version, never half of one; a job found "queued" or "running" when the server
starts was cut short and is marked "interrupted".
"""

from __future__ import annotations

import builtins
import io
import json
import logging
import os
import queue
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from PIL import Image

from ..errors import ImpastoError
from ..files import atomic_write
from ..images import save_image, tensor_to_pil
from ..settings import Settings
from .options import SERVER_ONLY

if TYPE_CHECKING:  # for the type checker only: the API, and torch with it, is loaded when a run needs it
    from ..api import Stylizer

log = logging.getLogger("impasto.web")

QUEUED, RUNNING, DONE, CANCELLED, FAILED, INTERRUPTED = "queued", "running", "done", "cancelled", "failed", "interrupted"
ACTIVE = (QUEUED, RUNNING)
FINISHED = (DONE, CANCELLED, FAILED, INTERRUPTED)

JOB_FILE = "job.json"
CONTENT_FILE = "content.png"
RESULT_FILE = "result.png"
GIF_FILE = "progress.gif"
FRAMES_DIR = "frames"


def style_file(index: int) -> str:
    return f"style-{index}.png"


def new_job_id() -> str:
    return str(uuid.uuid4())


def is_job_id(text: str) -> bool:
    """A canonical uuid: the only names in the data dir that are jobs (and safe as paths)."""
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1))


class JobStore:
    """The data directory: one folder per job."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ImpastoError(f"{self.root}: cannot create the data directory ({exc.strerror})") from None

    def folder(self, job_id: str) -> Path:
        if not is_job_id(job_id):  # the one gate between a URL and a path
            raise KeyError(job_id)
        return self.root / job_id

    def create_folder(self, job_id: str) -> Path:
        folder = self.folder(job_id)
        folder.mkdir()
        return folder

    def save(self, job: dict[str, Any]) -> None:
        write_json_atomic(self.folder(job["id"]) / JOB_FILE, job)

    def load_all(self) -> list[dict[str, Any]]:
        jobs = []
        for entry in self.root.iterdir():
            if not (entry.is_dir() and is_job_id(entry.name)):
                continue
            try:
                job = json.loads((entry / JOB_FILE).read_text())
            except (OSError, ValueError):
                # A folder whose job.json never got written (a crash mid-upload): nothing to show.
                log.warning("skipping %s: no readable %s", entry, JOB_FILE)
                continue
            if job.get("id") == entry.name:
                jobs.append(job)
        return jobs

    def delete(self, job_id: str) -> None:
        shutil.rmtree(self.folder(job_id), ignore_errors=True)


@dataclass
class Live:
    """What only a running server knows about a job: the preview and the cancel flag."""

    version: int = 0  # bumped at every change, so event streams know when to send
    preview: Optional[bytes] = None
    preview_count: int = 0
    cancel: threading.Event = field(default_factory=threading.Event)
    last_saved: float = 0.0
    last_preview: float = 0.0


Resolve = Callable[[dict[str, Any]], Settings]


class JobManager:
    """The queue, the workers and every job's state (the one lock guards all of it)."""

    def __init__(
        self,
        store: JobStore,
        resolve: Resolve,
        stylizer: Stylizer,
        workers: int = 1,
        gif_frames: int = 30,
        preview_size: int = 256,
        keep_days: Optional[float] = None,
        keep_jobs: Optional[int] = None,
    ) -> None:
        self.store = store
        self.resolve = resolve
        self.stylizer = stylizer
        self.worker_count = workers
        self.gif_frames = gif_frames
        self.preview_size = preview_size
        self.keep_days = keep_days
        self.keep_jobs = keep_jobs
        # Reentrant, so a view is taken under the same hold as the change or the list it follows:
        # between two holds another thread could delete the job (a clean-up, another tab).
        self.lock = threading.RLock()
        self.jobs: dict[str, dict[str, Any]] = {}
        self.live: dict[str, Live] = {}
        self.queue: "queue.Queue[Optional[str]]" = queue.Queue()
        self.threads: list[threading.Thread] = []
        self.stopping = threading.Event()

    # -- life cycle

    def start(self) -> None:
        """Load the jobs on disk, mark the ones cut short, clean up, start the workers."""
        for job in self.store.load_all():
            if job.get("status") in ACTIVE:
                job.update(status=INTERRUPTED, error="the server stopped before this job finished", finished=time.time())
                self.store.save(job)
            self.jobs[job["id"]] = job
            self.live[job["id"]] = Live()
        self.cleanup()
        for i in range(self.worker_count):
            thread = threading.Thread(target=self._work, name=f"impasto-worker-{i}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the workers; a running job stops at its next iteration and is marked interrupted."""
        self.stopping.set()
        for _ in self.threads:
            self.queue.put(None)
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.threads.clear()

    # -- requests

    def submit(self, job: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self._queue_locked(job)
            view = self.view(job["id"])
        self.queue.put(job["id"])
        return view

    def _queue_locked(self, job: dict[str, Any]) -> None:
        """Call with the lock held: the job made queued and saved, then known (a job whose
        record could not be written is not left in memory to wait for nothing)."""
        job.update(status=QUEUED, created=job.get("created") or time.time(), started=None, finished=None,
                   progress=None, error=None, result=False, gif=False, frames=0, partial=False, seconds=None,
                   losses=None, stopped_reason=None, notes=[])  # fmt: skip
        self.store.save(job)
        self.jobs[job["id"]] = job
        self.live[job["id"]] = Live()

    def cancel(self, job_id: str) -> dict[str, Any]:
        with self.lock:
            job = self._job(job_id)
            if job["status"] == QUEUED:
                job.update(status=CANCELLED, finished=time.time())
                self._changed(job, save=True)
                self._queue_moved()
            elif job["status"] == RUNNING:
                self.live[job_id].cancel.set()  # the run's callback sees it at the next iteration
            return self.view(job_id)

    def rerun(self, job_id: str, request: dict[str, Any], settings: dict[str, Any], weights: list[float]) -> dict[str, Any]:
        """A new job from `job_id`'s saved inputs, with `request` (already resolved to `settings`).

        The old job is left exactly as it was: an artist re-running a picture to try a
        change must not lose the one they had (the old in-place re-run deleted it, and a
        cancel then left a picture one step old). An interrupted job is re-run the same
        way, so its best picture so far stays too.
        """
        with self.lock:
            old = self._job(job_id)
            content, styles = dict(old["content"]), [dict(s) for s in old["styles"]]
        new_id = new_job_id()
        folder = self.store.create_folder(new_id)
        source = self.store.folder(job_id)
        try:
            for name in [content["file"]] + [s["file"] for s in styles]:
                link_or_copy(source / name, folder / name)
        except FileNotFoundError:  # deleted (or cleaned up) while we copied
            self.store.delete(new_id)
            raise KeyError(job_id) from None
        except BaseException:
            self.store.delete(new_id)
            raise
        job = {
            "id": new_id,
            "created": time.time(),
            "request": request,
            "settings": settings,
            "content": content,
            "styles": [dict(s, weight=w) for s, w in zip(styles, weights)],
            "rerun_of": job_id,
        }
        try:
            return self.submit(job)
        except BaseException:  # its record was never written: a folder no start-up or clean-up would find
            self.store.delete(new_id)
            raise

    def delete(self, job_id: str) -> None:
        with self.lock:
            job = self._job(job_id)
            if job["status"] in ACTIVE:
                raise JobConflict(f"job {job_id} is {job['status']}; cancel it first")
            del self.jobs[job_id]
            self.live.pop(job_id, None)
            self.store.delete(job_id)

    def view(self, job_id: str) -> dict[str, Any]:
        with self.lock:
            job = self._job(job_id)
            return dict(job, preview=self.live[job_id].preview_count or None, ahead=self._ahead(job))

    def _ahead(self, job: dict[str, Any]) -> Optional[int]:
        """Call with the lock held: for a queued job, the jobs that run or wait before it (None otherwise)."""
        if job["status"] != QUEUED:
            return None
        return sum(1 for other in self.jobs.values()
                   if other["status"] == RUNNING or (other["status"] == QUEUED and other["created"] < job["created"]))  # fmt: skip

    def _queue_moved(self) -> None:
        """Call with the lock held: every waiting job's place in the queue may have changed, so its
        event stream sends it again (a page following it says how many jobs are ahead)."""
        for other in self.jobs.values():
            if other["status"] == QUEUED:
                self.live[other["id"]].version += 1


    def list(self) -> builtins.list[dict[str, Any]]:  # in the class, `list` is this method
        with self.lock:
            ids = sorted(self.jobs, key=lambda i: self.jobs[i]["created"], reverse=True)
            return [self.view(i) for i in ids]

    def version(self, job_id: str) -> int:
        with self.lock:
            self._job(job_id)
            return self.live[job_id].version

    def preview(self, job_id: str) -> Optional[bytes]:
        with self.lock:
            self._job(job_id)
            return self.live[job_id].preview

    def _job(self, job_id: str) -> dict[str, Any]:
        job = self.jobs.get(job_id)
        if job is None:
            raise KeyError(job_id)
        return job

    def _changed(self, job: dict[str, Any], save: bool) -> None:
        """Call with the lock held."""
        live = self.live[job["id"]]
        live.version += 1
        if save:
            self.store.save(job)
            live.last_saved = time.monotonic()

    # -- clean-up

    def cleanup(self) -> builtins.list[str]:
        """Delete finished jobs older than keep_days, then the oldest beyond keep_jobs."""
        now = time.time()
        with self.lock:
            finished = sorted(
                (j for j in self.jobs.values() if j["status"] in FINISHED),
                key=lambda j: j.get("finished") or j["created"],
                reverse=True,
            )
            doomed = []
            for rank, job in enumerate(finished):
                age_days = (now - (job.get("finished") or job["created"])) / 86400
                too_old = self.keep_days is not None and age_days > self.keep_days
                too_many = self.keep_jobs is not None and rank >= self.keep_jobs
                if too_old or too_many:
                    doomed.append(job["id"])
            for job_id in doomed:
                del self.jobs[job_id]
                self.live.pop(job_id, None)
                self.store.delete(job_id)
        if doomed:
            log.info("cleaned up %d old job(s)", len(doomed))
        return doomed

    # -- the workers

    def _work(self) -> None:
        while True:
            job_id = self.queue.get()
            if job_id is None or self.stopping.is_set():
                return
            # Nothing a job meets (a full disk while its record is saved, a bug) may end this
            # thread: every job queued after it would wait for good.
            try:
                self._take(job_id)
            except Exception as exc:
                log.exception("job %s could not be run or recorded", job_id)
                with self.lock:
                    job = self.jobs.get(job_id)
                    if job is not None and job["status"] in ACTIVE:  # in memory only: saving is what failed
                        job.update(status=FAILED, finished=time.time(), error=f"internal error ({exc.__class__.__name__}: {exc}); see the server log")
                        self._changed(job, save=False)
            try:
                self.cleanup()
            except Exception:
                log.exception("clean-up of old jobs failed")

    def _take(self, job_id: str) -> None:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None or job["status"] != QUEUED:  # cancelled or deleted while it waited
                return
            job.update(status=RUNNING, started=time.time())
            live = self.live[job_id]
            live.cancel.clear()
            self._changed(job, save=True)
            self._queue_moved()
        try:
            self._run(job, live)
        except ImpastoError as exc:
            self._finish(job, FAILED, error=str(exc))
        except Exception as exc:  # a bug: keep the server up, say so, log the traceback
            log.exception("job %s failed", job_id)
            self._finish(job, FAILED, error=f"internal error ({exc.__class__.__name__}: {exc}); see the server log")

    def _run(self, job: dict[str, Any], live: Live) -> None:
        folder = self.store.folder(job["id"])
        settings = self.resolve(job["request"])
        styles = [(str(folder / s["file"]), float(s["weight"])) for s in job["styles"]]

        def on_progress(progress: Any) -> bool:
            if live.cancel.is_set() or self.stopping.is_set():
                return False
            self._progress(job, live, progress)
            return True

        result = self.stylizer.run(str(folder / CONTENT_FILE), styles, settings, callback=on_progress, frames=self.gif_frames)
        save_image(result.image, folder / RESULT_FILE, overwrite=True)
        frames = self._save_frames(folder, result.frames)
        if result.frames:
            from ..media import write_gif

            write_gif(result.frames, folder / GIF_FILE, overwrite=True)
        reason = result.stopped_reason
        if not result.interrupted:
            status = DONE
        elif self.stopping.is_set():
            status, reason = INTERRUPTED, "the server stopped"
        elif live.cancel.is_set():
            status, reason = CANCELLED, "cancelled"
        else:  # the loss went non-finite: the best image so far is kept
            status = DONE
        self._finish(job, status, result=True, gif=bool(result.frames), frames=frames, partial=result.interrupted,
                     seconds=round(result.seconds, 3), losses=result.losses, stopped_reason=reason, notes=result.notes)  # fmt: skip

    def _progress(self, job: dict[str, Any], live: Live, progress: Any) -> None:
        now = time.monotonic()
        preview = None
        # A preview a few times a second is smooth enough to watch and costs little.
        if progress.done == 1 or progress.is_last or now - live.last_preview >= 0.4:
            preview = self._jpeg(progress.image)
            live.last_preview = now
        with self.lock:
            job["progress"] = {
                "done": progress.done,
                "total": progress.total,
                "scale": progress.scale + 1,
                "scales": progress.scales,
                "size": list(progress.size),
                "step": progress.step,  # within this scale: with the scale sizes, the page's time-left estimate
                "steps": progress.steps,
                "losses": {k: float(v) for k, v in progress.losses.items()},
                "elapsed": round(progress.elapsed, 3),
            }
            if preview is not None:
                live.preview = preview
                live.preview_count += 1
            self._changed(job, save=now - live.last_saved >= 1.0)

    def _jpeg(self, image: Any) -> bytes:
        picture = tensor_to_pil(image)
        picture.thumbnail((self.preview_size, self.preview_size), Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=85)
        return buffer.getvalue()

    def _save_frames(self, folder: Path, frames: builtins.list[Image.Image]) -> int:
        target = folder / FRAMES_DIR
        target.mkdir(exist_ok=True)
        for i, frame in enumerate(frames):
            save_image(frame, target / f"{i:03d}.jpg", overwrite=True)
        return len(frames)

    def _finish(self, job: dict[str, Any], status: str, **fields: Any) -> None:
        with self.lock:
            job.update(status=status, finished=time.time(), **fields)
            self._changed(job, save=True)
            self._queue_moved()


def link_or_copy(source: Path, target: Path) -> None:
    """A hard link where the file system allows one: a job's inputs are never rewritten, so a
    re-run may share them (and deleting either job leaves the other's intact)."""
    try:
        os.link(source, target)
    except FileNotFoundError:
        raise
    except OSError:
        shutil.copyfile(source, target)


class JobConflict(Exception):
    """The request does not fit the job's state (HTTP 409)."""


def public_settings(settings: Settings) -> dict[str, Any]:
    """Settings as shown to clients: without what only the server decides (paths, device)."""
    data = settings.to_dict()
    for name in SERVER_ONLY:
        data.pop(name, None)
    return data
