"""Progress as pictures: an animated GIF of the image forming and a plot of the losses.

The GIF needs only Pillow. The plot needs matplotlib, an optional extra
(`pip install 'impasto[viz]'`), imported only when a plot is asked for.
"""

from __future__ import annotations

import math
import numbers
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

from PIL import Image

from .errors import ImpastoError, first_line, option, warn
from .files import atomic_write
from .images import check_output_path, check_writable, resize_tensor, save_image, tensor_to_pil, with_alpha

if TYPE_CHECKING:  # api imports this module
    from .api import Result
    from .optimize import Progress

VIZ_HINT = "pip install 'impasto[viz]'"
LOSS_TERMS = ("content", "style", "tv", "total")
# The plot's legend, in words an artist reads without the settings' names.
LOSS_LABELS = {"content": "content loss", "style": "style loss", "tv": "total variation", "total": "total loss"}


def frame_iterations(total: int, count: int) -> list[int]:
    """`count` iterations (1-based) evenly spaced from the first to the last of `total`.

    With fewer iterations than frames asked for, every iteration is a frame.
    """
    if total <= 0 or count <= 0:
        return []
    if count >= total:
        return list(range(1, total + 1))
    if count == 1:
        return [total]
    return [1 + round(i * (total - 1) / (count - 1)) for i in range(count)]


def frame_picture(progress: "Progress", size: tuple[int, int]) -> Image.Image:
    """The picture of one iteration as a frame (a GIF's, or save_every's): at `size` (w, h), so a
    coarse scale's is enlarged and every frame of a run matches."""
    w, h = size
    return tensor_to_pil(resize_tensor(progress.image.detach().float().clamp(0, 1), (h, w)))


# The frames save_every writes: the iteration in five digits or more (00010.png ...). Only names of
# that form are taken for an earlier run's frames and replaced, so a picture of the user's own in
# the folder (2024_trip.png) is neither read as a frame nor deleted.
FRAME_NAME = re.compile(r"\d{5,}\.png")


def frame_files(folder: Path) -> list[Path]:
    """The frames an earlier save_every run left in `folder`, in order."""
    return sorted(p for p in folder.iterdir() if FRAME_NAME.fullmatch(p.name)) if folder.is_dir() else []


def check_count(name: str, value: object) -> None:
    """A run's count of frames (`frames`, `save_every`): a whole number, zero or more. `name` as
    the user wrote it (option() gives the CLI's spelling where the CLI has one)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ImpastoError(f"{name} must be a whole number, zero or more, not {value!r}")


def check_frames_folder(save_every: int, frames_dir: Union[str, os.PathLike, None], overwrite: bool) -> Optional[Path]:
    """The folder a run's `save_every` frames go in (None: it saves none), checked before the run:
    a long run must not fail at its first frame, nor leave its frames among an earlier run's."""
    check_count(option("save_every"), save_every)
    if not isinstance(overwrite, bool):  # overwrite="no" is true, and frames would be deleted for it
        raise ImpastoError(f"overwrite must be True or False, not {overwrite!r}")
    if frames_dir is not None and (not isinstance(frames_dir, (str, os.PathLike)) or not str(frames_dir)):
        raise ImpastoError(f"frames_dir must be the path of a folder, not {frames_dir!r}")
    if not save_every:
        if frames_dir is not None:
            warn(f"frames_dir={str(frames_dir)!r} changes nothing without save_every=N, a frame every N iterations")
        return None
    if frames_dir is None:
        raise ImpastoError(f"save_every={save_every} needs frames_dir, the folder to write the frames in")
    folder = Path(frames_dir)
    if folder.exists() and not folder.is_dir():
        raise ImpastoError(f"{folder}: exists and is not a folder ({option('save_every')} writes its frames there)")
    if not folder.is_dir() and not folder.parent.is_dir():
        raise ImpastoError(f"{folder}: folder {folder.parent} does not exist")
    if frame_files(folder) and not overwrite:
        raise ImpastoError(f"{folder}: already holds frames (pass {option('overwrite', True)} to replace them)")
    check_writable(folder if folder.is_dir() else folder.parent, what=folder)
    return folder


