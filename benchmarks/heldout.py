"""Held-out inputs: the default on kinds of picture the quality benchmark's pairs are not.

The quality benchmark's 12 pairs chose the defaults, so they cannot show how the defaults
generalise. This script makes eleven other inputs from the same public-domain files (a
greyscale photo, a tall crop, a 3:1 panorama, a 160 px painting, a cut-out on white, a grey
backdrop with a camera's noise, a flat-colour graphic, a line drawing, a painting as the photo,
and two kinds of painting unlike the benchmark's three: a pointillist one of separate dots and a
mosaic of flat tiles, both made from photos) and renders each with the
default settings, into one labelled sheet to look at. There is no score: it is a check
by eye, for grey casts, noise, seams and patterns the benchmark's pairs would not show.

    .venv/bin/python benchmarks/heldout.py            # 512 px, ~11 min here (~75 min on an AVX2-only CPU in fp32)
    .venv/bin/python benchmarks/heldout.py --only line_drawing --only flat-colour_graphic
    .venv/bin/python benchmarks/heldout.py --reuse   # keep pictures made with the same settings

Each picture is saved as NAME-SIZE-KEY.png, KEY being the hash of the settings it ran with (as
quality.py names its images), so --reuse keeps only what the current default would make again.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import IMAGES, WEIGHTS, settings_key, threads_note  # noqa: E402

from impasto import Settings, Stylizer  # noqa: E402
from impasto.sweep import labelled_sheet  # noqa: E402


def _open(name: str) -> Image.Image:
    return Image.open(IMAGES / name).convert("RGB")


def grey_photo() -> Image.Image:
    return _open("chelsea.png").convert("L").convert("RGB")


def tall_crop() -> Image.Image:
    return _open("astronaut.png").crop((100, 0, 356, 512))


def panorama() -> Image.Image:
    rocket = _open("rocket.png")
    middle = rocket.height // 2
    return rocket.crop((0, middle - 100, rocket.width, middle + 100))


def small_painting() -> Image.Image:
    painting = _open("starry_night.jpg")
    painting.thumbnail((160, 160))
    return painting


def cut_out_on_white() -> Image.Image:
    """A product shot's transparent background, flattened on white: a flat quarter."""
    photo = _open("coffee.png")
    ImageDraw.Draw(photo).rectangle((0, 0, photo.width // 4, photo.height), fill="white")
    return photo


def backdrop_with_noise() -> Image.Image:
    """A studio shot's plain grey backdrop as a camera gives it: a quarter of one grey with its
    pixel noise (3 grey levels in each channel), which must not hide that it is flat."""
    photo = np.asarray(_open("coffee.png")).astype(np.float32)
    quarter = photo.shape[1] // 4
    noise = np.random.default_rng(0).normal(0, 3, (photo.shape[0], quarter, 3))
    photo[:, :quarter] = 225 + noise
    return Image.fromarray(photo.clip(0, 255).round().astype(np.uint8))


def flat_colour_graphic() -> Image.Image:
    """Flat colour fields and black bars, in the manner of a Mondrian composition."""
    art = Image.new("RGB", (600, 600), "white")
    draw = ImageDraw.Draw(art)
    for box, colour in [((0, 0, 380, 240), (220, 30, 30)), ((390, 250, 600, 600), (20, 40, 160)),
                        ((0, 430, 180, 600), (240, 200, 20)), ((390, 0, 600, 120), (240, 200, 20))]:
        draw.rectangle(box, fill=colour)
    for at in (180, 380, 390):
        draw.rectangle((at, 0, at + 12, 600), fill="black")
    for at in (120, 240, 430):
        draw.rectangle((0, at, 600, at + 12), fill="black")
    return art


def line_drawing() -> Image.Image:
    edges = ImageOps.invert(_open("coffee.png").convert("L").filter(ImageFilter.FIND_EDGES))
    return edges.point(lambda v: 255 if v > 200 else int(v * 0.6)).convert("RGB")


def pointillist() -> Image.Image:
    """Dots of nine pure colours on a cream ground, each the one nearest the rocket photo's
    colour under it, in the manner of Seurat: a style of small, regular, separate marks."""
    photo = np.asarray(_open("rocket.png").resize((800, 534))).astype(np.float32)
    inks = np.array([(230, 60, 40), (250, 200, 40), (60, 140, 60), (40, 90, 200), (240, 240, 220),
                     (120, 60, 140), (250, 140, 60), (30, 40, 80), (150, 200, 230)], np.float32)  # fmt: skip
    rng = np.random.default_rng(0)
    art = Image.new("RGB", (800, 534), (235, 225, 200))
    draw = ImageDraw.Draw(art)
    for x, y in zip(rng.integers(0, 800, 26000), rng.integers(0, 534, 26000)):
        colour = photo[y, x] + rng.normal(0, 25, 3)  # the jitter mixes neighbouring inks, as Seurat's did
        ink = inks[np.argmin(((inks - colour) ** 2).sum(1))]
        draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=tuple(int(v) for v in ink))
    return art


def mosaic() -> Image.Image:
    """The coffee photo as 500 flat tiles of irregular shape (a Voronoi diagram) in grey grout:
    a style of large flat cells with hard edges."""
    photo = np.asarray(_open("coffee.png").resize((600, 400))).astype(np.float32)
    rng = np.random.default_rng(0)
    seeds = np.stack([rng.uniform(0, 600, 500), rng.uniform(0, 400, 500)], 1)
    yy, xx = np.mgrid[0:400, 0:600].astype(np.float32)
    nearest = np.full(yy.shape, np.inf, np.float32)
    second = nearest.copy()
    tile = np.zeros(yy.shape, np.int64)
    for i, (sx, sy) in enumerate(seeds):  # the nearest seed and the distance to the next: a tile and its edge
        d = np.hypot(xx - sx, yy - sy)
        closer = d < nearest
        second = np.where(closer, nearest, np.minimum(second, d))
        tile = np.where(closer, i, tile)
        nearest = np.where(closer, d, nearest)
    counts = np.bincount(tile.ravel(), minlength=len(seeds))[:, None].clip(1)
    means = np.stack([np.bincount(tile.ravel(), photo[..., c].ravel(), len(seeds)) for c in range(3)], 1) / counts
    art = means[tile]
    art[second - nearest < 2.5] = (90, 90, 85)
    return Image.fromarray(art.round().astype(np.uint8))


Case = tuple[str, Callable[[], Image.Image], Callable[[], Image.Image]]
CASES: list[Case] = [
    ("greyscale photo", grey_photo, lambda: _open("starry_night.jpg")),
    ("tall crop (1:2)", tall_crop, lambda: _open("the_scream.jpg")),
    ("panorama (3.2:1)", panorama, lambda: _open("starry_night.jpg")),
    ("160 px painting", lambda: _open("chelsea.png"), small_painting),
    ("cut-out on white", cut_out_on_white, lambda: _open("shipwreck.jpg")),
    ("backdrop with noise", backdrop_with_noise, lambda: _open("the_scream.jpg")),
    ("flat-colour graphic", lambda: _open("astronaut.png"), flat_colour_graphic),
    ("line drawing", lambda: _open("chelsea.png"), line_drawing),
    ("painting as photo", lambda: _open("the_scream.jpg"), lambda: _open("starry_night.jpg")),
    ("pointillist painting", lambda: _open("chelsea.png"), pointillist),
    ("mosaic", lambda: _open("astronaut.png"), mosaic),
]


def _file_name(label: str) -> str:
    return label.split(" (")[0].replace(" ", "_")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "heldout"))
    parser.add_argument("--only", action="append", choices=[_file_name(c[0]) for c in CASES], help="one input (repeatable); default: all")
    parser.add_argument("--reuse", action="store_true", help="keep an input's picture already in --out from the same settings (the same KEY) instead of redoing it")
    args = parser.parse_args()
    if not (WEIGHTS / "vgg19-caffe-features.safetensors").is_file():
        sys.exit(f"needs the real VGG19 in {WEIGHTS}: pictures from random weights would show nothing")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stylizer = Stylizer(download=False)
    settings = Settings(weights=str(WEIGHTS), size=args.size)
    print(f"default settings at {args.size} px; {threads_note()}")
    rows, labels = [], []
    key = settings_key(settings)
    for label, make_photo, make_painting in CASES:
        if args.only and _file_name(label) not in args.only:
            continue
        photo, painting = make_photo(), make_painting()
        saved = out / f"{_file_name(label)}-{args.size}-{key}.png"
        if args.reuse and saved.is_file():
            image = Image.open(saved).convert("RGB")
            print(f"{label:22s} kept {saved.name}", flush=True)
        else:
            started = time.perf_counter()
            result = stylizer.run(photo, painting, settings)
            seconds = time.perf_counter() - started
            image = result.image
            image.save(saved)
            print(f"{label:22s} {photo.width}x{photo.height} in the style of {painting.width}x{painting.height}: "
                  f"{seconds:5.1f} s, final loss {result.losses.get('total', float('nan')):.3f}, flat content {result.settings.flat_content:g}",
                  flush=True)  # fmt: skip
        cell = args.size // 2
        rows.append([im.copy() for im in (photo, painting, image)])
        for im in rows[-1]:
            im.thumbnail((cell, cell))
        labels.append(label)
    sheet, _ = labelled_sheet(rows, ["photo", "painting", "impasto default"], labels, "held-out inputs, default settings")
    sheet.save(out / "sheet.jpg", quality=90)
    print(f"sheet: {out / 'sheet.jpg'}")
    only = "".join(f" --only {name}" for name in args.only or ())
    print(f"settings key {key}; reproduce: .venv/bin/python benchmarks/heldout.py --size {args.size}{only}")


if __name__ == "__main__":
    main()
