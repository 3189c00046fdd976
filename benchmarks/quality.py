"""Quality benchmark: textbook baseline vs impasto's default vs each style loss.

    .venv/bin/python benchmarks/quality.py                      # 4 photos x 3 paintings at 512 px (hours here)
    .venv/bin/python benchmarks/quality.py --size 256 --baseline-evaluations 300
    .venv/bin/python benchmarks/quality.py --size 256 --reuse --variant "sw15=style_weight:15"
    .venv/bin/python benchmarks/quality.py --default-only --no-baseline --jitter 2   # the scores' own noise

Every output is scored with VGG16 (the optimisation uses VGG19): content
distance (relative feature error at conv4_2 to the photo) and style distance
(mean relative Gram distance to the painting over conv1_1..conv5_1). Lower is
better for both. Writes, under --out (results/quality/): records.jsonl (every run
ever scored, so --reuse can skip it), each image as PHOTO-PAINTING-RUN-SIZE-KEY.jpg (KEY:
the settings' hash, so a changed default adds pictures instead of replacing them),
the table as table_SIZE.md and one labelled contact sheet as sheet_SIZE.jpg.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import IMAGES, WEIGHTS, baseline_objective, load_pair, settings_key, textbook_baseline, threads_note, yardstick  # noqa: E402

from impasto import ImpastoError, Settings, Stylizer  # noqa: E402
from impasto.settings import parse_setting  # noqa: E402
from impasto.images import load_image, pil_to_tensor, tensor_to_pil  # noqa: E402
from impasto.metrics import CONTENT_LAYER, STYLE_LAYERS, Scorer  # noqa: E402
from impasto.sweep import labelled_sheet  # noqa: E402

BASELINE = "textbook baseline"
PHOTOS = ("chelsea.png", "astronaut.png", "coffee.png", "rocket.png")
# --jitter's change to a photo: Gaussian noise of one grey level, before the API rounds the photo
# to 8 bits again. Invisible, and no larger than what saving the photo once more can do.
JITTER = 1 / 255
PAINTINGS = ("starry_night.jpg", "the_scream.jpg", "shipwreck.jpg")


def variants(size: int, extra: list[str], default_only: bool = False, no_default: bool = False) -> dict[str, Settings]:
    """The default and each other style loss; or the default and the --variant candidates (without
    the default where `no_default`)."""
    base = Settings(weights=str(WEIGHTS), size=size)
    if default_only:
        return {"impasto default": base}
    if extra:
        return {**({} if no_default else {"impasto default": base}), **dict(parse_variant(text, base) for text in extra)}
    return {
        "impasto default": base,
        **{f"loss {k}": base.replace(style_loss=k) for k in ("gram", "w2", "meanstd") if k != base.style_loss},
    }


def jittered(photo: torch.Tensor, seed: int) -> torch.Tensor:
    """The photo moved by --jitter's invisible noise, drawn from `seed` (0: the photo itself)."""
    if not seed:
        return photo
    noise = torch.randn(photo.shape, generator=torch.Generator().manual_seed(seed))
    return (photo + JITTER * noise).clamp(0, 1)


def with_jitter(runs: dict[str, Settings], count: int) -> dict[str, tuple[Settings, int]]:
    """Each run on the photo as it is (seed 0), then on `count` jittered copies of it."""
    return {f"{name}, jitter {seed}" if seed else name: (settings, seed) for name, settings in runs.items() for seed in range(count + 1)}


