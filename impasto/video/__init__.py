"""Video: stylise a clip with temporal consistency (Ruder, Dosovitskiy & Brox 2016).

    impasto video IN.mp4 STYLE[:W] [STYLE ...] -o OUT.mp4 [--no-temporal] [--report] [options]

Python: ``impasto.video.stylize_video("in.mp4", "painting.jpg", "out.mp4", settings)``.
Needs the video extra (imageio-ffmpeg, OpenCV): ``pip install 'impasto[video]'``;
they are imported only when a video is read, so this module imports without them.
"""

from __future__ import annotations

from typing import Sequence

from .run import DEFAULT_TEMPORAL_WEIGHT, VideoProgress, VideoResult, measure_warping_error, output_size, stylize_video

__all__ = ["DEFAULT_TEMPORAL_WEIGHT", "VideoProgress", "VideoResult", "cli_main", "measure_warping_error", "output_size", "stylize_video"]


def cli_main(argv: Sequence[str]) -> int:
    """`impasto video ...`, dispatched from impasto.cli."""
    from .cli import cli_main as run

    return run(argv)
