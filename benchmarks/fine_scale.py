"""Where a coarse-to-fine run spends its finest scale: the loss on entry, term by term.

    .venv/bin/python benchmarks/fine_scale.py                  # chelsea / starry_night at 512 px
    .venv/bin/python benchmarks/fine_scale.py --iterations 60 --photo astronaut.png

Runs impasto's default coarse scales, upsamples their result to the finest size
as a run does (with and without the photo's detail, --upsample-detail), and
prints the finest-scale objective of that start split into content, TV and each
style layer, next to the same split for the content photo (the textbook run's start) and for the style image upsampled from the coarser
scale (what upsampling alone costs). Then it runs the finest scale and prints the
same split every 10 iterations, so one sees which terms the fine iterations
are spent on.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_pair, threads_note, weights_note  # noqa: E402

from impasto import Settings, Stylizer  # noqa: E402
from impasto import optimize  # noqa: E402
from impasto.images import resize_tensor  # noqa: E402
from impasto.descent import descend  # noqa: E402
from impasto.optimize import Objective, StyleInput, scale_start  # noqa: E402
from impasto.scales import plan_iterations, plan_scales  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photo", default="chelsea.png")
    p.add_argument("--painting", default="starry_night.jpg")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--iterations", type=int, help="finest-scale iterations (default: the default run's)")
    args = p.parse_args()
    weights, note = weights_note()
    if weights is None:
        sys.exit("fine_scale.py needs the real VGG19 in ../shared/weights: with random weights the split means nothing")
    settings = Settings(weights=weights, size=args.size)
    print(f"# finest-scale analysis: {args.photo} / {args.painting} at {args.size} px\n\n{note}; {threads_note()}")
    print(f"reproduce: .venv/bin/python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}".rstrip())
    stylizer = Stylizer(download=False)
    content, style = load_pair(args.photo, args.painting, args.size, settings.style_scale)
    sizes = plan_scales(content.shape[-1], content.shape[-2], settings)
    steps = plan_iterations(len(sizes), settings)
    if len(sizes) < 2:
        sys.exit("this size has one scale: nothing is upsampled")
    # The coarse scales of a real default run (their content weight is set relative to the
    # output's size, so a default run at a smaller size would not do): the run is stopped at
    # the finest scale, and the coarse result it upsamples there is caught on its way in.
    caught: dict[str, object] = {}
    real_start = optimize.scale_start

    def catch(image: torch.Tensor, photo: torch.Tensor, coarse_wh, fine_wh, *rest) -> torch.Tensor:
        entry = real_start(image, photo, coarse_wh, fine_wh, *rest)
        if tuple(fine_wh) == tuple(sizes[-1]):
            caught["image"], caught["seconds"] = image.detach().clone(), time.perf_counter() - start
            caught["entry"] = entry.detach().clone()  # with the grain the run drew
        return entry

    optimize.scale_start = catch
    start = time.perf_counter()
    try:
        stylizer.run(content, style, settings, callback=lambda progress: progress.scale < progress.scales - 1)
    finally:
        optimize.scale_start = real_start
    coarse_image, coarse_s = caught["image"], caught["seconds"]
    w, h = sizes[-1]
    extractor = stylizer.extractor(settings, torch.device("cpu"))
    objective = Objective(extractor, settings, content, [StyleInput(style)], (w, h))
    plain = scale_start(coarse_image, content, sizes[-2], sizes[-1], settings.replace(upsample_detail=0.0, upsample_grain=0.0))
    detailed = scale_start(coarse_image, content, sizes[-2], sizes[-1], settings.replace(upsample_detail=1.0, upsample_grain=0.0))
    entry = caught["entry"]  # what the run starts from: the photo's detail and the painting's grain added
    small_style = resize_tensor(resize_tensor(style, (round(style.shape[-2] / settings.scale_factor), round(style.shape[-1] / settings.scale_factor))), style.shape[-2:])
    # Style terms only: no content target is wanted at the painting's size.
    style_settings = settings.replace(content_layers=())
    style_objective = Objective(extractor, style_settings, content, [StyleInput(style)], (style.shape[-1], style.shape[-2]))

    rows = {
        "content photo (the textbook start)": objective.terms(content),
        f"coarse result, plain upsampling (after {coarse_s:.0f} s of coarse scales)": objective.terms(plain),
        "coarse result upsampled with the photo's detail": objective.terms(detailed),
        "the start the run used (its upsample_grain's grain, if any, added)": objective.terms(entry),
    }
    up = style_objective.terms(small_style)
    rows["the painting, down and up by the scale factor"] = {k: (v if k.startswith("conv") else float("nan")) for k, v in up.items()}
    param = entry.clone()
    n = args.iterations if args.iterations is not None else steps[-1]
    for step in descend(objective, param, n, settings):
        if step.number % 10 == 0 or step.number == n:
            rows[f"after {step.number} finest iterations"] = objective.terms(param.detach())
    keys = ["total", "content", "tv", *settings.style_layers]
    print("\nweighted terms of the finest-scale objective (content weight x content loss, style weight x layer weight x layer loss):\n")
    print("| image | " + " | ".join(keys) + " |\n|---|" + "---:|" * len(keys))
    for name, values in rows.items():
        print(f"| {name} | " + " | ".join("—" if values[k] != values[k] else f"{values[k]:.3f}" for k in keys) + " |")


if __name__ == "__main__":
    main()
