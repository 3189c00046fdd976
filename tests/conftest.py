"""Shared fixtures: synthetic VGG weights, tiny images, a hermetic environment.

Most tests run a randomly initialised VGG19 on 32-48 px images so the suite is
fast on a small CPU and needs no downloads. Tests that need the real weights
or photos (tests/test_real.py) read the weights from $IMPASTO_WEIGHTS (else
../shared/weights) and the pictures from ../shared/images, and skip without them.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from impasto import Settings, Stylizer

try:  # imported here, so that a test that hides the extra (without_heic_extra) can still write HEIC
    import pillow_heif as _pillow_heif
except ImportError:
    _pillow_heif = None
from impasto.layers import BLOCKS, WIDTHS, conv_indices
from impasto.vgg import FeatureExtractor

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def real_weights_folder() -> Path:
    """Where the genuine weights are: $IMPASTO_WEIGHTS (a folder, or a file in it), else ../shared/weights."""
    given = os.environ.get("IMPASTO_WEIGHTS")
    if not given:
        return SHARED / "weights"
    path = Path(given).expanduser()
    return path.parent if path.is_file() else path


# Read now, at import: the autouse `hermetic` fixture removes IMPASTO_WEIGHTS from every
# test's environment, so a test could not see where .ci/run (or the user) pointed it.
REAL_WEIGHTS = real_weights_folder()
REAL_IMAGES = SHARED / "images"

# Shallow layers keep the synthetic runs cheap: the network is cut after conv3_1 (after conv3_2,
# the default's fine content layer, where a run asks for it).
FAST_STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1")
FAST_CONTENT_LAYERS = ("conv2_2",)

# The images here are tiny: one thread is as fast as two, and with two threads
# OpenMP slows to a crawl whenever another process competes for the cores.
torch.set_num_threads(1)

# A shell starts a background job (`cmd &` without job control) with SIGINT ignored, and a child
# inherits that: the Ctrl-C tests' commands would never see their SIGINT, and Python installs no
# KeyboardInterrupt for it. Restored here, so those tests run as from a terminal however the suite
# was started (the children of a process that handles SIGINT start with it at its default).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


# -- synthetic weights ---------------------------------------------------------------------------


def random_vgg_features(model: str = "vgg19", seed: int = 0, prefix: str = "features.") -> dict[str, torch.Tensor]:
    """A torchvision-layout `features` state dict with He-initialised random convs."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    positions = iter(conv_indices(model))
    in_ch = 3
    for block, convs in enumerate(BLOCKS[model]):
        for _ in range(convs):
            i, out_ch = next(positions), WIDTHS[block]
            state[f"{prefix}{i}.weight"] = torch.randn(out_ch, in_ch, 3, 3, generator=g) * math.sqrt(2.0 / (9 * in_ch))
            state[f"{prefix}{i}.bias"] = torch.randn(out_ch, generator=g) * 0.01
            in_ch = out_ch
    return state


@pytest.fixture(scope="session")
def vgg19_state() -> dict[str, torch.Tensor]:
    """Random VGG19 weights keyed `features.N.weight` (as in a torchvision checkpoint). Do not mutate."""
    return random_vgg_features("vgg19")


@pytest.fixture(scope="session")
def vgg19_features(vgg19_state) -> dict[str, torch.Tensor]:
    """The same weights keyed `N.weight`, as FeatureExtractor takes them."""
    return {k[len("features."):]: v for k, v in vgg19_state.items()}


@pytest.fixture(scope="session")
def synthetic_weights(tmp_path_factory, vgg19_state) -> Path:
    """A features-only safetensors file of the random VGG19 (no metadata: torchvision convention)."""
    path = tmp_path_factory.mktemp("weights") / "vgg19-random.safetensors"
    save_file(vgg19_state, str(path))
    return path


@pytest.fixture(scope="session")
def shallow_extractor(vgg19_features) -> FeatureExtractor:
    """Random VGG19 returning FAST_STYLE_LAYERS + FAST_CONTENT_LAYERS and the default's fine content layers."""
    layers = FAST_STYLE_LAYERS + FAST_CONTENT_LAYERS + Settings().fine_content_layers
    return FeatureExtractor("vgg19", vgg19_features, layers, "avg", "torchvision")


@pytest.fixture(scope="session")
def stylizer() -> Stylizer:
    """One Stylizer for the session, as the API intends (it caches weights and extractors)."""
    return Stylizer(download=False)


@pytest.fixture
def make_settings(synthetic_weights) -> Callable[..., Settings]:
    """Settings for a fast run on the synthetic weights; keyword arguments override."""

    def make(**overrides) -> Settings:
        base = dict(
            weights=str(synthetic_weights),
            device="cpu",
            size=48,
            min_size=32,
            multiscale=False,
            iterations=10,
            initial_iterations=10,
            style_layers=FAST_STYLE_LAYERS,
            content_layers=FAST_CONTENT_LAYERS,
            seed=0,
            # The same arithmetic on every CPU: auto would be bf16 on CPUs that have it
            # natively and fp32 elsewhere. Mixed precision has its own tests.
            precision="fp32",
        )
        base.update(overrides)
        return Settings(**base)

    return make


# -- tiny images ---------------------------------------------------------------------------------

REDDISH = ((0.55, 0.15, 0.10), (0.95, 0.45, 0.30))
BLUISH = ((0.05, 0.10, 0.45), (0.30, 0.45, 0.95))


