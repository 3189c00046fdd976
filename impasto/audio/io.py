"""Reading, checking, resampling and writing sound files.

soundfile (libsndfile) reads WAV, FLAC, OGG/Vorbis, AIFF and more; impasto writes
WAV or FLAC. Everything is mixed down to mono: the feature network sees one
spectrogram, and a stereo image would not survive independent per-channel
optimisation anyway (the two channels' textures would drift apart).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Union

import numpy as np

from ..errors import ImpastoError, option
from ..files import atomic_write

AUDIO_HINT = "pip install 'impasto[audio]'"
OUTPUT_FORMATS = {".wav": "WAV", ".flac": "FLAC"}
# Below this peak (-80 dBFS) a file is silence or dither: there is nothing to stylise.
SILENCE_PEAK = 1e-4
# Leaves headroom so a player's own resampling does not clip (about -0.9 dBFS).
OUTPUT_PEAK = 0.9
# Float samples beyond this (+12 dBFS) are not a hot mix but integers converted to float
# without scaling (int16 as 0..32767): refused, since any level is stylised alike.
FLOAT_LIMIT = 4.0

PathLike = Union[str, os.PathLike]


@dataclass
class Sound:
    """A mono signal in [-1, 1] (float32) and its sample rate."""

    samples: np.ndarray
    rate: int
    channels: int = 1  # how many channels the source had before the mixdown
    label: str = "audio"  # what error messages call it: "content speech.wav"

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate


def require_soundfile() -> Any:
    try:
        import soundfile
    except ImportError:
        raise ImpastoError(f"audio needs soundfile, an optional extra: {AUDIO_HINT}") from None
    return soundfile


def load_sound(path: PathLike, max_seconds: float, name: str = "audio") -> Sound:
    """Read `path`, refuse what cannot be stylised, and mix it down to mono."""
    sf = require_soundfile()
    path = Path(path)
    if not path.exists():
        raise ImpastoError(f"{name} {path}: no such file")
    if path.is_dir():
        raise ImpastoError(f"{name} {path}: is a folder, not a sound file")
    try:
        info = sf.info(str(path))
        # Checked from the header, before reading: a two-hour file is refused at once.
        if info.frames > 0 and info.samplerate > 0 and info.frames / info.samplerate > max_seconds:
            raise ImpastoError(
                f"{name} {path}: is {info.frames / info.samplerate:.1f} s long; the limit is {max_seconds:g} s "
                f"(raise it with {option('max_seconds')}, or cut the file)"
            )
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except ImpastoError:
        raise
    except (RuntimeError, sf.LibsndfileError, TypeError, ValueError) as exc:
        reason = str(exc).split(": ", 1)[-1] if str(exc) else type(exc).__name__
        raise ImpastoError(f"{name} {path}: not a sound file impasto can read (WAV, FLAC, OGG, AIFF, ...): {reason}") from None
    return check_sound(mix_down(data, int(rate), f"{name} {path}"), max_seconds)


def mix_down(data: np.ndarray, rate: int, label: str) -> Sound:
    """(n, channels) to a mono Sound, refusing channels that cancel: the mix would be called
    silent, though each channel plays at full level."""
    mono = data.mean(axis=1)
    channels = data.shape[1]
    if channels > 1 and data.size and np.isfinite(data).all():
        mixed, loudest = float(np.abs(mono).max()), float(np.abs(data).max())
        if mixed < SILENCE_PEAK <= loudest:
            raise ImpastoError(
                f"{label}: mixed down to mono it is silent because its {channels} channels cancel (one is the other inverted?), though "
                f"they peak at {round(20 * math.log10(loudest))} dBFS; impasto works in mono: give it one of the channels"
            )
    return Sound(mono, rate, channels, label)


def check_sound(sound: Sound, max_seconds: float) -> Sound:
    """The checks every input passes, whether it came from a file or from an array."""
    label = sound.label
    if sound.rate <= 0:
        raise ImpastoError(f"{label}: sample rate must be positive, not {sound.rate}")
    if sound.samples.size == 0:
        raise ImpastoError(f"{label}: is empty (no samples)")
    if not np.isfinite(sound.samples).all():
        raise ImpastoError(f"{label}: has samples that are not numbers (NaN or infinite)")
    if sound.seconds > max_seconds:
        raise ImpastoError(
            f"{label}: is {sound.seconds:.1f} s long; the limit is {max_seconds:g} s (raise it with {option('max_seconds')}, or cut the file)"
        )
    peak = float(np.abs(sound.samples).max())
    if peak < SILENCE_PEAK:
        level = "every sample is zero" if peak == 0 else f"its peak is {20 * math.log10(peak):.0f} dBFS"
        raise ImpastoError(f"{label}: is silent ({level}); there is nothing to stylise")
    return sound


# More channels than any real recording has (7.1 is 8): a longer first axis is time.
MAX_CHANNELS = 16


def sound_from_array(samples: Any, rate: int, max_seconds: float, name: str = "audio") -> Sound:
    """An in-memory signal, (n,) or (n, channels) as soundfile gives it, or (channels, n) as
    librosa and torchaudio give it, mixed down to mono.

    Floats are taken as [-1, 1]; integers (scipy.io.wavfile's and pydub's int16 or int32,
    8-bit WAV's uint8) are scaled by their full scale."""
    data = as_float_samples(np.asarray(samples), name)
    if data.ndim == 1:
        data = data[:, None]
    elif data.ndim != 2:
        raise ImpastoError(f"{name}: samples must be (n,) or (n, channels), not shape {data.shape}")
    elif data.shape[0] <= MAX_CHANNELS < data.shape[1]:
        data = data.T  # channels first: no sound has more channels than samples
    return check_sound(mix_down(data, int(rate), name), max_seconds)


def as_float_samples(data: np.ndarray, name: str) -> np.ndarray:
    """float32 in [-1, 1] from float or integer PCM samples."""
    kind = data.dtype.kind
    if kind in "iu":
        bits = 8 * data.dtype.itemsize
        if bits > 32:
            # numpy's default integers (int64: `.astype(int)`, a list of ints) hold 16- or 24-bit
            # PCM, not 64-bit: the smallest usual full scale that holds the peak.
            peak = int(np.abs(data.astype(np.float64)).max()) if data.size else 0
            bits = next((b for b in (16, 24, 32) if peak <= 2 ** (b - 1)), bits)
        half = 2.0 ** (bits - 1)  # int16: 32768; uint8's zero is 128
        offset = half if kind == "u" else 0.0
        return ((data.astype(np.float64) - offset) / half).astype(np.float32)
    if kind != "f":
        raise ImpastoError(f"{name}: samples must be floats in [-1, 1] or integer PCM (int16, int32, uint8), not {data.dtype}")
    data = data.astype(np.float32)
    finite = data[np.isfinite(data)]
    top = float(np.abs(finite).max()) if finite.size else 0.0
    if top > FLOAT_LIMIT:
        raise ImpastoError(
            f"{name}: float samples must lie in [-1, 1], but these reach {top:g}: integer samples converted to float "
            "unscaled? pass the integer array itself, or divide by its full scale (32768 for 16-bit)"
        )
    return data


def resample(samples: np.ndarray, rate: int, new_rate: int) -> np.ndarray:
    """Polyphase resampling (scipy), which band-limits properly: no aliasing when going down."""
    if rate == new_rate:
        return samples.astype(np.float32, copy=False)
    try:
        from scipy.signal import resample_poly
    except ImportError:
        raise ImpastoError(f"resampling needs scipy, part of the audio extra: {AUDIO_HINT}") from None
    ratio = Fraction(new_rate, rate)
    return resample_poly(samples, ratio.numerator, ratio.denominator).astype(np.float32)


def fit_length(samples: np.ndarray, length: int) -> np.ndarray:
    """Cut or zero-pad to exactly `length` samples (resampling rounds lengths)."""
    if len(samples) >= length:
        return samples[:length]
    return np.pad(samples, (0, length - len(samples)))


def peak_normalise(samples: np.ndarray, peak: float = OUTPUT_PEAK) -> np.ndarray:
    """Scale so the loudest sample is `peak`: as loud as it can be without clipping."""
    top = float(np.abs(samples).max()) if samples.size else 0.0
    if top == 0.0:
        return samples
    return (samples * (peak / top)).astype(np.float32)


def check_audio_output(path: PathLike, overwrite: bool = False) -> Path:
    """A writable .wav or .flac path that is not someone's existing file (unless asked)."""
    from ..images import check_output_path

    path = check_output_path(path, overwrite)
    if path.suffix.lower() not in OUTPUT_FORMATS:
        raise ImpastoError(f"{path}: the output must end in .wav or .flac, not {path.suffix or 'no extension'!r}")
    return path


def save_sound(samples: np.ndarray, rate: int, path: PathLike, overwrite: bool = False) -> Path:
    """Write 16-bit WAV or FLAC atomically (a temporary file, then a rename)."""
    sf = require_soundfile()
    path = check_audio_output(path, overwrite)
    with atomic_write(path) as tmp:
        sf.write(str(tmp), np.clip(samples, -1.0, 1.0), rate, format=OUTPUT_FORMATS[path.suffix.lower()], subtype="PCM_16")
    return path
