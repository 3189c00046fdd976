"""Spectrograms and phase reconstruction, in torch so they run on the GPU too.

The optimisation works on log(1 + |STFT|): the log compresses the range of a
sound's magnitudes the way hearing does, and 1 + keeps silence at 0. The phase is
thrown away and rebuilt afterwards by Griffin-Lim.
"""

from __future__ import annotations

from typing import Iterator, Optional

import torch

from ..device import seeded_generator


def window(n_fft: int, device: torch.device) -> torch.Tensor:
    return torch.hann_window(n_fft, device=device)


def stft(samples: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """Complex STFT of a 1-D signal, (n_fft // 2 + 1, frames)."""
    return torch.stft(samples, n_fft, hop_length=hop, window=window(n_fft, samples.device), center=True, pad_mode="reflect", return_complex=True)


def istft(spectrum: torch.Tensor, n_fft: int, hop: int, length: int) -> torch.Tensor:
    return torch.istft(spectrum, n_fft, hop_length=hop, window=window(n_fft, spectrum.device), center=True, length=length)


def log_magnitude(samples: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """log(1 + |STFT|), (frequencies, frames)."""
    return torch.log1p(stft(samples, n_fft, hop).abs())


def magnitude_from_log(log_mag: torch.Tensor) -> torch.Tensor:
    return torch.expm1(log_mag).clamp_min(0)


def griffin_lim(
    magnitude: torch.Tensor,
    n_fft: int,
    hop: int,
    length: int,
    iterations: int = 100,
    momentum: float = 0.99,
    seed: Optional[int] = 0,
) -> torch.Tensor:
    """A waveform whose STFT magnitude is close to `magnitude` (frequencies, frames).

    Griffin & Lim (1984) with the momentum of Perraudin et al. (2013, "A fast
    Griffin-Lim algorithm"), which converges in far fewer iterations; starts from
    random phases (seeded) rather than zeros, which leave a buzz at the frame rate.
    """
    angles = random_phases(magnitude, seed)
    for angles in griffin_lim_phases(magnitude, angles, n_fft, hop, length, iterations, momentum):
        pass
    return istft(magnitude * angles, n_fft, hop, length)


def random_phases(magnitude: torch.Tensor, seed: Optional[int] = 0) -> torch.Tensor:
    """Unit complex numbers of random (seeded) angle, the shape of `magnitude`."""
    generator = seeded_generator(seed)
    phase = torch.rand(magnitude.shape, generator=generator).to(magnitude.device) * (2 * torch.pi)
    return torch.polar(torch.ones_like(magnitude), phase)


def griffin_lim_phases(
    magnitude: torch.Tensor, angles: torch.Tensor, n_fft: int, hop: int, length: int, iterations: int, momentum: float = 0.99
) -> Iterator[torch.Tensor]:
    """Fast Griffin-Lim's phases (unit complex) after each iteration: a caller stopped part-way
    (Ctrl-C) still has the latest, ``istft(magnitude * angles)``."""
    previous = torch.zeros_like(angles)
    for _ in range(iterations):
        rebuilt = stft(istft(magnitude * angles, n_fft, hop, length), n_fft, hop)
        # Momentum: step past the projection in the direction it moved.
        step = rebuilt - (momentum / (1 + momentum)) * previous
        angles = step / step.abs().clamp_min(1e-16)
        previous = rebuilt
        yield angles


def spectral_convergence(samples: torch.Tensor, magnitude: torch.Tensor, n_fft: int, hop: int) -> float:
    """‖|STFT(x)| − S‖ / ‖S‖ (Frobenius): 0 when the waveform has exactly magnitude S."""
    rebuilt = stft(samples, n_fft, hop).abs()
    return float(torch.linalg.norm(rebuilt - magnitude) / torch.linalg.norm(magnitude).clamp_min(1e-12))
