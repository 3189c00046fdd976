"""Bundled demo images (both free to redistribute; see CREDITS.md here)."""

from importlib import resources
from pathlib import Path


def demo_paths() -> tuple[Path, Path]:
    root = Path(str(resources.files(__name__)))
    return root / "chelsea.jpg", root / "starry_night.jpg"
