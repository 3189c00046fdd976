"""The quality benchmark's measures (impasto.metrics) on inputs with known answers."""

from __future__ import annotations

import pytest
import torch

from impasto.metrics import CONTENT_LAYER, STYLE_LAYERS, Scorer, feature_distance, gram_distance
from impasto.vgg import FeatureExtractor


def test_gram_distance_hand_value():
    # One channel, values 1 and 3: G = (1 + 9) / 2 = 5. Against values 1 and 1: G = 1.
    a = torch.tensor([1.0, 3.0]).view(1, 1, 1, 2)
    b = torch.tensor([1.0, 1.0]).view(1, 1, 1, 2)
    assert gram_distance(a, b) == pytest.approx((5 - 1) ** 2 / 1**2)
    assert gram_distance(a, a) == 0.0


def test_gram_distance_ignores_pixel_order_but_not_scale():
    a = torch.randn(1, 4, 5, 6)
    shuffled = a.flatten(2)[..., torch.randperm(30)].view(1, 4, 5, 6)
    assert gram_distance(shuffled, a) == pytest.approx(0.0, abs=1e-6)
    assert gram_distance(2 * a, a) == pytest.approx(9.0, rel=1e-5)  # (4G - G)² / G²


def test_feature_distance_hand_value():
    target = torch.tensor([1.0, -1.0, 2.0, 0.0]).view(1, 1, 2, 2)
    output = torch.tensor([1.0, 1.0, 2.0, 0.0]).view(1, 1, 2, 2)
    # mean((o - t)²) = 4 / 4 = 1, mean(t²) = 6 / 4
    assert feature_distance(output, target) == pytest.approx(1 / 1.5, rel=1e-6)
    assert feature_distance(target, target) == 0.0


def test_scorer_is_zero_on_its_own_inputs_and_orders_images(vgg19_features):
    extractor = FeatureExtractor("vgg19", vgg19_features, (CONTENT_LAYER, *STYLE_LAYERS), "max", "torchvision")
    scorer = Scorer(extractor)
    g = torch.Generator().manual_seed(0)
    content = torch.rand(1, 3, 40, 48, generator=g)
    style = torch.rand(1, 3, 40, 48, generator=g) * 0.3 + 0.6
    at_content = scorer(content, content, style)
    at_style = scorer(style, content, style)
    assert at_content.content == pytest.approx(0.0, abs=1e-6)
    assert at_style.style == pytest.approx(0.0, abs=1e-6)
    assert at_content.style > at_style.style
    assert at_style.content > at_content.content


def test_the_style_distance_is_the_mean_of_each_layers_which_says_where_the_painting_is_missing(vgg19_features):
    extractor = FeatureExtractor("vgg19", vgg19_features, (CONTENT_LAYER, *STYLE_LAYERS), "max", "torchvision")
    g = torch.Generator().manual_seed(1)
    content = torch.rand(1, 3, 40, 48, generator=g)
    style = torch.rand(1, 3, 40, 48, generator=g) * 0.3 + 0.6
    at_content, at_style = Scorer(extractor)(content, content, style), Scorer(extractor)(style, content, style)
    assert list(at_content.style_by_layer) == list(STYLE_LAYERS)
    assert at_content.style == pytest.approx(sum(at_content.style_by_layer.values()) / len(STYLE_LAYERS))
    assert all(v > 0 for v in at_content.style_by_layer.values())
    assert all(v == pytest.approx(0.0, abs=1e-6) for v in at_style.style_by_layer.values())