@dataclass
class FrameSaver:
    """Writes the picture every `every` iterations, and at the last, into `folder`."""

    every: int
    folder: Path
    # All at the output's size (w, h), the coarse scales enlarged, so they show one picture
    # forming, as a GIF's frames do; and a cut-out photo's are cut out, as its picture is.
    size: tuple[int, int]
    alpha: Optional[Image.Image]
    overwrite: bool
    failed: bool = False  # a frame could not be written: no more are tried
    last: Optional[Path] = None  # the run's last iteration's frame, once written

    def begin(self) -> None:
        # Replaced as a set: an earlier run's later frames must not trail after this run's.
        for frame in frame_files(self.folder):
            frame.unlink()
        self.folder.mkdir(exist_ok=True)

    def __call__(self, progress: "Progress") -> None:
        if self.failed or not (progress.done % self.every == 0 or progress.is_last):
            return
        path = self.folder / f"{progress.done:05d}.png"
        if self._write(with_alpha(frame_picture(progress, self.size), self.alpha), path, self.overwrite) and progress.is_last:
            self.last = path

    def settle(self, picture: Image.Image) -> None:
        """The last frame becomes the run's own picture, as a GIF's last frame does: the best
        pixels kept, which are often the last step's result rather than the pixels it scored."""
        if self.last is not None and not self.failed:
            self._write(picture, self.last, overwrite=True)  # this run's own frame

    def _write(self, picture: Image.Image, path: Path, overwrite: bool) -> bool:
        try:
            save_image(picture, path, overwrite=overwrite)
            return True
        except (OSError, ImpastoError) as exc:
            # A full disk, a folder taken away, a file put in a frame's place: no reason to lose the
            # painting. The run goes on to its picture without more frames, and says so once.
            self.failed = True
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else first_line(exc)
            warn(f"{path}: could not write this frame ({reason}); the run goes on without saving more frames")
            return False


class FrameRecorder:
    """A progress callback that keeps `count` pictures spread evenly over the run's work, all at one size.

    Work is pixels x iterations (Progress.work): spread by iterations, most frames would show
    the cheap coarse scales, which take a small part of the time. A run that does not count
    its work (None) is spread by iterations. At most one frame per iteration; the last is the
    run's last iteration. Coarse scales are upsampled to `size` (w, h) so every frame of a GIF matches.
    """

    def __init__(self, count: int, size: tuple[int, int]) -> None:
        if count < 0:
            raise ImpastoError(f"the number of frames must be zero or more, not {count}")
        self.count = count
        self.size = size
        self.frames: list[Image.Image] = []
        self.iterations: list[int] = []
        self._wanted: Optional[set[int]] = None

    def __call__(self, progress: "Progress") -> None:
        if self._due(progress):
            self.frames.append(frame_picture(progress, self.size))
            self.iterations.append(progress.done)

    def _due(self, progress: "Progress") -> bool:
        if progress.work is None:
            if self._wanted is None:
                self._wanted = set(frame_iterations(progress.total, self.count))
            return progress.done in self._wanted
        owed = self.count - len(self.iterations)
        if owed <= 0:
            return False
        if progress.total - progress.done + 1 <= owed:
            return True  # one iteration's work can pass several frames' marks: catch up, one per iteration
        # Frame k is due at k / (count - 1) of the work (one frame: only the last, taken above).
        return self.count > 1 and progress.work * (self.count - 1) >= len(self.iterations) - 1e-9


# A GIF frame's delay is at most 655 s; an animation longer than this is no one's wish.
MAX_GIF_SECONDS = 600


def write_gif(
    frames: Union["Result", Sequence[Image.Image]],
    path: Union[str, os.PathLike],
    duration: float = 4.0,
    overwrite: bool = False,
    loop: bool = True,
) -> Path:
    """Write the frames (or a Result's frames) as an animated GIF lasting `duration` seconds in all.

    A frame identical to the one before it (the picture did not change) is merged into
    it by the GIF encoder, keeping the timing.
    """
    images = list(getattr(frames, "frames", frames))  # type: ignore[arg-type]  # a Result has .frames
    if not images:
        raise ImpastoError("no frames to write: run with frames=N to collect some (on the command line, --gif PATH does)")
    if not (math.isfinite(duration) and 0 < duration <= MAX_GIF_SECONDS):
        raise ImpastoError(f"the GIF duration must be above 0 and at most {MAX_GIF_SECONDS} seconds, not {duration}")
    path = check_output_path(path, overwrite)
    if path.suffix.lower() != ".gif":
        raise ImpastoError(f"{path}: an animated GIF needs a .gif name")
    size = images[0].size
    images = [im.convert("RGB") if im.size == size else im.convert("RGB").resize(size, Image.Resampling.LANCZOS) for im in images]
    # GIF delays are in hundredths of a second; below 2 most viewers play at 10 fps anyway.
    per_frame = max(20, round(duration * 1000 / len(images) / 10) * 10)
    with atomic_write(path) as tmp:
        # One palette per frame: the colours change a lot as the painting forms.
        images[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=per_frame,
            disposal=1,
            optimize=False,
            **({"loop": 0} if loop else {}),
        )
    return path


