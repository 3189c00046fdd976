"""impasto: paint a photo in the style of an artwork (Gatys et al. neural style transfer)."""

from .api import Result, Stylizer, stylize
from .errors import ImpastoError
from .images import load_image, save_image
from .optimize import Progress
from .settings import Settings

__version__ = "0.1.0"

__all__ = ["ImpastoError", "Progress", "Result", "Settings", "Stylizer", "load_image", "save_image", "stylize", "__version__"]
