"""Layer naming, the cut, freezing, pooling and input normalisation of the VGG extractor."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from impasto.errors import ImpastoError
from impasto.layers import conv_indices, layer_names
from impasto.vgg import FeatureExtractor, Normalize, build_features

# Positions in torchvision's vgg16().features / vgg19().features, copied from torchvision.
TORCHVISION = {
    "vgg16": {"convs": [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28], "pools": [4, 9, 16, 23, 30]},
    "vgg19": {"convs": [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34], "pools": [4, 9, 18, 27, 36]},
}


@pytest.mark.parametrize("model", ["vgg16", "vgg19"])
def test_layer_names_follow_torchvision_positions(model):
    names = layer_names(model)
    convs, pools = TORCHVISION[model]["convs"], TORCHVISION[model]["pools"]
    assert len(names) == pools[-1] + 1
    assert (names[0], names[-1]) == ("conv1_1", "pool5")
    assert [i for i, n in enumerate(names) if n.startswith("conv")] == convs
    assert conv_indices(model) == convs
    assert [names.index(f"pool{b}") for b in range(1, 6)] == pools
    for i in convs:  # every conv is followed by its ReLU
        assert names[i + 1] == "relu" + names[i][len("conv"):]
    features = build_features(model)
    assert len(features) == len(names)
    assert [i for i, m in enumerate(features) if isinstance(m, nn.Conv2d)] == convs
    assert len(set(names)) == len(names)


@pytest.mark.parametrize(
    "model, layer, index",
    [("vgg19", "conv1_1", 0), ("vgg19", "pool1", 4), ("vgg19", "conv4_2", 21), ("vgg19", "conv5_1", 28),
     ("vgg19", "conv5_4", 34), ("vgg16", "conv4_2", 19), ("vgg16", "conv5_1", 24), ("vgg16", "conv5_3", 28)],
)
def test_named_layer_positions(model, layer, index):
    assert layer_names(model).index(layer) == index


def test_unknown_model_and_layer_are_user_errors(vgg19_features):
    with pytest.raises(ImpastoError, match="vgg11"):
        layer_names("vgg11")
    with pytest.raises(ImpastoError, match="conv6_1"):
        FeatureExtractor("vgg19", vgg19_features, ["conv6_1"])
    with pytest.raises(ImpastoError, match="conv5_4"):
        FeatureExtractor("vgg16", vgg19_features, ["conv5_4"])  # VGG16 has three convs in block 5


@pytest.mark.parametrize(
    "layers, depth",
    [(["conv1_1"], 1), (["relu1_2"], 4), (["conv4_2"], 22), (["conv5_1", "conv1_1"], 29), (["pool5"], 37)],
)
def test_extractor_is_cut_after_the_deepest_layer(vgg19_features, layers, depth):
    extractor = FeatureExtractor("vgg19", vgg19_features, layers)
    assert extractor.depth == depth
    assert len(extractor.features) == depth


def test_extractor_is_frozen_and_in_eval_mode_but_passes_gradients_to_the_image(vgg19_features):
    extractor = FeatureExtractor("vgg19", vgg19_features, ["conv2_1"])
    assert not extractor.training
    assert all(not m.training for m in extractor.modules())
    assert all(not p.requires_grad for p in extractor.parameters())
    image = torch.rand(1, 3, 16, 16, requires_grad=True)
    extractor(image)["conv2_1"].pow(2).sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
    assert all(p.grad is None for p in extractor.parameters())


def test_extractor_returns_exactly_the_requested_layers(vgg19_features):
    expected = {  # (channels, height, width) for a 64x48 (HxW) input
        "conv1_1": (64, 64, 48),
        "relu2_1": (128, 32, 24),
        "pool2": (128, 16, 12),
        "conv3_1": (256, 16, 12),
        "conv4_2": (512, 8, 6),
        "conv5_1": (512, 4, 3),
    }
    extractor = FeatureExtractor("vgg19", vgg19_features, list(expected))
    with torch.no_grad():
        out = extractor(torch.rand(1, 3, 64, 48))
    assert set(out) == set(expected)
    assert {k: tuple(v.shape[1:]) for k, v in out.items()} == expected
    assert (out["relu2_1"] >= 0).all()


def test_a_stand_in_for_a_layers_relu_feeds_the_layers_after_it(vgg19_features):
    # forward's relu_with: what the stand-in returns is what the next layer gets.
    extractor = FeatureExtractor("vgg19", vgg19_features, ["conv1_1", "conv2_1"])
    image = torch.rand(1, 3, 32, 24)
    with torch.no_grad():
        plain = extractor(image)
        same = extractor(image, {"conv1_1": torch.relu})
        cut = extractor(image, {"conv1_1": torch.zeros_like})
    assert torch.equal(same["conv2_1"], plain["conv2_1"]) and torch.equal(cut["conv1_1"], plain["conv1_1"])
    assert not torch.allclose(cut["conv2_1"], plain["conv2_1"])
    assert extractor.relu_follows("conv1_1") and not extractor.relu_follows("conv2_1")  # the cut is after conv2_1
    with pytest.raises(ValueError, match="no ReLU follows conv2_1"):
        extractor(image, {"conv2_1": torch.relu})


def test_extractor_uses_the_given_weights(vgg19_features):
    extractor = FeatureExtractor("vgg19", vgg19_features, ["conv1_1", "conv1_2"], convention="torchvision")
    image = torch.rand(1, 3, 12, 10)
    with torch.no_grad():
        out = extractor(image)
    x = Normalize("torchvision")(image)
    conv1_1 = F.conv2d(x, vgg19_features["0.weight"], vgg19_features["0.bias"], padding=1)
    conv1_2 = F.conv2d(F.relu(conv1_1), vgg19_features["2.weight"], vgg19_features["2.bias"], padding=1)
    assert torch.allclose(out["conv1_1"], conv1_1, atol=1e-5)
    assert torch.allclose(out["conv1_2"], conv1_2, atol=1e-5)


@pytest.mark.parametrize("pooling, reference, module", [("avg", F.avg_pool2d, nn.AvgPool2d), ("max", F.max_pool2d, nn.MaxPool2d)])
def test_pooling_kind(vgg19_features, pooling, reference, module):
    extractor = FeatureExtractor("vgg19", vgg19_features, ["relu1_2", "pool1", "pool2"], pooling=pooling)
    assert isinstance(extractor.features[4], module) and isinstance(extractor.features[9], module)
    with torch.no_grad():
        out = extractor(torch.rand(1, 3, 16, 16))
    assert torch.allclose(out["pool1"], reference(out["relu1_2"], 2, 2))


@pytest.mark.parametrize("pooling", ["avg", "max"])
def test_every_row_and_column_of_an_odd_sized_picture_reaches_the_deepest_layer(vgg19_features, pooling):
    """170 rows: floor pooling dropped the last 10 from conv5_1, so nothing styled the bottom edge."""
    extractor = FeatureExtractor("vgg19", vgg19_features, ["conv5_1"], pooling=pooling)
    image = torch.rand(1, 3, 170, 170, generator=torch.Generator().manual_seed(0), requires_grad=True)
    extractor(image)["conv5_1"].square().sum().backward()
    reached = image.grad.abs().sum(dim=(0, 1))
    rows, columns = reached.sum(dim=1), reached.sum(dim=0)
    # The bottom edge as strongly tied to the deep layer as the top edge (floor: a third as strongly).
    for profile in (rows, columns):
        assert profile[-10:].sum() > 0.8 * profile[:10].sum(), (profile[:10], profile[-10:])


def test_a_half_empty_average_window_counts_its_missing_pixels_as_zeros():
    """So an odd last row gets the gradient every other row gets, not twice it at each pooling
    (which painted the last rows dark)."""
    pool = build_features("vgg19", "avg", upto=4)[4]
    x = torch.ones(1, 1, 3, 4, requires_grad=True)
    out = pool(x)
    assert out.flatten().tolist() == [1.0, 1.0, 0.5, 0.5]
    out.sum().backward()
    assert torch.equal(x.grad, torch.full_like(x, 0.25))


@pytest.mark.parametrize("pooling, reference", [("avg", F.avg_pool2d), ("max", F.max_pool2d)])
def test_torchvisions_pooling_is_kept_for_a_fixed_yardstick(vgg19_features, pooling, reference):
    """The quality benchmark scores with odd_edges=False: the network every session's figures used."""
    extractor = FeatureExtractor("vgg19", vgg19_features, ["relu1_2", "pool1"], pooling=pooling, odd_edges=False)
    with torch.no_grad():
        out = extractor(torch.rand(1, 3, 15, 17))
    assert out["pool1"].shape[-2:] == (7, 8)
    assert torch.allclose(out["pool1"], reference(out["relu1_2"], 2, 2))


