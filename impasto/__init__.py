"""impasto: paint a photo in the style of an artwork (Gatys et al. neural style transfer)."""

import importlib
import sys
import types
from importlib import metadata as _metadata
from typing import Any

from .errors import ImpastoError, ImpastoWarning, Interrupted, NonFiniteLoss
from .presets import PRESETS
from .settings import Settings

# The rest imports torch (seconds): loaded on first use, so `impasto --help`, `impasto presets`
# and a shell's one-line error for a bad option come at once.
_LAZY = {
    "Result": "api", "Stylizer": "api", "stylize": "api", "batch": "batch", "load_image": "images", "save_image": "images",
    "plot_losses": "media", "write_gif": "media", "Progress": "optimize", "SweepFailed": "sweep", "SweepResult": "sweep", "sweep": "sweep",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'impasto' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    setattr(sys.modules[__name__], name, value)
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))  # a notebook's completion lists the lazy names too


class _Package(types.ModuleType):
    # impasto.batch(...) and impasto.sweep(...) are functions named as their modules: importing
    # the module (`import impasto.batch`) makes Python set the package's attribute to it, which
    # would hide the function; the function is kept instead, as the eager imports once did.
    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("batch", "sweep") and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

try:  # one source of truth: pyproject.toml, as installed
    __version__ = _metadata.version("impasto")
except _metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "ImpastoError", "ImpastoWarning", "Interrupted", "NonFiniteLoss", "PRESETS", "Progress", "Result", "Settings", "Stylizer", "SweepFailed", "SweepResult", "batch", "load_image", "plot_losses",
    "save_image", "stylize", "sweep", "write_gif", "__version__",
]  # fmt: skip
