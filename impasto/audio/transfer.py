"""Audio style transfer after Ulyanov & Lebedev (2016), on the image engine's parts.

The log-magnitude spectrogram is treated as a one-pixel-high picture whose
"colour channels" are the frequency bins. A single layer of 1-D convolutions
over time with random, fixed weights (the paper found that a trained network is
not needed: random filters already make Gram statistics that describe a sound
texture) turns it into features; the output spectrogram keeps the content's
features and matches the style's feature statistics, with the same losses
(impasto.losses) and the same descent loop (impasto.descent.descend) as images.
Griffin-Lim then gives the optimised magnitudes a phase.

The optimised magnitudes are seldom exactly those of any waveform, so Griffin-Lim's
sound has less of the style than the spectrogram it was given (on a synthetic
melody the style loss of the sound was ~10x that of the spectrogram). A few
iterations of the same objective on the waveform itself, through torch.stft,
close that gap; `refine_iterations=0` leaves the paper's method alone.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch

from .. import losses as L
from ..errors import STOP_CALLBACK, STOP_INTERRUPTED, ImpastoError, Interrupted, NonFiniteLoss, option, warn
from ..device import resolve_device, seeded_generator, with_autograd
from ..descent import Score, descend_keeping_best
from ..optimize import Progress
from ..settings import Settings, SettingsLike, as_settings, check_names
from . import io, spectral

AudioLike = Union[str, os.PathLike, tuple[Any, int]]  # a path, or (samples, sample_rate)
Callback = Callable[[Progress], Optional[bool]]

# Where the image defaults do not suit a spectrogram: one cheap layer can afford more
# iterations than VGG's finest scale. The image style weight, 30, suits sound too: on a
# spoken sentence in the texture of plucked notes, 10 left mostly the speech with the
# music's hiss, 100 blurred the words (the speech band's spectrogram correlated 0.88,
# 0.82 and 0.68 with the content's for 10, 30 and 100).
AUDIO_DEFAULTS: dict[str, Any] = {"iterations": 100}
# The Settings fields an audio run reads; the others are about pictures.
SHARED_FIELDS = ("content_weight", "style_weight", "style_loss", "gram_shift", "optimizer", "lr", "iterations", "init", "seed", "device")


@dataclass
class AudioSettings:
    """The knobs only sound has. Field docs double as the CLI's --help text."""

    sample_rate: int = field(default=22050, metadata={"help": "working sample rate in Hz: inputs are resampled to it, the output back to the content's rate"})
    n_fft: int = field(default=1024, metadata={"help": "STFT window length in samples (frequency resolution)"})
    hop: int = field(default=256, metadata={"help": "STFT hop in samples (time resolution)"})
    # The paper's single layer of 4096 filters of width 11 costs about what 512 filters at
    # each of three widths do; the three widths (35, 128 and 360 ms at the default
    # rate and hop) also catch rhythm longer than one kernel.
    filters: int = field(default=512, metadata={"help": "random filters per kernel width in the feature network (the paper: 4096 of width 11)"})
    kernel_widths: tuple[int, ...] = field(default=(3, 11, 31), metadata={"help": "kernel widths in STFT frames, one conv layer of FILTERS each"})
    griffin_lim_iterations: int = field(default=100, metadata={"help": "phase reconstruction iterations (fast Griffin-Lim)"})
    refine_iterations: int = field(
        default=30,
        metadata={
            "help": "iterations of the same objective on the waveform after Griffin-Lim, through a differentiable STFT, so "
            "the sound heard matches what was optimised (0: the paper's method alone)"
        },
    )
    max_seconds: float = field(default=30.0, metadata={"help": "longest input accepted, in seconds"})

    def __post_init__(self) -> None:
        widths = self.kernel_widths
        if isinstance(widths, (int, str)):
            widths = [v for v in str(widths).split(",") if v.strip()]
        try:
            self.kernel_widths = tuple(int(v) for v in widths)
        except (TypeError, ValueError):
            raise ImpastoError(f"{option('kernel_widths')} must be whole numbers of frames such as 3,11,31, not {widths!r}") from None

    def replace(self, **changes: Any) -> "AudioSettings":
        return AudioSettings(**(asdict(self) | changes))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kernel_widths"] = list(self.kernel_widths)
        return d

    def validate(self) -> "AudioSettings":
        if not 1000 <= self.sample_rate <= 192000:
            raise ImpastoError(f"{option('sample_rate')} must be between 1000 and 192000 Hz, not {self.sample_rate}")
        if self.n_fft < 16:
            raise ImpastoError(f"{option('n_fft')} must be at least 16 samples, not {self.n_fft}")
        if not 1 <= self.hop <= self.n_fft // 2:
            # Above half the window the Hann windows no longer overlap-add to a constant,
            # and the inverse STFT cannot rebuild the signal.
            raise ImpastoError(f"{option('hop')} must be between 1 and {option('n_fft')}/2 = {self.n_fft // 2}, not {self.hop}")
        if self.filters < 1:
            raise ImpastoError(f"{option('filters')} must be at least 1, not {self.filters}")
        if not self.kernel_widths or any(w < 1 for w in self.kernel_widths):
            raise ImpastoError(f"{option('kernel_widths')} must be one or more positive frame counts, not {','.join(map(str, self.kernel_widths))}")
        if self.griffin_lim_iterations < 0 or self.refine_iterations < 0:
            raise ImpastoError(f"{option('griffin_lim_iterations')} and {option('refine_iterations')} must be zero or more")
        if not (self.max_seconds > 0 and math.isfinite(self.max_seconds)):
            raise ImpastoError(f"{option('max_seconds')} must be a positive number, not {self.max_seconds}")
        return self