def test_avg_and_max_pooling_give_different_features(vgg19_features):
    image = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        avg = FeatureExtractor("vgg19", vgg19_features, ["conv2_1"], pooling="avg")(image)["conv2_1"]
        max_ = FeatureExtractor("vgg19", vgg19_features, ["conv2_1"], pooling="max")(image)["conv2_1"]
    assert not torch.allclose(avg, max_, atol=1e-3)


def test_normalize_caffe_is_bgr_0_255_mean_subtracted():
    r, g, b = 0.2, 0.5, 0.9
    out = Normalize("caffe")(torch.tensor([r, g, b]).view(1, 3, 1, 1)).flatten()
    expected = torch.tensor([b * 255 - 103.939, g * 255 - 116.779, r * 255 - 123.68])
    assert torch.allclose(out, expected, atol=1e-3)


def test_normalize_torchvision_is_imagenet_mean_std():
    pixel = torch.tensor([0.2, 0.5, 0.9])
    out = Normalize("torchvision")(pixel.view(1, 3, 1, 1)).flatten()
    expected = (pixel - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(out, expected, atol=1e-5)


def test_normalize_unknown_convention():
    with pytest.raises(ImpastoError, match="convention"):
        Normalize("tensorflow")


def test_caffe_extractor_feeds_bgr_pixels_to_the_first_conv(vgg19_features):
    extractor = FeatureExtractor("vgg19", vgg19_features, ["conv1_1"], convention="caffe")
    image = torch.rand(1, 3, 6, 5)
    bgr = image.flip(1) * 255 - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    expected = F.conv2d(bgr, vgg19_features["0.weight"], vgg19_features["0.bias"], padding=1)
    with torch.no_grad():
        assert torch.allclose(extractor(image)["conv1_1"], expected, rtol=1e-4, atol=1e-2)


def reference_features(weights: dict[str, torch.Tensor], image: torch.Tensor, upto: int) -> list[torch.Tensor]:
    """torchvision's VGG19 `features` written out with functional ops: the output of every module up to `upto`."""
    x, outs = Normalize("torchvision")(image), []
    for i, name in enumerate(layer_names("vgg19")[: upto + 1]):
        if name.startswith("conv"):
            x = F.conv2d(x, weights[f"{i}.weight"], weights[f"{i}.bias"], padding=1)
        elif name.startswith("relu"):
            x = F.relu(x)
        else:
            x = F.avg_pool2d(x, 2, 2)
        outs.append(x)
    return outs


def test_features_and_image_gradients_match_a_functional_vgg(vgg19_features):
    layers = ["conv1_1", "relu1_2", "conv2_2", "conv3_1"]
    names = layer_names("vgg19")
    extractor = FeatureExtractor("vgg19", vgg19_features, layers, pooling="avg")
    image = torch.rand(1, 3, 16, 12, requires_grad=True)
    out = extractor(image)
    mine = sum(out[k].pow(2).mean() for k in layers)
    (grad,) = torch.autograd.grad(mine, image)
    reference_image = image.detach().clone().requires_grad_(True)
    ref = reference_features(vgg19_features, reference_image, names.index("conv3_1"))
    theirs = sum(ref[names.index(k)].pow(2).mean() for k in layers)
    (expected,) = torch.autograd.grad(theirs, reference_image)
    for k in layers:
        assert torch.allclose(out[k], ref[names.index(k)], atol=1e-4), k
    # Requested conv outputs are pre-ReLU: a ReLU applied in place must not have clobbered them.
    assert (out["conv1_1"] < 0).any() and (out["conv2_2"] < 0).any()
    assert torch.allclose(grad, expected, rtol=1e-3, atol=1e-6)


def test_under_autocast_the_weights_are_cast_once_and_the_features_are_autocasts_own(vgg19_features):
    # The extractor casts each conv's weights to the autocast dtype once and keeps them: the same
    # rounding as autocast's cast at every call, so the same features and gradients, bit for bit.
    extractor = FeatureExtractor("vgg19", vgg19_features, ["conv1_1", "conv2_1"])
    image = torch.rand(1, 3, 20, 16)

    def run(modules_one_by_one: bool):
        x = image.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            if modules_one_by_one:  # autocast's own path: a cast of the fp32 weights at every call
                h, out = extractor.normalize(x), {}
                for i, module in enumerate(extractor.features):
                    h = module(h)
                    if i in extractor.indices:
                        out[extractor.indices[i]] = h
            else:
                out = extractor(x)
        sum(v.float().pow(2).sum() for v in out.values()).backward()
        return out, x.grad

    ours, grad = run(False)
    conv = extractor.features[0]
    kept = conv.__dict__["_impasto_cast"][1]
    assert kept.dtype == torch.bfloat16
    again, _ = run(False)
    assert conv.__dict__["_impasto_cast"][1] is kept  # not cast again
    reference, reference_grad = run(True)
    for name in reference:
        assert ours[name].dtype == torch.bfloat16
        assert torch.equal(ours[name], reference[name]) and torch.equal(again[name], reference[name])
    assert torch.equal(grad, reference_grad)
    # Weights moved to another layout are cast again (the first call put them in channels-last).
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    extractor.features.to(memory_format=torch.contiguous_format)
    run(False)
    assert conv.__dict__["_impasto_cast"][1] is not kept
    # Outside autocast the fp32 weights are used as they are.
    with torch.no_grad():
        plain = extractor(image)["conv1_1"]
    assert plain.dtype == torch.float32
