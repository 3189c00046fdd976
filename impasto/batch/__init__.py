"""Batch: many content x style jobs, here (N worker processes) or on a Ray cluster.

    for result in impasto.batch("jobs.csv", "out/", impasto.Settings(size=256)):
        print(result.status, result.output, result.seconds)

    impasto.batch(None, "out/", contents="photos/", styles="paintings/", per_content=3, seed=1)

Outputs get deterministic names in the output folder, each written atomically,
and `index.jsonl` there holds one record per job (inputs, settings hash, status,
losses, seconds, error). Running the same batch again skips the finished jobs;
`retry_failed=True` redoes the failed ones.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import math
import os
import signal
import threading
import weakref
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Collection, Iterator, Mapping, Optional, Sequence, Union

from .. import locks
from ..errors import ImpastoError, option, warn
from ..images import check_writable
from ..settings import SettingsLike, as_settings
from .index import INDEX_NAME, FolderLock, Index
from .local import ProgressHook as RunnerHook
from .local import Task, exit_if_in_a_worker, run_inline, run_pool
from .plan import OUTPUT_FORMATS, Job, PathLike, folder_options, jobs_from_rows, pair_folders, plan, read_manifest

if TYPE_CHECKING:  # for the type checker only: the API, and torch with it, is loaded when a run needs it
    from ..api import Stylizer

# (worker slot, output name, iterations done, iterations in all)
ProgressHook = Callable[[int, str, int, int], None]

__all__ = ["BatchRun", "JobResult", "batch", "cli_main", "plan_batch"]


@dataclass
class JobResult:
    """How one job ended. `previous` marks a job finished by an earlier run of the batch."""

    output: Path
    status: str  # done, failed or skipped
    content: str
    styles: list[tuple[str, float]]
    settings_hash: str
    losses: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    error: Optional[str] = None
    attempts: int = 0
    worker: Optional[str] = None
    previous: bool = False
    warnings: list[str] = field(default_factory=list)  # what the run warned of (each also said once per batch)
    notes: list[str] = field(default_factory=list)  # what the run decided for itself (api.Result.notes)

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def image(self) -> Any:
        """The written picture (PIL): RGB, or RGBA where it kept a photo's transparency."""
        from ..images import load_image_and_alpha, with_alpha

        return with_alpha(*load_image_and_alpha(self.output))

    @classmethod
    def from_record(cls, record: Mapping[str, Any], folder: Path, previous: bool = False) -> "JobResult":
        return cls(
            output=folder / record["output"], status=record["status"], content=record.get("content", ""),
            styles=[tuple(s) for s in record.get("styles", [])], settings_hash=record.get("settings_hash", ""),
            losses=record.get("losses") or {}, seconds=record.get("seconds") or 0.0, error=record.get("error"),
            attempts=record.get("attempts", 0), worker=record.get("worker"), previous=previous,
            warnings=list(record.get("warnings") or []), notes=list(record.get("notes") or []),
        )  # fmt: skip


@dataclass
class BatchPlan:
    """What a batch run will do, decided before any job runs."""

    folder: Path
    index: Index
    jobs: list[Job]
    to_run: list[Job]
    finished: list[Job]  # done by an earlier run: left alone
    failed_before: list[Job]  # failed in an earlier run and not retried this time
    replace: bool  # outputs of jobs to run may replace files (only with overwrite)
    # Outputs an earlier run of these jobs was writing when it died: the file there is its own.
    ours: frozenset[str] = frozenset()
    lock: Optional[locks.FolderLock] = None  # held until the run ends (released by _execute or close())


def collect_jobs(
    source: Union[PathLike, Sequence[Mapping[str, Any]], None],
    contents: Optional[PathLike],
    styles: Optional[PathLike],
    per_content: Optional[int],
    seed: int,
    fmt: str,
    recursive: bool = False,
) -> list[Job]:
    if fmt not in OUTPUT_FORMATS:
        raise ImpastoError(f"output format must be one of {', '.join(OUTPUT_FORMATS)}, not {fmt!r}")
    folders = contents is not None or styles is not None
    if source is not None and folders:
        raise ImpastoError(f"give either a manifest or {option('contents')}/{option('styles')} folders, not both")
    if folders:
        if contents is None or styles is None:
            raise ImpastoError(f"folder mode needs both {folder_options()}")
        return pair_folders(contents, styles, per_content, seed, fmt, recursive)
    if recursive:
        raise ImpastoError(f"{option('recursive', True)} reads the subfolders of {folder_options()}; a manifest names its files")
    if per_content is not None:
        raise ImpastoError(f"{option('per_content')} pairs folders; with a manifest, each row names its styles")
    if source is None:
        raise ImpastoError(f"nothing to do: give a manifest (.csv or .jsonl) or {folder_options()}")
    if isinstance(source, (str, Path)) or hasattr(source, "__fspath__"):
        return read_manifest(source, fmt)  # type: ignore[arg-type]
    return jobs_from_rows(source, fmt)