def parse_variant(text: str, base: Settings) -> tuple[str, Settings]:
    """'NAME=setting:value,setting:value' -> (NAME, the default with those settings)."""
    name, _, body = text.partition("=")
    changes = {}
    for item in filter(None, body.split(",")):
        key, _, value = item.partition(":")
        # The rule of every shell (settings.parse_setting); a list setting takes its items
        # separated by '/' here, since ',' separates the settings.
        try:
            changes[key] = parse_setting(key, value, list_sep="/")
        except ImpastoError as exc:
            raise SystemExit(f"--variant {text}: {exc}") from None
    return name, base.replace(**changes).validate()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--photos", default=",".join(PHOTOS))
    p.add_argument("--paintings", default=",".join(PAINTINGS))
    p.add_argument("--baseline-evaluations", type=int, default=300)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "quality"))
    p.add_argument("--summarise", action="store_true", help="only rebuild the table and sheet from OUT/records.jsonl")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=KEY:VALUE,..",
                   help="a candidate setting to compare with the default (repeatable); replaces the per-loss runs; "
                   "a list setting takes its items separated by '/' (style_layers:conv1_1/conv2_1)")
    p.add_argument("--default-only", action="store_true",
                   help="only the baseline and the default (the per-loss runs can follow later with --reuse)")
    p.add_argument("--no-default", action="store_true",
                   help="with --variant, run only the candidates: half the time, where the default's figures are known from an earlier pass")
    p.add_argument("--jitter", type=int, default=0, metavar="N",
                   help="also run impasto's runs on N copies of each photo moved by invisible noise (one grey level, seeds "
                   "1..N), and print how far each pair's distances move with it: the benchmark's own noise floor")
    p.add_argument("--no-baseline", action="store_true", help="leave out the textbook run (--jitter's spread does not need it)")
    p.add_argument("--reuse", action="store_true",
                   help="keep a run already recorded in OUT/records.jsonl at this size (its image must exist) instead of redoing it")
    args = p.parse_args()
    # A shell starts background jobs with SIGINT ignored; restore it so `kill -INT` stops a long
    # run cleanly, with the finished pairs written out, as Ctrl-C does in a terminal.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if args.summarise:
        out = Path(args.out)
        records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines() if line.strip()]
        records = comparable([r for r in records if r.get("size") == args.size], f"baseline-{args.baseline_evaluations}")
        names = list(dict.fromkeys(r["run"] for r in records))
        names = [BASELINE, *(n for n in names if n != BASELINE)] if BASELINE in names else names
        return write_outputs(records, names, out, args.size)
    if not (WEIGHTS / "vgg19-caffe-features.safetensors").is_file() or not (WEIGHTS / "vgg16-caffe-features.safetensors").is_file():
        sys.exit(f"quality.py needs the real VGG19 and VGG16 weights in {WEIGHTS}: the scores mean nothing with random ones")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    scorer = Scorer(yardstick((CONTENT_LAYER, *STYLE_LAYERS)))
    stylizer = Stylizer(download=False)
    if args.no_default and not args.variant:
        p.error("--no-default needs --variant: there would be nothing to run")
    runs = with_jitter(variants(args.size, args.variant, args.default_only, args.no_default), args.jitter)
    # What a record must have been made with to be reused: a default that has since changed is redone.
    keys = {name: settings_key(s) + (f"-jitter{seed}" if seed else "") for name, (s, seed) in runs.items()}
    keys[BASELINE] = f"baseline-{args.baseline_evaluations}"
    done_before: dict[tuple, dict] = {}
    if args.reuse and (out / "records.jsonl").is_file():
        for line in (out / "records.jsonl").read_text().splitlines():
            r = json.loads(line)
            if r.get("size") == args.size and r.get("key") == keys.get(r["run"]) and (out / f"{image_stem(r)}.jpg").is_file():
                done_before[(r["photo"], r["painting"], r["run"])] = r
    baseline_settings = Settings(weights=str(WEIGHTS), size=args.size, style_loss="gram", multiscale=False)
    names = [*([] if args.no_baseline else [BASELINE]), *runs]
    records: list[dict] = []
    print(f"# impasto quality benchmark at {args.size} px\n\n{threads_note()}")
    print(f"reproduce: .venv/bin/python benchmarks/quality.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"\n{TABLE_HEAD}", flush=True)
    pairs = [(ph, pa) for ph in args.photos.split(",") for pa in args.paintings.split(",")]
    try:
        for photo, painting in pairs:
            content, style = load_pair(photo, painting, args.size)
            outputs: dict[str, Image.Image] = {}
            seconds: dict[str, float] = {}
            todo = [n for n in names if (photo, painting, n) not in done_before]
            if BASELINE in todo:
                start = time.perf_counter()
                extractor = stylizer.extractor(baseline_settings, torch.device("cpu"))
                objective = baseline_objective(extractor, baseline_settings, content, style)
                outputs[BASELINE] = tensor_to_pil(textbook_baseline(objective, content, args.baseline_evaluations, []))
                seconds[BASELINE] = time.perf_counter() - start
            for name, (settings, seed) in runs.items():
                if name in todo:
                    result = stylizer.run(jittered(content, seed), style, settings)  # Ctrl-C: impasto.Interrupted
                    outputs[name], seconds[name] = result.image, result.seconds
            for name in names:
                if name in todo:
                    scores = scorer(pil_to_tensor(outputs[name]), content, style)  # against the photo itself
                    rec = {"photo": photo, "painting": painting, "run": name, "size": args.size, "key": keys[name],
                           "content": scores.content, "style": scores.style, "seconds": seconds[name],
                           "style_by_layer": scores.style_by_layer}
                    outputs[name].save(out / f"{image_stem(rec)}.jpg", quality=92)
                else:
                    rec = done_before[(photo, painting, name)]
                records.append(rec)
                reused = "" if name in todo else " (reused)"
                print(table_row(rec, reused), flush=True)
    except KeyboardInterrupt:
        # A long benchmark stopped early still reports the pairs it finished.
        print(f"\ninterrupted: {len({(r['photo'], r['painting']) for r in records})} of {len(pairs)} pairs done")
    write_outputs(records, names, out, args.size)


def thumbnail(image: Image.Image, side: int) -> Image.Image:
    image = image.copy()
    image.thumbnail((side, side), Image.Resampling.LANCZOS)
    return image


def open_or_blank(path: Path | None) -> Image.Image:
    """A run's picture, or a blank tile where that run did not cover this pair."""
    return Image.open(path) if path is not None and path.is_file() else Image.new("RGB", (256, 256), "white")


def image_stem(record: dict) -> str:
    photo, painting, run = (Path(record["photo"]).stem, Path(record["painting"]).stem, record["run"].replace(",", "").replace(" ", "_"))
    return f"{photo}-{painting}-{run}-{record['size']}-{record['key']}"


def write_outputs(records: list[dict], names: list[str], out: Path, size: int) -> None:
    """records.jsonl (merged with earlier runs'), the summary table and the contact sheet of every finished pair."""
    key = lambda r: (r["photo"], r["painting"], r["run"], r.get("size"), r.get("key"))  # noqa: E731
    merged = {}
    if (out / "records.jsonl").is_file():
        merged = {key(r): r for r in map(json.loads, (out / "records.jsonl").read_text().splitlines())}
    merged.update({key(r): r for r in records})
    (out / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in merged.values()))
    done = list(dict.fromkeys((r["photo"], r["painting"]) for r in records))
    by_run = {(r["photo"], r["painting"], r["run"]): r for r in records}
    rows = []
    for photo, painting in done:
        inputs = [load_image(IMAGES / name) for name in (photo, painting)]
        runs = [by_run.get((photo, painting, n)) for n in names]
        rows.append(inputs + [open_or_blank(out / f"{image_stem(r)}.jpg" if r else None) for r in runs])
    labels = [f"{Path(ph).stem} / {Path(pa).stem}" for ph, pa in done]
    if rows:
        thumbs = [[thumbnail(im, 256) for im in row] for row in rows]
        sheet, _ = labelled_sheet(thumbs, ["photo", "painting", *names], labels, "impasto quality benchmark (rows: photo / painting)")
        sheet.save(out / f"sheet_{size}.jpg", quality=88)
        (out / f"table_{size}.md").write_text(summarise(records, names))
    print(f"\nimages and sheet: {out}")


