"""Running jobs on this machine: in the driver's own process, or in N worker processes.

Worker processes are started with `spawn` (no forked copy of the driver's torch
state) and each loads VGG once. Each gets an equal share of the CPU cores as
torch threads: two processes each spinning every core's worth of OpenMP threads
are far slower than one.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence

from ..errors import ImpastoError
from .work import make_stylizer, run_job

if TYPE_CHECKING:  # for the type checker only: the API, and torch with it, is loaded when a run needs it
    from ..api import Stylizer

# (worker slot, task id, iterations done, iterations in all)
ProgressHook = Callable[[int, int, int, int], None]
PROGRESS_INTERVAL_S = 0.2
DEATH_CHECK_INTERVAL_S = 0.5
WORKER_NAME = "impasto-batch-"
# The exit code of a worker that found itself re-running the driver's script (exit_if_in_a_worker).
REIMPORTED_EXIT = 78
UNGUARDED_SCRIPT = (
    "the batch's worker processes import the script that started them again (they are started with spawn), "
    "and this script starts a batch when imported: put the impasto.batch(...) call under "
    "`if __name__ == \"__main__\":`"
)


def exit_if_in_a_worker() -> None:
    """Called where a batch starts. In a worker process that can only be the driver's own
    script, imported again by `spawn` before the worker's first job: without a __main__
    guard it would start a batch of its own in every worker. Leave at once, with a code the
    driver turns into advice, instead of multiprocessing's traceback in each worker."""
    if multiprocessing.current_process().name.startswith(WORKER_NAME):
        raise SystemExit(REIMPORTED_EXIT)


@dataclass
class Task:
    """A job as a worker needs it (plain data: it crosses process and machine boundaries)."""

    id: int
    settings: dict[str, Any]
    content: str
    styles: list[tuple[str, float]]
    attempts: int = 0
    workers: list[str] = field(default_factory=list)  # each worker lost while running it


