"""impasto: paint a photo in the style of an artwork (Gatys et al. neural style transfer)."""

from importlib import metadata as _metadata

from .api import Result, Stylizer, stylize
from .batch import batch  # the function shadows the package name on purpose: impasto.batch(...)
from .errors import ImpastoError, ImpastoWarning, Interrupted, NonFiniteLoss
from .images import load_image, save_image
from .media import plot_losses, write_gif
from .optimize import Progress
from .presets import PRESETS
from .settings import Settings
from .sweep import SweepFailed, SweepResult, sweep  # the function shadows the module name on purpose: impasto.sweep(...)

try:  # one source of truth: pyproject.toml, as installed
    __version__ = _metadata.version("impasto")
except _metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "ImpastoError", "ImpastoWarning", "Interrupted", "NonFiniteLoss", "PRESETS", "Progress", "Result", "Settings", "Stylizer", "SweepFailed", "SweepResult", "batch", "load_image", "plot_losses",
    "save_image", "stylize", "sweep", "write_gif", "__version__",
]  # fmt: skip
