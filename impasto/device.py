"""Where and in what arithmetic a run computes: the device (auto: CUDA, then MPS, then the
CPU), its free memory and what running out of it looks like, mixed precision, and the
run's own random generator."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import platform
from typing import Callable, Optional, ParamSpec, TypeVar

import torch

from .errors import ImpastoError, option, warn
from .settings import Settings


P = ParamSpec("P")


R = TypeVar("R")


def with_autograd(fn: Callable[P, R]) -> Callable[P, R]:
    """Run `fn` with autograd on whatever the caller's mode (a notebook's torch.no_grad() or
    torch.inference_mode()), and give the caller's mode back after: an optimisation of pixels
    needs gradients, and the caller's own code must not find them switched on."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with torch.inference_mode(False), torch.enable_grad():
            return fn(*args, **kwargs)

    return wrapper


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():  # with its index, so "auto" and "cuda:0" are one device to a cache
            return torch.device("cuda", torch.cuda.current_device())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):  # torch knows others (meta, xpu, ...) this code was never run on
        raise ImpastoError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ImpastoError(f"{option('device', name)} asked for, but PyTorch sees no CUDA GPU")
    if device.type == "cuda" and device.index is not None and device.index >= (count := torch.cuda.device_count()):
        raise ImpastoError(f"{option('device', name)} asked for, but PyTorch sees {count} CUDA GPU{'s' if count != 1 else ''} (cuda:0..{count - 1})")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ImpastoError(f"{option('device', 'mps')} asked for, but MPS is not available")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


# Bytes per output pixel at the finest scale for a VGG19 forward+backward,
# measured with benchmarks/speed.py (peak RSS growth / pixels). The estimate
# only has to be right within a factor that leaves room.
BYTES_PER_PIXEL = 3000


def estimate_bytes(width: int, height: int) -> int:
    return width * height * BYTES_PER_PIXEL


def available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        # Blocks this process's caching allocator holds but no tensor uses are free to it too:
        # after one large run (a sweep, a batch worker, the web server) they are most of it.
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type == "mps":
        try:  # Metal's working-set limit, less what this process's tensors already hold
            return int(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
        except (AttributeError, RuntimeError):  # a torch without them: the machine's memory, below
            pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        pass
    try:
        # macOS says only how much there is in all: half of it is a guess that still refuses
        # an output needing more than the whole machine, and tiles one that would crowd it.
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: let the run try


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is the device running out of memory: CUDA's own error, MPS's and the CPU
    allocator's RuntimeErrors (the up-front estimate is a measurement, not a bound)."""
    text = str(exc)
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)
    )


def release_cached_memory(device: torch.device) -> None:
    """Hand the caching allocator's free blocks back, so what runs next (or another process) has them."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


# glibc's mallopt parameters, and what they are set to: a run's large tensors (a 512 px conv1_1
# map is 11-45 MB) come from, and go back to, the heap instead of fresh mappings.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEEP_FREED_BYTES = 1 << 30


@functools.cache
def keep_freed_memory() -> bool:
    """Have glibc's malloc keep the memory a CPU run frees (up to 1 GiB at once) for its next
    allocations. By default it hands large freed blocks back to the system (unmapped, or trimmed
    off the heap's top) and maps new ones for the next, whose pages the kernel zeroes again as
    they are first touched: ~20,000 page faults in every 512 px iteration, 10-15% of its time
    here (benchmarks/HISTORY.md, session 24). The price is that the process holds on to its
    high-water mark. Process-wide and once per process; a no-op (False) off glibc, whose
    allocators behave otherwise."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, KEEP_FREED_BYTES)) and bool(libc.mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES))
    except (OSError, AttributeError):
        return False


def native_bf16_cpu() -> bool:
    """Whether this CPU computes in bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slower."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def native_fp16_cpu() -> bool:
    """Whether this CPU computes in fp16 natively (AMX-FP16, or AVX512-FP16 as Linux names its flags)."""
    if getattr(torch.cpu, "_is_amx_fp16_supported", lambda: False)():
        return True
    try:
        with open("/proc/cpuinfo") as info:
            return any(line.startswith("flags") and " avx512_fp16" in line for line in info)
    except OSError:
        return False


# What the CPU needs to compute each mixed precision natively, for the warning when it does not.
NATIVE_CPU = {"bf16": (native_bf16_cpu, "AVX512-BF16 or AMX"), "fp16": (native_fp16_cpu, "AMX-FP16 or AVX512-FP16")}
_said_emulated: set[str] = set()


def warn_if_emulated(precision: str, device: torch.device) -> None:
    """Warn, once a process, of a mixed precision asked for on a CPU that emulates it: each
    operation converts in software, 21x (bf16) and 25x (fp16) slower than fp32 on a 2-core AVX2
    CPU (a VGG19 forward and backward at 128 px), where --precision auto would run fp32."""
    if device.type != "cpu" or precision not in NATIVE_CPU or precision in _said_emulated:
        return
    native, needs = NATIVE_CPU[precision]
    if native():
        return
    _said_emulated.add(precision)
    auto = precision_name(mixed_precision(Settings(), device))
    warn(f"this CPU has no native {precision} ({needs}), so {option('precision', precision)} is emulated: many times slower "
         f"than fp32 (about 20x on an AVX2 CPU); {option('precision', 'auto')} runs {auto} here")  # fmt: skip


# The --precision values that mean mixed precision, and the autocast dtype of each.
AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def mixed_precision(settings: Settings, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype of the network's passes, or None for plain fp32.

    auto: fp16 on CUDA; bf16 on a CPU with native bf16, where it makes a default
    run 1.6x faster and the result's fp32-scored loss is unchanged (benchmarks/precision.py).
    """
    precision = settings.precision
    if precision == "auto":
        if device.type == "cuda":
            precision = "fp16"
        elif device.type == "cpu" and native_bf16_cpu():
            precision = "bf16"
    return AUTOCAST_DTYPES.get(precision)


def precision_name(dtype: Optional[torch.dtype]) -> str:
    """The --precision value of an autocast dtype (None: fp32)."""
    return {v: k for k, v in AUTOCAST_DTYPES.items()}.get(dtype, "fp32")  # type: ignore[arg-type]


def autocast_to(device: torch.device, dtype: Optional[torch.dtype], cache: bool = True) -> contextlib.AbstractContextManager:
    """Mixed precision in `dtype` on the device, or a no-op context for None (plain fp32).
    `cache` False for a pass recorded in a CUDA graph, which autocast's cache of cast weights
    would outlive (torch's documentation of graphs asks it)."""
    if dtype is None:
        return contextlib.nullcontext()
    try:
        return torch.autocast(device_type=device.type, dtype=dtype, cache_enabled=cache)
    except RuntimeError:  # a torch without autocast for this device (MPS before 2.5 or so)
        raise ImpastoError(
            f"{option('precision', precision_name(dtype))} is not available on {device.type} with torch {torch.__version__}; "
            f"use {option('precision', 'fp32')}"
        ) from None


def autocast_off(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast switched off (for a pass in fp32 inside a mixed-precision one); nothing to switch
    off on a device whose torch has no autocast, which older ones refuse even to disable."""
    try:
        return torch.autocast(device_type=device.type, enabled=False)
    except RuntimeError:
        return contextlib.nullcontext()


def seeded_generator(seed: Optional[int]) -> torch.Generator:
    """A CPU generator of its own, so a run's draws repeat for a seed (None: fresh entropy)
    without moving torch's global generator under the caller."""
    generator = torch.Generator(device="cpu")
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator
