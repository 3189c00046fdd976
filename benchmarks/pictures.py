"""The README's pictures, made again with the current default, with the time and memory they took.

    .venv/bin/python benchmarks/pictures.py                       # baseline and large (~20 min here)
    .venv/bin/python benchmarks/pictures.py --only tiles          # 2048 px in 1024 px tiles
    .venv/bin/python benchmarks/pictures.py --only huge           # 4096 px in automatic tiles, fewer iterations
    .venv/bin/python benchmarks/pictures.py --only flat           # --flat-content on three photos (~6 min)
    .venv/bin/python benchmarks/pictures.py --only web            # the web page after a 256 px run (~2 min)
    .venv/bin/python benchmarks/pictures.py --only large --docs   # and copy the picture into docs/

Each picture is a command a user would type, run in a fresh process (so its peak memory is its
own), then composed as the README shows it: the textbook single-scale run beside the default
(`baseline`, docs/baseline_vs_default.jpg), a 2048 px run whole and a full-resolution crop
(`large`, docs/large_2048.jpg), the same in 1024 px tiles with the crop across the seams of
four tiles (`tiles`, docs/large_2048_tiles.jpg), and a 4096 px print in automatic tiles with
fewer iterations (`huge`, docs/large_4096_tiles.jpg), and three photos with and without flat areas
freed (`flat`, docs/flat_content.jpg), and the web page after a run of a photo with two paintings
blended, driven in Debian's chromium as a user would drive it (`web`, docs/web.jpg). It prints each run's time and peak memory and
writes everything under benchmarks/results/pictures/; `--docs` copies the composed pictures
into docs/ as well (the README's captions quote the figures: update them with the pictures).
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import tempfile
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Union

import torch
from PIL import Image, ImageDraw, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import IMAGES, threads_note, weights_note  # noqa: E402

from heldout import cut_out_on_white  # noqa: E402

from impasto import Settings  # noqa: E402
from impasto.images import pil_to_tensor, resize_long_side  # noqa: E402
from impasto.optimize import resolve_flat_content  # noqa: E402
from impasto.sweep import labelled_sheet, load_font  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "pictures"
DOCS = ROOT / "docs"
TEXTBOOK = r"""
import sys, time
import torch
sys.path.insert(0, {bench!r})
from common import baseline_objective, load_pair, textbook_baseline
from impasto import Settings, Stylizer
from impasto.images import tensor_to_pil
settings = Settings(weights={weights!r}, size=512, style_loss="gram", multiscale=False)
extractor = Stylizer(download=False).extractor(settings, torch.device("cpu"))
content, style = load_pair({photo!r}, {painting!r}, 512)
start = time.perf_counter()
image = textbook_baseline(baseline_objective(extractor, settings, content, style), content, 300, [])
print(f"optimised in {{time.perf_counter() - start:.1f}} s")
tensor_to_pil(image).save({out!r})
"""


def high_water_mib(pid: int) -> float:
    """A live process's peak resident memory (VmHWM), or 0 once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    return next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM:")), 0.0)


def run(command: list[str], what: str) -> tuple[float, float]:
    """Runs `command` in a fresh process: (seconds, peak resident memory in GiB)."""
    shown = [a if "\n" not in a else "SCRIPT" for a in command]  # the textbook's script is shown once, above
    print(f"$ {' '.join(shown)}", flush=True)
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # The child's own high-water mark, read while it runs: getrusage's ru_maxrss would also count
    # this process's memory, which a child started by fork inherits on Linux.
    peak = [0.0]

    def watch() -> None:
        while process.poll() is None:
            peak[0] = max(peak[0], high_water_mib(process.pid))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert process.stdout is not None
    tail = [line for line in process.stdout if "%|" not in line][-3:]  # the progress bar's lines left out
    process.wait()
    watcher.join()
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        sys.exit(f"{what} failed:\n{''.join(tail)}")
    print(f"{''.join(tail)}{what}: {seconds:.1f} s, peak memory {peak[0] / 1024:.1f} GiB\n", flush=True)
    return seconds, peak[0] / 1024


def impasto(photo: str, painting: str, out: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "impasto", str(IMAGES / photo), str(IMAGES / painting), "-o", str(out), "--overwrite", *options]


