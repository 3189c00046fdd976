"""Where an output's content distance lies: on the photo's detail, or on its smooth areas.

quality.py's content distance is one number for the whole picture. A change that holds the
photo harder in one place can push the painting's statistics (a Gram matrix is the whole
picture's) into another, and the number alone does not say so. This script splits the VGG16
conv4_2 distance of saved outputs into the share on the photo's detail and the share on its
smooth areas, weighting each feature pixel by the photo's local contrast (the mask of
`--flat-content`, with a floor of 0); the two shares add up to the whole.

    .venv/bin/python benchmarks/content_split.py rocket.png the_scream.jpg OUT/rocket-the_scream-*.jpg

It scores the saved JPEGs (quality 92), so its totals run a little under quality.py's, which
scores each picture before it is saved: compare outputs with each other here, not with the table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_pair, threads_note, yardstick  # noqa: E402

from impasto.images import load_image, pil_to_tensor  # noqa: E402
from impasto.metrics import CONTENT_LAYER  # noqa: E402
from impasto.optimize import flat_weights  # noqa: E402
from impasto.vgg import FeatureExtractor  # noqa: E402


def split(output: torch.Tensor, photo_features: torch.Tensor, detail: torch.Tensor, extractor: FeatureExtractor) -> tuple[float, float]:
    """(on the detail, on the smooth areas) of the relative squared distance |a - b|² / |b|²."""
    error = (extractor(output)[CONTENT_LAYER] - photo_features).pow(2).sum(1, keepdim=True)
    mask = F.interpolate(detail, size=error.shape[-2:], mode="area")
    energy = float(photo_features.pow(2).sum())
    on_detail = float((error * mask).sum()) / energy
    return on_detail, float(error.sum()) / energy - on_detail


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("photo", help="the photo's file name in the shared images, as quality.py takes it")
    p.add_argument("painting")
    p.add_argument("outputs", nargs="+", help="saved outputs of that pair (quality.py's JPEGs)")
    p.add_argument("--size", type=int, default=512)
    args = p.parse_args()
    extractor = yardstick((CONTENT_LAYER,))
    photo, _ = load_pair(args.photo, args.painting, args.size)
    detail = flat_weights(photo, 0)
    print(f"# VGG16 {CONTENT_LAYER} distance split by the photo's detail ({threads_note()})")
    print(f"reproduce: .venv/bin/python benchmarks/content_split.py {' '.join(sys.argv[1:])}\n")
    print(f"the photo's detail covers {float(detail.mean()):.0%} of it (mean weight)\n")
    print("| output | whole | on the detail | on the smooth areas |\n|---|---:|---:|---:|")
    with torch.no_grad():
        target = extractor(photo)[CONTENT_LAYER]
        for path in args.outputs:
            on_detail, on_smooth = split(pil_to_tensor(load_image(path)), target, detail, extractor)
            print(f"| {Path(path).name} | {on_detail + on_smooth:.3f} | {on_detail:.3f} | {on_smooth:.3f} |")


if __name__ == "__main__":
    main()
