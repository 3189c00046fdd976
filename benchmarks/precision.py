"""Mixed precision against fp32: the same default run in each, on the device at hand.

    .venv/bin/python benchmarks/precision.py                      # fp16 against fp32, 512 px on the best device here
    .venv/bin/python benchmarks/precision.py --device cpu --against bf16   # a CPU with native bf16
    .venv/bin/python benchmarks/precision.py --size 1024 --device cuda
    .venv/bin/python benchmarks/precision.py --size 64 --device cpu   # a quick check of the fp16 maths

`--precision auto` runs the network's passes in fp16 on CUDA (losses in fp32, the loss
scaled against underflow) and in bf16 on a CPU that computes bf16 natively. This prints,
for fp32 and for the mixed precision (`--against`), the wall time and the result's loss
scored by one fp32 objective at the output's size (so the two are compared on the same
scale), and how far the two pictures are apart. fp16 on a CPU is emulated and slow
(~25x): only small sizes make sense there.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_pair, threads_note, weights_note  # noqa: E402

from impasto import Settings, Stylizer  # noqa: E402
from impasto.images import pil_to_tensor  # noqa: E402
from impasto.optimize import Objective, StyleInput  # noqa: E402
from impasto.device import resolve_device  # noqa: E402

CONTENT, STYLE = "chelsea.png", "starry_night.jpg"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--device", default="auto")
    p.add_argument("--against", default="fp16", help="the mixed precision compared with fp32: fp16 or bf16")
    args = p.parse_args()
    weights, note = weights_note()
    if weights is None:
        sys.exit("precision.py needs the real VGG19 in ../shared/weights: with random weights the losses mean nothing")
    device = resolve_device(args.device)
    settings = Settings(weights=weights, size=args.size, device=str(device), seed=0)
    print(f"# {args.against} mixed precision against fp32: {CONTENT} / {STYLE} at {args.size} px on {device}\n")
    print(f"{note}; {threads_note()}")
    if device.type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(device)}")
    print(f"reproduce: .venv/bin/python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}".rstrip())
    stylizer = Stylizer(download=False)
    content, style = load_pair(CONTENT, STYLE, args.size, settings.style_scale)
    content, style = content.to(device), style.to(device)
    # One fp32 objective at the output's size scores both results (an Objective called outside
    # autocast is fp32 whatever its settings' precision: that setting is the run loop's).
    judge = Objective(stylizer.extractor(settings, device), settings, content, [StyleInput(style)],
                      (content.shape[-1], content.shape[-2]))  # fmt: skip
    rows, pictures = [], {}
    for precision in ("fp32", args.against):
        run = settings.replace(precision=precision)
        stylizer.run(content, style, run.replace(iterations=1, initial_iterations=1, size=min(64, args.size)))  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        result = stylizer.run(content, style, run)
        seconds = time.perf_counter() - start
        peak = f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f}" if device.type == "cuda" else "—"
        with torch.no_grad():
            scored = float(judge(pil_to_tensor(result.image, device))[0])
        pictures[precision] = np.asarray(result.image, dtype=np.float64)
        rows.append((precision, seconds, scored, peak))
    print("\n| precision | wall s | loss (fp32 objective) | peak GPU MiB |\n|---|---:|---:|---:|")
    for precision, seconds, scored, peak in rows:
        print(f"| {precision} | {seconds:.1f} | {scored:.4f} | {peak} |")
    (_, t32, l32, _), (_, t16, l16, _) = rows
    diff = np.abs(pictures[args.against] - pictures["fp32"])
    print(f"\n{args.against} against fp32: {t32 / t16:.2f}x the speed, loss {l16 / l32:.3f}x; "
          f"pictures differ by {diff.mean():.2f} levels of 255 on average ({np.percentile(diff, 99):.0f} at the 99th percentile)")  # fmt: skip


if __name__ == "__main__":
    main()