@pytest.fixture
def without_heic_extra(monkeypatch):
    """This machine as if the heic extra (pillow-heif) were not installed, even after a test
    that read a HEIC photo registered its reader with Pillow."""
    from impasto.images import heif_readable

    monkeypatch.setitem(sys.modules, "pillow_heif", None)
    monkeypatch.setattr(Image, "ID", [kind for kind in Image.ID if kind != "HEIF"])
    heif_readable.cache_clear()
    yield
    heif_readable.cache_clear()


def heic_bytes(array: np.ndarray) -> bytes:
    """The picture (HxWx3 floats in [0, 1]) as a HEIC file, as a phone writes it; the test is
    skipped where the heic extra is missing."""
    import io

    if _pillow_heif is None:
        pytest.skip("the heic extra (pillow-heif) is not installed")
    buffer = io.BytesIO()
    _pillow_heif.from_pillow(Image.fromarray(to_uint8(array))).save(buffer, quality=95)
    return buffer.getvalue()


def smooth_image(height: int, width: int, low=REDDISH[0], high=REDDISH[1], seed: int = 0) -> np.ndarray:
    """HxWx3 float image in [0, 1]: low-frequency waves blending two colours."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:1:height * 1j, 0:1:width * 1j]
    t = sum(np.sin(2 * np.pi * (rng.uniform(0.3, 1.5) * x + rng.uniform(0.3, 1.5) * y) + rng.uniform(0, 6)) for _ in range(3))
    t = (t - t.min()) / (t.max() - t.min())
    low, high = np.asarray(low), np.asarray(high)
    return low + t[..., None] * (high - low)


def textured_image(height: int, width: int, low=BLUISH[0], high=BLUISH[1], seed: int = 1) -> np.ndarray:
    """HxWx3 float image in [0, 1]: diagonal stripes and grain blending two colours."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    t = 0.5 + 0.35 * np.sin(1.3 * x + 0.5 * y) + 0.15 * rng.uniform(-1, 1, (height, width))
    low, high = np.asarray(low), np.asarray(high)
    return np.clip(low + t[..., None] * (high - low), 0, 1)


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """An (H, W, 3) float array as a (1, 3, H, W) float32 tensor, as the optimiser takes pictures."""
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None].float()


def to_uint8(array: np.ndarray) -> np.ndarray:
    return np.clip(array * 255 + 0.5, 0, 255).astype(np.uint8)


def write_png(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(to_uint8(array) if array.dtype.kind == "f" else array).save(path)
    return path


def mean_rgb(image) -> np.ndarray:
    """Mean colour in [0, 1] of a PIL image or an HxWx3 float array."""
    a = np.asarray(image, dtype=np.float64)
    return (a / 255.0 if a.max() > 1.0 else a).reshape(-1, 3).mean(0)


@pytest.fixture(scope="session")
def content_array() -> np.ndarray:
    """A smooth reddish 48x40 (WxH) photo stand-in."""
    return smooth_image(40, 48, *REDDISH)


@pytest.fixture(scope="session")
def style_array() -> np.ndarray:
    """A striped bluish 40x48 (WxH) painting stand-in."""
    return textured_image(48, 40, *BLUISH)


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory, content_array, style_array) -> Path:
    folder = tmp_path_factory.mktemp("images")
    write_png(folder / "content.png", content_array)
    write_png(folder / "style.png", style_array)
    return folder


@pytest.fixture(scope="session")
def content_path(image_dir) -> Path:
    return image_dir / "content.png"


@pytest.fixture(scope="session")
def style_path(image_dir) -> Path:
    return image_dir / "style.png"


# -- environment ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def hermetic(monkeypatch, tmp_path_factory):
    """No test sees the user's weights, caches or the network (tests opt back in explicitly)."""
    monkeypatch.delenv("IMPASTO_WEIGHTS", raising=False)
    monkeypatch.setenv("IMPASTO_HOME", str(tmp_path_factory.mktemp("impasto-home")))
    hub = tmp_path_factory.mktemp("torch-hub")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", offline)


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (real weights live in $IMPASTO_WEIGHTS or ../shared/weights, images in ../shared/images)")
    return path


def png_bomb(width: int, height: int, rows: int = 200) -> bytes:
    """A 1-bit PNG declaring width x height with only `rows` rows of data: a few KB claiming many megapixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    body = zlib.compress(b"\0" * ((width + 7) // 8 + 1) * rows, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def run_child(command: list[str], timeout: float = 120, memory_gib: Optional[float] = None, cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    """Run a command in a child process (one BLAS thread), optionally capped in address space."""

    def limit() -> None:
        if memory_gib is not None:
            import resource

            cap = int(memory_gib * 1024**3)
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, preexec_fn=limit, env=env, cwd=cwd)


def ctrl_c_when(command: list[str], ready: Callable[[], bool], what: str, settle: float = 0.0, timeout: float = 120) -> subprocess.CompletedProcess:
    """Start `command` (one BLAS thread), send it a real SIGINT once `ready()` holds (and `settle`
    seconds more), and return how it ended. Fails, never signals blindly, if the command ends
    or `timeout` passes before `ready()`: a Ctrl-C test that misses its moment proves nothing."""
    import signal
    import time

    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"{what} never happened while the command ran:\n{proc.communicate()[1][-3000:]}")
            time.sleep(0.02)
        time.sleep(settle)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def run_python(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return run_child([sys.executable, *args], **kwargs)


def impasto_command() -> list[str]:
    """The installed `impasto` console script, else `python -m impasto.cli`."""
    script = Path(sys.executable).with_name("impasto")
    return [str(script)] if script.exists() else [sys.executable, "-m", "impasto.cli"]
