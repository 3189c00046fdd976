"""`impasto video IN.mp4 STYLE[:W] [STYLE ...] -o OUT.mp4`: the command line over stylize_video."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from ..cli import (
    Parser, RunBar, add_mask_arguments, add_settings_arguments, input_files, masks_from_args, parse_style, settings_from_args, write_summary,
)  # fmt: skip
from ..errors import Interrupted, warn
from ..images import check_distinct_outputs, check_not_inputs, check_output_path
from .run import DEFAULT_TEMPORAL_WEIGHT, VideoProgress, VideoResult, stylize_video


def frames_text(count: int) -> str:
    return f"{count} frame{'' if count == 1 else 's'}"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="impasto video",
        description="Stylise a video. Each frame starts from the previous stylised frame warped by the optical flow "
        "of the input, and a temporal loss keeps it there outside occlusions (Ruder, Dosovitskiy & Brox 2016), so "
        "the result does not flicker. Keeps the frame rate and the audio. An interrupted run resumes: finished "
        "frames are kept in OUTPUT_frames/ and not redone.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  impasto video clip.mp4 starry_night.jpg -o painted.mp4 --size 256 --report\n"
        "  impasto video clip.mp4 starry_night.jpg -o flicker.mp4 --size 256 --no-temporal --report\n"
        "  impasto video clip.mp4 starry_night.jpg -o first_second.mp4 --end-frame 25",
    )
    p.add_argument("input", help="the video to paint (.mp4, .mov, .mkv, .webm, ... anything ffmpeg reads)")
    p.add_argument("styles", nargs="+", metavar="STYLE[:WEIGHT]", help="style image(s); blend several with weights")
    p.add_argument("-o", "--output", required=True, help="output video (.mp4, .mov, .mkv, .m4v, .avi or .webm)")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT, and frames of a different run in the frames folder")
    group = p.add_argument_group("video")
    group.add_argument("--temporal", action=argparse.BooleanOptionalAction, default=True,
                       help="temporal consistency; --no-temporal stylises every frame on its own (the flickering "
                       "per-frame baseline) (default: on)")  # fmt: skip
    group.add_argument("--temporal-weight", type=float, default=DEFAULT_TEMPORAL_WEIGHT, metavar="X",
                       help=f"weight of the temporal loss (default: {DEFAULT_TEMPORAL_WEIGHT:g})")  # fmt: skip
    group.add_argument("--frame-iterations", type=int, metavar="N",
                       help="iterations for each frame after the first in temporal mode, one scale at full size "
                       "(default: --iterations)")  # fmt: skip
    group.add_argument("--start-frame", type=int, default=0, metavar="N", help="first frame to stylise, counted from 0 (default: 0)")
    group.add_argument("--end-frame", type=int, metavar="N", help="stop before this frame (default: the end)")
    group.add_argument("--frames-dir", metavar="DIR", help="where finished frames are kept for resuming (default: OUTPUT_frames)")
    group.add_argument("--keep-frames", action="store_true", help="keep the frames folder after the video is written")
    group.add_argument("--report", action="store_true",
                       help="print the mean warping error between consecutive output frames (lower: less flicker)")  # fmt: skip
    p.add_argument("--json", metavar="PATH", help="write a summary (frames, fps, warping error, ...) as JSON ('-' for stdout)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_mask_arguments(p)
    add_settings_arguments(p)
    for action in p._actions:
        if action.dest == "size":
            action.help = "output long side in pixels, rounded down to even (default: the input's, at most 512)"
    return p


def interrupted_summary(path: Path) -> bool:
    """Whether `path` is the --json of a video run cut short: the same command run again to
    resume replaces it, as the interrupted run told the user to do."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("interrupted") is True and "warping_error" in data and data.get("output") is None