def comparable(records: list[dict], baseline_key: str) -> list[dict]:
    """The records one table may put side by side: the textbook run with `baseline_key` (its
    evaluations), and each other run as made with its latest settings, its --jitter copies
    only with those same settings; then the latest record of each run on each pair. (A run's
    older records are other settings: a default since changed, or another baseline.)"""
    latest: dict[str, str] = {}
    for r in records:  # in the file's order: later lines are newer
        if r["run"] != BASELINE and ", jitter " not in r["run"]:
            latest[r["run"]] = r.get("key", "")

    def fits(r: dict) -> bool:
        if r["run"] == BASELINE:
            return r.get("key") == baseline_key
        run, _, seed = r["run"].partition(", jitter ")
        return run in latest and r.get("key") == (f"{latest[run]}-jitter{seed}" if seed else latest[run])

    return list({(r["photo"], r["painting"], r["run"]): r for r in records if fits(r)}.values())


TABLE_HEAD = (f"| photo / painting | run | content dist | style dist | seconds | style dist by layer ({', '.join(STYLE_LAYERS)}) |\n"
              "|---|---|---:|---:|---:|---|")


def table_row(r: dict, note: str = "") -> str:
    """A record's row of TABLE_HEAD (records made before session 27 have no layers: '-')."""
    layers = r.get("style_by_layer") or {}
    by_layer = " ".join(f"{layers[k]:.4f}" for k in STYLE_LAYERS if k in layers) or "-"
    return (f"| {Path(r['photo']).stem} / {Path(r['painting']).stem} | {r['run']}{note} | {r['content']:.3f} | {r['style']:.4f} "
            f"| {r['seconds']:.0f} | {by_layer} |")


