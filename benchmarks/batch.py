"""Batch throughput: N jobs here with 1 and 2 local workers, and on a two-node Ray cluster on this machine.

    .venv/bin/python benchmarks/batch.py                 # 16 jobs at 256 px, impasto's default settings
    .venv/bin/python benchmarks/batch.py --jobs 4 --size 64 --iterations 5 --initial-iterations 5   # a quick check
    .venv/bin/python benchmarks/batch.py --only local1 --only ray --preset fast

Every configuration runs `impasto.batch` on the same manifest, in a fresh process and into
a fresh output folder (so resume skips nothing). The Ray row runs inside private network
and PID namespaces (`unshare -n -p`, 127.0.0.1 as the node address, as
tests/test_batch_ray.py does), where the script starts a head node and one worker node,
each holding half of this machine's CPUs, runs the batch on one actor per node and stops
the cluster. Each job reports back from its worker (impasto/batch/work.py run_job's
"timings"): the model load, input decoding, style-target computation, the rest of the
run, PNG encoding, the wall clock at its start and end, and the worker's own peak RSS
(getrusage's high-water mark: exact, no sampling to miss a peak). The driver times its
own writing of each result and the moment each result reaches it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import IMAGES, random_weights_file, weights_note  # noqa: E402

from impasto import Settings  # noqa: E402

CONFIGS = {"local1": "local, 1 worker", "local2": "local, 2 workers", "ray": "Ray, 2 nodes here"}
RAY_PORT = 6393


# -- inputs ---------------------------------------------------------------------------------------


def prepare_inputs(workdir: Path, jobs: int) -> tuple[Path, str]:
    """A manifest of `jobs` rows cycling over the photos and paintings; (manifest, what they are)."""
    contents = sorted(p for p in IMAGES.glob("*.png")) if IMAGES.is_dir() else []
    styles = sorted(p for p in IMAGES.glob("*.jpg")) if IMAGES.is_dir() else []
    if contents and styles:
        what = f"{len(contents)} photos x {len(styles)} paintings from {IMAGES} (originals, {describe_sizes(contents + styles)})"
    else:
        contents, styles = synthetic_images(workdir)
        what = f"synthetic images ({IMAGES} not found): {len(contents)} contents, {len(styles)} styles, 640x480"
    manifest = workdir / "jobs.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["content", "style", "output"])
        # Each painting serves several photos, as in style augmentation, so the per-style cache is exercised;
        # past contents x styles jobs, pairs repeat under other output names (the same work again).
        for i in range(jobs):
            content, style = contents[i % len(contents)], styles[(i // len(contents)) % len(styles)]
            writer.writerow([str(content), str(style), f"job{i:03d}.png"])
    return manifest, what


def describe_sizes(paths: list[Path]) -> str:
    from PIL import Image

    sides = [max(Image.open(p).size) for p in paths]
    return f"long sides {min(sides)}-{max(sides)} px"


def synthetic_images(workdir: Path) -> tuple[list[Path], list[Path]]:
    import numpy as np
    from PIL import Image

    folder = workdir / "images"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:480, 0:640] / 480.0
    paths: list[Path] = []
    for i in range(7):
        waves = sum(np.sin(rng.uniform(2, 20) * x + rng.uniform(2, 20) * y + rng.uniform(0, 6)) for _ in range(3))
        rgb = np.stack([np.sin(waves + phase) for phase in rng.uniform(0, 6, 3)], -1) * 0.4 + 0.5
        rgb += rng.normal(0, 0.05, rgb.shape) if i >= 4 else 0  # paintings get grain
        path = folder / f"{'content' if i < 4 else 'style'}{i}.png"
        Image.fromarray((np.clip(rgb, 0, 1) * 255).astype("uint8")).save(path)
        paths.append(path)
    return paths[:4], paths[4:]


# -- one configuration, in its own process --------------------------------------------------------


def run_configuration(workdir: Path, config: str, address: Optional[str] = None) -> dict[str, Any]:
    """Run the batch once and return what the driver saw; the job records carry the workers' timings."""
    import impasto
    from impasto.batch.work import peak_rss_mib

    batch_module = sys.modules["impasto.batch"]  # the package: `impasto.batch` itself is the function
    saved = json.loads((workdir / "settings.json").read_text())
    settings = Settings.from_dict({k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})
    seen: list[dict[str, Any]] = []
    original = batch_module._record

    # The driver's half of each job (decoding the PNG bytes, the atomic write, the index record)
    # happens in this private function; wrapping it is the one place that sees every outcome.
    def timed_record(*args: Any, **kwargs: Any) -> Any:
        outcome = args[3]
        arrived, start = time.time(), time.perf_counter()
        result = original(*args, **kwargs)
        seen.append({
            "status": result.status, "error": result.error, "worker": outcome.get("worker"),
            "attempts": result.attempts, "seconds": outcome.get("seconds"), "timings": outcome.get("timings"),
            "png_bytes": len(outcome.get("png") or b""), "arrived": arrived, "write": time.perf_counter() - start,
        })  # fmt: skip
        return result

    batch_module._record = timed_record
    output = workdir / f"out-{config}"
    shutil.rmtree(output, ignore_errors=True)
    options: dict[str, Any] = {"workers": 2 if config != "local1" else 1}
    if config == "ray":
        options |= {"ray": address, "ray_cpus": float(node_cpus())}
    t0 = time.time()
    with impasto.batch(workdir / "jobs.csv", output, settings, **options) as run:
        results = list(run)
    wall = time.time() - t0
    input_bytes = sum(Path(p).stat().st_size for p in input_paths(workdir / "jobs.csv"))
    return {
        "config": config, "t0": t0, "wall": wall, "jobs": seen, "results": len(results),
        "driver_rss": peak_rss_mib(), "input_bytes_per_job": input_bytes / max(1, len(results)),
    }  # fmt: skip


