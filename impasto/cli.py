"""Command line: a thin shell over impasto.api.

    impasto CONTENT STYLE [STYLE ...] -o OUT.png [options]
    impasto demo [-o OUT.png]
    impasto presets
    impasto sweep CONTENT STYLE --grid SETTING=V1,V2,.. [--grid ...] -o SHEET.png [options]
    impasto batch | serve | video | audio ...   (each in its own module, behind an extra)
"""

from __future__ import annotations

import argparse
import difflib
import itertools
import json
import math
import os
import sys
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from .errors import STOP_INTERRUPTED, ImpastoError, Interrupted, command_line, one_line_warnings, option, warn
from .settings import (
    COLOR_MODES, INIT_NAMES, MODELS, OPTIMIZERS, POOLINGS, PRECISIONS, STYLE_LOSSES, BadSettingValue, Settings, field_kind, parse_setting,
    parse_style, typed_list,  # parse_style here too: the shells (video, and scripts) have long imported it from the CLI
)  # fmt: skip

# Shown in --help; Settings.validate gives the error for anything else.
CHOICES = {"model": MODELS, "pooling": POOLINGS, "optimizer": OPTIMIZERS, "style_loss": STYLE_LOSSES, "preserve_color": COLOR_MODES, "precision": PRECISIONS}

COMMANDS = ("demo", "presets", "sweep")

# Shells with optional dependencies live in their own modules, imported only when
# asked for, so `impasto --help` works without the extras. Each has cli_main(argv) -> int.
PLUGIN_COMMANDS = {
    "batch": "impasto.batch",
    "serve": "impasto.web",
    "video": "impasto.video",
    "audio": "impasto.audio",
}

class Parser(argparse.ArgumentParser):
    """argparse, with a mistake told in one line like impasto's other errors (and a guess at
    a misspelt option) rather than the whole usage block above it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # No abbreviated options: `impasto serve --gif g.gif` was read as --gif-frames and `--devic`
        # as --device; an option is spelt out, and a misspelt one gets a guess instead.
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> typing.NoReturn:
        if message.startswith("unrecognized arguments: "):
            known = [name for name in self._option_string_actions if name.startswith("--")]
            wrong = [arg.split("=", 1)[0] for arg in message.split(": ", 1)[1].split() if arg.startswith("--")]
            guesses = [g for arg in wrong for g in difflib.get_close_matches(arg, known, n=1, cutoff=0.7)]
            if guesses:
                message += f" (did you mean {', '.join(guesses)}?)"
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


# Said here rather than in Settings' field docs: the CLI-only spelling of a value.
EXTRA_HELP = {"style_layers": "; 'all' = every conv layer (Novak & Nikulin 2016)"}


def setting_type(name: str) -> Callable[[str], Any]:
    """argparse's `type` for a setting: settings.parse_setting's rule (--size 512.0 is 512), a refusal
    in argparse's words (argument --size: invalid int value: '2.5')."""
    kind, is_list, _ = field_kind(name)

    def parse(text: str) -> Any:
        try:
            return parse_setting(name, text)
        except BadSettingValue as exc:
            if is_list:  # the item at fault, rather than the whole list
                raise argparse.ArgumentTypeError(f"{exc.value!r} is not {exc.wanted}") from None
            raise ValueError(text) from None

    parse.__name__ = kind.__name__  # the name argparse gives the type in its message
    return parse


# Where the parser notes the settings given as none (--seed none, --lr default): their None is a
# choice, to be kept over a preset's value (seed None: a seed drawn afresh), not the option left out.
GIVEN_NONE = "settings_given_none"


