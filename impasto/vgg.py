"""VGG16/19 feature extractor with named layers, cut after the deepest layer used."""

from __future__ import annotations

from typing import Callable, Iterable, Mapping, Optional, Sequence

import torch
from torch import nn

from .errors import ImpastoError
from .layers import BLOCKS, WIDTHS, layer_names

# A stand-in for the ReLU after a layer: takes its map, returns the map's ReLU (forward's relu_with).
ReluWith = Callable[[torch.Tensor], torch.Tensor]

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalize(nn.Module):
    """Turn RGB in [0, 1] into what the weights were trained on."""

    scale: torch.Tensor  # buffers
    shift: torch.Tensor

    def __init__(self, convention: str) -> None:
        super().__init__()
        if convention == "caffe":
            # BGR, 0-255, mean subtracted: fold flip and scale into a 1x1 affine.
            mean = torch.tensor(CAFFE_MEAN_BGR[::-1]).view(1, 3, 1, 1)  # as RGB
            self.register_buffer("scale", torch.full((1, 3, 1, 1), 255.0))
            self.register_buffer("shift", -mean)
            self.bgr = True
        elif convention == "torchvision":
            mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
            self.register_buffer("scale", 1.0 / std)
            self.register_buffer("shift", -mean / std)
            self.bgr = False
        else:
            raise ImpastoError(f"unknown input convention {convention!r}")
        self.convention = convention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.scale + self.shift
        return x.flip(1) if self.bgr else x


def build_features(
    model: str,
    pooling: str = "max",
    upto: int | None = None,
    convs: Optional[Sequence[nn.Conv2d]] = None,
    odd_edges: bool = True,
) -> nn.Sequential:
    """torchvision-compatible `features` (same indices), optionally cut after index `upto`.
    `convs`, the conv layers of another such network in order, are used rather than new ones.
    `odd_edges=False` pools as torchvision does, dropping an odd last row or column."""
    layers: list[nn.Module] = []
    given = iter(convs) if convs is not None else None
    in_ch = 3
    for block, count in enumerate(BLOCKS[model]):
        for _ in range(count):
            conv = next(given) if given is not None else nn.Conv2d(in_ch, WIDTHS[block], 3, padding=1)
            layers += [conv, nn.ReLU(inplace=False)]
            in_ch = WIDTHS[block]
        # ceil_mode keeps a side's odd last row or column as a window of its own: floor
        # mode drops it, and at 170 px the last 10 rows never reached conv5, so nothing
        # styled them and the picture's bottom edge stayed bright and plain. The divisor
        # stays 4 in that half-empty window (as if zero-padded): dividing by its 2 pixels
        # doubled their gradient at each pooling and painted the last rows dark.
        if pooling == "avg":
            layers.append(nn.AvgPool2d(2, 2, ceil_mode=odd_edges, divisor_override=4 if odd_edges else None))
        else:
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=odd_edges))
    if upto is not None:
        layers = layers[: upto + 1]
    return nn.Sequential(*layers)