def input_paths(manifest: Path) -> list[str]:
    with manifest.open(newline="") as handle:
        return [path for row in csv.DictReader(handle) for path in (row["content"], row["style"])]


def node_cpus() -> int:
    from impasto.batch.local import cpu_count

    return max(1, cpu_count() // 2)


def child(workdir: Path, config: str) -> int:
    report = workdir / f"report-{config}.json"
    if config != "ray":
        report.write_text(json.dumps(run_configuration(workdir, config)))
        return 0
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    try:
        started = time.perf_counter()
        start_cluster(temp_dir)
        cluster_seconds = time.perf_counter() - started
        nodes = count_nodes()
        data = run_configuration(workdir, config, f"127.0.0.1:{RAY_PORT}")
        report.write_text(json.dumps(data | {"cluster_start": cluster_seconds, "nodes": nodes}))
    finally:
        subprocess.run([ray_script(), "stop", "--force"], capture_output=True, timeout=120)
        shutil.rmtree(temp_dir, ignore_errors=True)
    return 0


# -- Ray on this machine ---------------------------------------------------------------------------


def ray_script() -> str:
    beside = Path(sys.executable).with_name("ray")
    return str(beside) if beside.exists() else (shutil.which("ray") or "ray")


def ray_unavailable() -> Optional[str]:
    """Why the Ray row cannot run here, or None."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        return "Ray is not installed (pip install 'impasto[ray]')"
    if not Path(ray_script()).exists():
        return "the `ray` command is not installed beside Python or on PATH"
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare or ip is missing (private network and PID namespaces are needed for a cluster on 127.0.0.1)"
    try:
        probe = subprocess.run(["unshare", "-n", "-p", "-f", "--mount-proc", "true"], capture_output=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unshare failed: {exc}"
    if probe.returncode != 0:
        return f"unshare -n -p is not permitted here: {probe.stderr.decode(errors='replace').strip()[:200]}"
    return None


def start_cluster(temp_dir: str) -> None:
    common = ["--node-ip-address=127.0.0.1", f"--num-cpus={node_cpus()}", "--object-store-memory=104857600", "--disable-usage-stats"]
    subprocess.run(
        [ray_script(), "start", "--head", f"--port={RAY_PORT}", "--include-dashboard=false", f"--temp-dir={temp_dir}", *common],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    subprocess.run([ray_script(), "start", f"--address=127.0.0.1:{RAY_PORT}", *common], check=True, capture_output=True, timeout=120)


def count_nodes() -> int:
    import ray

    ray.init(address=f"127.0.0.1:{RAY_PORT}", logging_level="warning")
    try:
        return len([n for n in ray.nodes() if n["Alive"]])
    finally:
        ray.shutdown()


def launch(workdir: Path, config: str) -> dict[str, Any]:
    """Run one configuration in a fresh process; its report, or {"error": why}."""
    inner = [sys.executable, str(Path(__file__).resolve()), "--child", config, str(workdir)]
    env = dict(os.environ)
    if config == "ray":
        inner = ["unshare", "-n", "-p", "-f", "--mount-proc", "bash", "-c", f"ip link set lo up && exec {shlex.join(inner)}"]
        env |= {"RAY_USAGE_STATS_ENABLED": "0"}
        env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(inner, capture_output=True, text=True, env=env, check=False)
    report = workdir / f"report-{config}.json"
    if proc.returncode != 0 or not report.exists():
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return {"error": f"exit {proc.returncode}: {lines[-1] if lines else 'no output'}"}
    return json.loads(report.read_text())


# -- figures ----------------------------------------------------------------------------------------


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def seconds(value: float, digits: int = 3) -> str:
    return "-" if value != value else f"{value:.{digits}f}"  # NaN: nothing to measure (one job per worker)


def summarise(report: dict[str, Any]) -> dict[str, Any]:
    jobs = report["jobs"]
    done = [j for j in jobs if j["status"] == "done" and j["timings"]]
    by_worker: dict[str, list[dict[str, Any]]] = {}
    for job in done:
        by_worker.setdefault(job["worker"], []).append(job["timings"] | {"arrived": job["arrived"]})
    gaps, startups, loads, rss = [], [], [], []
    for timings in by_worker.values():
        timings.sort(key=lambda t: t["started_at"])
        startups.append(timings[0]["started_at"] - report["t0"])
        loads.append(sum(t["load"] for t in timings))
        rss.append(max(t["peak_rss_mib"] for t in timings))
        gaps += [b["started_at"] - a["finished_at"] for a, b in zip(timings, timings[1:])]
    t = [job["timings"] for job in done]
    workers = max(1, len(by_worker))
    optimise = [x["optimise"] for x in t]
    styles = [x["style"] for x in t if x["style"] is not None]
    return {
        "done": len(done), "failed": len(jobs) - len(done), "wall": report["wall"],
        "per_minute": 60 * len(done) / report["wall"], "workers": len(by_worker),
        "threads": sorted({x["threads"] for x in t}), "rss": max(rss, default=float("nan")),
        "rss_all": rss, "driver_rss": report["driver_rss"], "startup": mean(startups), "load": mean(loads),
        "optimise": mean(optimise), "style": mean(styles), "decode": mean([x["decode"] for x in t]),
        "encode": mean([x["encode"] for x in t]), "transfer": mean([j["arrived"] - j["timings"]["finished_at"] for j in done]),
        "write": mean([j["write"] for j in jobs]), "gap": mean(gaps), "busy": sum(optimise) / (workers * report["wall"]),
        "png_kib": mean([j["png_bytes"] / 1024 for j in done]), "input_kib": report["input_bytes_per_job"] / 1024,
        "errors": sorted({j["error"] for j in jobs if j["error"]})[:3],
    }  # fmt: skip


def print_tables(reports: dict[str, dict[str, Any]]) -> None:
    rows = {config: summarise(r) for config, r in reports.items() if "error" not in r and "skipped" not in r}
    print("\n## Throughput\n")
    print("| configuration | workers x torch threads | jobs done | wall s | jobs / min | peak RSS per worker MiB | driver peak RSS MiB | start-up s | model load s / worker |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for config, report in reports.items():
        if config not in rows:
            print(f"| {CONFIGS[config]} | not run: {report.get('skipped') or report.get('error')} |||||||")
            continue
        s = rows[config]
        threads = "/".join(str(v) for v in s["threads"])
        driver = "(is the worker)" if config == "local1" else f"{s['driver_rss']:.0f}"
        print(f"| {CONFIGS[config]} | {s['workers']} x {threads} | {s['done']}/{s['done'] + s['failed']} | {s['wall']:.1f} | "
              f"{s['per_minute']:.2f} | {s['rss']:.0f} | {driver} | {s['startup']:.1f} | {s['load']:.2f} |")
    print("\n## Per job (mean seconds)\n")
    print("| configuration | optimisation | style targets (amortised) | decode inputs | PNG encode | result to driver | driver write | worker idle between jobs | worker time optimising |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for config, s in rows.items():
        cells = [seconds(s["optimise"], 2)] + [seconds(s[k]) for k in ("style", "decode", "encode", "transfer", "write", "gap")]
        print(f"| {CONFIGS[config]} | {' | '.join(cells)} | {s['busy']:.0%} |")
    notes = []
    for config, s in rows.items():
        if s["failed"]:
            notes.append(f"{CONFIGS[config]}: {s['failed']} job(s) failed: {'; '.join(s['errors'])}")
    if "ray" in rows:
        ray = reports["ray"]
        notes.append(f"Ray: {ray['nodes']} nodes; starting them (`ray start` head + worker) took {ray['cluster_start']:.1f} s, not in the wall time")
    if rows:
        any_row = next(iter(rows.values()))
        notes.append(f"per job the driver sends {any_row['input_kib']:.0f} KiB of input files and gets back a {any_row['png_kib']:.0f} KiB PNG")
    print("")
    for note in notes:
        print(f"- {note}")
    print("\nstart-up: from the batch call to the worker's first job (process or actor start, imports); "
          "model load: weights read and extractor built, once per worker; style targets: the style "
          "statistics computed on a cache miss (each painting once per worker and scale); result to "
          "driver: from the end of a job in its worker to its outcome reaching the driver; worker time "
          "optimising: optimisation seconds / (workers x wall).\n")


# -- main -------------------------------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=16, help="jobs in the batch (default 16)")
    p.add_argument("--size", type=int, default=256, help="long side of the outputs in px (default 256)")
    p.add_argument("--preset", help="settings preset (default: impasto's default settings)")
    p.add_argument("--iterations", type=int, help="iterations at the finest scale (default: the settings')")
    p.add_argument("--initial-iterations", type=int, help="iterations at the coarsest scale (default: the settings')")
    p.add_argument("--only", choices=list(CONFIGS), action="append", help="run only this configuration (repeatable)")
    p.add_argument("--keep", metavar="DIR", help="work in DIR and keep the outputs and reports there")
    p.add_argument("--child", nargs=2, metavar=("CONFIG", "WORKDIR"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(Path(args.child[1]), args.child[0])
    if args.jobs < 1:
        p.error("--jobs must be at least 1")

    temporary = None if args.keep else tempfile.TemporaryDirectory(prefix="impasto-batch-bench-")
    workdir = Path(args.keep or temporary.name).resolve()  # type: ignore[union-attr]
    workdir.mkdir(parents=True, exist_ok=True)
    weights, weights_text = weights_note()
    if weights is None:
        weights = random_weights_file(workdir)
    settings = Settings.from_preset(args.preset) if args.preset else Settings()
    overrides = {"size": args.size, "weights": weights}
    overrides |= {k: v for k, v in (("iterations", args.iterations), ("initial_iterations", args.initial_iterations)) if v is not None}
    settings = settings.replace(**overrides).validate()
    (workdir / "settings.json").write_text(json.dumps(settings.to_dict(), default=str))
    manifest, inputs_text = prepare_inputs(workdir, args.jobs)

    from impasto.batch.local import cpu_count

    print("# impasto batch throughput benchmark\n")
    print(f"{weights_text}; {cpu_count()} CPUs usable here ({os.cpu_count()} on the machine)")
    print(f"{args.jobs} jobs at {args.size} px, settings: {args.preset or 'default'}"
          f" ({settings.iterations} finest / {settings.initial_iterations} coarsest iterations, multiscale={settings.multiscale},"
          f" device={settings.device}); inputs: {inputs_text}")
    print(f"reproduce: .venv/bin/python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}".rstrip(), flush=True)

    reports: dict[str, dict[str, Any]] = {}
    for config in args.only or list(CONFIGS):
        if config == "ray":
            reason = ray_unavailable()
            if reason:
                reports[config] = {"skipped": reason}
                continue
        print(f"running: {CONFIGS[config]} ...", file=sys.stderr, flush=True)
        reports[config] = launch(workdir, config)
    print_tables(reports)
    if temporary is not None:
        temporary.cleanup()
    return 0 if all("error" not in r for r in reports.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