def side_by_side(images: list[Image.Image], captions: list[str], gap: int = 10) -> Image.Image:
    """The images in a row on white, each under its caption (lines split at "\\n")."""
    font = load_font(16)
    top = 8 + 20 * max(c.count("\n") + 1 for c in captions)
    sheet = Image.new("RGB", (sum(im.width for im in images) + gap * (len(images) - 1), top + max(im.height for im in images)), "white")
    draw, x = ImageDraw.Draw(sheet), 0
    for image, caption in zip(images, captions):
        draw.multiline_text((x + 4, 4), caption, fill="black", font=font, spacing=4)
        sheet.paste(image.convert("RGB"), (x, top))
        x += image.width + gap
    return sheet


def whole_and_crop(path: Path, height: int, centre: tuple[float, float], gap: int = 10) -> Image.Image:
    """The picture scaled to `height`, then a `height` x `height` crop of it at full resolution
    around `centre` (fractions of its width and height)."""
    image = Image.open(path).convert("RGB")
    whole = image.resize((round(image.width * height / image.height), height), Image.Resampling.LANCZOS)
    cx, cy = round(centre[0] * image.width), round(centre[1] * image.height)
    left = min(max(cx - height // 2, 0), image.width - height)
    top = min(max(cy - height // 2, 0), image.height - height)
    crop = image.crop((left, top, left + height, top + height))
    sheet = Image.new("RGB", (whole.width + gap + height, height), "white")
    sheet.paste(whole, (0, 0))
    sheet.paste(crop, (whole.width + gap, 0))
    return sheet


def section_baseline(out: Path, weights: str) -> Path:
    photo, painting = "chelsea.png", "starry_night.jpg"
    textbook_png, default_png = out / "textbook_512.png", out / "default_512.png"
    script = TEXTBOOK.format(bench=str(Path(__file__).parent), weights=weights, photo=photo, painting=painting, out=str(textbook_png))
    print(f"SCRIPT:{script}")
    textbook_s, _ = run([sys.executable, "-c", script], "textbook, 300 evaluations")
    default_s, _ = run(impasto(photo, painting, default_png), "impasto default")
    captions = [f"textbook: one scale, L-BFGS from the photo,\n300 evaluations ({textbook_s:.0f} s here)",
                f"impasto's default: coarse to fine, 128 -> 256 -> 512 px,\n100 -> 50 iterations ({default_s:.0f} s here)"]  # fmt: skip
    sheet = side_by_side([Image.open(textbook_png), Image.open(default_png)], captions)
    sheet.save(out / "baseline_vs_default.jpg", quality=90)
    print(f"times include starting Python and loading the network; the default is {default_s / textbook_s:.2f}x the textbook's\n")
    return out / "baseline_vs_default.jpg"


# The rocket with The Starry Night as a large print: (file name, what, options, crop centre).
# The crop is the same with tiles and without. In 1024 px tiles (811 x 779 of picture each, with
# 192 px of overlap: tiles.plan_tiles) it lies across the overlaps of four tiles, x 1237-1429,
# y 587-779. At 4096 px the automatic tiles (how many depends on the free memory) are 2 x 2 on a
# 24 GiB machine, meeting near the middle; there with a fifth to a quarter of the default's
# iterations, as the README shows it.
PRINTS = {
    "large": ("large_2048", "2048 px", ["--size", "2048"], (0.65, 0.5)),
    "tiles": ("large_2048_tiles", "2048 px in 1024 px tiles", ["--size", "2048", "--tile", "1024"], (0.65, 0.5)),
    "huge": ("large_4096_tiles", "4096 px in automatic tiles, 20 -> 10 iterations",
             ["--size", "4096", "--initial-iterations", "20", "--iterations", "10"], (0.5, 0.5)),
}  # fmt: skip


def section_print(out: Path, section: str) -> Path:
    name, what, options, centre = PRINTS[section]
    png = out / f"{name}.png"
    run(impasto("rocket.png", "starry_night.jpg", png, *options), what)
    whole_and_crop(png, 683, centre).save(out / f"{name}.jpg", quality=90)
    return out / f"{name}.jpg"


# (row label, photo: a file of IMAGES or a picture made here, painting).
FLAT_ROWS: list[tuple[str, Union[str, Callable[[], Image.Image]], str]] = [
    ("cut-out on white / Shipwreck", cut_out_on_white, "shipwreck.jpg"),
    ("rocket / Starry Night", "rocket.png", "starry_night.jpg"),
    ("astronaut / Scream", "astronaut.png", "the_scream.jpg"),
]


def section_flat(out: Path) -> Path:
    """Each photo at --flat-content 1 and 0.1, and which of the two the default chose for it."""
    rows, labels = [], []
    for label, given, painting in FLAT_ROWS:
        photo = given if isinstance(given, str) else str(out / f"{label.split(' /')[0].replace(' ', '_')}.png")
        if not isinstance(given, str):
            given().save(photo)
        pngs = []
        for value in ("1", "0.1"):
            png = out / f"flat_{Path(photo).stem}_{value}.png"
            run(impasto(photo, painting, png, "--flat-content", value), f"{label}, --flat-content {value}")
            pngs.append(png)
        source = Image.open(IMAGES / photo).convert("RGB")
        # As a run decides it: on the photo at the output's size.
        default = resolve_flat_content(Settings(), pil_to_tensor(resize_long_side(source, 512), torch.device("cpu"))).flat_content
        print(f"the default's --flat-content for {label}: {default:g}\n")
        rows.append([source, *(Image.open(png) for png in pngs)])
        for im in rows[-1]:
            im.thumbnail((384, 384))
        rows[-1][0] = ImageOps.expand(rows[-1][0], 1, "#bbbbbb")  # the cut-out's white is not the sheet's
        labels.append(f"{label} (default {default:g})")
    sheet, _ = labelled_sheet(rows, ["photo", "--flat-content 1", "--flat-content 0.1"], labels, "the content weight on flat areas (512 px)")
    sheet.save(out / "flat_content.jpg", quality=90)
    return out / "flat_content.jpg"


def until(page, predicate: str, timeout: float = 60) -> None:
    """Polls a JS function (not wait_for_function, whose retries eval() strings: the page's policy forbids that)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(predicate):
        if time.monotonic() > deadline:
            sys.exit(f"the page never showed: {predicate}")
        time.sleep(0.1)


def section_web(out: Path) -> Path:
    """`impasto serve --size 256` with the photo and two paintings dropped on its page, Paint pressed,
    and the page photographed once the picture is done (the README's docs/web.jpg)."""
    from playwright.sync_api import sync_playwright  # the dev extra's

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = tempfile.mkdtemp(prefix="impasto-web-")
    command = [sys.executable, "-m", "impasto", "serve", "--port", str(port), "--data-dir", data, "--size", "256"]
    print(f"$ {' '.join(command)}", flush=True)
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            try:
                connection.request("GET", "/")
                if connection.getresponse().status == 200:
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    sys.exit("impasto serve did not start")
                time.sleep(0.3)
            finally:
                connection.close()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/")
            until(page, "() => document.getElementById('size').value !== ''")  # the server's options are in
            page.set_input_files("#content-input", str(IMAGES / "chelsea.png"))
            page.set_input_files("#style-input", [str(IMAGES / "starry_night.jpg"), str(IMAGES / "the_scream.jpg")])
            page.fill("#seed", "0")
            page.click("#start")
            page.wait_for_selector("#status[data-status=done]", timeout=600_000)
            until(page, "() => { const img = document.getElementById('picture'); return img.complete && img.naturalWidth > 0; }")
            print(f"the page says: {page.inner_text('#status')}")
            shot = out / "web.png"
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(data, ignore_errors=True)
    Image.open(shot).convert("RGB").save(out / "web.jpg", quality=90)
    return out / "web.jpg"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", action="append", choices=["baseline", "flat", "web", *PRINTS], help="one section (repeatable); default: baseline and large")
    p.add_argument("--docs", action="store_true", help="copy the composed pictures into docs/, replacing the README's")
    args = p.parse_args()
    weights, note = weights_note()
    if weights is None:
        sys.exit("pictures.py needs the real VGG19 weights in ../shared/weights: random ones paint nothing worth showing")
    os.environ["IMPASTO_WEIGHTS"] = weights
    print(f"{note}; {threads_note()}\n")
    OUT.mkdir(parents=True, exist_ok=True)
    made = []
    for section in args.only or ["baseline", "large"]:
        if section == "baseline":
            made.append(section_baseline(OUT, weights))
        elif section == "flat":
            made.append(section_flat(OUT))
        elif section == "web":
            made.append(section_web(OUT))
        else:
            made.append(section_print(OUT, section))
    for path in made:
        if args.docs:
            shutil.copyfile(path, DOCS / path.name)
        print(f"wrote {path}" + (f" and {DOCS / path.name}" if args.docs else ""))
    print(f"\nreproduce: .venv/bin/python benchmarks/pictures.py {' '.join(f'--only {s}' for s in args.only or [])}".rstrip())


if __name__ == "__main__":
    main()