def default_settings(**overrides: Any) -> Settings:
    """The shared Settings with the audio defaults (AUDIO_DEFAULTS) and `overrides` on top."""
    return Settings(**(AUDIO_DEFAULTS | overrides))


class FeatureNet(torch.nn.Module):
    """One layer of random 1-D convolutions over time per kernel width, then ReLU.

    Frequency bins are the input channels, so each filter looks at the whole
    spectrum over `width` frames. Weights are fixed and drawn from `seed`: the
    same seed gives the same network, so a run is repeatable.
    """

    def __init__(self, bins: int, filters: int, widths: tuple[int, ...], seed: Optional[int]) -> None:
        super().__init__()
        generator = seeded_generator(seed)
        self.convs = torch.nn.ModuleList()
        for width in widths:
            conv = torch.nn.Conv1d(bins, filters, width, bias=False)  # no padding: every frame a filter sees is real
            with torch.no_grad():
                # He initialisation keeps the ReLU features' scale independent of bins and width.
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * math.sqrt(2.0 / (bins * width)))
            conv.requires_grad_(False)
            self.convs.append(conv)
        self.widths = widths

    def forward(self, log_mag: torch.Tensor) -> dict[str, torch.Tensor]:
        """(bins, frames) -> {"width11": (1, filters, frames - 10), ...}"""
        x = log_mag.unsqueeze(0)
        return {f"width{w}": torch.relu(conv(x)) for w, conv in zip(self.widths, self.convs)}