class FeatureExtractor(nn.Module):
    """Frozen VGG that returns the activations of the requested layers by name."""

    features: nn.Sequential
    _format: torch.memory_format

    def __init__(
        self,
        model: str,
        state_dict: dict[str, torch.Tensor],
        layers: Iterable[str],
        pooling: str = "avg",
        convention: str = "torchvision",
        share: Optional["FeatureExtractor"] = None,
        odd_edges: bool = True,
    ) -> None:
        """`share`: an extractor of the same model and weights, at least as deep, whose conv
        layers (the weights' memory) this one uses too; its pooling and layers may differ.
        `odd_edges`: see build_features."""
        super().__init__()
        names = layer_names(model)
        self.layers = list(dict.fromkeys(layers))
        for layer in self.layers:
            if layer not in names:
                raise ImpastoError(f"unknown layer {layer!r} for {model}")
        self.model = model
        self.indices = {names.index(layer): layer for layer in self.layers}
        deepest = max(self.indices)
        self.normalize = Normalize(convention)
        if share is not None:
            convs = [m for m in share.features if isinstance(m, nn.Conv2d)]
            self.features = build_features(model, pooling, upto=deepest, convs=convs, odd_edges=odd_edges)
            self._format = share._format
        else:
            # Conv2d draws its random initial weights from torch's global generator; they are
            # overwritten at once, and the caller's random numbers must not move because of them.
            with torch.random.fork_rng(devices=[]):
                self.features = build_features(model, pooling, upto=deepest, odd_edges=odd_edges)
            own = self.features.state_dict()
            self.features.load_state_dict({k: state_dict[k] for k in own})
        # An in-place ReLU saves one activation map per conv, but would overwrite
        # a conv output we hand out, so only where that conv is not requested.
        for i, module in enumerate(self.features):
            if isinstance(module, nn.ReLU) and (i - 1) not in self.indices:
                module.inplace = True
        self.eval().requires_grad_(False)
        if share is None:
            self._format = torch.contiguous_format

    @property
    def depth(self) -> int:
        return len(self.features)

    def in_fastest_format(self, device: torch.device) -> "FeatureExtractor":
        """Weights and input both in one layout, or every call pays a reorder. Done on first use
        if not before; an extractor shared between threads is put in it before they use it."""
        fmt = _fastest_format(device)
        if fmt != self._format:
            self.features.to(memory_format=fmt)  # type: ignore[call-overload]  # torch's stub lacks it
            self._format = fmt
        return self

    def relu_follows(self, layer: str) -> bool:
        """Whether a ReLU of this network follows `layer` (for forward's `relu_with`)."""
        i = layer_names(self.model).index(layer) + 1
        return i < len(self.features) and isinstance(self.features[i], nn.ReLU)

    def forward(self, image: torch.Tensor, relu_with: Optional[Mapping[str, ReluWith]] = None) -> dict[str, torch.Tensor]:
        """The requested layers' maps. `relu_with`: for some of them (each followed by a ReLU), a
        function used in place of that ReLU: it takes the map and returns relu(map), having
        computed a loss of it along the way in the same autograd node, whose backward pass then
        adds the loss's gradient to the ReLU's (losses.FusableLoss)."""
        self.in_fastest_format(image.device)
        x = self.normalize(image).contiguous(memory_format=self._format)
        out: dict[str, torch.Tensor] = {}
        low = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else None
        replaced = -1  # the index of a ReLU done by a relu_with function
        for i, module in enumerate(self.features):
            if i == replaced:
                continue
            x = conv_in(module, x, low) if low is not None and isinstance(module, nn.Conv2d) else module(x)
            if i in self.indices:
                # In the network's own layout: the losses view it as it is (losses._flatten).
                name = self.indices[i]
                out[name] = x
                if relu_with is not None and name in relu_with:
                    if not self.relu_follows(name):
                        raise ValueError(f"no ReLU follows {name} for relu_with to stand in for")
                    x, replaced = relu_with[name](x), i + 1
        return out


def conv_in(conv: nn.Conv2d, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`conv(x)` under autocast to `dtype`, with the conv's weights cast to it once, not at every
    call as autocast does (3-4 ms an iteration on this project's CPU: 18% of a bf16 iteration at
    128 px, 2% at 512; benchmarks/HISTORY.md, session 24). The same rounding, so the same result.
    The cast is kept on the conv, which the extractors of one network share, and made again if
    its weights move (another device or layout)."""
    weight, bias = conv.weight, conv.bias
    key = (dtype, weight.device, weight.data_ptr(), weight.stride())
    kept = conv.__dict__.get("_impasto_cast")
    if kept is None or kept[0] != key:
        kept = (key, weight.detach().to(dtype), None if bias is None else bias.detach().to(dtype))
        conv.__dict__["_impasto_cast"] = kept  # a plain attribute: not a parameter, not in the state dict
    return nn.functional.conv2d(x, kept[1], kept[2], conv.stride, conv.padding, conv.dilation, conv.groups)


def _fastest_format(device: torch.device) -> torch.memory_format:
    """oneDNN (CPU) and cuDNN run 3x3 convolutions fastest on channels-last tensors
    (a default 512 px fp32 run on this project's CPU: 111 s against 122 s); MPS is left as it was."""
    return torch.channels_last if device.type in ("cpu", "cuda") else torch.contiguous_format