def require_matplotlib() -> Any:
    """matplotlib's Figure class, or a clear error naming the extra.

    A Figure made directly, not through pyplot: it needs no display, never pops a window,
    and leaves the caller's backend alone (a notebook's inline plots go on working)."""
    try:
        import matplotlib  # noqa: F401  # first: its submodules may be loaded while it is not installed whole
        from matplotlib.figure import Figure
    except ImportError:
        raise ImpastoError(f"loss plots need matplotlib, an optional extra: {VIZ_HINT}") from None
    return Figure


def plot_losses(
    history: Union["Result", Sequence[dict[str, float]]],
    path: Optional[Union[str, os.PathLike]] = None,
    weights: Optional[dict[str, float]] = None,
    overwrite: bool = False,
    title: Optional[str] = None,
) -> Any:
    """Plot each loss term over the iterations (log scale), with scale changes marked.

    `history` is a Result or its `history`. Terms are drawn weighted, as they add up
    to the total (from the Result's settings, or `weights`), so their sizes compare;
    a term whose weight is 0 is left out. Returns the matplotlib Figure; writes a PNG
    to `path` if given.
    """
    settings = getattr(history, "settings", None)
    rows = list(getattr(history, "history", history))  # type: ignore[arg-type]  # a Result has .history
    if not rows:
        raise ImpastoError("no loss history to plot")
    given = weights is not None  # the caller's weights are drawn as given, whatever each row ran with
    if weights is None and settings is not None:
        weights = {"content": settings.content_weight, "style": settings.style_weight, "tv": settings.tv_weight}
    weights = dict(weights or {})
    if path is not None:
        path = check_plot_path(path, overwrite)
    fig = require_matplotlib()(figsize=(8, 4.5), dpi=100)
    ax = fig.subplots()
    x = [int(r.get("iteration", i + 1)) for i, r in enumerate(rows)]
    for term in LOSS_TERMS:
        if term not in rows[0]:
            continue
        w = 1.0 if term == "total" else weights.get(term, 1.0)
        if w == 0:
            continue
        # The content weight may differ by scale (coarse_content): each row's own, where it says.
        row_weights = [r.get("content_weight", w) if term == "content" and not given else w for r in rows]
        # A log axis cannot show zeros; they become gaps.
        y = [r[term] * rw if r[term] * rw > 0 else float("nan") for r, rw in zip(rows, row_weights)]
        label = LOSS_LABELS[term]
        if term == "total":  # dashed and on top, so the term it is mostly made of shows through
            ax.plot(x, y, label=label, color="black", linestyle="--", linewidth=1.6, zorder=3)
        else:
            ax.plot(x, y, label=label, linewidth=1.6)
    boundaries = [x[i] - 0.5 for i in range(1, len(rows)) if rows[i].get("scale") != rows[i - 1].get("scale")]
    for i, b in enumerate(boundaries):
        ax.axvline(b, color="grey", linestyle="--", linewidth=0.8, label="a finer scale starts" if i == 0 else None)
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (each part as it adds to the total)")
    ax.set_title(title or "impasto losses")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(loc="best")  # where it hides least of the curves
    fig.tight_layout()
    return save_figure(fig, path)


def check_plot_path(path: Union[str, os.PathLike], overwrite: bool = False, flag: str = "") -> Path:
    """A plot is written as PNG: a name that says otherwise (plot.svg, plot.jpg) would hold PNG data."""
    checked = check_output_path(path, overwrite)
    if checked.suffix.lower() != ".png":
        raise ImpastoError(f"{flag + ' ' if flag else ''}{path}: the file name must end in .png (the plot is a PNG)")
    return checked


def save_figure(fig: Any, path: Optional[Union[str, os.PathLike]]) -> Any:
    """Write a matplotlib figure as PNG atomically (temporary file, then rename), return it."""
    if path is not None:
        with atomic_write(path) as tmp:
            fig.savefig(tmp, format="png")
    return fig
