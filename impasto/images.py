"""Image I/O, resizing, and conversions between PIL, numpy and tensors.

Tensors are float32 RGB in [0, 1], shaped (1, 3, H, W).
"""

from __future__ import annotations

import functools
import io
import os
import re
import tempfile
import typing
import warnings
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImpastoError, option, warn
from .files import atomic_write

ImageLike = Union[str, os.PathLike, bytes, typing.BinaryIO, Image.Image, np.ndarray, torch.Tensor]

# Pillow's own guard is 89 Mpx; we refuse earlier with our message.
MAX_INPUT_PIXELS = 80_000_000
MIN_SIDE = 8
# Formats that keep a picture's transparency; the others get it flattened on white.
ALPHA_FORMATS = ("PNG", "WEBP", "TIFF")


def load_image(source: ImageLike) -> Image.Image:
    """Return an RGB PIL image from a path, PIL image, array or tensor.

    EXIF orientation is applied; an embedded colour profile other than sRGB (a phone's
    Display P3, a camera's Adobe RGB) is converted to sRGB; greyscale, palette, RGBA
    (composited on white) and 16-bit inputs are converted to 8-bit RGB.
    """
    return load_image_and_alpha(source)[0]


def load_image_and_alpha(source: ImageLike) -> tuple[Image.Image, Optional[Image.Image]]:
    """load_image's RGB picture, and the source's transparency as an "L" image (None when it
    is opaque everywhere)."""
    if isinstance(source, torch.Tensor):
        t = source.detach().cpu()
        t = t.float() if t.is_floating_point() else t
        if t.ndim == 4 and t.shape[0] != 1:
            raise ImpastoError(f"a tensor of shape {tuple(t.shape)} is a batch of {t.shape[0]} pictures; give one at a time (t[i])")
        image, name = array_to_pil((t[0] if t.ndim == 4 else t).numpy()), "tensor"
    elif isinstance(source, np.ndarray):
        image, name = array_to_pil(source), "array"
    elif isinstance(source, Image.Image):
        image, name = source, "image"
        try:
            image.load()  # a no-op once loaded; a lazily opened file is read now, as it would be below
        except (ValueError, AssertionError):  # Pillow's "Operation on closed image", or a bare assert
            raise ImpastoError("the PIL image is closed (used after its `with Image.open(...)` block?): "
                               "open it again, or call .load() or .copy() on it before closing") from None  # fmt: skip
    elif isinstance(source, (bytes, bytearray)) or hasattr(source, "read"):  # an upload, a file opened in a notebook
        name = "the given file"
        image = open_image(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source, name)
    elif isinstance(source, (str, os.PathLike)):
        if re.match(r"^[a-z][a-z0-9+.-]*://", str(source), re.I):  # Path() would make https:/ of it
            raise ImpastoError(f"{source}: a web address; pictures are read from files, so download it first")
        path = Path(source)
        name = str(path)
        if not path.exists():
            raise ImpastoError(f"{path}: no such file")
        if path.is_dir():
            raise ImpastoError(f"{path}: is a folder, not an image")
        image = open_image(path, name)
    else:
        raise ImpastoError(f"cannot read a picture from {type(source).__name__}: give a file path, a PIL image, an array or a tensor")
    image = to_srgb(ImageOps.exif_transpose(image), name)
    alpha = None
    if _has_alpha(image):
        alpha = image.convert("RGBA").getchannel("A")
        if alpha.getextrema()[0] == 255:
            alpha = None
    return _check_size(_to_rgb(image), name), alpha


