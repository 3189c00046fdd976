"""Checking uploaded pictures before the server trusts them.

An upload is read into memory up to a byte limit, identified by Pillow from its
contents (never its name or declared type), and its pixel count is checked from
the header before any pixel is decoded, so a small file that would decode to
gigabytes (a decompression bomb) is refused cheaply.
"""

from __future__ import annotations

import io
import re
import unicodedata
import warnings
from typing import Optional

from PIL import Image, UnidentifiedImageError

from ..errors import ImpastoError
from ..images import heif_readable, load_image_and_alpha, looks_like_heic, pil_open, with_alpha

# Formats a browser or a camera produces; anything else Pillow can open (EPS, PSD,
# ICNS, ...) is not worth the extra decoder surface on a server.
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")


def allowed_formats() -> tuple[str, ...]:
    """The formats uploads may have: HEIF (a phone's photos) too where the server has the heic extra."""
    return ALLOWED_FORMATS + (("HEIF",) if heif_readable() else ())


class UploadError(Exception):
    """A refused upload, with the HTTP status that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def decode_upload(data: bytes, label: str, max_bytes: int, max_pixels: int) -> Image.Image:
    """The uploaded picture as 8-bit RGB (RGBA when it has transparency: a cut-out photo gives
    a cut-out picture, as from the CLI), or UploadError (400, 413 or 415)."""
    if not data:
        raise UploadError(400, f"{label}: the file is empty")
    if len(data) > max_bytes:
        raise UploadError(413, f"{label}: the file is larger than the limit of {format_bytes(max_bytes)}")
    with warnings.catch_warnings():
        # Pillow's own guard (it warns from ~89 Mpx) is not the server's: max_pixels, checked from
        # the header below, is. Past twice Pillow's limit it refuses anyway (see allow_pixels).
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = pil_open(io.BytesIO(data))
        except Image.DecompressionBombError:
            raise UploadError(413, f"{label}: the picture has too many pixels (limit {format_pixels(max_pixels)})") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            accepted = ", ".join(allowed_formats())
            if looks_like_heic(io.BytesIO(data)) and not heif_readable():  # a phone's photo, of a kind not read here
                raise UploadError(415, f"{label}: HEIC/HEIF pictures are not accepted; convert it to JPEG or PNG first "
                                  f"(accepted: {accepted})") from None
            raise UploadError(415, f"{label}: not a picture (accepted: {accepted})") from None
        if image.format not in allowed_formats():
            raise UploadError(415, f"{label}: {image.format} pictures are not accepted (accepted: {', '.join(allowed_formats())})")
        width, height = image.size
        if width * height > max_pixels:
            raise UploadError(
                413, f"{label}: {width}x{height} has too many pixels (limit {format_pixels(max_pixels)})"
            )
        try:
            image.load()
            return with_alpha(*load_image_and_alpha(image))
        except ImpastoError as exc:  # too small
            raise UploadError(400, f"{label}: {str(exc).removeprefix('image: ')}") from None
        except Image.DecompressionBombError:
            raise UploadError(413, f"{label}: the picture has too many pixels (limit {format_pixels(max_pixels)})") from None
        except (OSError, SyntaxError, ValueError, EOFError):
            raise UploadError(400, f"{label}: the {image.format} file is damaged or truncated") from None


def allow_pixels(max_pixels: int) -> None:
    """Let Pillow open pictures up to the server's --max-megapixels, when that is above its own limit.

    Pillow refuses pictures over twice Image.MAX_IMAGE_PIXELS (~179 Mpx) before their size can
    be read, so a larger --max-megapixels would be a limit in name only. Process-wide: only the
    server's process calls it, and every upload's size is checked against max_pixels first.
    """
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels


def display_name(filename: Optional[str]) -> str:
    """The client's file name, for showing only: its last path part, printable, at most 80 characters."""
    name = re.split(r"[\\/]", filename or "")[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] not in "CZ" or c == " ").strip()
    return name[:80] or "image"


def format_bytes(count: int) -> str:
    return f"{count / 1_000_000:g} MB" if count >= 1_000_000 else f"{count} bytes"


def format_pixels(count: int) -> str:
    return f"{count / 1_000_000:g} Mpx" if count >= 1_000_000 else f"{count} px"