class StoreSetting(argparse.Action):
    """argparse's store, noting a setting given as none (GIVEN_NONE)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option_string: Optional[str] = None) -> None:
        setattr(namespace, self.dest, values)
        if values is None:
            setattr(namespace, GIVEN_NONE, getattr(namespace, GIVEN_NONE, frozenset()) | {self.dest})


def add_settings_arguments(parser: argparse.ArgumentParser, skip: Sequence[str] = ()) -> None:
    """One --option per Settings field, defaulting to None so explicit choices are visible."""
    group = parser.add_argument_group("settings")
    group.add_argument(
        "--preset",
        metavar="NAME",
        help="start from a named group of settings (gatys2015, novak2016, fast, hq; `impasto presets` lists "
        "what each sets); options given explicitly override it",
    )
    defaults = Settings()
    for f in fields(Settings):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind, is_tuple, _ = field_kind(f.name)
        default = getattr(defaults, f.name)
        shown = typed_list(default) if isinstance(default, tuple) else default
        if isinstance(default, bool):
            shown = "on" if default else "off"  # as the flags say it: --multiscale / --no-multiscale
        elif isinstance(default, float) and default.is_integer():
            shown = f"{default:g}"
        text = f"{f.metadata.get('help', '')}{EXTRA_HELP.get(f.name, '')}"
        if default is not None:  # a None default is explained in the field's own words
            text += f" (default: {shown})"
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif is_tuple:
            group.add_argument(flag, type=setting_type(f.name), action=StoreSetting, default=None, metavar="A,B,..", help=text)
        else:
            named = {"weights": "PATH", "device": "DEVICE", "init": "|".join((*INIT_NAMES, "PATH"))}
            metavar = "{" + ",".join(CHOICES[f.name]) + "}" if f.name in CHOICES else named.get(f.name) or {int: "N", float: "X"}.get(kind, "VALUE")
            group.add_argument(flag, type=setting_type(f.name), action=StoreSetting, default=None, metavar=metavar, help=text)


def explicit_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line (each option defaults to None; one given as none is kept)."""
    given_none = getattr(args, GIVEN_NONE, ())
    return {f.name: getattr(args, f.name) for f in fields(Settings) if getattr(args, f.name, None) is not None or f.name in given_none}


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The settings the options ask for (the preset's under those given), checked, with a warning for
    each option given that changes nothing in the run."""
    given = explicit_settings(args)
    settings = Settings.from_given(getattr(args, "preset", None), given)
    settings.warn_unused(given)
    return settings


def build_run_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="impasto",
        description="Paint CONTENT in the style of one or more STYLE images (Gatys et al. neural style transfer). "
        "Other commands (each has --help): `impasto demo` (a bundled photo and painting), `presets`, `sweep` (a grid "
        "of settings side by side), `batch` (many images, here or on Ray), `serve` (a web page), `video`, `audio`.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  impasto photo.jpg starry_night.jpg -o out.png\n"
        "  impasto photo.jpg a.jpg:0.7 b.jpg:0.3 -o blend.png --size 768\n"
        "  impasto photo.jpg sky.jpg ground.jpg --mask sky_mask.png --mask ground_mask.png -o out.png\n"
        "  impasto photo.jpg painting.jpg --preset novak2016 --style-weight 50 -o out.png\n"
        "  impasto photo.jpg painting.jpg --gif progress.gif --plot losses.png -o out.png\n"
        "  impasto presets\n"
        "  impasto sweep photo.jpg painting.jpg --grid style_weight=10,30,100 --grid tv_weight=0,2,10 -o sheet.png\n"
        "  impasto demo",
    )
    from . import __version__

    p.add_argument("--version", action="version", version=f"impasto {__version__}")
    p.add_argument("content", help="the photo to paint")
    p.add_argument("styles", nargs="+", metavar="STYLE[:WEIGHT]", help="style image(s); blend several with weights")
    add_mask_arguments(p)
    add_output_arguments(p)
    add_settings_arguments(p)
    return p


def add_mask_arguments(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("spatial control (Gatys et al. 2017, 'Controlling Perceptual Factors in Neural Style Transfer')")
    group.add_argument(
        "--mask",
        action="append",
        metavar="MASK",
        help="where a style applies (white) and not (black); give one --mask per STYLE, in the STYLEs' order, "
        "'none' for a style that applies everywhere. Any size: stretched to the output's",
    )
    group.add_argument(
        "--keep-mask",
        metavar="MASK",
        help="white regions keep the content untouched: style is matched only outside them, and their pixels "
        "are the content's in the output",
    )


def masks_from_args(args: argparse.Namespace, n_styles: int) -> Optional[list[Optional[str]]]:
    masks = getattr(args, "mask", None)
    if not masks:
        return None
    if len(masks) != n_styles:
        raise ImpastoError(
            f"{len(masks)} --mask given for {n_styles} style(s): give one per style, in order ('none' for a style "
            "that applies everywhere)"
        )
    return [None if m.lower() == "none" else m for m in masks]


def add_output_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", required=True, help="output image (.png, .jpg, ...)")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT (and frames) if they exist")
    p.add_argument("--save-every", type=int, default=0, metavar="N", help="write a frame every N iterations, and the last, into OUTPUT_frames/, each at the output's size (default: 0, off)")
    p.add_argument("--json", metavar="PATH", help="write the final losses and settings as JSON ('-' for stdout)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_media_arguments(p)


GIF_FRAMES, GIF_SECONDS = 30, 4.0


def add_media_arguments(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("progress as pictures")
    group.add_argument("--gif", metavar="PATH", help="write an animated GIF of the image forming")
    group.add_argument("--gif-frames", type=int, default=GIF_FRAMES, metavar="N", help="frames in the GIF, spread evenly over the run's work (pixels x iterations), "
                       "so the output-size scale gets its share (default: 30)")
    group.add_argument("--gif-duration", type=float, default=GIF_SECONDS, metavar="SECONDS", help="how long the GIF plays, all frames together (default: 4)")
    group.add_argument("--plot", metavar="PATH", help="write a PNG plot of each loss term over the iterations, log scale (needs impasto[viz])")


def input_files(
    content: Any, styles: Sequence[tuple[Any, float]], settings: Settings, args: argparse.Namespace, content_is: str = "the photo"
) -> dict[str, Any]:
    """The files a run reads, by what they are (for check_not_inputs)."""
    named: dict[str, Any] = {content_is: content}
    named |= {f"the painting {style}": style for style, _ in styles}
    named |= {f"the --mask {mask}": mask for mask in getattr(args, "mask", None) or []}
    named["the --keep-mask"] = getattr(args, "keep_mask", None)
    if settings.init not in INIT_NAMES:
        named["the --init picture"] = settings.init
    return named


def write_summary(summary: dict[str, Any], target: str) -> None:
    """--json TARGET: the run's summary on stdout for "-", else into the file TARGET, written whole
    or not at all (a script reading it must never find half a summary)."""
    from .files import atomic_write

    text = json.dumps(summary, indent=2) + "\n"
    if target == "-":
        print(text, end="")
        return
    path = Path(target)
    if path.is_symlink() or (path.exists() and not path.is_file()):
        # /dev/stdout, a pipe, a link the user made: written through, as named, never renamed over.
        with open(path, "w") as handle:
            handle.write(text)
        return
    with atomic_write(path) as tmp:
        tmp.write_text(text)


def exit_code(result: Any) -> int:
    """130 for a run Ctrl-C stopped, 1 for one stopped short otherwise (a callback, a NaN loss, out of
    memory), 0 for a finished one: a script can tell a full result from the best one before a stop."""
    return 130 if result.stopped_reason == STOP_INTERRUPTED else (1 if result.interrupted else 0)


def run_and_save(content: Any, styles: list[tuple[str, float]], settings: Settings, args: argparse.Namespace) -> int:
    from .api import Stylizer
    from .images import check_distinct_outputs, check_image_output, check_not_inputs, check_output_path, save_image
    from .media import MAX_GIF_SECONDS

    output = check_image_output(args.output, args.overwrite)
    if args.json and args.json != "-":
        check_output_path(args.json, args.overwrite)
    # Every output is checked before the run, so a long run cannot fail at its end.
    if args.gif_frames < 1:
        raise ImpastoError(f"--gif-frames must be at least 1, not {args.gif_frames}")
    if not (math.isfinite(args.gif_duration) and 0 < args.gif_duration <= MAX_GIF_SECONDS):
        raise ImpastoError(f"--gif-duration must be above 0 and at most {MAX_GIF_SECONDS} seconds, not {args.gif_duration}")
    if not args.gif and (args.gif_frames != GIF_FRAMES or args.gif_duration != GIF_SECONDS):
        warn("--gif-frames and --gif-duration shape the GIF that --gif PATH writes: without --gif they change nothing")
    if args.gif:
        check_output_path(args.gif, args.overwrite)
        if Path(args.gif).suffix.lower() != ".gif":
            raise ImpastoError(f"--gif {args.gif}: the file name must end in .gif")
    if args.plot:
        from .media import check_plot_path, require_matplotlib

        check_plot_path(args.plot, args.overwrite, "--plot")
        require_matplotlib()
    # The run checks the frames' folder before its work, and writes the frames itself.
    frames_dir = output.with_name(output.stem + "_frames") if args.save_every else None
    outputs = {"-o": output, "--json": args.json, "--gif": args.gif, "--plot": args.plot, "--save-every's folder": frames_dir}
    check_distinct_outputs(outputs)
    check_not_inputs(outputs, input_files(content, styles, settings, args))
    masks = masks_from_args(args, len(styles))

    bar = RunBar(args.quiet)
    callback = bar.update
    try:
        result = Stylizer().run(
            content, styles, settings, callback=callback, masks=masks, keep_mask=getattr(args, "keep_mask", None),
            frames=args.gif_frames if args.gif else 0, save_every=args.save_every, frames_dir=frames_dir, overwrite=args.overwrite,
        )  # fmt: skip
    except Interrupted as stop:  # Ctrl-C: the best picture so far is saved, and the exit code says it was cut short
        result = stop.result
    bar.close()
    save_image(result.image, output, overwrite=args.overwrite)
    if args.gif and result.frames:
        from PIL import Image

        from .media import write_gif

        write_gif(result.frames, args.gif, args.gif_duration, overwrite=args.overwrite)
        with Image.open(args.gif) as written:  # Pillow merges a frame identical to the one before it
            count = getattr(written, "n_frames", 1)
        print(f"wrote {args.gif} ({count} frame{'s' if count != 1 else ''})", file=sys.stderr)
    elif args.gif:
        print(f"impasto: no iterations ran, so there is no {args.gif} to write", file=sys.stderr)
    if args.plot and result.history:
        from .media import plot_losses

        plot_losses(result, args.plot, overwrite=args.overwrite)
        print(f"wrote {args.plot}", file=sys.stderr)
    elif args.plot:
        print(f"impasto: no iterations ran, so there is no {args.plot} to write", file=sys.stderr)
    losses = ", ".join(f"{k} {v:.4g}" for k, v in result.losses.items()) or "none (no iterations at the output's size)"
    state = f" ({result.stopped_reason}; best image so far kept)" if result.interrupted else ""
    print(f"wrote {output} in {result.seconds:.1f} s{state}; final losses: {losses}", file=sys.stderr)
    for note in result.notes:
        print(note, file=sys.stderr)
    if args.json:
        # The preset too: the settings are all there, but "which preset was this" is what a person asks.
        # And the pictures that went in, so the summary is enough to make the picture again.
        inputs = {
            "content": str(content),
            "styles": [{"path": str(style), "weight": weight} for style, weight in styles],
            "masks": list(getattr(args, "mask", None) or []) or None,
            "keep_mask": getattr(args, "keep_mask", None),
        }
        write_summary(result.summary() | inputs | {"output": str(output), "preset": getattr(args, "preset", None)}, args.json)
    return exit_code(result)


def cmd_run(argv: Sequence[str]) -> int:
    args = build_run_parser().parse_args(argv)
    settings = settings_from_args(args)
    return run_and_save(args.content, [parse_style(s) for s in args.styles], settings, args)


def cmd_demo(argv: Sequence[str]) -> int:
    from .data import demo_paths

    p = Parser(prog="impasto demo", description="Stylise the bundled photo with the bundled painting.")
    add_output_arguments(p)
    for action in p._actions:
        if action.dest == "output":
            action.required = False
            action.help = "output image (default: impasto-demo.png, or impasto-demo-2.png ... when it exists)"
    add_settings_arguments(p)
    args = p.parse_args(argv)
    if args.output is None:
        # Running the demo again is the likeliest second step: a new name, not a refusal (nor
        # an overwrite of the first picture, which the user may have kept).
        names = itertools.chain(["impasto-demo.png"], (f"impasto-demo-{n}.png" for n in itertools.count(2)))
        args.output = next(name for name in names if args.overwrite or not Path(name).exists())
    content, style = demo_paths()
    print(f"demo: painting {content.name} in the style of {style.name}", file=sys.stderr)
    code = run_and_save(content, [(str(style), 1.0)], settings_from_args(args), args)
    if code == 0:
        print(f"result: {Path(args.output).resolve()}", file=sys.stderr)
    return code


def cmd_presets(argv: Sequence[str]) -> int:
    from .presets import describe_presets

    Parser(prog="impasto presets", description="List the named presets and what each sets.").parse_args(argv)
    print(describe_presets())
    return 0


def cmd_sweep(argv: Sequence[str]) -> int:
    from tqdm import tqdm

    from .api import Stylizer
    from .images import check_not_inputs
    from .sweep import SweepFailed, cell_label, check_sweep_outputs, normalize_grid, parse_grid, save_sweep, sweep

    p = Parser(
        prog="impasto sweep",
        description="Run one content/style pair over a grid of one or two settings and write a labelled contact "
        "sheet, plus each cell's image in a folder beside it (SHEET_cells/). The runs share the loaded network "
        "and the style statistics.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  impasto sweep photo.jpg painting.jpg --grid style_weight=10,30,100 --grid tv_weight=0,2,10 "
        "-o sheet.png --size 256\n  impasto sweep photo.jpg painting.jpg --grid content_layers=conv3_2,conv4_2,conv5_2 "
        "--grid style_weight=10,100 -o layers.png\n(a value of a list setting joins its items with '+': "
        "--grid style_layers=conv1_1+conv2_1,conv3_1+conv4_1)",
    )
    p.add_argument("content", help="the photo to paint")
    p.add_argument("styles", nargs="+", metavar="STYLE[:WEIGHT]", help="style image(s); blend several with weights")
    p.add_argument("--grid", action="append", required=True, metavar="SETTING=V1,V2,..",
                   help="a setting and its values; give --grid once (one row) or twice (rows, then columns)")  # fmt: skip
    p.add_argument("-o", "--output", required=True, help="the contact sheet (.png, .jpg, ...)")
    p.add_argument("--overwrite", action="store_true", help="replace the sheet and cell images if they exist")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_mask_arguments(p)
    add_settings_arguments(p)
    args = p.parse_args(argv)
    axes = normalize_grid([parse_grid(g) for g in args.grid])
    settings = settings_from_args(args)
    for name in (name for name, _ in axes if name in explicit_settings(args)):
        warn(f"{option(name, getattr(settings, name))} is replaced in every cell by the grid's values of {name}")
    styles = [parse_style(s) for s in args.styles]
    masks = masks_from_args(args, len(styles))
    cells = check_sweep_outputs(args.output, axes, args.overwrite)
    check_not_inputs({"-o": args.output, **{f"cell {cell.name}": cell for cell in cells}}, input_files(args.content, styles, settings, args))

    # From the start, so the first cell's time counts and shows; miniters=1, since a cell is
    # slow enough that each one finished should show at once.
    bar = tqdm(total=len(cells), unit="run", disable=args.quiet, dynamic_ncols=True, miniters=1)

    def on_cell(index: int, count: int, values: dict[str, Any], result: Any) -> None:
        bar.set_postfix_str(f"{cell_label(values)} {result.seconds:.1f}s", refresh=False)
        bar.update(1)

    failed: Optional[SweepFailed] = None
    try:
        result, cut_short = sweep(args.content, styles, axes, settings, Stylizer(), masks, args.keep_mask, on_cell=on_cell), False
    except Interrupted as stop:  # Ctrl-C after a cell or more: the sheet of those is written
        result, cut_short = stop.result, True
    except SweepFailed as error:  # a cell failed after others finished: their sheet is written too, then the error said
        result, cut_short, failed = error.result, True, error
    except BaseException:
        bar.leave = False  # no cell ran (a missing photo, a bad value): the error's line alone, no empty bar above it
        raise
    finally:
        bar.close()  # before any message, which then has a line of its own
    cells = save_sweep(result, args.output, overwrite=args.overwrite)
    count = sum(len(row) for row in result.results)
    state = f" (interrupted: {len(cells)} of {count} cells ran; the others are blank)" if cut_short else ""
    if failed is not None:
        state = f" ({len(cells)} of {count} cells ran; the failed one is marked on the sheet, the others are blank)"
    stopped = sum(1 for row in result.results for r in row if r is not None and r.interrupted)
    if stopped and not cut_short:
        state = f" ({stopped} cell{'s' if stopped != 1 else ''} stopped early, as warned above)"
    images = f"{len(cells)} image{'s' if len(cells) != 1 else ''}"
    print(f"wrote {args.output} ({result.sheet.width}x{result.sheet.height}) and {images} in {cells[0].parent}{state}", file=sys.stderr)
    if failed is not None:
        raise failed  # the last line, as `impasto: error: grid cell ...: ...`, and an error's exit code
    return 130 if cut_short else (1 if stopped else 0)


class RunBar:
    """A run's progress bar, its share done and time left counted in work (pixels x iterations,
    optimize.Progress.work), not in iterations: a finest-scale iteration costs as much as many
    coarse ones, so counted in iterations the bar was four fifths full after the coarse scales
    and promised seconds where minutes were left (a 512 px run on an AVX2 CPU: 302 s, most of
    it in the last 50 of 250 iterations). The iteration is in its description."""

    FORMAT = "{desc}{percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]"  # desc ends in ": "; postfix starts with ", "

    def __init__(self, quiet: bool = False, **options: Any) -> None:
        self.quiet = quiet
        self.options = options  # tqdm's own (a video's: position, leave)
        self.bar: Any = None

    def update(self, progress: Any, prefix: str = "", restart: bool = False) -> None:
        """Show `progress`; with `restart`, as the first news of a new run (a video's next frame)."""
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=1.0, bar_format=self.FORMAT, disable=self.quiet, dynamic_ncols=True, **self.options)
        tile = f" tile {progress.tile + 1}/{progress.tiles}" if progress.tiles > 1 else ""
        where = f"{prefix}scale {progress.scale + 1}/{progress.scales} {progress.size[0]}x{progress.size[1]}{tile}"
        self.bar.set_description(f"{where} step {progress.step}/{progress.steps}", refresh=False)
        self.bar.set_postfix({k: f"{v:.3g}" for k, v in progress.losses.items()}, refresh=False)
        if restart:  # after the description: reset() shows the bar at once, which would show the last run's
            self.bar.reset(total=1.0)
        share = progress.work if progress.work is not None else progress.done / max(progress.total, 1)
        self.bar.update(share - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def main(argv: Optional[Sequence[str]] = None) -> int:
    from tqdm import tqdm

    # Above a progress bar (a sweep's later cells, a run's scales), not glued onto its line.
    with one_line_warnings(lambda line: tqdm.write(line, file=sys.stderr)), command_line():
        return _main(argv)


def _main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "demo":
            return cmd_demo(argv[1:])
        if argv and argv[0] == "presets":
            return cmd_presets(argv[1:])
        if argv and argv[0] == "sweep":
            return cmd_sweep(argv[1:])
        if argv and argv[0] in PLUGIN_COMMANDS:
            import importlib

            return importlib.import_module(PLUGIN_COMMANDS[argv[0]]).cli_main(argv[1:])
        first = argv[0] if argv else ""
        commands = (*COMMANDS, *PLUGIN_COMMANDS)
        guess = difflib.get_close_matches(first, commands, n=1, cutoff=0.7)
        few = len([a for a in argv if not a.startswith("-")]) < 3
        if first.isalpha() and first.islower() and not Path(first).exists() and (few or guess):
            # `impasto frobnicate`, or a mistyped `impasto vidoe clip.mp4 a.jpg -o b.mp4`, is not a photo named so.
            hint = f"did you mean `impasto {guess[0]}`? " if guess else ""
            raise ImpastoError(
                f"unknown command {first!r}: {hint}the commands are {', '.join(commands)}; a run is `impasto PHOTO PAINTING -o OUT`"
            )
        return cmd_run(argv)
    except ImpastoError as exc:
        print(f"impasto: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("impasto: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `impasto presets | head`: the reader left, nothing is wrong
        sys.stdout = open(os.devnull, "w")
        return 0


if __name__ == "__main__":
    sys.exit(main())
