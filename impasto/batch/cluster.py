"""Running jobs on a Ray cluster (the optional extra `impasto[ray]`).

One actor per worker holds a Stylizer, so VGG is loaded once per actor, not once
per job. The driver sends each job's images as bytes (a style once, through the
object store, however many contents use it) and writes the PNG bytes that come
back, so the nodes need no shared file system. An actor whose process dies is
restarted by Ray; the driver then sends the job it was running again, up to
`retries` times, before recording it as failed.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections import deque
from typing import Any, Iterator, Optional, Sequence

from ..errors import COMMAND_LINE_ENV, ImpastoError, first_line, on_command_line, option, warn
from .local import Task, lost_worker_outcome
from .work import read_source, run_job


# How long a restarting worker is waited for: MAX_PROBES questions, PROBE_INTERVAL_S apart at least.
MAX_PROBES = 600
PROBE_INTERVAL_S = 0.1



def require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ImpastoError("--ray needs Ray: pip install 'impasto[ray]'") from None
    return ray


class BatchWorker:
    """A Ray actor's state: one Stylizer for its whole life."""

    def __init__(self, weights_hint: Optional[str] = None, command_line: bool = False, gpu: bool = True) -> None:
        # The driver's $IMPASTO_WEIGHTS helps only where that path exists on this node too.
        if weights_hint and os.path.exists(weights_hint):
            os.environ["IMPASTO_WEIGHTS"] = weights_hint
        if command_line:  # the jobs' messages name the flags the driver's user typed
            os.environ[COMMAND_LINE_ENV] = "1"
        from .work import make_stylizer

        self.stylizer = make_stylizer()
        # An actor given no GPU may still be on a node with GPUs, where "auto" would pick one that
        # Ray gave to another actor (or to no one): it runs on the CPUs it was given.
        self.gpu = gpu

    def pid(self) -> int:
        return os.getpid()

    def run(self, settings: dict[str, Any], names: list[str], weights: list[float], content: bytes, *styles: bytes) -> dict[str, Any]:
        sources = [(name, data) for name, data in zip(names[1:], styles)]
        if not self.gpu and settings.get("device", "auto") == "auto":
            settings = settings | {"device": "cpu"}
        return run_job(self.stylizer, settings, (names[0], content), list(zip(sources, weights)))


def connect(address: Optional[str]) -> bool:
    """Join the cluster at `address` (None: $RAY_ADDRESS, a cluster started on this machine, or a new
    local one). Returns whether this call connected, so the caller disconnects only then."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    if address:
        check_reachable(address)
    failures: tuple[type[BaseException], ...] = (ConnectionError,)
    authentication = getattr(getattr(ray, "exceptions", None), "AuthenticationError", None)
    if isinstance(authentication, type) and issubclass(authentication, BaseException):
        failures += (authentication,)
    try:
        ray.init(address=address or None, logging_level=logging.WARNING, configure_logging=True)
    except failures as exc:
        where = f"at {address}" if address else "($RAY_ADDRESS, or on this machine)"
        raise ImpastoError(f"cannot reach a Ray cluster {where}: {connect_failure(exc)}") from None
    return True


def disconnect() -> None:
    """Leave the cluster that connect() joined."""
    require_ray().shutdown()


def connect_failure(exc: BaseException) -> str:
    """One line on why ray.init failed. Ray says only "Failed to connect to Ray cluster at ..."; the
    cause is deeper in the chain, as the last line of a traceback held in a message."""
    chain, seen = [], set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ if current.__cause__ is not None else None if current.__suppress_context__ else current.__context__
    text = "\n".join(str(e) for e in chain)
    if "InvalidAuthToken" in text or "AuthenticationError" in text or "Unauthenticated" in text:
        found = re.search(r"(InvalidAuthToken:[^.\n]*)", text)
        reason = found.group(1).strip() if found else "authentication failed"
        return (f"the cluster refused this machine's Ray authentication ({reason}): the token here (~/.ray/auth_token, "
                "$RAY_AUTH_TOKEN or $RAY_AUTH_TOKEN_PATH, with $RAY_AUTH_MODE) must be the cluster's, or none for a cluster without one")  # fmt: skip
    # The deepest error's own last line ("SomeError: what went wrong"), else the first line of the first.
    for error in reversed(chain):
        lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
        if lines:
            last = lines[-1]
            return (last if len(lines) == 1 or re.match(r"^[\w.]+(Error|Exception): ", last) else lines[0])[:300]
    return first_line(exc)


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds on a wrong HOST:PORT, where Ray itself would keep trying for minutes."""
    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit():
        return  # "auto", "ray://...": Ray's own forms, left to Ray
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ImpastoError(f"cannot reach a Ray cluster at {address}: {exc.strerror or exc} (is `ray start --head` running there?)") from None