def lost_worker_outcome(task: Task, detail: str) -> dict[str, Any]:
    return {"ok": False, "error": f"worker lost {task.attempts} time(s), last: {detail}", "lost": True}


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_worker(workers: int) -> int:
    return max(1, cpu_count() // workers)


def run_inline(tasks: Sequence[Task], stylizer: Optional[Stylizer], on_progress: Optional[ProgressHook]) -> Iterator[tuple[Task, dict[str, Any]]]:
    """One worker: the driver itself, with one Stylizer for every job."""
    stylizer = stylizer or make_stylizer()
    for task in tasks:
        task.attempts += 1
        hook = None if on_progress is None else (lambda done, total, _id=task.id: on_progress(0, _id, done, total))
        yield task, run_job(stylizer, task.settings, task.content, task.styles, hook)


def placed(settings: dict[str, Any], slot: int) -> dict[str, Any]:
    """A job's settings for the worker in `slot`: with several CUDA GPUs, a job for "auto" or "cuda"
    (each the current GPU, cuda:0 in every new process) runs on GPU slot % count, so the workers
    share the GPUs instead of all crowding the first. Other devices are left as given."""
    if settings.get("device", "auto") not in ("auto", "cuda"):
        return settings
    import torch

    if not torch.cuda.is_available() or (count := torch.cuda.device_count()) < 2:
        return settings
    gpu = slot % count
    torch.cuda.set_device(gpu)  # for what asks torch for "the" GPU (memory figures, caches)
    return settings | {"device": f"cuda:{gpu}"}


def _worker_main(slot: int, threads: int, conn: Any) -> None:
    # Ctrl-C is the driver's to handle: it stops the workers, whose jobs are then redone on resume.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch

    torch.set_num_threads(threads)
    stylizer = make_stylizer()
    while True:
        try:
            task = conn.recv()
        except EOFError:  # the driver is gone
            return
        if task is None:
            return
        last = 0.0

        def progress(done: int, total: int) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last >= PROGRESS_INTERVAL_S or done == total:
                last = now
                conn.send(("progress", task.id, done, total))

        conn.send(("done", task.id, run_job(stylizer, placed(task.settings, slot), task.content, task.styles, progress)))


@dataclass
class _Worker:
    process: Any
    conn: Any  # the driver's end of this worker's own pipe
    task: Optional[Task] = None  # what it is painting: the driver always knows


# A worker that dies this many times in a row without finishing a job means something
# is wrong with every worker (memory, the installation), not with one job.
MAX_DEATHS_IN_A_ROW = 5


def run_pool(
    tasks: Sequence[Task], workers: int, retries: int, on_progress: Optional[ProgressHook]
) -> Iterator[tuple[Task, dict[str, Any]]]:
    """`workers` processes share the tasks; a task whose worker dies is retried up to `retries` times.

    Each worker has a pipe of its own and is handed one task at a time, so the driver
    always knows which task a dead worker held. (A queue shared by all workers can lose a
    task, or stay locked for good, when a process is killed while using it.)
    """
    from multiprocessing.connection import wait

    context = multiprocessing.get_context("spawn")
    threads = threads_per_worker(workers)
    pending = deque(tasks)
    slots: dict[int, _Worker] = {}
    deaths_in_a_row = 0
    unfinished = len(tasks)

    def start(slot: int) -> None:
        ours, theirs = context.Pipe()
        process = context.Process(target=_worker_main, args=(slot, threads, theirs), daemon=True, name=f"{WORKER_NAME}{slot}")
        process.start()
        theirs.close()  # so the driver sees EOF when the worker dies
        slots[slot] = _Worker(process, ours)

    def assign(slot: int) -> None:
        worker = slots[slot]
        if worker.task is None and pending:
            worker.task = pending.popleft()
            worker.task.attempts += 1
            try:
                worker.conn.send(worker.task)
            except OSError:  # it died already; the death check below puts the task back
                pass

    def read(slot: int) -> Iterator[tuple[Task, dict[str, Any]]]:
        """Handle what this worker has sent; raises EOFError once it is gone."""
        nonlocal unfinished, deaths_in_a_row
        worker = slots[slot]
        while worker.conn.poll():
            message = worker.conn.recv()
            if message[0] == "progress":
                if on_progress is not None:
                    on_progress(slot, message[1], message[2], message[3])
            elif message[0] == "done" and worker.task is not None and worker.task.id == message[1]:
                task, worker.task = worker.task, None
                unfinished -= 1
                deaths_in_a_row = 0
                assign(slot)
                yield task, message[2]

    def bury(slot: int) -> Iterator[tuple[Task, dict[str, Any]]]:
        """A worker died: start another in its place; its task goes back in line or, after `retries`, fails."""
        nonlocal unfinished, deaths_in_a_row
        worker = slots[slot]
        worker.process.join(timeout=5)
        worker.conn.close()
        if worker.process.exitcode == REIMPORTED_EXIT:
            raise ImpastoError(UNGUARDED_SCRIPT)
        deaths_in_a_row += 1
        if deaths_in_a_row > MAX_DEATHS_IN_A_ROW:
            raise ImpastoError(
                f"batch worker processes keep dying ({deaths_in_a_row} in a row, last exit code {worker.process.exitcode}): "
                "is the machine out of memory? Try fewer --workers or a smaller --size"
            )
        task = worker.task
        start(slot)
        if task is not None:
            task.workers.append(str(worker.process.pid))
            if task.attempts <= retries:
                pending.appendleft(task)
            else:
                unfinished -= 1
                yield task, lost_worker_outcome(task, f"process {worker.process.pid} exited with code {worker.process.exitcode}")
        assign(slot)

    try:
        for slot in range(workers):
            start(slot)
            assign(slot)
        while unfinished:
            wait([w.conn for w in slots.values()] + [w.process.sentinel for w in slots.values()], timeout=DEATH_CHECK_INTERVAL_S)
            for slot in list(slots):
                try:
                    yield from read(slot)
                    alive = slots[slot].process.is_alive()
                    if not alive:
                        yield from read(slot)  # what it sent just before dying still counts
                except (EOFError, OSError):
                    alive = False
                if not alive:
                    yield from bury(slot)
        for worker in slots.values():
            try:
                worker.conn.send(None)
            except OSError:
                pass
        for worker in slots.values():
            worker.process.join(timeout=10)
    finally:
        for worker in slots.values():
            if worker.process.is_alive():
                worker.process.terminate()
        for worker in slots.values():
            worker.process.join(timeout=5)
            worker.conn.close()
