"""Independent quality measures: how far an output is from its content and style.

They are meant to be computed with a network the optimisation did not use (the
quality benchmark scores VGG19 runs with VGG16), so an optimiser cannot win by
overfitting its own loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from .losses import content_loss, gram
from .settings import GATYS_STYLE_LAYERS
from .vgg import FeatureExtractor

CONTENT_LAYER = "conv4_2"
STYLE_LAYERS = GATYS_STYLE_LAYERS  # the yardstick's, whatever a run's default becomes


def gram_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative squared distance of Gram matrices: |G(a) - G(b)|² / |G(b)|²; 0 when equal."""
    ga, gb = gram(a), gram(b)
    return float((ga - gb).pow(2).sum() / gb.pow(2).sum().clamp_min(1e-12))


def feature_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative mean squared feature difference: |a - b|² / |b|²; 0 when equal."""
    return float(content_loss(a, b))


@dataclass
class Scores:
    content: float  # distance to the content photo's features (lower: content better kept)
    style: float  # mean Gram distance to the painting over the style layers (lower: style better matched)
    # The style distance of each layer, shallow to deep: which strokes are missing, the fine
    # grain (conv1_1, conv2_1) or the large shapes (conv4_1, conv5_1).
    style_by_layer: dict[str, float] = field(default_factory=dict)


class Scorer:
    """Scores images with a fixed extractor (built with CONTENT_LAYER and STYLE_LAYERS)."""

    def __init__(self, extractor: FeatureExtractor, style_layers: Sequence[str] = STYLE_LAYERS) -> None:
        self.extractor = extractor
        self.style_layers = tuple(style_layers)

    @torch.no_grad()
    def __call__(self, output: torch.Tensor, content: torch.Tensor, style: torch.Tensor) -> Scores:
        fo, fc, fs = self.extractor(output), self.extractor(content), self.extractor(style)
        by_layer = {k: gram_distance(fo[k], fs[k]) for k in self.style_layers}
        style_d = sum(by_layer.values()) / len(by_layer)
        return Scores(content=feature_distance(fo[CONTENT_LAYER], fc[CONTENT_LAYER]), style=style_d, style_by_layer=by_layer)
