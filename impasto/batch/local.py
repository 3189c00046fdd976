"""Running jobs on this machine: in the driver's own process, or in N worker processes.

Worker processes are started with `spawn` (no forked copy of the driver's torch
state) and each loads VGG once. Each gets an equal share of the CPU cores as
torch threads: two processes each spinning every core's worth of OpenMP threads
are far slower than one.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Sequence

from .work import make_stylizer, run_job

# (worker slot, task id, iterations done, iterations in all)
ProgressHook = Callable[[int, int, int, int], None]
PROGRESS_INTERVAL_S = 0.2
DEATH_CHECK_INTERVAL_S = 0.5


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


def run_inline(tasks: Sequence[Task], stylizer: Any, on_progress: Optional[ProgressHook]) -> Iterator[tuple[Task, dict[str, Any]]]:
    """One worker: the driver itself, with one Stylizer for every job."""
    stylizer = stylizer or make_stylizer()
    for task in tasks:
        task.attempts += 1
        hook = None if on_progress is None else (lambda done, total, _id=task.id: on_progress(0, _id, done, total))
        yield task, run_job(stylizer, task.settings, task.content, task.styles, hook)


def _worker_main(slot: int, threads: int, tasks: Any, results: Any) -> None:
    # Ctrl-C is the driver's to handle: it stops the workers, whose jobs are then redone on resume.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch

    torch.set_num_threads(threads)
    stylizer = make_stylizer()
    while True:
        task = tasks.get()
        if task is None:
            return
        results.put(("start", slot, task.id))
        last = 0.0

        def progress(done: int, total: int) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last >= PROGRESS_INTERVAL_S or done == total:
                last = now
                results.put(("progress", slot, task.id, done, total))

        results.put(("done", slot, task.id, run_job(stylizer, task.settings, task.content, task.styles, progress)))


def run_pool(
    tasks: Sequence[Task], workers: int, retries: int, on_progress: Optional[ProgressHook]
) -> Iterator[tuple[Task, dict[str, Any]]]:
    """`workers` processes share the tasks; a task whose worker dies is retried up to `retries` times."""
    context = multiprocessing.get_context("spawn")
    task_queue, results = context.Queue(), context.Queue()
    threads = threads_per_worker(workers)
    by_id = {task.id: task for task in tasks}
    pending = deque(tasks)
    running: dict[int, int] = {}  # slot -> task id
    queued = 0
    unfinished = len(tasks)
    finished: set[int] = set()
    processes: dict[int, Any] = {}

    def start(slot: int) -> None:
        process = context.Process(target=_worker_main, args=(slot, threads, task_queue, results), daemon=True, name=f"impasto-batch-{slot}")
        process.start()
        processes[slot] = process

    def feed() -> None:
        # Only a few tasks wait in the queue, so a retried one is not stuck behind the rest.
        nonlocal queued
        while pending and queued < len(processes):
            task_queue.put(pending.popleft())
            queued += 1

    def replace_dead_workers() -> list[tuple[Task, dict[str, Any]]]:
        """Start a new worker for each dead one; its job goes back in line, or fails after `retries`."""
        given_up = []
        for slot, process in list(processes.items()):
            if process.is_alive():
                continue
            start(slot)  # even an idle worker: the tasks already queued need hands
            if slot not in running:
                continue
            task = by_id[running.pop(slot)]
            detail = f"process {process.pid} exited with code {process.exitcode}"
            task.workers.append(str(process.pid))
            if task.attempts <= retries:
                pending.appendleft(task)
            else:
                given_up.append((task, lost_worker_outcome(task, detail)))
        return given_up

    try:
        for slot in range(workers):
            start(slot)
        feed()
        next_check = time.monotonic() + DEATH_CHECK_INTERVAL_S
        while unfinished:
            try:
                message = results.get(timeout=DEATH_CHECK_INTERVAL_S)
            except queue.Empty:
                message = None
            # Checked on a clock, not only when all is quiet: busy workers never leave the queue quiet.
            if message is None or time.monotonic() >= next_check:
                next_check = time.monotonic() + DEATH_CHECK_INTERVAL_S
                for task, outcome in replace_dead_workers():
                    finished.add(task.id)
                    unfinished -= 1
                    yield task, outcome
                feed()
            if message is None:
                continue
            kind, slot = message[0], message[1]
            if kind == "start":
                queued -= 1
                running[slot] = message[2]
                by_id[message[2]].attempts += 1
                feed()
            elif kind == "progress":
                if on_progress is not None:
                    on_progress(slot, message[2], message[3], message[4])
            elif kind == "done":
                if running.get(slot) == message[2]:
                    running.pop(slot)
                task = by_id[message[2]]
                if task.id in finished:  # a late word from a worker already given up for dead
                    continue
                finished.add(task.id)
                if task in pending:
                    pending.remove(task)
                unfinished -= 1
                yield task, message[3]
        for _ in processes:
            task_queue.put(None)
        for process in processes.values():
            process.join(timeout=10)
    finally:
        for process in processes.values():
            if process.is_alive():
                process.terminate()
        for process in processes.values():
            process.join(timeout=5)
        task_queue.close()
        results.close()
