"""`impasto audio CONTENT STYLE -o OUT.wav`: the command line over stylize_audio."""

from __future__ import annotations

import argparse
import sys
import typing
from dataclasses import fields
from typing import Any, Optional, Sequence

from ..cli import Parser, add_settings_arguments, exit_code, explicit_settings, write_summary
from ..errors import ImpastoError, Interrupted, option
from ..settings import Settings
from .transfer import AUDIO_DEFAULTS, SHARED_FIELDS, AudioSettings

# Settings fields that mean nothing for a spectrogram are left out of --help.
IMAGE_ONLY = tuple(f.name for f in fields(Settings) if f.name not in SHARED_FIELDS)
AUDIO_HELP = {
    "iterations": "iterations on the spectrogram",
    "init": "start spectrogram: content or noise",
    "preset": "start from a named group of image settings (`impasto presets`); only the options listed here apply",
}


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="impasto audio",
        description="Render CONTENT in the sound texture of STYLE (Ulyanov & Lebedev 2016, 'Audio texture synthesis "
        "and style transfer'): a random 1-D conv network over the log-magnitude spectrogram, the image engine's content "
        "and style losses, then Griffin-Lim. Inputs are mixed down to mono; the output has the content's sample rate and "
        "length.",
    )
    p.add_argument("content", help="the sound to keep (WAV, FLAC, OGG, AIFF, ...)")
    p.add_argument("style", help="the sound whose texture to take")
    p.add_argument("-o", "--output", required=True, help="output sound file (.wav or .flac, 16-bit)")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT, --plot and --json files if they exist")
    p.add_argument("--plot", metavar="PATH", help="write a PNG of the content, style and output spectrograms side by side")
    p.add_argument("--json", metavar="PATH", help="write the losses and settings as JSON ('-' for stdout)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_audio_arguments(p)
    add_settings_arguments(p, skip=IMAGE_ONLY)
    for action in p._actions:  # say what the shared options mean for sound, and the audio defaults
        if action.dest in AUDIO_HELP and action.help is not None:
            default = action.help.rfind(" (default:")
            action.help = AUDIO_HELP[action.dest] + (action.help[default:] if default >= 0 else "")
        if action.dest in AUDIO_DEFAULTS and action.help:
            action.help = action.help.rsplit(" (default:", 1)[0] + f" (default for audio: {AUDIO_DEFAULTS[action.dest]:g})"
        if action.dest == "init":
            action.metavar = "content|noise"  # a sound starts from neither a painting nor a picture file
            action.help = f"{AUDIO_HELP['init']} (default: content; the images' palette start is the content for a sound)"
    return p


def add_audio_arguments(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("audio")
    defaults = AudioSettings()
    for f in fields(AudioSettings):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        text = f"{f.metadata['help']} (default: {shown})"
        hint = typing.get_type_hints(AudioSettings)[f.name]
        if typing.get_origin(hint) is tuple:
            group.add_argument(flag, default=None, metavar="W,W,..", help=text)
        else:
            group.add_argument(flag, type=hint, default=None, metavar="N" if hint is int else "X", help=text)


def audio_settings_from_args(args: argparse.Namespace) -> AudioSettings:
    given = {f.name: getattr(args, f.name) for f in fields(AudioSettings) if getattr(args, f.name) is not None}
    try:
        return AudioSettings(**given).validate()
    except ValueError as exc:
        raise ImpastoError(f"bad audio setting: {exc}") from None


def shared_settings_from_args(args: argparse.Namespace) -> Settings:
    given = explicit_settings(args)
    # The audio defaults count as given (as if typed), but a preset's own values win over them:
    # under the preset, not dropped with it (a preset without an iteration count runs audio's 100).
    settings = Settings.from_given(args.preset, given, under=AUDIO_DEFAULTS) if args.preset else Settings.from_given(None, AUDIO_DEFAULTS | given)
    settings.warn_unused(given)
    return settings


def check_outputs(args: argparse.Namespace) -> None:
    """Every file the run will write is checked first, so a long run cannot fail at its end."""
    from ..images import check_distinct_outputs, check_not_inputs, check_output_path
    from .io import check_audio_output, require_soundfile

    outputs = {option(name): path for name, path in (("output", args.output), ("plot", args.plot), ("json", args.json))}
    check_distinct_outputs(outputs)
    check_not_inputs(outputs, {"the content sound": args.content, "the style sound": args.style})
    require_soundfile()
    check_audio_output(args.output, args.overwrite)
    if args.plot:
        from ..media import check_plot_path, require_matplotlib

        check_plot_path(args.plot, args.overwrite, "--plot")
        require_matplotlib()
    if args.json and args.json != "-":
        check_output_path(args.json, args.overwrite)


def cli_main(argv: Sequence[str]) -> int:
    from tqdm import tqdm

    from .plot import plot_spectrograms
    from .transfer import stylize_audio

    args = build_parser().parse_args(argv)
    settings = shared_settings_from_args(args)
    audio = audio_settings_from_args(args)
    check_outputs(args)

    bar: Optional[tqdm] = None

    def callback(progress: Any) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=progress.total, unit="it", disable=args.quiet, dynamic_ncols=True, desc="spectrogram")
        bar.set_description("spectrogram" if progress.scale == 0 else "waveform", refresh=False)
        bar.set_postfix({k: f"{v:.3g}" for k, v in progress.losses.items()}, refresh=False)
        bar.update(1)

    try:
        result = stylize_audio(args.content, args.style, settings=settings, audio=audio, callback=callback)
    except Interrupted as stop:  # Ctrl-C: the sound so far is written, and the exit code says it was cut short
        result = stop.result
    if bar is not None:
        bar.close()
    result.save(args.output, args.overwrite)
    if args.plot:
        plot_spectrograms(result, args.plot, overwrite=args.overwrite)
        print(f"wrote {args.plot}", file=sys.stderr)
    first, last = result.initial_losses, result.losses
    state = f" ({result.stopped_reason}; best so far kept)" if result.interrupted else ""
    print(
        f"wrote {args.output} ({len(result.samples) / result.sample_rate:.2f} s, {result.sample_rate} Hz, mono) in "
        f"{result.seconds:.1f} s{state}; of the sound written: style loss {first['style']:.4g} -> {last['style']:.4g}, "
        f"content loss {last['content']:.4g}; of the optimised spectrogram: style {result.spectrogram_losses['style']:.4g}; "
        f"Griffin-Lim spectral convergence {result.spectral_convergence:.3f}",
        file=sys.stderr,
    )
    if args.json:
        write_summary(result.summary() | {"output": str(args.output)}, args.json)
    return exit_code(result)
