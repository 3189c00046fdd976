"""The content, style and output spectrograms side by side, as one PNG."""

from __future__ import annotations

import os
from typing import Any, Optional, Union

import numpy as np

from .transfer import AudioResult

PANELS = ("content", "style", "output")


def plot_spectrograms(result: AudioResult, path: Optional[Union[str, os.PathLike]] = None, overwrite: bool = False) -> Any:
    """Draw the three log-magnitude spectrograms on one colour scale; return the Figure, write a PNG to `path`."""
    from ..media import check_plot_path, require_matplotlib, save_figure

    if path is not None:
        path = check_plot_path(path, overwrite)
    figure = require_matplotlib()
    audio = result.audio_settings
    specs = [result.spectrograms[name] for name in PANELS]
    # One colour scale for all three, so louder really looks brighter across panels.
    top = max(float(np.max(s)) for s in specs) or 1.0
    widths = [max(s.shape[1], 1) for s in specs]
    fig = figure(figsize=(15, 4.2), dpi=100, layout="constrained")
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": widths})
    nyquist_khz = audio.sample_rate / 2000
    seconds_per_frame = audio.hop / audio.sample_rate
    for ax, name, spec in zip(axes, PANELS, specs):
        extent = (0.0, spec.shape[1] * seconds_per_frame, 0.0, nyquist_khz)
        image = ax.imshow(spec, origin="lower", aspect="auto", extent=extent, cmap="magma", vmin=0.0, vmax=top, interpolation="nearest")
        ax.set_title(f"output, as written at {result.sample_rate} Hz" if name == "output" else name)
        ax.set_xlabel("time (s)")
    axes[0].set_ylabel("frequency (kHz)")
    first, last = result.initial_losses, result.losses
    # Each panel is its sound at the working rate; the output's is of the samples written, so a
    # content rate below the working one shows the band its file cannot hold as empty.
    fig.suptitle(
        f"log(1 + |STFT|) at the working rate, {audio.sample_rate} Hz, peak-normalised (n_fft {audio.n_fft}, hop {audio.hop}); "
        f"the sound written: style loss {first['style']:.3g} → {last['style']:.3g}, content loss {last['content']:.3g}"
    )
    fig.colorbar(image, ax=list(axes), shrink=0.9, label="log(1 + magnitude)")
    return save_figure(fig, path)
