"""`impasto batch`: the command line over impasto.batch."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Optional, Sequence

from .plan import OUTPUT_FORMATS

EPILOG = """\
examples:
  impasto batch jobs.csv -o out/ --size 256
  impasto batch --contents photos/ --styles paintings/ -o out/ --workers 2
  impasto batch --contents photos/ --styles paintings/ --per-content 3 --pair-seed 7 -o augmented/
  impasto batch --contents imagenet/train/ --styles paintings/ --per-content 1 --recursive -o stylized/
  impasto batch jobs.jsonl -o out/ --ray 10.0.0.5:6379
  impasto batch jobs.csv -o out/ --retry-failed          (after fixing what failed)

manifest: a CSV with a header row (content, style, optional output, then any setting as a
column: style_weight, size, ...) or a JSONL file of objects with the same fields (a
"settings" object may hold the settings). Several styles: "a.jpg:0.7;b.jpg:0.3" in CSV,
a list in JSONL. Paths are relative to the manifest's folder.
Running the same command again skips the jobs already done (index.jsonl in the output folder).
Exit status: 0 when every job is done, 1 when any failed or was skipped (a file in the way), 130 on Ctrl-C."""


def build_parser() -> argparse.ArgumentParser:
    from ..cli import Parser, add_settings_arguments

    p = Parser(
        prog="impasto batch",
        description="Stylise many images: jobs from a manifest, or every content x style pair of two folders. "
        "Runs on this machine, or on a Ray cluster with --ray.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    p.add_argument("manifest", nargs="?", help="jobs: a .csv or .jsonl file (or use --contents and --styles)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder (made if missing); holds the pictures and index.jsonl")
    group = p.add_argument_group("folders instead of a manifest")
    group.add_argument("--contents", metavar="DIR", help="folder of photos to paint")
    group.add_argument("--styles", metavar="DIR", help="folder of paintings")
    group.add_argument("--per-content", type=int, metavar="K", help="K styles drawn at random for each photo (default: every style)")
    group.add_argument("--pair-seed", type=int, default=0, metavar="N", help="seed of the random draw of styles (default: 0)")
    group.add_argument("--recursive", action="store_true",
                       help="read the folders' subfolders too (class_a/0001.jpg); the outputs go into the same subfolders")  # fmt: skip
    group = p.add_argument_group("running")
    group.add_argument("--workers", type=int, metavar="N", help="worker processes here (default 1), or Ray actors (default: as many as the cluster holds)")
    group.add_argument("--ray", nargs="?", const=True, default=None, metavar="ADDRESS",
                       help="run on a Ray cluster: ADDRESS such as 10.0.0.5:6379, or none for $RAY_ADDRESS / "
                       "the cluster started on this machine / a new local one (needs impasto[ray])")  # fmt: skip
    group.add_argument("--ray-cpus", type=float, default=1.0, metavar="X", help="CPUs per job on a cluster without GPUs (default: 1)")
    group.add_argument("--retries", type=int, default=2, metavar="N", help="times a job is sent again when its worker dies (default: 2)")
    group.add_argument("--retry-failed", action="store_true", help="redo the jobs that failed in an earlier run")
    group.add_argument("--overwrite", action="store_true", help="redo finished jobs and replace existing files")
    group.add_argument("--format", default="png", choices=OUTPUT_FORMATS, help="format of the outputs named by the batch (default: png)")
    group.add_argument("--quiet", action="store_true", help="no progress bars")
    add_settings_arguments(p)
    return p


def main(argv: Sequence[str]) -> int:
    from tqdm import tqdm

    from ..cli import explicit_settings, settings_from_args
    from ..errors import ImpastoError, one_line_warnings
    from . import JobResult, batch

    args = build_parser().parse_args(argv)
    # `--ray jobs.csv` reads the manifest as the address: take it back.
    if isinstance(args.ray, str) and args.manifest is None and Path(args.ray).suffix.lower() in (".csv", ".jsonl", ".ndjson"):
        args.manifest, args.ray = args.ray, True
    settings = settings_from_args(args)
    bars: dict[int, Any] = {}
    overall: Optional[Any] = None

    def on_progress(slot: int, job: str, done: int, total: int) -> None:
        if args.quiet or not sys.stderr.isatty():  # a log gets the jobs' bar, not cursor moves between stacked bars
            return
        bar = bars.get(slot)
        if bar is None:
            bar = bars[slot] = tqdm(total=total, position=slot + 1, unit="it", leave=False, dynamic_ncols=True)
        if bar.total != total or done < bar.n:
            bar.reset(total=total)
        bar.set_description(f"worker {slot + 1}: {job}", refresh=False)
        bar.update(done - bar.n)

    results = batch(
        args.manifest, args.output, settings, contents=args.contents, styles=args.styles, per_content=args.per_content,
        seed=args.pair_seed, recursive=args.recursive, workers=args.workers, ray=args.ray, ray_cpus=args.ray_cpus, retries=args.retries,
        retry_failed=args.retry_failed, overwrite=args.overwrite, image_format=args.format, on_progress=on_progress,
        fixed=set(explicit_settings(args)),
    )  # fmt: skip
    counts = {"done": 0, "failed": 0, "skipped": 0, "earlier": 0}
    first_errors: list[JobResult] = []
    notes: Counter[str] = Counter()  # what the runs decided for themselves, each said once with its count
    start = time.perf_counter()
    if results.to_run < results.total:
        print(f"batch: {results.total - results.to_run} of {results.total} jobs were finished by an earlier run "
              f"(index: {results.index_path})", file=sys.stderr)  # fmt: skip
    # The overall bar counts the jobs run now, so its rate and ETA are this run's.
    overall = tqdm(total=results.to_run, position=0, unit="job", disable=args.quiet or not results.to_run, dynamic_ncols=True, desc="batch")
    try:
        with one_line_warnings(lambda line: tqdm.write(line, file=sys.stderr)):  # above the bars, not through them
            for result in results:
                counts[result.status] += 1
                if result.previous:
                    counts["earlier"] += result.status == "done"  # the "(N from an earlier run)" of the done
                    continue
                if result.status != "done" and len(first_errors) < 5:
                    first_errors.append(result)
                notes.update(result.notes)
                overall.update(1)
                overall.set_postfix(done=counts["done"] - counts["earlier"], failed=counts["failed"], refresh=True)
                if result.status == "failed" and not args.quiet:
                    overall.write(f"failed: {result.output.name}: {result.error}", file=sys.stderr)
    except KeyboardInterrupt:
        _close(overall, bars)
        earlier = f" ({counts['earlier']} of them by an earlier run)" if counts["earlier"] else ""
        print(f"impasto batch: interrupted; {counts['done']} done{earlier}. Run the same command again to finish the rest.", file=sys.stderr)
        return 130
    except ImpastoError:
        _close(overall, bars)
        raise
    _close(overall, bars)
    summary = _summary(counts, time.perf_counter() - start, Path(args.output))
    print(summary, file=sys.stderr)
    for result in first_errors:
        print(f"  {result.status}: {result.output.name}: {result.error}", file=sys.stderr)
    for note, count in notes.items():
        print(f"{count} job{'s' if count != 1 else ''}: {note} (each job's \"notes\" in the index)", file=sys.stderr)
    # A skipped job's picture is not there either: a script reading 0 as "all painted" would be wrong.
    return 1 if counts["failed"] or counts["skipped"] else 0


def _summary(counts: dict[str, int], seconds: float, folder: Path) -> str:
    earlier = f" ({counts['earlier']} from an earlier run)" if counts["earlier"] else ""
    painted = counts["done"] - counts["earlier"]
    # Pictures painted now over the run's wall clock (worker start-up included): what the next batch can expect.
    rate = f" ({_figure(painted / seconds * 60)} jobs/min, {_figure(seconds / painted)} s per job)" if painted and seconds > 0 else ""
    text = (f"batch: {counts['done']} done{earlier}, {counts['failed']} failed, {counts['skipped']} skipped in {seconds:.1f} s{rate}; "
            f"index: {folder / 'index.jsonl'}")  # fmt: skip
    if counts["failed"]:
        text += "\nrun again with --retry-failed to redo the failed jobs once their cause is fixed"
    if counts["skipped"]:
        text += "\nskipped: a file not made by this batch (other settings or inputs) was in the way; pass --overwrite, or give these settings an output folder of their own"
    return text


def _figure(x: float) -> str:
    return f"{x:.0f}" if x >= 100 else f"{x:.3g}"


def _close(overall: Optional[Any], bars: dict[int, Any]) -> None:
    for bar in bars.values():
        bar.close()
    if overall is not None:
        overall.close()
