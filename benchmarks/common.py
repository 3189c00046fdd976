"""Shared pieces of the benchmarks: weights, images, the textbook baseline."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Optional

import torch

from impasto import Settings
from impasto.device import mixed_precision
from impasto.images import load_image, pil_to_tensor, resize_long_side
from impasto import weights as W
from impasto.optimize import Objective, StyleInput
from impasto.vgg import FeatureExtractor
from impasto.settings import without_unchanged

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
IMAGES = SHARED / "images"
WEIGHTS = SHARED / "weights"


def weights_note() -> tuple[Optional[str], str]:
    """(weights folder or None, a sentence saying which weights the figures used)."""
    if (WEIGHTS / "vgg19-caffe-features.safetensors").is_file():
        return str(WEIGHTS), f"real ImageNet VGG19 weights from {WEIGHTS}"
    return None, "RANDOM VGG19 weights (../shared/weights not found): timings are valid, losses and pictures are not"


def random_weights_file(folder: Path) -> str:
    """A random-init VGG19 features file, for machines without the real one."""
    from safetensors.torch import save_file

    from impasto.vgg import build_features

    torch.manual_seed(0)
    net = build_features("vgg19")
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            torch.nn.init.zeros_(m.bias)
    path = folder / "vgg19-random-features.safetensors"
    save_file({f"features.{k}": v.contiguous() for k, v in net.state_dict().items()}, str(path), {"arch": "vgg19", "input": "torchvision"})
    return str(path)


def yardstick(layers: tuple[str, ...]) -> FeatureExtractor:
    """The shared VGG16 that the quality figures are scored with, giving `layers`."""
    vgg16 = W.load(WEIGHTS / "vgg16-caffe-features.safetensors")
    # It pools as torchvision's VGG16 does (and as every session's figures were scored),
    # whatever impasto's own network does at odd sizes: figures stay comparable.
    return FeatureExtractor("vgg16", vgg16.state_dict, layers, "max", vgg16.convention, odd_edges=False)


def load_pair(content: str, style: str, size: int, style_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    c = pil_to_tensor(resize_long_side(load_image(IMAGES / content), size))
    s = pil_to_tensor(resize_long_side(load_image(IMAGES / style), round(size * style_scale)))
    return c, s


def textbook_baseline(
    objective: Objective, content: torch.Tensor, evaluations: int, log: list[tuple[float, float]]
) -> torch.Tensor:
    """The official PyTorch tutorial's loop: L-BFGS over the full-size image from the content.

    torch.optim.LBFGS with its defaults (20 iterations per step, no line
    search), pixels clamped inside the closure, stopping after `evaluations`
    closure calls. `log` receives (seconds, loss) per evaluation.
    """
    image = content.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([image])
    start = time.perf_counter()
    count = [0]

    def closure() -> torch.Tensor:
        with torch.no_grad():
            image.clamp_(0, 1)
        optimizer.zero_grad()
        loss, _ = objective(image)
        loss.backward()
        count[0] += 1
        log.append((time.perf_counter() - start, float(loss.detach())))
        return loss

    while count[0] < evaluations:
        # A step evaluates up to max_iter times; shorten the last one so the count is exact
        # (otherwise 66 evaluations would run 80). A multiple of 20 is the tutorial's loop as is.
        optimizer.param_groups[0]["max_iter"] = min(20, evaluations - count[0])
        optimizer.step(closure)
    with torch.no_grad():
        image.clamp_(0, 1)
    return image.detach()


def baseline_objective(extractor, settings: Settings, content: torch.Tensor, style: torch.Tensor) -> Objective:
    """The textbook's objective at the content's size: `settings`' content layers alone (no fine ones)."""
    w, h = content.shape[-1], content.shape[-2]
    return Objective(extractor, settings.replace(fine_content_layers=()), content, [StyleInput(style)], (w, h))


def threads_note() -> str:
    return f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs"


def settings_key(settings: Settings) -> str:
    """A short hash of what a run computes, for file names and records a later run may reuse."""
    # The setting `precision` is replaced by the arithmetic it resolves to on this CPU, and
    # left out where that is fp32, so records made before the setting existed still match.
    data = {k: v for k, v in settings.to_dict().items() if k != "precision"}
    # The weights by name, not by path: the same records then serve any checkout.
    data["weights"] = Path(data["weights"]).name if data.get("weights") else data.get("weights")
    # Settings added later, at the values earlier records ran with, are left out: the tile here
    # (batch indexes and video frames of session 8 already hold it), the others as identity() does.
    if data.get("tile") == 0:
        del data["tile"]
    data = without_unchanged(data)
    arithmetic = mixed_precision(settings, torch.device("cpu"))
    if arithmetic is not None:
        data["arithmetic"] = str(arithmetic)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]