def cli_main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    settings = settings_from_args(args)
    if not args.temporal:
        unused = [flag for flag, given in (("--temporal-weight", args.temporal_weight != DEFAULT_TEMPORAL_WEIGHT),
                                           ("--frame-iterations", args.frame_iterations is not None)) if given]  # fmt: skip
        if unused:
            warn(f"{' and '.join(unused)} only {'apply' if len(unused) > 1 else 'applies'} to temporal runs: with --no-temporal "
                 "every frame is painted afresh")
    styles = [parse_style(s) for s in args.styles]
    check_distinct_outputs({"-o": args.output, "--json": args.json})
    check_not_inputs({"-o": args.output, "--json": args.json}, input_files(args.input, styles, settings, args, "the video"))
    if args.json and args.json != "-" and not interrupted_summary(Path(args.json)):
        check_output_path(args.json, args.overwrite)
    bars = ProgressBars(args.quiet)
    try:
        result = stylize_video(
            args.input, styles, args.output, settings, temporal=args.temporal, temporal_weight=args.temporal_weight,
            frame_iterations=args.frame_iterations, size=args.size, start_frame=args.start_frame, end_frame=args.end_frame,
            frames_dir=args.frames_dir, keep_frames=args.keep_frames, overwrite=args.overwrite,
            masks=masks_from_args(args, len(styles)), keep_mask=args.keep_mask, callback=bars,
        )  # fmt: skip
    except KeyboardInterrupt as stop:
        bars.close()
        folder = args.frames_dir or Path(args.output).with_name(Path(args.output).stem + "_frames")
        print(f"impasto: interrupted; the finished frames are in {folder}: run the same command again to resume", file=sys.stderr)
        if isinstance(stop, Interrupted):  # in or between frames: the video's result so far, as the image command writes
            report(stop.result, args, stopped=False)
        return 130
    finally:
        bars.close()  # before any message: an error is not glued to the bar's last line
    report(result, args)
    return 1 if result.interrupted else 0


def report(result: VideoResult, args: argparse.Namespace, stopped: bool = True) -> None:
    """What a run did, on stderr; with --report its warping error, with --json its summary
    (also for a run cut short: the frames done). `stopped`: say where the frames of a run
    stopped early are (False when that was said already)."""
    if result.output is not None:
        audio = "with the input's audio" if result.audio else ("AUDIO DROPPED: ffmpeg could not copy it" if result.input_audio else "no audio")
        resumed = f"; {frames_text(result.resumed)} reused from {result.frames_dir}" if result.resumed else ""
        print(f"wrote {result.output}: {frames_text(result.frames)}, {result.size[0]}x{result.size[1]}, {result.fps:g} fps, {audio}, "
              f"in {result.seconds:.1f} s{resumed}", file=sys.stderr)  # fmt: skip
    elif stopped:
        print(f"stopped after {frames_text(result.frames)} ({result.stopped_reason}); they are in {result.frames_dir}", file=sys.stderr)
    for note in result.notes:
        print(note, file=sys.stderr)
    if args.report:
        if result.warping_error is None:
            print("warping error: nothing to measure (fewer than two frames, or only cuts)", file=sys.stderr)
        else:
            mode = "temporal" if result.temporal else "per-frame (--no-temporal)"
            print(f"warping error ({mode}): {result.warping_error:.3g} mean squared difference, in [0,1] pixel units, "
                  f"between each frame and the previous one warped by the input's optical flow, outside occlusions, "
                  f"over {len(result.pair_errors)} pairs; the input itself: {result.content_warping_error:.3g}", file=sys.stderr)  # fmt: skip
        if result.cuts:
            print(f"({result.cuts} cuts found: those frames were painted afresh and their pairs left out)", file=sys.stderr)
    if args.json:
        write_summary(result.summary(), args.json)


class ProgressBars:
    """Two tqdm bars: frames of the video, and the current frame's run (a RunBar, by work)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.frames: Any = None
        self.steps: Any = None
        self.frame = -1

    def __call__(self, news: VideoProgress) -> None:
        from tqdm import tqdm

        if self.frames is None:
            self.frames = tqdm(total=news.frames, unit="frame", disable=self.quiet, dynamic_ncols=True, position=0)
        if news.step is None:
            self.frames.set_postfix_str("reused" if news.resumed else "")
            self.frames.update(1)
            return
        if self.steps is None:
            # Stacked under the frames' bar only on a terminal: in a log its cursor moves are noise.
            self.steps = RunBar(self.quiet or not sys.stderr.isatty(), position=1, leave=False)
        restart, self.frame = news.frame != self.frame, news.frame
        self.steps.update(news.step, prefix=f"frame {news.frame + 1} ", restart=restart)

    def close(self) -> None:
        for bar in (self.steps, self.frames):
            if bar is not None:
                bar.close()
