"""VGG16/19's layers by name: the architecture as data, without torch, so settings can check a
layer's name at once (vgg.py builds the network from it)."""

from __future__ import annotations

from .errors import ImpastoError

# Convs per block; "M" after each block is a 2x2 pooling.
BLOCKS = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
WIDTHS = (64, 128, 256, 512, 512)


def layer_names(model: str) -> list[str]:
    """Names of the modules of torchvision's `features`, in order (index = position)."""
    if model not in BLOCKS:
        raise ImpastoError(f"unknown model {model!r}; choose vgg16 or vgg19")
    names = []
    for block, convs in enumerate(BLOCKS[model], start=1):
        for i in range(1, convs + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return names


def conv_layer_names(model: str) -> list[str]:
    return [n for n in layer_names(model) if n.startswith("conv")]


def conv_indices(model: str) -> list[int]:
    """Indices in torchvision's `features` Sequential that hold a Conv2d."""
    return [i for i, n in enumerate(layer_names(model)) if n.startswith("conv")]
