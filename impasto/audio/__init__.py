"""Audio style transfer (Ulyanov & Lebedev 2016) on impasto's losses and descent loop.

    import impasto.audio
    result = impasto.audio.stylize_audio("speech.wav", "music.wav", "out.wav")
    result.history[0]["style"], result.losses["style"]      # the style loss before and after

Needs the audio extra (`pip install 'impasto[audio]'`: soundfile, scipy; matplotlib
for plots). Importing this package needs only torch and numpy; the extras are
imported when a file is read or written.
"""

from typing import Sequence

from .io import Sound, load_sound, save_sound
from .plot import plot_spectrograms
from .spectral import griffin_lim, log_magnitude, spectral_convergence
from .transfer import AUDIO_DEFAULTS, AudioResult, AudioSettings, FeatureNet, default_settings, stylize_audio


def cli_main(argv: Sequence[str]) -> int:
    """`impasto audio ...`, dispatched from impasto.cli."""
    from .cli import cli_main as run

    return run(argv)


__all__ = [
    "AUDIO_DEFAULTS", "AudioResult", "AudioSettings", "FeatureNet", "Sound", "cli_main", "default_settings", "griffin_lim",
    "load_sound", "log_magnitude", "plot_spectrograms", "save_sound", "spectral_convergence", "stylize_audio",
]  # fmt: skip
