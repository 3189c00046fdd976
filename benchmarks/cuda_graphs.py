"""CUDA graphs against launching each kernel: the same run both ways, for several settings, on a GPU.

    .venv/bin/python benchmarks/cuda_graphs.py                 # 512 px, chelsea / starry_night, cuda
    .venv/bin/python benchmarks/cuda_graphs.py --size 1024 --device cuda:1

On CUDA a descent records each scale's network and loss passes once as a CUDA graph and
replays it (`--cuda-graphs`, the default); `--no-cuda-graphs` launches each kernel from
Python, as every run did before session 30. This prints, for each setting, both runs' wall
time and final loss, in one process, after one run that pays CUDA's and torch's own start-up
(Adam's first step imports a good deal of torch) so that no row pays it, and any warning a
run gave. The two runs of a row compute the same arithmetic: their losses agree to the digits
cuDNN's sums allow.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_pair, random_weights_file, weights_note  # noqa: E402

from impasto import Settings, Stylizer  # noqa: E402
from impasto.device import resolve_device  # noqa: E402

CONTENT, STYLE = "chelsea.png", "starry_night.jpg"

# Each a setting whose passes differ from the default's (W2 is never graphed: optimize.uses_cuda_graph).
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "fp32": {"precision": "fp32"},
    "w2 (not graphed)": {"style_loss": "w2"},
    "meanstd": {"style_loss": "meanstd"},
    "adam, 100 iterations": {"optimizer": "adam", "iterations": 100},
    "style chain": {"style_chain": True, "gram_shift": -1.0},
    "histogram colours": {"preserve_color": "histogram"},
    "flat content 0.5": {"flat_content": 0.5},
    "1.5x size in tiles": {"size_factor": 1.5, "tile": 320},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--device", default="cuda")
    args = p.parse_args()
    device = resolve_device(args.device)
    if device.type != "cuda":
        sys.exit(f"CUDA graphs need a CUDA device; {args.device} is {device}")
    weights, note = weights_note()
    tmp = tempfile.TemporaryDirectory()
    if weights is None:
        weights = random_weights_file(Path(tmp.name))
    print(f"# CUDA graphs against launching each kernel\n\n{note}; torch {torch.__version__}; {torch.cuda.get_device_name(device)}")
    print(f"reproduce: .venv/bin/python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}".rstrip())
    stylizer = Stylizer(download=False)
    base = Settings(weights=weights, device=str(device))
    pictures = {}

    def run(given: dict[str, Any], graphs: bool) -> tuple[float, float, str]:
        given = dict(given)
        size = round(args.size * given.pop("size_factor", 1.0))
        if size not in pictures:
            pictures[size] = load_pair(CONTENT, STYLE, size)
        settings = base.replace(size=size, cuda_graphs=graphs, **given)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.synchronize(device)
            start = time.perf_counter()
            result = stylizer.run(*pictures[size], settings)
            torch.cuda.synchronize(device)
            seconds = time.perf_counter() - start
        return seconds, result.losses["total"], "; ".join(str(w.message) for w in caught)

    for graphs in (True, False):  # start-up, for both paths and for Adam
        run({"size_factor": 0.25, "optimizer": "adam", "iterations": 4, "initial_iterations": 4}, graphs)
    print(f"\n{args.size} px, {CONTENT} in the style of {STYLE}\n")
    print("| settings | graphs: wall s | loss | launched: wall s | loss | speed-up |")
    print("|---|---:|---:|---:|---:|---:|")
    said = []
    for name, given in VARIANTS.items():
        (fast, fast_loss, w1), (slow, slow_loss, w2) = run(given, True), run(given, False)
        said += [f"{name}: {w}" for w in (w1, w2) if w]
        print(f"| {name} | {fast:.2f} | {fast_loss:.4f} | {slow:.2f} | {slow_loss:.4f} | {slow / fast:.2f}x |", flush=True)
    for line in said:
        print(f"\nwarning, {line}")


if __name__ == "__main__":
    main()