def open_image(target: Any, name: str) -> Image.Image:
    """Pillow's Image.open and load, with one clear line (naming the file as `name`) for what cannot be read."""
    # A path is opened here, and closed here; a file object is the caller's to close.
    owned = isinstance(target, (str, os.PathLike))
    image = None
    try:
        with warnings.catch_warnings():
            # Pillow warns from 89 Mpx on; the check below refuses from 80 with a clearer message.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = pil_open(target)
        if image.width * image.height > MAX_INPUT_PIXELS:
            raise ImpastoError(
                f"{name}: {image.width}x{image.height} is too large to read (limit {MAX_INPUT_PIXELS // 1_000_000} Mpx)"
            )
        image.load()
    except (ImpastoError, UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as exc:
        if image is not None and owned:
            image.close()  # the file Pillow opened, not left for the garbage collector
        if isinstance(exc, ImpastoError):
            raise
        if isinstance(exc, Image.DecompressionBombError):
            # Pillow refuses past twice its own limit before the size can be checked here.
            over = 2 * (Image.MAX_IMAGE_PIXELS or 0) // 1_000_000
            raise ImpastoError(f"{name}: over {over} Mpx, too large to read (limit {MAX_INPUT_PIXELS // 1_000_000} Mpx)") from None
        if isinstance(exc, UnidentifiedImageError) and looks_like_heic(target):
            # A phone's default format, which Pillow alone does not read; saying so beats "not an image".
            if heif_readable():
                raise ImpastoError(f"{name}: a HEIC/HEIF file that pillow-heif cannot decode (damaged?)") from None
            raise ImpastoError(f"{name}: {HEIC_ADVICE.format(it='it')}") from None
        medium = other_medium(name)
        if isinstance(exc, UnidentifiedImageError) and medium:
            # The likeliest mistake with impasto's other commands: the right file, the wrong command.
            what = {"video": "a video, not an image; `impasto video` paints videos",
                    "audio": "a sound file, not an image; `impasto audio` restyles sounds"}[medium]
            raise ImpastoError(f"{name}: {what}") from None
        if "truncated" in str(exc) or "broken data stream" in str(exc):
            # A download or a copy that stopped early: the file names a picture it does not hold.
            raise ImpastoError(f"{name}: the file is cut short (incomplete download or copy?); get it again") from None
        why = "no picture format Pillow knows" if isinstance(exc, UnidentifiedImageError) else "damaged, or a kind Pillow cannot decode"
        raise ImpastoError(f"{name}: not a readable image ({why})") from None
    return image


def pil_open(target: Any) -> Image.Image:
    """Image.open, reading HEIC/HEIF too where the `heic` extra is installed."""
    try:
        return Image.open(target)
    except UnidentifiedImageError:
        # pillow-heif is imported only for a file that needs it, so a JPEG pays nothing for it.
        # Once its reader is registered, Pillow already tried it: no second try.
        if "HEIF" in Image.ID or not looks_like_heic(target) or not heif_readable():
            raise
        if not isinstance(target, (str, os.PathLike)):
            target.seek(0)
        return Image.open(target)


HEIC_ADVICE = ("HEIC/HEIF photos need the heic extra (pip install 'impasto[heic]'), "
               "or convert {it} to JPEG or PNG first (a phone's photo app can export {it})")


@functools.lru_cache(maxsize=None)
def heif_readable() -> bool:
    """Whether HEIC/HEIF photos, a phone's default, can be read here: pillow-heif (the `heic`
    extra) installed, its reader then registered with Pillow."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
AUDIO_SUFFIXES = (".wav", ".mp3", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".aiff", ".aif")


def other_medium(name: str) -> str:
    """Which of impasto's other commands a file's name says it is for: video, audio, or none ("")."""
    suffix = os.path.splitext(name)[1].lower()
    return "video" if suffix in VIDEO_SUFFIXES else "audio" if suffix in AUDIO_SUFFIXES else ""


# The brands an ISO media file names in its first box when it holds a HEIC/HEIF picture.
HEIC_BRANDS = (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1")


def looks_like_heic(target: Any) -> bool:
    """Whether a file Pillow could not identify is HEIC, by its first box: a path, or the
    bytes of an upload, whatever its name."""
    try:
        if isinstance(target, (str, os.PathLike)):
            with open(target, "rb") as f:
                head = f.read(12)
        else:
            target.seek(0)
            head = target.read(12)
    except (OSError, AttributeError, ValueError):
        return False
    return head[4:8] == b"ftyp" and head[8:12] in HEIC_BRANDS


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)


def flatten(image: Image.Image) -> Image.Image:
    """An RGB picture of `image` as it looks on white (its transparency composited away)."""
    if not _has_alpha(image):
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")


def with_alpha(image: Image.Image, alpha: Optional[Image.Image]) -> Image.Image:
    """`image` with the transparency `alpha` (resized to it); `image` itself when alpha is None."""
    if alpha is None:
        return image
    out = image.convert("RGB")
    out.putalpha(alpha.resize(out.size, Image.Resampling.BILINEAR))
    return out


@functools.lru_cache(maxsize=1)
def _srgb_profile() -> Any:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def to_srgb(image: Image.Image, name: str = "the picture") -> Image.Image:
    """`image` in sRGB: converted from the colour profile embedded in it where that is an RGB
    profile other than sRGB, or from the primaries its HEIC colour box states (_nclx_to_srgb);
    else `image` itself.

    The network, the colour transfer and every viewer of the output read pixel values as sRGB,
    while a phone's photos are Display P3 (an Adobe RGB camera's, a museum's scan, wider still):
    read as they are, their colours come out duller than the photo looks, and no option that
    "keeps the colours" would keep them. Out-of-gamut colours clip to sRGB's nearest.
    """
    icc = image.info.get("icc_profile")
    if not icc and image.mode in ("RGB", "RGBA"):
        return _nclx_to_srgb(image, image.info.get("nclx_profile"))
    if not icc or image.mode not in ("RGB", "RGBA", "P"):
        return image  # a CMYK or grey profile keeps Pillow's plain conversion, as before
    try:  # here, not at the top: a Pillow built without LittleCMS has no ImageCms, and reads the rest
        from PIL import ImageCms
    except ImportError:
        warn(f"{name}: has a colour profile, and this Pillow was built without LittleCMS to convert it, so its colours are read as sRGB")
        return image
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if profile.profile.xcolor_space.strip() != "RGB" or "srgb" in (profile.profile.profile_description or "").lower():
            return image
        if image.mode == "P":
            image = image.convert("RGBA" if _has_alpha(image) else "RGB")
        # Relative colorimetric, as colour-managed viewers show a photo (matrix profiles have no other).
        converted = ImageCms.profileToProfile(image, profile, _srgb_profile(), ImageCms.Intent.RELATIVE_COLORIMETRIC, outputMode=image.mode)
    except (OSError, ValueError, ImageCms.PyCMSError) as exc:
        warn(f"{name}: its colour profile cannot be read ({str(exc).strip() or type(exc).__name__}), so its colours are read as sRGB")
        return image
    assert converted is not None  # returned unless inPlace
    converted.info.pop("icc_profile", None)
    return converted


# ITU-T H.273's codes, as a HEIC file's colour box (nclx) gives them in place of an ICC profile.
NCLX_SRGB_PRIMARIES = (1, 2)  # BT.709 (sRGB's), unspecified
NCLX_SDR_TRANSFERS = (1, 2, 6, 13, 14, 15)  # BT.709 and its kin, unspecified, sRGB: shown with sRGB's curve
SRGB_PRIMARIES = ((0.64, 0.33), (0.30, 0.60), (0.15, 0.06))
D65 = (0.3127, 0.3290)


def _rgb_to_xyz(primaries: Sequence[tuple[float, float]], white: tuple[float, float]) -> np.ndarray:
    """The 3x3 matrix from linear RGB of these primaries (x, y) to XYZ, scaled so RGB white is `white` at Y=1."""
    xyz = np.array([[x / y, 1.0, (1 - x - y) / y] for x, y in primaries]).T
    wx, wy = white
    return xyz * np.linalg.solve(xyz, np.array([wx / wy, 1.0, (1 - wx - wy) / wy]))


def _nclx_to_srgb(image: Image.Image, nclx: Optional[Mapping[str, Any]]) -> Image.Image:
    """An RGB(A) `image` whose colours an nclx box states (pillow-heif's `nclx_profile`), in sRGB.

    Some phones' HEIC photos state Display P3 so, with no ICC profile. Only primaries with
    sRGB's white (D65: P3, BT.2020) under an SDR curve are converted; an HDR curve (PQ, HLG),
    which needs tone mapping rather than a matrix, is read as it is, as is everything else.
    """
    if not nclx or nclx.get("color_primaries") in NCLX_SRGB_PRIMARIES or nclx.get("transfer_characteristics") not in NCLX_SDR_TRANSFERS:
        return image
    try:
        primaries = tuple((float(nclx[f"color_primary_{c}_x"]), float(nclx[f"color_primary_{c}_y"])) for c in ("red", "green", "blue"))
        white = (float(nclx["color_primary_white_x"]), float(nclx["color_primary_white_y"]))
    except (KeyError, TypeError, ValueError):
        return image
    if max(abs(white[0] - D65[0]), abs(white[1] - D65[1])) > 0.002:
        return image  # DCI's cinema white: not a photo's
    matrix = np.linalg.solve(_rgb_to_xyz(SRGB_PRIMARIES, D65), _rgb_to_xyz(primaries, white))
    a = np.asarray(image).astype(np.float32) / 255.0
    rgb = a[..., :3]
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    srgb = np.clip(linear @ matrix.T.astype(np.float32), 0.0, 1.0)
    a[..., :3] = np.where(srgb <= 0.0031308, srgb * 12.92, 1.055 * srgb ** (1 / 2.4) - 0.055)
    converted = Image.fromarray((a * 255.0 + 0.5).astype(np.uint8), image.mode)
    converted.info = {k: v for k, v in image.info.items() if k != "nclx_profile"}
    return converted


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(image, dtype=np.float64)
        # 16-bit modes are 0-65535 whatever the values; 32-bit "I"/"F" carry no range, so guess
        # (a float TIFF is 0-1 more often than not, as array_to_pil assumes of float arrays).
        peak = a.max() if a.size else 0.0
        if image.mode.startswith("I;16") or peak > 255:
            hi = 65535.0
        elif image.mode == "F" and peak <= 2.0:
            hi = 1.0
        else:
            hi = 255.0
        image = Image.fromarray(np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8))
    return flatten(image)


def _check_size(image: Image.Image, name: str) -> Image.Image:
    if min(image.size) < MIN_SIDE:
        raise ImpastoError(f"{name}: {image.width}x{image.height} is too small (each side needs at least {MIN_SIDE} pixels)")
    return image


# Float pictures are 0-1, or 0-255 when they reach past FLOAT_255_FROM (`np.asarray(image).astype(np.float32)`;
# one so dark it does not is rare, and refused rather than guessed). Either may overshoot its range by
# FLOAT_OVERSHOOT of it (a resize's ringing), clipped away; anything further out is refused, not clipped
# or rescaled: 1.5 or 300 is neither a 0-1 picture nor a 0-255 one.
FLOAT_255_FROM = 10.0
FLOAT_OVERSHOOT = 0.05


def array_to_pil(array: np.ndarray) -> Image.Image:
    """An 8-bit PIL image (L, RGB or RGBA) of an HxW, HxWxC or CxHxW array: floats are 0-1, or
    0-255 when they reach past 10 (`np.asarray(image).astype(np.float32)`), either within 5% of
    its range (else refused); uint16 is 0-65535."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)  # CHW -> HWC
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255  # a mask: True is white
    elif a.dtype.kind == "f":
        a = np.nan_to_num(a.astype(np.float64))
        low, high = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        top = 255.0 if high > FLOAT_255_FROM else 1.0
        if low < -FLOAT_OVERSHOOT * top:  # a normalised tensor (about -2..2.6) is not a picture
            raise ImpastoError(
                f"a float image reaches {low:.3g}: pictures are 0-1 or 0-255 (an ImageNet-normalised "
                "tensor? undo the normalisation first: x * std + mean)"
            )
        if high > top * (1 + FLOAT_OVERSHOOT):
            raise ImpastoError(
                f"a float image reaches {high:.3g}: float pictures are 0-1 or 0-255 (clip it into one, "
                "as np.clip(a, 0, 1), or scale it)"
            )
        a = np.clip(a * (255.0 / top) + 0.5, 0, 255).astype(np.uint8)
    elif a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    elif a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (2, 3, 4)):
        raise ImpastoError(f"an image array needs the shape HxW or HxWxC with 2-4 channels (or CxHxW), not {a.shape}")
    return Image.fromarray(a)


def pil_to_tensor(image: Image.Image, device: Union[str, torch.device] = "cpu") -> torch.Tensor:
    a = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(a).permute(2, 0, 1).unsqueeze(0).contiguous().to(device)


def tensor_to_pil(tensor: torch.Tensor) -> Image.Image:
    t = tensor.detach().float().cpu()
    if t.ndim == 4:
        t = t[0]
    a = (t.clamp(0, 1).permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
    return Image.fromarray(a)


def fit_long_side(width: int, height: int, long_side: int) -> tuple[int, int]:
    """(w, h) with the given long side and the original aspect ratio."""
    if width >= height:
        return long_side, max(1, round(height * long_side / width))
    return max(1, round(width * long_side / height)), long_side


def resize_long_side(image: Image.Image, long_side: int) -> Image.Image:
    size = fit_long_side(image.width, image.height, long_side)
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def resize_tensor(tensor: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize that keeps the values in range (used between scales)."""
    if tuple(tensor.shape[-2:]) == tuple(size_hw):
        return tensor
    antialias = size_hw[0] < tensor.shape[-2] or size_hw[1] < tensor.shape[-1]  # shrunk either way
    return F.interpolate(tensor, size=size_hw, mode="bicubic", align_corners=False, antialias=antialias).clamp(0, 1)


def box_mean(x: torch.Tensor, k: int) -> torch.Tensor:
    """The mean of each (N, C, H, W) value's k x k neighbourhood (k odd), over the part inside the
    picture: avg_pool2d's count_include_pad=False, from an integral image, so its cost does not
    grow with the window (avg_pool2d's 1/16-of-the-picture window took 18 s at 1024 px)."""
    h, w = x.shape[-2:]
    integral = F.pad(x.cumsum(-2).cumsum(-1), (1, 0, 1, 0))

    def span(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        centre = torch.arange(n, device=x.device)
        return (centre - k // 2).clamp_min(0), (centre + k // 2 + 1).clamp_max(n)

    (top, bottom), (left, right) = span(h), span(w)
    rows_hi, rows_lo = integral[..., bottom, :], integral[..., top, :]
    total = rows_hi[..., right] - rows_hi[..., left] - rows_lo[..., right] + rows_lo[..., left]
    count = ((bottom - top)[:, None] * (right - left)[None, :]).to(x.dtype)
    return total / count


def save_image(image: Image.Image, path: Union[str, os.PathLike], overwrite: bool = False) -> Path:
    """Write atomically; refuse to replace an existing file unless asked."""
    path = check_output_path(path, overwrite)
    fmt = image_format(path)
    if fmt not in ALPHA_FORMATS and _has_alpha(image):
        image = flatten(image)  # a transparent picture written as JPEG looks as it would on white
    params = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    with atomic_write(path) as tmp:
        image.save(tmp, format=fmt, **params)
    return path


def image_format(path: Union[str, os.PathLike]) -> str:
    """Pillow's format for a picture written to `path`, from its extension."""
    suffix = Path(path).suffix
    fmt = Image.registered_extensions().get(suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        what = f"unknown image extension {suffix!r}" if suffix else "no extension to say the image format"
        raise ImpastoError(f"{path}: {what} (use .png, .jpg, .webp, ...)")
    return fmt


def check_image_output(path: Union[str, os.PathLike], overwrite: bool = False) -> Path:
    """check_output_path, and an extension Pillow can write: checked before a run, not after it."""
    path = check_output_path(path, overwrite)
    image_format(path)
    return path


def check_output_path(path: Union[str, os.PathLike], overwrite: bool = False) -> Path:
    path = Path(path)
    if path.is_dir():
        raise ImpastoError(f"{path}: is a folder; give a file name such as {path / 'out.png'}")
    if not path.parent.exists():
        raise ImpastoError(f"{path}: folder {path.parent} does not exist")
    if path.exists() and not overwrite:
        raise ImpastoError(f"{path}: already exists (pass {option('overwrite', True)} to replace it)")
    check_writable(path.parent, what=path)
    return path


def check_distinct_outputs(named: dict[str, Union[str, os.PathLike, None]]) -> None:
    """Refuse two outputs (flag -> path; None or '-' for none) that name one file: written one
    after another, only the last would be left (the JSON over the picture or the sound)."""
    seen: dict[Path, str] = {}
    for flag, path in named.items():
        if path and path != "-":
            key = Path(path).resolve()
            if key in seen:
                raise ImpastoError(f"{flag} {path}: the same file as {seen[key]}; give each output its own name")
            seen[key] = flag


def check_not_inputs(outputs: Mapping[str, Any], inputs: Mapping[str, Any]) -> None:
    """Refuse an output (flag -> path) that is one of the run's inputs (what -> path; anything but
    a path is skipped), even with --overwrite: a typo would replace the photo or the painting."""
    given = {Path(p).resolve(): what for what, p in inputs.items() if isinstance(p, (str, os.PathLike)) and os.fspath(p) not in ("", "-")}
    for flag, path in outputs.items():
        if isinstance(path, (str, os.PathLike)) and os.fspath(path) not in ("", "-") and Path(path).resolve() in given:
            raise ImpastoError(f"{flag} {path}: is {given[Path(path).resolve()]}, an input; impasto never writes over its "
                               "inputs, even with --overwrite: give the output another name")  # fmt: skip


def check_writable(folder: Union[str, os.PathLike], what: Union[str, os.PathLike, None] = None) -> None:
    """Refuse a folder nothing can be written in now, not after a long run.

    By trying: os.access says yes to root even in a read-only mount or an immutable folder.
    """
    try:
        with tempfile.NamedTemporaryFile(dir=os.fspath(folder), prefix=".impasto-probe-"):
            pass
    except OSError as exc:
        raise ImpastoError(f"{what or folder}: cannot write in {folder} ({exc.strerror or exc})") from None