def summarise(records: list[dict], names: list[str]) -> str:
    """Print and return the per-pair table, the per-run summary and --jitter's spread."""
    lines = TABLE_HEAD.splitlines()
    lines += [table_row(r) for r in records]
    base = {(r["photo"], r["painting"]): r for r in records if r["run"] == BASELINE}
    # Distances differ by an order of magnitude between photos, so runs are compared by their
    # ratio to the baseline on the same pair (geometric mean over pairs): below 1 is better.
    if base:
        evaluations = {str(r.get("key", "")).removeprefix("baseline-") for r in base.values()}
        lines += ["", f"baseline: the textbook run with {' / '.join(sorted(evaluations))} evaluations"]
        lines += ["", "| run | content dist / baseline's | style dist / baseline's | time / baseline's | pairs better than baseline on both |",
                  "|---|---:|---:|---:|---:|"]
    for name in names:
        rs = [(r, base[(r["photo"], r["painting"])]) for r in records if r["run"] == name and (r["photo"], r["painting"]) in base]
        if not rs:
            continue
        wins = sum(r["content"] < b["content"] and r["style"] < b["style"] for r, b in rs)
        ratio = lambda k: math.exp(sum(math.log(r[k] / b[k]) for r, b in rs) / len(rs))  # noqa: E731
        lines.append(f"| {name} | {ratio('content'):.2f} | {ratio('style'):.2f} | {ratio('seconds'):.2f} | {wins}/{len(rs)} |")
    lines += jitter_spread(records)
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    return text


def jitter_spread(records: list[dict]) -> list[str]:
    """--jitter's table: per pair and run, each distance's range over the photo and its jittered
    copies, as a share of the distance on the photo itself; then the median share over pairs."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in records:
        run = r["run"].split(", jitter ")[0]
        groups.setdefault((r["photo"], r["painting"], run), []).append(r)
    groups = {k: rs for k, rs in groups.items() if len(rs) > 1 and any(r["run"] == k[2] for r in rs)}
    if not groups:
        return []
    lines = ["", "| photo / painting | run | runs (photo + copies) | content dist: range (spread) | style dist: range (spread) |", "|---|---|---:|---|---|"]
    spreads: dict[str, dict[str, list[float]]] = {}
    for (photo, painting, run), rs in groups.items():
        clean = next(r for r in rs if r["run"] == run)
        cells = []
        for k in ("content", "style"):
            values = [r[k] for r in rs]
            share = (max(values) - min(values)) / clean[k]
            spreads.setdefault(run, {}).setdefault(k, []).append(share)
            cells.append(f"{min(values):.4g}-{max(values):.4g} ({share:.1%})")
        lines.append(f"| {Path(photo).stem} / {Path(painting).stem} | {run} | {len(rs)} | {cells[0]} | {cells[1]} |")
    lines += ["", "| run | median content spread | median style spread | largest content / style spread |", "|---|---:|---:|---:|"]
    for run, by in spreads.items():
        lines.append(f"| {run} | {statistics.median(by['content']):.1%} | {statistics.median(by['style']):.1%} "
                     f"| {max(by['content']):.1%} / {max(by['style']):.1%} |")
    return lines


if __name__ == "__main__":
    main()
