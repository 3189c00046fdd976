"""Finding, downloading, checking and loading VGG weights.

Resolution order: an explicit path (--weights or $IMPASTO_WEIGHTS; a file or a
folder to search), the cache ($IMPASTO_HOME, default ~/.cache/impasto, then
torch's hub cache with the official names), then a download of the official
torchvision file, checked against the sha256 prefix in its name.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from .errors import ImpastoError, option
from .files import atomic_write
from .layers import BLOCKS, WIDTHS, conv_indices

OFFICIAL_URLS = {
    "vgg16": "https://download.pytorch.org/models/vgg16-397923af.pth",
    "vgg19": "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
}


def official_name(model: str) -> str:
    return OFFICIAL_URLS[model].rsplit("/", 1)[1]


def candidate_names(model: str) -> list[str]:
    """File names the resolver accepts for a model, best first."""
    return [
        f"{model}-caffe-features.safetensors",
        f"{model}.safetensors",
        official_name(model),
        f"{model}.pth",
    ]


@dataclass
class Weights:
    model: str
    convention: str  # "torchvision" or "caffe"
    state_dict: dict[str, torch.Tensor]  # keys "N.weight"/"N.bias", N in torchvision's `features`
    path: Path


def cache_dir() -> Path:
    return Path(os.environ.get("IMPASTO_HOME") or Path.home() / ".cache" / "impasto")


def torch_hub_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def expected_prefix(path: Path) -> Optional[str]:
    """torchvision names carry the first hex digits of the sha256: vgg19-dcbb9e9d.pth."""
    stem = path.name.split(".")[0]
    if "-" in stem:
        tail = stem.rsplit("-", 1)[1]
        # A tail of digits alone is read as a date or a version (vgg19-20240115), not a hash: the
        # official files' hashes have letters, and a user's file must not be called corrupt for its name.
        if len(tail) >= 8 and all(c in "0123456789abcdef" for c in tail) and not tail.isdigit():
            return tail
    return None


def verify_hash(path: Path, expected: Optional[str] = None) -> None:
    expected = expected or expected_prefix(path)
    if expected is None:
        return
    digest = sha256_of(path)
    if not digest.startswith(expected):
        official = path.name in {official_name(m) for m in OFFICIAL_URLS}
        advice = (
            "delete it and download again" if official else
            f"download it again, or rename the file if '-{expected}' in its name is not the start of its sha256 "
            "(torchvision's naming convention)"
        )
        raise ImpastoError(f"{path}: sha256 {digest[:12]}… does not match the expected {expected}…; the file is corrupt or not "
                           f"the official one: {advice}")


def resolve(model: str, explicit: Optional[str] = None, download: bool = True) -> Path:
    """The path of a weights file for `model`, downloading it if needed."""
    from_env = not explicit and bool(os.environ.get("IMPASTO_WEIGHTS"))
    explicit = explicit or os.environ.get("IMPASTO_WEIGHTS") or None
    searched: list[Path] = []
    if explicit:
        path = Path(explicit).expanduser()
        if path.is_file():
            return path
        if path.is_dir():
            for name in candidate_names(model):
                if (path / name).is_file():
                    return path / name
            searched.append(path)
        else:
            # Named where it came from: a forgotten export in a shell profile is hard to find otherwise.
            raise ImpastoError(f"weights {path}{' (from $IMPASTO_WEIGHTS)' if from_env else ''}: no such file or folder")
    for folder in (cache_dir(), torch_hub_dir()):
        for name in candidate_names(model):
            if (folder / name).is_file():
                return folder / name
        searched.append(folder)
    url = OFFICIAL_URLS[model]
    target = cache_dir() / official_name(model)
    if download:
        try:
            return download_file(url, target)
        except OSError as exc:
            reason = f"download failed ({exc.__class__.__name__}: {exc})"
    else:
        reason = "downloads are off"
    raise ImpastoError(
        f"no {model} weights found and {reason}. Put {official_name(model)} (from {url}) or "
        f"{model}-caffe-features.safetensors in {cache_dir()}, or pass {option('weights', 'PATH', placeholder=True)} "
        f"(or set $IMPASTO_WEIGHTS to it) "
        f"(searched: {', '.join(str(p) for p in searched)})"
    )


def download_file(url: str, target: Path, expected: Optional[str] = None) -> Path:
    """Download to a temporary file beside `target`, check its hash, then rename."""
    from tqdm import tqdm

    target.parent.mkdir(parents=True, exist_ok=True)
    expected = expected or expected_prefix(target)
    # .part: a download cut short is plainly unfinished, never taken for weights.
    with atomic_write(target, suffix=".part") as tmp:
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=30) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {target.name}") as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
        if expected is not None and not sha256_of(tmp).startswith(expected):
            # Named by its URL: the temporary file is gone by the time this is read.
            raise ImpastoError(f"the download of {url} does not have the expected sha256 ({expected}…): it was cut short "
                               "or changed on the way; run again to download it again")
    return target


def _unreadable(path: Path, exc: Exception) -> ImpastoError:
    lines = str(exc).strip().splitlines()
    # torch's own first line can be a paragraph about its pickle settings: kept only when short.
    detail = f"{exc.__class__.__name__}: {lines[0]}" if lines and len(lines[0]) <= 80 else exc.__class__.__name__
    if isinstance(exc, (KeyError, pickle.UnpicklingError)):  # what torch.load says of a text or other file
        detail = "not a PyTorch file"
    return ImpastoError(f"{path}: cannot read weights ({detail}); expected a VGG16/VGG19 state dict in "
                        f"torchvision's format, as .safetensors or a PyTorch .pth")


def read_metadata(path: Path) -> dict[str, str]:
    if path.suffix != ".safetensors":
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:  # not a safetensors file, truncated, empty: all the user's file
        raise _unreadable(path, exc) from None


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        data = torch.load(path, map_location="cpu", weights_only=True)
    except ImpastoError:
        raise
    except Exception as exc:  # corrupt pickle, truncated file, wrong format: all the user's file
        raise _unreadable(path, exc) from None
    if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise ImpastoError(f"{path}: not a state dict")
    return data


def infer_model(tensors: dict[str, torch.Tensor]) -> Optional[str]:
    """vgg16 and vgg19 differ in how many convs `features` holds."""
    indices = {int(k.split(".")[-2]) for k in tensors if k.split(".")[-1] == "weight" and k.split(".")[-2].isdigit()}
    for model in ("vgg19", "vgg16"):
        if max(indices, default=-1) == conv_indices(model)[-1]:
            return model
    return None


def parse_convention(text: str) -> str:
    text = (text or "").lower()
    if text.startswith("caffe") or "bgr" in text:
        return "caffe"
    return "torchvision"


def load(path: Path, model: Optional[str] = None) -> Weights:
    """Load a full or features-only torchvision-format state dict and check its shapes."""
    path = Path(path)
    meta = read_metadata(path)
    # The hash in an official file's name (torchvision's convention). A hash stored inside a
    # safetensors file's metadata cannot be of the file that holds it, so none is read there.
    verify_hash(path)
    raw = _read_tensors(path)
    tensors: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        if key.startswith("module."):
            key = key[len("module."):]
        if key.startswith("features."):
            tensors[key[len("features."):]] = value
        elif key.split(".")[0].isdigit():
            tensors[key] = value
        # classifier.* and the like are not needed
    declared = meta.get("arch")
    found = infer_model(tensors)
    if declared and found and declared != found:
        raise ImpastoError(f"{path}: metadata says {declared} but the tensors are {found}")
    arch = declared or found
    if arch is None:
        raise ImpastoError(f"{path}: not VGG16/VGG19 features (no 'features.N.weight' keys of a VGG)")
    require_model(path, arch, model)
    _check_shapes(path, arch, tensors)
    return Weights(model=arch, convention=parse_convention(meta.get("input", "")), state_dict=tensors, path=path)


def require_model(path: Path, found: str, model: Optional[str]) -> None:
    if model is not None and model != found:
        raise ImpastoError(f"{path}: holds {found} weights but {option('model', model)} was asked for")


def _check_shapes(path: Path, model: str, tensors: dict[str, torch.Tensor]) -> None:
    in_ch = 3
    positions = iter(conv_indices(model))
    for block, convs in enumerate(BLOCKS[model]):
        for _ in range(convs):
            i = next(positions)
            out_ch = WIDTHS[block]
            for key, shape in ((f"{i}.weight", (out_ch, in_ch, 3, 3)), (f"{i}.bias", (out_ch,))):
                if key not in tensors:
                    raise ImpastoError(f"{path}: missing features.{key} for {model}")
                if tuple(tensors[key].shape) != shape:
                    raise ImpastoError(
                        f"{path}: features.{key} has shape {tuple(tensors[key].shape)}, {model} needs {shape}"
                    )
                tensors[key] = tensors[key].float()
            in_ch = out_ch


def locate(model: Optional[str], explicit: Optional[str] = None, download: bool = True) -> tuple[Path, Optional[str]]:
    """The file load_for reads, and the model it must hold (None: whichever it holds). A weights
    *file* decides the model when none is forced; a folder or the cache is searched for vgg19's.
    Stylizer.weights calls this, to load each file once and cache it; load_for is for scripts and tests."""
    explicit = explicit or os.environ.get("IMPASTO_WEIGHTS") or None
    if explicit and Path(explicit).expanduser().is_file():  # resolve() expands ~ too: one reading of the path
        return Path(explicit).expanduser(), model
    return resolve(model or "vgg19", explicit, download), model or "vgg19"


def load_for(model: Optional[str], explicit: Optional[str] = None, download: bool = True) -> Weights:
    """Resolve and load."""
    return load(*locate(model, explicit, download))