def actor_resources(cpus: float, gpus: Optional[bool]) -> tuple[dict[str, float], int]:
    """Resources per actor and how many actors the cluster holds: one GPU each where it has GPUs."""
    ray = require_ray()
    total = ray.cluster_resources()
    have_gpus = total.get("GPU", 0) >= 1
    if gpus is None:
        gpus = have_gpus
    if gpus:
        if not have_gpus:
            raise ImpastoError("one GPU per job was asked for, but the Ray cluster has no GPUs")
        return {"num_gpus": 1, "num_cpus": 1}, int(total["GPU"])
    if not cpus > 0:
        raise ImpastoError(f"--ray-cpus must be positive, not {cpus}")
    slots = int(total.get("CPU", 0) // cpus)
    if slots < 1:
        raise ImpastoError(f"each job asks for {cpus:g} CPUs, but the Ray cluster has {total.get('CPU', 0):g}; lower --ray-cpus")
    return {"num_cpus": cpus, "num_gpus": 0}, slots


def run_ray(
    tasks: Sequence[Task],
    address: Optional[str],
    workers: Optional[int],
    retries: int,
    cpus: float = 1.0,
    gpus: Optional[bool] = None,
) -> Iterator[tuple[Task, dict[str, Any]]]:
    """Run the tasks on Ray actors, yielding (task, outcome) as they finish."""
    ray = require_ray()
    connected = connect(address)
    actors: list[Any] = []
    try:
        resources, slots = actor_resources(cpus, gpus)
        if workers is not None and workers > slots:
            # Actors beyond what the cluster holds would wait for resources forever, and the batch with them.
            unit = "GPU" if resources["num_gpus"] else f"{cpus:g} CPU"
            warn(f"{option('workers', workers)}: the Ray cluster holds {slots} worker{'s' if slots != 1 else ''} "
                 f"(one per {unit}); starting {slots}")  # fmt: skip
        count = max(1, min(workers or slots, slots, len(tasks)))
        # max_restarts=-1: a killed actor comes back (and reloads VGG); the driver, not Ray,
        # decides whether its job is sent again, so the retries are counted per job.
        remote_worker = ray.remote(max_restarts=-1, max_task_retries=0, **resources)(BatchWorker)
        gpu = bool(resources["num_gpus"])
        actors = [remote_worker.remote(os.environ.get("IMPASTO_WEIGHTS"), on_command_line(), gpu) for _ in range(count)]
        styles: dict[str, Any] = {}  # path -> object ref of its bytes, sent once
        free = deque(actors)
        pending = deque(tasks)
        running: dict[Any, tuple[Any, Task]] = {}
        # An actor whose process died is restarted by Ray; it is asked for its pid until it answers,
        # and only then given work again (a job sent while it restarts would fail at once).
        probes: dict[Any, tuple[Any, int]] = {}
        last_loss = ""

        def submit(actor: Any, task: Task) -> Optional[dict[str, Any]]:
            """Send a task; an unreadable input fails it here without using a worker."""
            try:
                content = read_source(task.content)[1]
                for path, _ in task.styles:
                    if path not in styles:
                        styles[path] = ray.put(read_source(path)[1])
            except ImpastoError as exc:
                return {"ok": False, "error": str(exc)}
            task.attempts += 1
            names = [task.content] + [path for path, _ in task.styles]
            weights = [weight for _, weight in task.styles]
            ref = actor.run.remote(task.settings, names, weights, content, *(styles[path] for path, _ in task.styles))
            running[ref] = (actor, task)
            return None

        while pending or running:
            while free and pending:
                actor, task = free.popleft(), pending.popleft()
                failed = submit(actor, task)
                if failed is not None:
                    free.appendleft(actor)
                    yield task, failed
            if not running and not probes:
                # Every worker is gone for good: what is left cannot run.
                while pending:
                    task = pending.popleft()
                    yield task, {"ok": False, "error": f"no Ray worker is left to run it (last: {last_loss})"}
                break
            ready, _ = ray.wait(list(running) + list(probes), num_returns=1)
            for ref in ready:
                if ref in probes:
                    actor, failures = probes.pop(ref)
                    try:
                        ray.get(ref)
                        free.append(actor)
                    except ray.exceptions.RayError as exc:
                        last_loss = first_line(exc)
                        if failures < MAX_PROBES:
                            time.sleep(PROBE_INTERVAL_S)  # a restart takes a while; do not spin
                            probes[actor.pid.remote()] = (actor, failures + 1)
                    continue
                actor, task = running.pop(ref)
                try:
                    outcome = ray.get(ref)
                    free.append(actor)
                except ray.exceptions.RayError as exc:  # the worker died (jobs' own errors come back as outcomes)
                    last_loss = f"{exc.__class__.__name__}: {first_line(exc)}"
                    task.workers.append(last_loss)
                    probes[actor.pid.remote()] = (actor, 0)
                    if task.attempts <= retries:
                        pending.appendleft(task)
                        continue
                    outcome = lost_worker_outcome(task, last_loss)
                yield task, outcome
    finally:
        # Ctrl-C, a closed generator or the end: stop the actors so nothing keeps running for us.
        for actor in actors:
            try:
                ray.kill(actor)
            except Exception:  # already gone
                pass
        if connected:
            disconnect()