def plan_batch(
    source: Union[PathLike, Sequence[Mapping[str, Any]], None],
    output: PathLike,
    settings: Optional[SettingsLike] = None,
    *,
    contents: Optional[PathLike] = None,
    styles: Optional[PathLike] = None,
    per_content: Optional[int] = None,
    seed: int = 0,
    image_format: str = "png",
    retry_failed: bool = False,
    overwrite: bool = False,
    fixed: Collection[str] = (),
    recursive: bool = False,
) -> BatchPlan:
    """Read the jobs and the index and decide which jobs run now (see `batch`)."""
    base = as_settings(settings).validate()
    folder = Path(output)
    for given, flag in ((contents, option("contents")), (styles, option("styles"))):
        if given is None:
            continue
        if folder.resolve() == Path(given).resolve():
            # Its pictures would be read as new photos (or paintings) by the same command run again.
            raise ImpastoError(f"{folder}: the output folder is the {flag} folder; give the outputs a folder of their own")
        if recursive and folder.resolve().is_relative_to(Path(given).resolve()):
            raise ImpastoError(f"{folder}: the output folder is inside the {flag} folder, which {option('recursive', True)} "
                               "reads whole; give the outputs a folder outside it")  # fmt: skip
    jobs = plan(collect_jobs(source, contents, styles, per_content, seed, image_format, recursive), base, fixed, folder)
    if folder.exists() and not folder.is_dir():
        raise ImpastoError(f"{folder}: exists and is not a folder (the batch's output folder)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImpastoError(f"{folder}: cannot make the batch's output folder ({exc.strerror or exc})") from None
    check_writable(folder)
    lock = FolderLock(folder).acquire()  # before the index is read: another run's index is final first
    index = Index(folder / INDEX_NAME)
    to_run, finished, failed_before, ours, stale = [], [], [], set(), set()
    kept: dict[str, str] = {}  # output -> the key of the earlier record its picture stays with
    refreshed = False
    for job in jobs:
        record = index.get(job.output) or {}
        if record and record_is_of(record, job):
            refreshed = refresh_record(record, job) or refreshed
        status = record.get("status") if record.get("key") == job.key else None  # another job's record is none of ours
        exists = (folder / job.output).exists()
        changed = inputs_changed(record, job)
        if status == "done" and changed:
            stale.add(job.output)  # until it is redone, not a picture of the photo (or painting) as it is now
        if status == "done" and exists and not overwrite and changed:
            ours.add(job.output)  # a photo (or painting) replaced since: redone, its old picture replaced
            to_run.append(job)
        elif status == "done" and exists and not overwrite:
            finished.append(job)
        elif status == "failed" and not (retry_failed or overwrite or changed):
            failed_before.append(job)  # an input replaced since (the cause fixed, maybe) is tried again
        else:
            if status == "writing" or (status == "failed" and record.get("earlier_picture")):
                ours.add(job.output)  # redone, and its half-recorded (or earlier) picture replaced
            elif exists and not overwrite and job.error is None and record.get("status") == "done" and record.get("key"):
                # Another batch's picture, which this one will skip, not replace: its record still
                # describes the file, so a data loader keeps it (a mistyped rerun must not empty its view).
                kept[job.output] = record["key"]
            to_run.append(job)
    if index.mark_current({job.output: job.key for job in jobs} | kept, stale) or refreshed:
        index.compact()  # so the records of jobs no longer in the batch say so even if this run is killed
    return BatchPlan(folder, index, jobs, to_run, finished, failed_before, replace=overwrite, ours=frozenset(ours), lock=lock)


def record_is_of(record: Mapping[str, Any], job: Job) -> bool:
    """Whether an index record was written by this job: by its key, or as an earlier index has it (on
    the absolute resolved paths; before those, on the paths as spelled, in records without "inputs"),
    or with the same files and settings (the output folder moved on its own)."""
    key = record.get("key")
    if key in (job.key, job.absolute_key) or ("inputs" not in record and key == job.legacy_key):
        return True
    styles = record.get("styles")
    return (
        job.error is None and bool(job.settings_hash) and record.get("settings_hash") == job.settings_hash
        and record.get("content") == job.content and isinstance(styles, list)
        and [tuple(s) if isinstance(s, list) else s for s in styles] == [tuple(s) for s in job.styles]
    )  # fmt: skip


def refresh_record(record: dict[str, Any], job: Job) -> bool:
    """Bring a record of this job (see record_is_of) up to date: its key, and its paths where the files
    were moved, for a data loader. The file versions stay those its picture was made from, so an input
    replaced since is still seen to be; a record without them takes the files as they are. Returns
    whether it changed."""
    if record.get("key") == job.key and "inputs" in record and record.get("content") == job.content and \
            record.get("styles") == [[path, weight] for path, weight in job.styles]:  # fmt: skip
        return False  # as this job wrote it (the common case, and quick)
    fresh = job.record()
    if isinstance(record.get("inputs"), list):
        fresh["inputs"] = record["inputs"]
    if all(record.get(name) == value for name, value in json_like(fresh).items()):
        return False
    record.update(fresh)
    return True


def json_like(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record as it reads back from the index (tuples as lists), to compare with one read."""
    return json.loads(json.dumps(record, default=str))


def inputs_changed(record: Mapping[str, Any], job: Job) -> bool:
    """Whether an input file of a job is not the one its record was made from (another size or
    modification time): a replaced photo or painting. A file now missing is no reason to redo a job
    (there is nothing to redo it from), nor one missing then and there now: a failed job's missing
    input put in place waits for retry_failed, as any other fixed cause does."""
    before = record.get("inputs")
    if not isinstance(before, list) or len(before) != len(job.inputs):
        return False  # an older record: nothing to compare
    return any(now is not None and then is not None and now != then for now, then in zip(job.inputs, before))


def batch(
    source: Union[PathLike, Sequence[Mapping[str, Any]], None],
    output: PathLike,
    settings: Optional[SettingsLike] = None,
    *,
    contents: Optional[PathLike] = None,
    styles: Optional[PathLike] = None,
    per_content: Optional[int] = None,
    seed: int = 0,
    recursive: bool = False,
    workers: Optional[int] = None,
    ray: Union[None, bool, str] = None,
    ray_cpus: float = 1.0,
    ray_gpus: Optional[bool] = None,
    retries: int = 2,
    retry_failed: bool = False,
    overwrite: bool = False,
    image_format: str = "png",
    stylizer: Optional[Stylizer] = None,
    on_progress: Optional[ProgressHook] = None,
    fixed: Collection[str] = (),
) -> "BatchRun":
    """Run many stylisations; yield a JobResult for each job as it finishes.

    Jobs come from `source` (a .csv or .jsonl manifest, or a list of dicts with the same
    fields: content, style or styles, output, settings or any setting name), or from the
    folders `contents` x `styles`: every pair, or `per_content` styles drawn at random per
    content (repeatably for a given `seed`); `recursive` reads the folders' subfolders too, and
    a content's output goes into the same subfolder of `output`. `settings` applies to every job; a row's
    preset overrides it but for the settings named in `fixed` (the command line's explicit
    options), and a row's own values override both.

    Results are written into the folder `output` with deterministic names, and an index
    (`output/index.jsonl`) records every job. Jobs done by an earlier run with the same
    inputs and settings are yielded first (`previous=True`) and not redone (the same inputs:
    the same files, by resolved path from the output folder, size and modification time, so
    inputs and outputs moved together still match); failed ones are redone with
    `retry_failed`, or when an input was replaced since. An existing file the batch did not make is skipped
    (status "skipped") unless `overwrite`.

    Local by default: `workers` processes (default 1: this process, reusing `stylizer`
    if given), each loading VGG once. `ray=True` or `ray="host:port"` runs the jobs on
    Ray actors instead (`workers` actors, default as many as the cluster holds), one GPU
    each where the cluster has GPUs (`ray_gpus` forces it either way), else `ray_cpus`
    CPUs. A job whose worker dies is sent again up to `retries` times.
    `on_progress(worker, output_name, iterations_done, iterations_total)` follows each job
    (local runs; a Ray run reports whole jobs only).

    Bad input in the call (no manifest, an empty folder) raises ImpastoError at once;
    a bad row fails its job only.
    """
    exit_if_in_a_worker()
    if retries < 0:
        raise ImpastoError(f"{option('retries')} must be zero or more, not {retries}")
    if workers is not None and workers < 1:
        raise ImpastoError(f"{option('workers')} must be at least 1, not {workers}")
    if not (math.isfinite(ray_cpus) and ray_cpus > 0):
        raise ImpastoError(f"{option('ray_cpus')} must be a positive number, not {ray_cpus}")
    address = None if ray is True else (ray or None)
    joined = False
    if ray:
        from .cluster import connect

        # Before anything is written: a cluster that refuses (a wrong token) leaves no folder or index behind.
        joined = connect(address)
    try:
        planned = plan_batch(
            source, output, settings, contents=contents, styles=styles, per_content=per_content, seed=seed,
            image_format=image_format, retry_failed=retry_failed, overwrite=overwrite, fixed=fixed, recursive=recursive,
        )  # fmt: skip
    except BaseException:
        if joined:
            from .cluster import disconnect

            disconnect()
        raise
    run = _execute(planned, workers, bool(ray), address, ray_cpus, ray_gpus, retries, stylizer, on_progress, joined)
    return BatchRun(planned, run)


# The runs of this process still open: at exit each is closed while Python can still write its
# index (a generator finalised during the interpreter's shutdown finds `open` gone).
_open_runs: "weakref.WeakValueDictionary[str, BatchRun]" = weakref.WeakValueDictionary()


@atexit.register
def _close_open_runs() -> None:
    for run in list(_open_runs.values()):
        run.close()


class BatchRun(Iterator[JobResult]):
    """The results of `batch`, as they come; `total` jobs, of which `to_run` run now."""

    def __init__(self, planned: BatchPlan, results: Iterator[JobResult]) -> None:
        self.plan = planned
        self.total = len(planned.jobs)
        self.to_run = len(planned.to_run)
        self.index_path = planned.index.path
        self._results = results
        self._folder = os.path.realpath(planned.index.path.parent)
        _open_runs[self._folder] = self

    def __iter__(self) -> "BatchRun":
        return self

    def __next__(self) -> JobResult:
        try:
            return next(self._results)
        except StopIteration:
            self._forget()
            raise

    def close(self) -> None:
        """Stop now: the workers are ended, the index is tidied and the folder is free for another
        batch. `with impasto.batch(...) as run:` does it on leaving the block, however it is left."""
        close = getattr(self._results, "close", None)
        if close is not None:
            close()
        if self.plan.lock is not None:  # a run never iterated has not entered the code that releases it
            self.plan.lock.release()
        self._forget()

    def _forget(self) -> None:
        if _open_runs.get(self._folder) is self:
            del _open_runs[self._folder]

    def __enter__(self) -> "BatchRun":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def _execute(
    planned: BatchPlan,
    workers: Optional[int],
    use_ray: bool,
    address: Optional[str],
    ray_cpus: float,
    ray_gpus: Optional[bool],
    retries: int,
    stylizer: Optional[Stylizer],
    on_progress: Optional[ProgressHook],
    leave_ray: bool = False,
) -> Iterator[JobResult]:
    """`leave_ray`: the batch joined the cluster itself, so it disconnects at the end."""
    folder, index = planned.folder, planned.index
    try:
        for job in planned.finished:
            yield JobResult.from_record(index.get(job.output) or {}, folder, previous=True)
        for job in planned.failed_before:
            yield JobResult.from_record(index.get(job.output) or {}, folder, previous=True)
        runnable: list[Job] = []
        for job in planned.to_run:
            target = folder / job.output
            if job.error is not None:
                yield _record(index, folder, job, {"ok": False, "error": job.error}, 0)
            elif target.exists() and not planned.replace and job.output not in planned.ours:
                outcome = {"ok": False, "skip": True, "error": f"{target} already exists and this batch did not make it "
                           f"with these inputs and settings (pass {option('overwrite', True)} to replace it)"}  # fmt: skip
                # The record of the batch that did make it stays: rerun, that batch still finds its work done.
                earlier = index.get(job.output) or {}
                yield _record(index, folder, job, outcome, 0, keep=earlier.get("status") == "done")
            else:
                runnable.append(job)
        # Jobs that share a style run one after another, so a worker's cached style statistics serve them all.
        runnable.sort(key=lambda job: (job.styles, job.content))
        tasks = [Task(i, job.settings.to_dict(), job.content, list(job.styles)) for i, job in enumerate(runnable)]  # type: ignore[union-attr]
        if not tasks:
            return
        hook = None if on_progress is None else _by_output_name(on_progress, runnable)
        if use_ray:
            from .cluster import run_ray

            finished = run_ray(tasks, address, workers, retries, ray_cpus, ray_gpus)
        elif (workers or 1) == 1:
            finished = run_inline(tasks, stylizer, hook)
        else:
            finished = run_pool(tasks, min(workers or 1, len(tasks)), retries, hook)
        said: set[str] = set()
        try:
            for task, outcome in finished:
                job = runnable[task.id]
                warned = outcome.get("warnings")
                for message in warned if isinstance(warned, list) else []:
                    if message not in said:  # once per batch, not once per job of a painting
                        said.add(message)
                        warn(message)
                yield _record(index, folder, job, outcome, task.attempts, planned.replace or job.output in planned.ours)
        finally:
            close = getattr(finished, "close", None)
            if close is not None:
                close()
    finally:
        try:
            index.compact()
        finally:
            if planned.lock is not None:
                planned.lock.release()
            if leave_ray:
                from .cluster import disconnect

                disconnect()


def _by_output_name(on_progress: ProgressHook, runnable: list[Job]) -> RunnerHook:
    """The runners speak of task numbers; the caller is told the job's output name."""

    def hook(slot: int, task_id: int, done: int, total: int) -> None:
        on_progress(slot, runnable[task_id].output, done, total)

    return hook


def _record(index: Index, folder: Path, job: Job, outcome: dict[str, Any], attempts: int, replace: bool = False,
            keep: bool = False) -> JobResult:  # fmt: skip
    """Write a job's picture (if any) and its index record, together: a Ctrl-C waits until both are on disk.
    With `keep`, the index keeps the record it has for that output (the result is reported only)."""
    from PIL import Image

    from ..images import save_image

    with _interrupt_deferred():
        status = "done" if outcome.get("ok") else ("skipped" if outcome.get("skip") else "failed")
        error = outcome.get("note") if outcome.get("ok") else outcome.get("error")
        if status == "done":
            # Said before the picture is written: a run killed between the two (SIGKILL, power) leaves a
            # picture its next run knows to be its own, and redoes, instead of one it must not touch.
            index.append(job.record() | {"status": "writing", "current": True})
            try:
                (folder / job.output).parent.mkdir(parents=True, exist_ok=True)  # a manifest may name subfolders
                save_image(Image.open(io.BytesIO(outcome["png"])), folder / job.output, overwrite=replace)
            except (ImpastoError, OSError) as exc:  # the file appeared meanwhile, or the folder is not writable
                status, error = "failed", f"cannot write the output: {exc}"
        record = job.record() | {
            "status": status,
            "losses": outcome.get("losses") or {} if status == "done" else {},
            "seconds": outcome.get("seconds", 0.0),
            "error": error,
            "attempts": attempts,
            "worker": outcome.get("worker"),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "timings": outcome.get("timings"),
            "warnings": outcome.get("warnings") or [],
            "notes": outcome.get("notes") or [] if status == "done" else [],
            "current": True,
        }
        if status == "failed" and replace and (folder / job.output).exists():
            # A redo that failed leaves the batch's earlier picture in place: still its own to replace.
            record["earlier_picture"] = True
        if not keep:
            index.append(record)
    return JobResult.from_record(record, folder)


@contextlib.contextmanager
def _interrupt_deferred() -> Iterator[None]:
    """Hold a Ctrl-C until the block is done, so an output is never on disk without its record."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[Any] = []
    previous = signal.signal(signal.SIGINT, lambda *args: caught.append(args))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            raise KeyboardInterrupt


def cli_main(argv: Sequence[str]) -> int:
    from .command import main

    return main(argv)
