"""`impasto batch --ray` against a real two-node Ray cluster started by the test.

Ray will not run a cluster on a loopback address in the host's network, so the
cluster lives in private namespaces: a network namespace (127.0.0.1 is then the
node address) and a PID namespace, so `ray stop --force` sees only this test's
processes and nothing of the cluster outlives the test. This file is also the
script run inside them (`python test_batch_ray.py WORKDIR WEIGHTS`).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

PORT = 6391
WORKER_TITLE = "ray::BatchWorker.run"  # what Ray calls an actor process while it runs a job
# A worker is killed once it has been busy for KILL_AFTER_S. A warm 56 px job of 10 iterations
# took 0.16 s, so a faster machine might have finished every job before then, killing nothing;
# 150 iterations (2.2 s here) leave several times the wait on a machine several times faster.
ITERATIONS = 150
KILL_AFTER_S = 0.3


def unshare_works() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    try:
        probe = subprocess.run(["unshare", "-n", "-p", "-f", "--mount-proc", "true"], capture_output=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


def test_batch_on_a_two_node_ray_cluster_survives_a_killed_worker(tmp_path, synthetic_weights):
    pytest.importorskip("ray", reason="the Ray extra is not installed (pip install 'impasto[ray]')")
    if not Path(ray_script()).exists():
        pytest.skip("Ray is importable but its `ray` command is not installed beside Python or on PATH")
    if not unshare_works():
        pytest.skip("unshare -n -p (private network and PID namespaces) is unavailable or not permitted here")
    from conftest import smooth_image, textured_image, write_png

    (tmp_path / "photos").mkdir()
    (tmp_path / "paintings").mkdir()
    for i in range(3):
        write_png(tmp_path / "photos" / f"photo{i}.png", smooth_image(48, 56, seed=i))
    for i in range(2):
        write_png(tmp_path / "paintings" / f"painting{i}.png", textured_image(40, 48, seed=10 + i))
    inner = [sys.executable, str(Path(__file__).resolve()), str(tmp_path), str(synthetic_weights)]
    command = ["unshare", "-n", "-p", "-f", "--mount-proc", "bash", "-c", f"ip link set lo up && exec {shlex.join(inner)}"]
    # A home of its own: a ~/.ray/auth_token left by some other Ray use makes the second node's
    # `ray start` fail with InvalidAuthToken against this cluster, which has no token.
    (tmp_path / "home").mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0", HOME=str(tmp_path / "home"))
    for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        env.pop(name, None)
    # A guard against a hang, not a speed limit: two Ray nodes and six jobs on a 2-core machine
    # that is also busy with other work took over 240 s once (session 39).
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, f"inside the namespaces:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    report = json.loads((tmp_path / "report.json").read_text())

    # The cluster had two nodes. (Which workers ran the jobs is left open: on a loaded
    # machine the surviving actor may finish them all before the killed one is back.)
    assert report["nodes"] == 2
    # A worker was killed in the middle of a job; that job was sent again and finished.
    assert report["killed"] is not None
    records = [json.loads(line) for line in (tmp_path / "out" / "index.jsonl").read_text().splitlines()]
    assert len(records) == 6 and {r["status"] for r in records} == {"done"}
    retried = [r for r in records if r["attempts"] >= 2]
    assert retried, f"no job was retried after pid {report['killed']} was killed: {records}"
    # The index and the folder agree: every record's picture is there, and nothing else.
    pictures = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert pictures == sorted(r["output"] for r in records)
    assert report["exit_code"] == 0
    # Run again: everything is finished already, nothing is redone.
    assert report["second_run"] == {"previous": 6, "run": 0}


def test_an_unreachable_cluster_is_a_quick_clear_error(tmp_path, capsys):
    pytest.importorskip("ray", reason="the Ray extra is not installed (pip install 'impasto[ray]')")
    from impasto.cli import main

    (tmp_path / "jobs.csv").write_text("content,style\na.png,b.png\n")
    started = time.monotonic()
    assert main(["batch", str(tmp_path / "jobs.csv"), "-o", str(tmp_path / "out"), "--ray", "127.0.0.1:1"]) == 2
    assert "impasto: error: cannot reach a Ray cluster at 127.0.0.1:1" in capsys.readouterr().err
    # Ray's own attempts go on for minutes; a minute is far beyond the check (under a second
    # here, mostly importing Ray) even on a loaded machine.
    assert time.monotonic() - started < 60


# -- without a cluster: what run_ray and connect make of what Ray says --------------------------------
# These start no Ray: a stand-in module answers run_ray's few questions, in this process.


class FakeRef:
    def __init__(self, value):
        self.value = value


class FakeRay:
    """Enough of Ray for run_ray: a cluster of `resources`, actors run at once in this process."""

    class exceptions:
        RayError = type("RayError", (Exception,), {})

    def __init__(self, resources: dict, init_error: BaseException = None):
        self.resources, self.init_error, self.actors = resources, init_error, []

    def is_initialized(self):
        return self.init_error is None  # connected already: run_ray neither connects nor disconnects

    def init(self, **kwargs):
        raise self.init_error

    def cluster_resources(self):
        return self.resources

    def remote(self, **options):
        fake = self

        def wrap(cls):
            class Handle:
                @staticmethod
                def remote(*args):
                    actor = FakeActor(cls(*args), options)
                    fake.actors.append(actor)
                    return actor

            return Handle

        return wrap

    def put(self, value):
        return FakeRef(value)

    def wait(self, refs, num_returns=1):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        return ref.value

    def kill(self, actor):
        pass


class FakeActor:
    def __init__(self, instance, options):
        self.instance, self.options = instance, options
        unwrap = lambda args: [a.value if isinstance(a, FakeRef) else a for a in args]  # noqa: E731
        self.run = type("Method", (), {"remote": staticmethod(lambda *args: FakeRef(instance.run(*unwrap(args))))})()
        self.pid = type("Method", (), {"remote": staticmethod(lambda: FakeRef(os.getpid()))})()


@pytest.mark.parametrize("resources, workers, actors, gpu", [
    ({"CPU": 2.0}, 5, 2, False),  # more workers asked for than the cluster holds: as many as it holds, said
    ({"CPU": 8.0, "GPU": 2.0}, None, 2, True),  # one per GPU
])  # fmt: skip
def test_ray_workers_fit_the_cluster_and_cpu_actors_run_on_the_cpu(tmp_path, monkeypatch, resources, workers, actors, gpu):
    from impasto.batch import cluster
    from impasto.batch.local import Task
    from impasto.errors import ImpastoWarning

    fake = FakeRay(resources)
    monkeypatch.setattr(cluster, "require_ray", lambda: fake)
    monkeypatch.setattr(sys.modules["impasto.batch.work"], "make_stylizer", lambda: None)
    seen = []
    monkeypatch.setattr(cluster, "run_job", lambda stylizer, settings, *args: seen.append(settings["device"]) or {"ok": True})
    (tmp_path / "a.png").write_bytes(b"a")
    tasks = [Task(i, {"device": "auto"}, str(tmp_path / "a.png"), [(str(tmp_path / "a.png"), 1.0)]) for i in range(4)]
    if workers is not None and workers > actors:
        with pytest.warns(ImpastoWarning, match=rf"workers={workers}: the Ray cluster holds {actors} workers \(one per 1 CPU\); starting {actors}"):
            outcomes = list(cluster.run_ray(tasks, None, workers, retries=0))
    else:
        outcomes = list(cluster.run_ray(tasks, None, workers, retries=0))
    assert len(outcomes) == 4 and all(outcome["ok"] for _, outcome in outcomes)
    # No actor that the cluster cannot place (it would wait for resources, and the batch with it).
    assert len(fake.actors) == actors and {a.options["num_gpus"] for a in fake.actors} == {int(gpu)}
    # An actor given no GPU runs "auto" on its CPUs, even on a node with GPUs; one given a GPU gets Ray's.
    assert set(seen) == {"auto" if gpu else "cpu"}


def test_a_refused_ray_token_is_named(monkeypatch):
    from impasto.batch import cluster
    from impasto.errors import ImpastoError

    # What ray.init raises when the cluster wants a token this machine lacks (or has another of):
    # its own message names no cause, the traceback of the cause is text in the message below it.
    cause = RuntimeError(
        "Failed to connect to GCS. Last connection error: Traceback (most recent call last):\n"
        '  File "python/ray/includes/common.pxi", line 119, in ray._raylet.check_status\n'
        "ray.exceptions.AuthenticationError: RPC error: InvalidAuthToken: Authentication token is missing or incorrect. "
        "Note: RAY_AUTH_MODE is currently 'disabled' (not 'token'). Ensure that the token for the cluster is available ...\n"
    )
    error = ConnectionError("Failed to connect to Ray cluster at 127.0.0.1:6391")
    error.__cause__ = cause
    monkeypatch.setattr(cluster, "require_ray", lambda: FakeRay({}, init_error=error))
    monkeypatch.setattr(cluster, "check_reachable", lambda address: None)
    # An ImpastoError, which the command line prints as one line; any other exception is a traceback there.
    with pytest.raises(ImpastoError) as failed:
        cluster.connect("127.0.0.1:6391")
    message = str(failed.value)
    assert "\n" not in message
    assert message.startswith("cannot reach a Ray cluster at 127.0.0.1:6391: the cluster refused this machine's Ray authentication "
                              "(InvalidAuthToken: Authentication token is missing or incorrect)"), message  # fmt: skip
    assert "~/.ray/auth_token" in message
    # Another cause: its own last line, not Ray's "Failed to connect".
    error.__cause__ = RuntimeError("Failed to connect to GCS. Last connection error: Traceback ...\nray.exceptions.RpcError: Deadline Exceeded")
    with pytest.raises(ImpastoError, match=r"at 127.0.0.1:6391: ray.exceptions.RpcError: Deadline Exceeded$"):
        cluster.connect("127.0.0.1:6391")


# -- inside the namespaces --------------------------------------------------------------------------


def ray_script() -> str:
    beside = Path(sys.executable).with_name("ray")
    return str(beside) if beside.exists() else (shutil.which("ray") or "ray")


def ray_command(*args: str) -> list[str]:
    return [ray_script(), *args]


def start_cluster(temp_dir: str) -> None:
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--object-store-memory=78643200", "--disable-usage-stats"]
    subprocess.run(
        ray_command("start", "--head", f"--port={PORT}", "--include-dashboard=false", f"--temp-dir={temp_dir}", *common),
        check=True, capture_output=True, timeout=90,
    )  # fmt: skip
    subprocess.run(ray_command("start", f"--address=127.0.0.1:{PORT}", *common), check=True, capture_output=True, timeout=90)


def busy_worker_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            if title.startswith(WORKER_TITLE):
                pids.append(int(entry.name))
    return pids


def kill_a_busy_worker(report: dict) -> None:
    """Wait until a worker has been running a job for a moment, then kill its process."""
    seen: dict[int, float] = {}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        now, busy = time.monotonic(), busy_worker_pids()
        seen = {pid: seen.get(pid, now) for pid in busy}  # a worker that went idle starts over
        for pid, since in seen.items():
            if now - since > KILL_AFTER_S:
                os.kill(pid, signal.SIGKILL)
                report["killed"] = pid
                return
        time.sleep(0.05)


def inside(workdir: Path, weights: str) -> int:
    import ray

    import impasto
    from impasto.batch.command import main as batch_main

    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    report: dict = {"killed": None}
    try:
        start_cluster(temp_dir)
        ray.init(address=f"127.0.0.1:{PORT}", logging_level="warning")
        report["nodes"] = len([n for n in ray.nodes() if n["Alive"]])
        ray.shutdown()
        killer = threading.Thread(target=kill_a_busy_worker, args=(report,), daemon=True)
        killer.start()
        argv = [
            "--contents", str(workdir / "photos"), "--styles", str(workdir / "paintings"), "-o", str(workdir / "out"),
            "--ray", f"127.0.0.1:{PORT}", "--retries", "2", "--weights", weights, "--device", "cpu", "--size", "56",
            "--no-multiscale", "--iterations", str(ITERATIONS), "--style-layers", "conv1_1,conv2_1,conv3_1",
            "--content-layers", "conv2_2", "--quiet",
        ]  # fmt: skip
        report["exit_code"] = batch_main(argv)
        killer.join(timeout=1)
        records = [json.loads(line) for line in (workdir / "out" / "index.jsonl").read_text().splitlines()]
        report["workers"] = [r["worker"] for r in records]
        again = list(impasto.batch(None, workdir / "out", impasto.Settings(
            weights=weights, device="cpu", size=56, multiscale=False, iterations=ITERATIONS,
            style_layers=("conv1_1", "conv2_1", "conv3_1"), content_layers=("conv2_2",)),
            contents=workdir / "photos", styles=workdir / "paintings", ray=f"127.0.0.1:{PORT}"))  # fmt: skip
        report["second_run"] = {"previous": sum(r.previous for r in again), "run": sum(not r.previous for r in again)}
    finally:
        (workdir / "report.json").write_text(json.dumps(report))
        subprocess.run(ray_command("stop", "--force"), capture_output=True, timeout=60)
        shutil.rmtree(temp_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(inside(Path(sys.argv[1]), sys.argv[2]))


def test_a_cluster_that_refuses_leaves_no_output_folder_behind(tmp_path, monkeypatch):
    """Joined before planning: a wrong token is found before the folder and its index are made."""
    import impasto
    from impasto.batch import cluster

    error = ConnectionError("Failed to connect to Ray cluster at 127.0.0.1:6391")
    error.__cause__ = RuntimeError("ray.exceptions.AuthenticationError: RPC error: InvalidAuthToken: Authentication token is missing")
    monkeypatch.setattr(cluster, "require_ray", lambda: FakeRay({}, init_error=error))
    monkeypatch.setattr(cluster, "check_reachable", lambda address: None)
    rows = [{"content": str(tmp_path / "a.png"), "style": str(tmp_path / "b.png")}]
    with pytest.raises(impasto.ImpastoError, match="cannot reach a Ray cluster at 127.0.0.1:6391"):
        impasto.batch(rows, tmp_path / "out", ray="127.0.0.1:6391")
    assert not (tmp_path / "out").exists()