class AudioObjective:
    """content_weight × content loss + style_weight × style loss over the network's layers."""

    def __init__(self, net: FeatureNet, content: torch.Tensor, style: torch.Tensor, settings: Settings) -> None:
        self.net, self.settings = net, settings
        with torch.no_grad():
            self.content_targets = {k: v.detach() for k, v in net(content).items()}
            style_stats = {k: L.feature_stats(v) for k, v in net(style).items()}
        self.style_losses = {k: L.make_style_loss(settings.style_loss, stats, settings.gram_shift) for k, stats in style_stats.items()}

    def terms(self, log_mag: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.net(log_mag)
        content = sum(L.content_loss(feats[k], t) for k, t in self.content_targets.items()) / len(feats)
        style = sum(fn(feats[k]) for k, fn in self.style_losses.items()) / len(feats)
        return {"content": content, "style": style}  # type: ignore[dict-item]

    def __call__(self, log_mag: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = self.terms(log_mag)
        return self.settings.content_weight * parts["content"] + self.settings.style_weight * parts["style"], parts

    def of_unbounded(self, param: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The objective of max(param, 0): log(1 + |X|) is never negative."""
        return self(param.clamp_min(0))

    def of_waveform(self, audio: "AudioSettings") -> Score:
        """The objective of a waveform's own spectrogram: differentiable through torch.stft."""

        def objective(samples: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            return self(spectral.log_magnitude(samples, audio.n_fft, audio.hop))

        return objective


@dataclass
class AudioResult:
    """What an audio run produced: the output at the content's sample rate and length."""

    samples: np.ndarray  # mono float32, peak-normalised
    sample_rate: int
    # Content, style and total of `samples` themselves, brought back to the working rate and
    # re-analysed: what is written and heard, not an earlier stage's waveform.
    losses: dict[str, float]
    # One row per iteration: scale 0 = the spectrogram, 1 = the waveform refinement. The first
    # row scores the starting point (the content itself, by default).
    history: list[dict[str, float]]
    seconds: float
    settings: Settings
    audio_settings: AudioSettings
    spectrogram_losses: dict[str, float]  # of the optimised spectrogram, before phase reconstruction
    spectral_convergence: float  # how closely Griffin-Lim's waveform has the optimised magnitudes (0 = exactly)
    # log(1 + |STFT|) at the working rate, each peak-normalised as analysed: the content, the style,
    # the output (`samples`, as written) and the optimised spectrogram it was rebuilt from.
    spectrograms: dict[str, np.ndarray] = field(default_factory=dict)
    interrupted: bool = False
    stopped_reason: Optional[str] = None

    @property
    def initial_losses(self) -> dict[str, float]:
        """The losses of the starting point, under the names `losses` has, to compare with them."""
        if not self.history:
            return dict(self.losses)
        # A history row also says where it was taken (its scale and iteration), which is no loss.
        return {k: v for k, v in self.history[0].items() if k in self.losses}

    def summary(self) -> dict[str, Any]:
        return {
            "sample_rate": self.sample_rate,
            "samples": int(len(self.samples)),
            "losses": self.losses,
            "initial_losses": self.initial_losses,
            "spectrogram_losses": self.spectrogram_losses,
            "spectral_convergence": round(self.spectral_convergence, 4),
            "seconds": round(self.seconds, 3),
            "iterations": len(self.history),
            "interrupted": self.interrupted,
            "stopped_reason": self.stopped_reason,
            "settings": {f: getattr(self.settings, f) for f in SHARED_FIELDS},
            "audio_settings": self.audio_settings.to_dict(),
        }

    def save(self, path: Union[str, os.PathLike], overwrite: bool = False) -> Path:
        return io.save_sound(self.samples, self.sample_rate, path, overwrite)


def read_input(source: AudioLike, audio: AudioSettings, name: str) -> io.Sound:
    if not isinstance(source, tuple):
        return io.load_sound(source, audio.max_seconds, name)
    if len(source) == 2 and not isinstance(source[0], (str, bytes)):
        return io.sound_from_array(source[0], source[1], audio.max_seconds, name)
    raise ImpastoError(f"{name}: a sound is a file's path or a (samples, sample_rate) pair, not a tuple of {len(source)}")


def check_settings(settings: Settings) -> Settings:
    settings.validate()
    if settings.init not in ("palette", "content", "noise"):
        raise ImpastoError(f"{option('init')} must be content or noise for audio, not {settings.init!r}")
    return settings


def to_spectrogram(sound: io.Sound, audio: AudioSettings, device: torch.device) -> tuple[torch.Tensor, int]:
    """The working-rate log-magnitude spectrogram, and the length of the working-rate samples it was
    taken from; refusing a sound too short for the network."""
    samples = io.resample(sound.samples, sound.rate, audio.sample_rate)
    needed = audio.n_fft + (max(audio.kernel_widths) - 1) * audio.hop
    if len(samples) < needed:
        raise ImpastoError(
            f"{sound.label}: is {sound.seconds * 1000:.0f} ms long; with {option('n_fft', audio.n_fft)}, {option('hop', audio.hop)} and kernel width "
            f"{max(audio.kernel_widths)} it must last at least {needed / audio.sample_rate * 1000:.0f} ms"
        )
    return spectral.log_magnitude(torch.from_numpy(at_analysis_level(samples, sound, audio)).to(device), audio.n_fft, audio.hop), len(samples)


# Below this fraction (-40 dB) of its RMS left in the working rate's band, a sound has nothing
# there but resampling's leakage at its ends, which peak-normalising would make the content.
BAND_FLOOR = 1e-2


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


def at_analysis_level(samples: np.ndarray, sound: io.Sound, audio: AudioSettings) -> np.ndarray:
    """Working-rate samples peak-normalised: log(1 + |STFT|) depends on the level, and a
    recording at -46 dBFS would otherwise get almost no style (its spectrogram is near 0)."""
    if rms(samples) < BAND_FLOOR * rms(sound.samples):
        raise ImpastoError(
            f"{sound.label}: has almost nothing below {audio.sample_rate / 2000:g} kHz, the top of the working band; "
            f"raise {option('sample_rate')} (at most {sound.rate})"
        )
    return io.peak_normalise(samples)


# Above this share of the style's energy beyond what the output file can hold, a user hears
# the difference (a telephone-rate content with a cymbal style loses the cymbals).
LOST_BAND_SHARE = 0.05


def warn_lost_band(content: io.Sound, style: io.Sound, audio: AudioSettings) -> None:
    """Warn when the output, written at the content's rate, cannot hold much of the style's sound."""
    top = min(style.rate, audio.sample_rate) / 2
    cut = content.rate / 2
    if cut >= top:
        return
    # At the style's own rate: the transfer's resampling would only cut it at `top`, as this does.
    power = np.abs(np.fft.rfft(style.samples.astype(np.float64))) ** 2
    frequencies = np.fft.rfftfreq(len(style.samples), 1 / style.rate)
    heard = frequencies <= top
    power, frequencies = power[heard], frequencies[heard]
    total = float(power.sum())
    share = float(power[frequencies > cut].sum()) / total if total > 0 else 0.0
    if share > LOST_BAND_SHARE:
        warn(f"the output keeps the content's {content.rate} Hz, which holds nothing above {cut / 1000:g} kHz, "
             f"where {share:.0%} of the style's sound is; resample the content to a higher rate first to keep it")


def initial_spectrogram(settings: Settings, content: torch.Tensor) -> torch.Tensor:
    if settings.init in ("palette", "content"):  # a sound has no colours: palette, the default, is the content
        return content.clone()
    generator = seeded_generator(None if settings.seed is None else settings.seed + 1)  # not the network's draw
    # Noise at the content's level: far from any target, but on the right scale.
    return (torch.rand(content.shape, generator=generator) * 2 * content.mean().item()).to(content.device)


@with_autograd
def stylize_audio(
    content: AudioLike,
    style: AudioLike,
    output: Optional[Union[str, os.PathLike]] = None,
    settings: Optional[SettingsLike] = None,
    audio: Optional[AudioSettings] = None,
    callback: Optional[Callback] = None,
    overwrite: bool = False,
    **overrides: Any,
) -> AudioResult:
    """Render `content` in the sound texture of `style` (Ulyanov & Lebedev 2016).

    `content` and `style` are sound file paths or (samples, sample_rate) pairs
    (samples float in [-1, 1], or integer PCM such as scipy.io.wavfile's int16);
    stereo is mixed down to mono, and each is peak-normalised before analysis, so
    the recording level does not matter. `settings` is the image engine's Settings (its
    content_weight, style_weight, style_loss, gram_shift, optimizer, lr,
    iterations, init, seed and device apply; default: `default_settings()`),
    `audio` the audio-only knobs. Keyword overrides go to whichever of the two has
    the field: ``stylize_audio(a, b, style_weight=300, filters=2048)``.
    `callback(progress)` is called each iteration (an impasto.Progress whose
    `image` is the current log-spectrogram); return False to stop. Ctrl-C raises
    impasto.Interrupted, whose `result` is the sound made from the best spectrogram so
    far, with the phases Griffin-Lim had reached if it was interrupted (written to
    `output` first, when given). With `output`, the result is
    written there (WAV or FLAC, never over an existing file unless `overwrite`).
    """
    if isinstance(settings, dict):  # the audio defaults, as for no settings, with these on top
        check_names(settings)
        settings = default_settings(**settings)
    settings = as_settings(settings) if settings is not None else default_settings()
    settings, audio = split_overrides(settings, audio or AudioSettings(), overrides)
    check_settings(settings)
    audio.validate()
    if output is not None:
        io.check_audio_output(output, overwrite)
    device = resolve_device(settings.device)
    start = time.perf_counter()
    content_sound = read_input(content, audio, "content")
    style_sound = read_input(style, audio, "style")
    warn_lost_band(content_sound, style_sound, audio)
    # The content's working length is the resampler's, not seconds x rate, which can differ by a sample
    # across a hop and leave Griffin-Lim a frame short of the magnitudes it rebuilds.
    content_spec, working_length = to_spectrogram(content_sound, audio, device)
    style_spec, _ = to_spectrogram(style_sound, audio, device)

    net = FeatureNet(content_spec.shape[0], audio.filters, audio.kernel_widths, settings.seed).to(device)
    objective = AudioObjective(net, content_spec, style_spec, settings)
    run = Run(settings, audio, callback, start)
    spec = run.stage(0, objective.of_unbounded, initial_spectrogram(settings, content_spec), settings.iterations, None)
    spec = spec.clamp_min(0)
    spectrogram_losses = score(objective, spec)

    with torch.no_grad():
        magnitude = spectral.magnitude_from_log(spec)
        wave = run.griffin_lim(magnitude, working_length)
        convergence = spectral.spectral_convergence(wave, magnitude, audio.n_fft, audio.hop)
    heard = objective.of_waveform(audio)
    if run.reason is None and audio.refine_iterations > 0:
        # Samples stay within full scale; the output is peak-normalised afterwards anyway.
        wave = run.stage(1, heard, wave, audio.refine_iterations, (-1.0, 1.0))

    samples = io.resample(wave.cpu().numpy(), audio.sample_rate, content_sound.rate)
    samples = io.peak_normalise(io.fit_length(samples, len(content_sound.samples)))
    # Scored and drawn from the samples written, back at the working rate: resampling to a
    # lower content rate cuts the band above its Nyquist, and the level changes the log spectrogram.
    written = torch.from_numpy(io.fit_length(io.resample(samples, content_sound.rate, audio.sample_rate), working_length)).to(device)
    losses = score(heard, written)
    with torch.no_grad():
        output_spec = spectral.log_magnitude(written, audio.n_fft, audio.hop)
    result = AudioResult(
        samples=samples,
        sample_rate=content_sound.rate,
        losses=losses,
        history=run.history,
        seconds=time.perf_counter() - start,
        settings=settings,
        audio_settings=audio,
        spectrogram_losses=spectrogram_losses,
        spectral_convergence=convergence,
        spectrograms={
            "content": content_spec.cpu().numpy(),
            "style": style_spec.cpu().numpy(),
            "output": output_spec.cpu().numpy(),
            "optimised": spec.cpu().numpy(),
        },
        interrupted=run.reason is not None,
        stopped_reason=run.reason,
    )
    if output is not None:
        result.save(output, overwrite)
    if run.reason == STOP_INTERRUPTED:
        raise Interrupted(result)  # as an image run does: a loop of runs stops, the sound so far is in `result`
    return result


def split_overrides(settings: Settings, audio: AudioSettings, overrides: dict[str, Any]) -> tuple[Settings, AudioSettings]:
    audio_names = {f.name for f in fields(AudioSettings)}
    image_names = {f.name for f in fields(Settings)}
    unknown = sorted(set(overrides) - audio_names - image_names)
    if unknown:
        raise ImpastoError(f"unknown setting(s): {', '.join(unknown)}")
    try:
        settings = settings.replace(**{k: v for k, v in overrides.items() if k in image_names})
        audio = audio.replace(**{k: v for k, v in overrides.items() if k in audio_names})
    except (TypeError, ValueError) as exc:
        raise ImpastoError(f"bad setting: {exc}") from None
    return settings, audio


def score(objective: Score, value: torch.Tensor) -> dict[str, float]:
    with torch.no_grad():
        total, parts = objective(value)
    return {k: float(v) for k, v in parts.items()} | {"total": float(total)}


class Run:
    """The stages of one run through the shared descent loop, with one history and one progress count.

    A stage keeps the best value it scored, so stopping (a callback returning False,
    Ctrl-C, a loss that blows up) keeps the best so far, and later stages are skipped.
    """

    def __init__(self, settings: Settings, audio: AudioSettings, callback: Optional[Callback], started: float) -> None:
        self.settings, self.audio, self.callback, self.started = settings, audio, callback, started
        self.steps = [settings.iterations, audio.refine_iterations]
        self.stages = 2 if audio.refine_iterations > 0 else 1
        self.total = sum(self.steps)
        self.done = 0
        self.history: list[dict[str, float]] = []
        self.reason: Optional[str] = None

    def stage(self, index: int, objective: Score, start: torch.Tensor, steps: int, bounds: Optional[tuple[float, float]]) -> torch.Tensor:
        param = start.detach().clone().contiguous()
        best = param.detach().clone()

        def keep(value: torch.Tensor, losses: dict[str, float]) -> None:
            nonlocal best
            best = value

        try:
            for step in descend_keeping_best(objective, param, steps, self.settings, keep, bounds=bounds):
                self.done += 1
                self.history.append({"scale": index, "iteration": self.done, **step.losses})
                if self.callback is not None and self.callback(self.progress(index, step.number, step.losses, param)) is False:
                    self.reason = STOP_CALLBACK
                    return best
        except KeyboardInterrupt:
            self.reason = STOP_INTERRUPTED
            return best
        except NonFiniteLoss as exc:
            self.reason = str(exc)
            return best
        return best

    def griffin_lim(self, magnitude: torch.Tensor, length: int) -> torch.Tensor:
        """Phase reconstruction; Ctrl-C keeps its latest iterate and stops the run there."""
        audio = self.audio
        angles = spectral.random_phases(magnitude, self.settings.seed)
        try:
            for angles in spectral.griffin_lim_phases(magnitude, angles, audio.n_fft, audio.hop, length, audio.griffin_lim_iterations):
                pass
        except KeyboardInterrupt:
            self.reason = STOP_INTERRUPTED
        return spectral.istft(magnitude * angles, audio.n_fft, audio.hop, length)

    def progress(self, index: int, number: int, losses: dict[str, float], param: torch.Tensor) -> Progress:
        """An impasto.Progress whose `image` is always a log-spectrogram (frequency bins, frames)."""
        with torch.no_grad():
            if index == 0:
                image = param.detach().clamp_min(0)
            else:
                audio = self.audio
                image = spectral.log_magnitude(param.detach(), audio.n_fft, audio.hop)
        size = (image.shape[1], image.shape[0])  # (frames, bins): the spectrogram as a picture's (width, height)
        return Progress(index, self.stages, size, number, self.steps[index], self.done, self.total, losses, image, time.perf_counter() - self.started)
