"""Command line: a thin shell over impasto.api.

    impasto CONTENT STYLE [STYLE ...] -o OUT.png [options]
    impasto demo [-o OUT.png]
"""

from __future__ import annotations

import argparse
import json
import sys
import typing
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, Optional, Sequence

from .errors import ImpastoError
from .settings import Settings

COMMANDS = ("demo",)


def _field_type(f: Any) -> tuple[type, bool]:
    """(scalar type, is_tuple) from a Settings annotation string."""
    hint = typing.get_type_hints(Settings)[f.name]
    args = typing.get_args(hint)
    if type(None) in args:  # Optional[X]
        hint = next(a for a in args if a is not type(None))
    if typing.get_origin(hint) is tuple:
        return typing.get_args(hint)[0], True
    return hint, False


def add_settings_arguments(parser: argparse.ArgumentParser, skip: Sequence[str] = ()) -> None:
    """One --option per Settings field, defaulting to None so explicit choices are visible."""
    group = parser.add_argument_group("settings")
    defaults = Settings()
    for f in fields(Settings):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind, is_tuple = _field_type(f)
        default = getattr(defaults, f.name)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        text = f"{f.metadata.get('help', '')} (default: {shown})"
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif is_tuple:
            group.add_argument(flag, default=None, metavar="A,B,..", help=text)
        else:
            group.add_argument(flag, type=kind, default=None, metavar=kind.__name__.upper(), help=text)


def settings_from_args(args: argparse.Namespace) -> Settings:
    explicit = {f.name: getattr(args, f.name) for f in fields(Settings) if getattr(args, f.name, None) is not None}
    if explicit.get("weights") and "model" not in explicit:
        explicit["model"] = None  # a weights file decides its model
    try:
        settings = Settings(**explicit)
    except ValueError as exc:
        raise ImpastoError(f"bad setting: {exc}") from None
    return settings.validate()


def parse_style(text: str) -> tuple[str, float]:
    """`painting.jpg:0.7` -> (path, 0.7); a colon not followed by a number is part of the path."""
    path, sep, weight = text.rpartition(":")
    if sep and path:
        try:
            return path, float(weight)
        except ValueError:
            pass
    return text, 1.0


def build_run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="impasto",
        description="Paint CONTENT in the style of one or more STYLE images (Gatys et al. neural style transfer). "
        "Other commands: `impasto demo` runs on a bundled photo and painting.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  impasto photo.jpg starry_night.jpg -o out.png\n"
        "  impasto photo.jpg a.jpg:0.7 b.jpg:0.3 -o blend.png --size 768\n"
        "  impasto demo",
    )
    p.add_argument("content", help="the photo to paint")
    p.add_argument("styles", nargs="+", metavar="STYLE[:WEIGHT]", help="style image(s); blend several with weights")
    add_output_arguments(p)
    add_settings_arguments(p)
    return p


def add_output_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", required=True, help="output image (.png, .jpg, ...)")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT (and frames) if they exist")
    p.add_argument("--save-every", type=int, default=0, metavar="N", help="write a frame every N iterations next to OUTPUT")
    p.add_argument("--json", metavar="PATH", help="write the final losses and settings as JSON ('-' for stdout)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run_and_save(content: Any, styles: list[tuple[str, float]], settings: Settings, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .api import Stylizer
    from .images import check_output_path, save_image, tensor_to_pil

    output = check_output_path(args.output, args.overwrite)
    if args.json and args.json != "-":
        check_output_path(args.json, args.overwrite)
    if args.save_every < 0:
        raise ImpastoError("--save-every must be zero or more")
    frames_dir = output.with_name(output.stem + "_frames")
    if args.save_every:
        frames_dir.mkdir(exist_ok=True)

    bar: Optional[tqdm] = None

    def callback(progress: Any) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=progress.total, unit="it", disable=args.quiet, dynamic_ncols=True)
        bar.set_description(f"scale {progress.scale + 1}/{progress.scales} {progress.size[0]}x{progress.size[1]}")
        bar.set_postfix({k: f"{v:.3g}" for k, v in progress.losses.items()}, refresh=False)
        bar.update(1)
        if args.save_every and (progress.done % args.save_every == 0 or progress.is_last):
            save_image(tensor_to_pil(progress.image), frames_dir / f"{progress.done:05d}.png", overwrite=args.overwrite)

    result = Stylizer().run(content, styles, settings, callback=callback)
    if bar is not None:
        bar.close()
    save_image(result.image, output, overwrite=args.overwrite)
    losses = ", ".join(f"{k} {v:.4g}" for k, v in result.losses.items())
    state = f" ({result.stopped_reason}; best image so far kept)" if result.interrupted else ""
    print(f"wrote {output} in {result.seconds:.1f} s{state}; final losses: {losses}", file=sys.stderr)
    if args.json:
        text = json.dumps(result.summary() | {"output": str(output)}, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    return 130 if result.stopped_reason == "interrupted" else (1 if result.interrupted else 0)


def cmd_run(argv: Sequence[str]) -> int:
    args = build_run_parser().parse_args(argv)
    settings = settings_from_args(args)
    return run_and_save(args.content, [parse_style(s) for s in args.styles], settings, args)


def cmd_demo(argv: Sequence[str]) -> int:
    from .data import demo_paths

    p = argparse.ArgumentParser(prog="impasto demo", description="Stylise the bundled photo with the bundled painting.")
    add_output_arguments(p)
    p.set_defaults(output="impasto-demo.png")
    for action in p._actions:
        if action.dest == "output":
            action.required = False
            action.help = "output image (default: impasto-demo.png)"
    add_settings_arguments(p)
    args = p.parse_args(argv)
    content, style = demo_paths()
    print(f"demo: painting {content.name} in the style of {style.name}", file=sys.stderr)
    code = run_and_save(content, [(str(style), 1.0)], settings_from_args(args), args)
    print(f"result: {Path(args.output).resolve()}", file=sys.stderr)
    return code


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "demo":
            return cmd_demo(argv[1:])
        return cmd_run(argv)
    except ImpastoError as exc:
        print(f"impasto: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("impasto: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
