"""Parameter sweeps: one content/style pair over a grid of one or two settings, on one contact sheet.

    result = impasto.sweep("photo.jpg", "painting.jpg",
                           {"style_weight": [10, 30, 100], "tv_weight": [0, 2, 10]},
                           impasto.Settings(size=256))
    result.sheet.save("sheet.png")

Every cell is one run of the same Stylizer, so the weights and the feature
extractor are loaded once and the style statistics are computed once for all
cells that share the style image, size and layers (Stylizer.style_cache).
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence, Union

from PIL import Image, ImageDraw, ImageFont

from .errors import ImpastoError, Interrupted, first_line, option, warn
from .images import ImageLike, check_image_output, flatten, load_image, save_image
from .settings import BadSettingValue, Settings, SettingsLike, as_settings, parse_setting

if TYPE_CHECKING:  # for the type checker only: the API, and torch with it, is loaded when a run needs it
    from .api import Stylizer

Grid = Union[Mapping[str, Sequence[Any]], Sequence[tuple[str, Sequence[Any]]]]
MAX_CELLS = 100
BLANK = (235, 235, 235)  # a cell that never ran
FAILED_INK = (170, 0, 0)


@dataclass
class SweepResult:
    """The sheet, and every cell's image and Result, indexed [row][column]. In a sweep cut short
    (impasto.Interrupted's or SweepFailed's `result`), a cell that never ran has a blank image and
    None; the cell that failed, None and a blank image marked "failed"."""

    sheet: Image.Image
    images: list[list[Image.Image]]
    results: list[list[Any]]  # impasto.Result
    axes: list[tuple[str, list[Any]]]  # (setting, values): rows first when there are two
    boxes: dict[tuple[int, int], tuple[int, int, int, int]] = field(default_factory=dict)  # cell -> where on the sheet

    def cells(self) -> list[tuple[dict[str, Any], Image.Image]]:
        """(the settings changed in this cell, its image), row by row."""
        out = []
        for r, row in enumerate(self.images):
            for c, image in enumerate(row):
                if self.results[r][c] is not None:
                    out.append((cell_values(self.axes, r, c), image))
        return out


class SweepFailed(ImpastoError):
    """A grid cell failed after others had finished: `result` is the sheet of those (SweepResult),
    `cell` the (row, column) that failed. An ImpastoError, so what catches those still does;
    and like impasto.Interrupted, it keeps the work done: ``except SweepFailed as failed:
    failed.result.sheet``. A failure in the first cell raises a plain ImpastoError: nothing ran."""

    def __init__(self, message: str, result: SweepResult, cell: tuple[int, int]) -> None:
        super().__init__(message)
        self.result = result
        self.cell = cell


def parse_value(name: str, text: str) -> Any:
    """A grid value from text, as the setting's type wants it (settings.parse_setting; a list's items
    are joined with '+', since ',' separates the grid's values)."""
    try:
        return parse_setting(name, text, list_sep="+")
    except BadSettingValue as exc:
        raise ImpastoError(f"grid {exc}") from None


def parse_grid(text: str) -> tuple[str, list[Any]]:
    """`style_weight=10,30,100` -> ("style_weight", [10.0, 30.0, 100.0])."""
    name, sep, values = text.partition("=")
    name = name.strip().lstrip("-").replace("-", "_")
    if not sep or not name or not values.strip():
        raise ImpastoError(f"--grid {text!r}: write it as SETTING=V1,V2,... (for example style_weight=10,30,100)")
    check_setting(name)
    return name, [parse_value(name, v) for v in values.split(",") if v.strip()]


def check_setting(name: str) -> None:
    known = [f.name for f in fields(Settings)]
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ImpastoError(f"cannot sweep {name!r}: there is no such setting{hint}; see `impasto --help` for the settings")


def normalize_grid(grid: Grid) -> list[tuple[str, list[Any]]]:
    items = list(grid.items()) if isinstance(grid, Mapping) else list(grid)
    axes: list[tuple[str, list[Any]]] = []
    for name, values in items:
        name = name.replace("-", "_")
        check_setting(name)
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise ImpastoError(f"grid {name}: give a list of values, not {values!r}")
        values = [parse_value(name, v) if isinstance(v, str) else v for v in values]
        if not values:
            raise ImpastoError(f"grid {name}: no values given")
        if any(name == other for other, _ in axes):
            raise ImpastoError(f"grid {name}: given twice; sweep two different settings")
        axes.append((name, values))
    if not 1 <= len(axes) <= 2:
        raise ImpastoError(f"a sweep varies one or two settings, not {len(axes)}")
    cells = len(axes[0][1]) * (len(axes[1][1]) if len(axes) == 2 else 1)
    if cells > MAX_CELLS:
        raise ImpastoError(f"a {cells}-cell grid is too large (at most {MAX_CELLS} runs)")
    return axes


def cell_values(axes: Sequence[tuple[str, Sequence[Any]]], row: int, col: int) -> dict[str, Any]:
    if len(axes) == 1:
        return {axes[0][0]: axes[0][1][col]}
    return {axes[0][0]: axes[0][1][row], axes[1][0]: axes[1][1][col]}


def format_value(value: Any) -> str:
    if isinstance(value, tuple):
        return "+".join(format_value(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (str, os.PathLike)) and os.sep in os.fspath(value):
        return Path(value).name  # a picture (init, weights): its name says which, its folder does not
    return str(value)


def cell_label(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={format_value(v)}" for k, v in values.items())


def sweep(
    content: ImageLike,
    style: Any,
    grid: Grid,
    settings: Optional[SettingsLike] = None,
    stylizer: Optional[Stylizer] = None,
    masks: Optional[Sequence[Optional[ImageLike]]] = None,
    keep_mask: Optional[ImageLike] = None,
    callback: Optional[Callable[..., Optional[bool]]] = None,
    on_cell: Optional[Callable[[int, int, dict[str, Any], Any], None]] = None,
    **overrides: Any,
) -> SweepResult:
    """Run `content` x `style` once per grid cell and lay the results out on a labelled sheet.

    `grid` maps one or two setting names to value lists ({"style_weight": [10, 30]}; strings
    are parsed as on the command line). With two, the first varies down the rows and the
    second across the columns. `settings` is a Settings, a preset's name or a dict; keyword
    `overrides` change single ones, as in `stylize`. Every cell is checked before the first run
    (its settings, device, size and memory, the weights' model); a swept `iterations` is run
    even at a size of one scale. `callback` is passed to each run; `on_cell(index, count,
    values, result)` follows each cell.
    Ctrl-C raises impasto.Interrupted, and an error in a cell (or the device running out of
    memory there) raises SweepFailed, an ImpastoError naming the cell; the `result` of either
    is the sheet of the cells that finished.
    """
    from .api import Stylizer
    from .device import is_out_of_memory

    axes = normalize_grid(grid)
    base = as_settings(settings, overrides)
    n_rows = len(axes[0][1]) if len(axes) == 2 else 1
    n_cols = len(axes[-1][1])
    stylizer = stylizer or Stylizer()
    photo = load_image(content)  # once, for every cell's check
    swept = {name for name, _ in axes}
    said: set[str] = set()  # each warning once, however many cells it concerns
    plans: list[list[Settings]] = []
    for r in range(n_rows):
        row = []
        for c in range(n_cols):
            values = cell_values(axes, r, c)
            try:
                # A swept iteration count is one given on purpose: run even where the size is one scale.
                cell = base.replace(**values).validate().with_given_iterations(swept)
                stylizer.check(photo, cell)
                row.append(cell)
            except (ImpastoError, ValueError, TypeError) as exc:
                raise ImpastoError(f"grid cell {cell_label(values)}: {exc}") from None
            cell.warn_unused(swept | set(overrides), said)
        plans.append(row)
    images: list[list[Image.Image]] = []
    results: list[list[Any]] = []
    count = n_rows * n_cols
    try:
        for r, row in enumerate(plans):
            images.append([])
            results.append([])
            for c, cell_settings in enumerate(row):
                try:
                    result = stylizer.run(content, style, cell_settings, callback=callback, masks=masks, keep_mask=keep_mask)
                except (ImpastoError, RuntimeError) as exc:
                    if not isinstance(exc, ImpastoError) and not is_out_of_memory(exc):
                        raise  # a bug: its traceback is worth more than a one-line message
                    # Out of memory (where the run did not say it as an ImpastoError) is this device's
                    # limit, as the checks before the runs would have said it, not a bug.
                    reason = exc if isinstance(exc, ImpastoError) else f"the device ran out of memory ({first_line(exc)})"
                    message = f"grid cell {cell_label(cell_values(axes, r, c))}: {reason}"
                    if not any(results):  # the first cell: nothing to show, as for Ctrl-C
                        raise ImpastoError(message) from None
                    # Like Ctrl-C, a failure keeps the cells that finished: a long sweep is not lost
                    # to one value it could not paint.
                    raise SweepFailed(message, _partial(images, results, axes, failed=(r, c)), (r, c)) from None
                if result.stopped_early:
                    # Not the picture its label promises: said, so a sheet is not read as a finished one.
                    warn(f"grid cell {cell_label(cell_values(axes, r, c))}: {result.stopped_reason}; its picture is the best before that")
                images[r].append(result.image)
                results[r].append(result)
                if on_cell is not None:
                    on_cell(r * n_cols + c, count, cell_values(axes, r, c), result)
    except KeyboardInterrupt as stop:
        if not any(results):  # not even one cell: nothing to show (and the cell's own result is not a sheet)
            raise KeyboardInterrupt from stop
        # A long sweep cut short keeps the cells it finished (the one it was in is left out: its
        # picture is not what its label says), on a sheet with the others blank.
        raise Interrupted(_partial(images, results, axes)) from stop
    sheet, boxes = contact_sheet(images, axes)
    return SweepResult(sheet, images, results, axes, boxes)


def _partial(
    images: list[list[Image.Image]], results: list[list[Any]], axes: list[tuple[str, list[Any]]], failed: Optional[tuple[int, int]] = None
) -> SweepResult:
    """The sheet of a sweep stopped part-way: the cells not run are blank, and the `failed` one
    is marked so, since a sheet outlives the message that said which it was (a blank alone would
    read as a sweep cut short before that value, not as a value that cannot be painted)."""
    n_rows = len(axes[0][1]) if len(axes) == 2 else 1
    n_cols = len(axes[-1][1])
    size = images[0][0].size
    blank = Image.new("RGB", size, BLANK)
    for r in range(n_rows):
        row_images = images[r] if r < len(images) else []
        row_results = results[r] if r < len(results) else []
        done = len(row_results)
        row_images[done:] = [blank] * (n_cols - done)
        row_results[done:] = [None] * (n_cols - done)
        if r >= len(images):
            images.append(row_images)
            results.append(row_results)
    if failed is not None:
        images[failed[0]][failed[1]] = _failed_cell(size)
    sheet, boxes = contact_sheet(images, axes)
    return SweepResult(sheet, images, results, axes, boxes)


def _failed_cell(size: tuple[int, int]) -> Image.Image:
    image = Image.new("RGB", size, BLANK)
    draw = ImageDraw.Draw(image)
    font = load_font(_font_size(*size))
    draw.text((size[0] / 2, size[1] / 2), _fit("failed", size[0], font, draw), fill=FAILED_INK, font=font, anchor="mm")
    return image


def load_font(size: int) -> Any:
    """Pillow's own font at `size` px, for titles on sheets."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 or without FreeType: the small bitmap font
        return ImageFont.load_default()


def _font_size(width: int, height: int) -> int:
    """One size for a sheet's titles and a failed cell's mark, so the mark reads as the sheet's own."""
    return max(11, min(28, min(width, height) // 9))


def contact_sheet(
    images: Sequence[Sequence[Image.Image]], axes: Sequence[tuple[str, Sequence[Any]]]
) -> tuple[Image.Image, dict[tuple[int, int], tuple[int, int, int, int]]]:
    """The sweep's images on a sheet titled with the swept settings and their values."""
    col_name, col_values = axes[-1]
    col_labels = [f"{col_name}={format_value(v)}" for v in col_values]
    row_labels = [f"{axes[0][0]}={format_value(v)}" for v in axes[0][1]] if len(axes) == 2 else []
    title = f"rows: {axes[0][0]}   columns: {col_name}" if len(axes) == 2 else f"columns: {col_name}"
    return labelled_sheet(images, col_labels, row_labels, title)


def labelled_sheet(
    images: Sequence[Sequence[Image.Image]], col_labels: Sequence[str], row_labels: Sequence[str] = (), title: str = ""
) -> tuple[Image.Image, dict[tuple[int, int], tuple[int, int, int, int]]]:
    """Images in a grid on a white sheet with a title, column titles and optional row titles.

    Returns the sheet and each cell's box (left, top, right, bottom) on it.
    """
    cw = max(im.width for row in images for im in row)
    ch = max(im.height for row in images for im in row)
    n_rows, n_cols = len(images), max(len(row) for row in images)
    font_size = _font_size(cw, ch)
    font = load_font(font_size)
    pad = max(6, font_size // 2)
    line = font_size + pad
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = pad + (max(measure.textlength(t, font=font) for t in row_labels) + pad if row_labels else 0)
    left = int(round(left))
    top = pad + 2 * line
    width = left + n_cols * (cw + pad)
    width = max(width, int(measure.textlength(title, font=font)) + 2 * pad)
    height = top + n_rows * (ch + pad)
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, pad), title, fill="black", font=font)
    boxes: dict[tuple[int, int], tuple[int, int, int, int]] = {}
    for c, label in enumerate(col_labels):
        x = left + c * (cw + pad) + cw / 2
        draw.text((x, pad + line + font_size / 2), _fit(label, cw, font, measure), fill="black", font=font, anchor="mm")
    for r in range(n_rows):
        y = top + r * (ch + pad)
        if row_labels:
            draw.text((pad, y + ch / 2), row_labels[r], fill="black", font=font, anchor="lm")
        for c, image in enumerate(images[r]):
            x = left + c * (cw + pad)
            # A cell smaller than the largest (a swept size) is centred in its box.
            ox, oy = x + (cw - image.width) // 2, y + (ch - image.height) // 2
            sheet.paste(flatten(image), (ox, oy))  # a cut-out as it looks on the sheet's white
            boxes[(r, c)] = (ox, oy, ox + image.width, oy + image.height)
    return sheet, boxes


def _fit(text: str, width: int, font: Any, measure: ImageDraw.ImageDraw) -> str:
    """A column title that fits over its image: without the setting's name, then cut short with
    an ellipsis (its cell's file name in SHEET_cells/ keeps it whole)."""
    if measure.textlength(text, font=font) <= width:
        return text
    if "=" in text:
        text = text.split("=", 1)[1]
    while len(text) > 1 and measure.textlength(text, font=font) > width:
        text = text[:-2] + "…"
    return text


def cells_folder(sheet_path: Union[str, os.PathLike]) -> Path:
    """Where the cell images go: a folder beside the sheet named after it."""
    path = Path(sheet_path)
    return path.with_name(path.stem + "_cells")


def cell_filename(values: Mapping[str, Any], suffix: str = ".png") -> str:
    text = "__".join(f"{k}={format_value(v)}" for k, v in values.items())
    return re.sub(r"[^A-Za-z0-9._+=-]", "_", text) + suffix


def save_sweep(result: SweepResult, sheet_path: Union[str, os.PathLike], overwrite: bool = False) -> list[Path]:
    """Write the sheet, and each cell's image into a folder beside it. Returns the cell paths."""
    targets = check_sweep_outputs(sheet_path, result.axes, overwrite)
    folder = cells_folder(sheet_path)
    folder.mkdir(exist_ok=True)
    if overwrite:
        # Replaced as a set: an earlier sweep's cells (other values) must not sit beside this one's.
        for earlier in folder.glob(f"*=*{Path(sheet_path).suffix or '.png'}"):
            earlier.unlink()
    written = []
    cells = [result.results[r][c] is not None for r in range(len(result.results)) for c in range(len(result.results[r]))]
    for target, (image, ran) in zip(targets, zip((im for row in result.images for im in row), cells)):
        if ran:
            save_image(image, target, overwrite=overwrite)
            written.append(target)
    save_image(result.sheet, sheet_path, overwrite=overwrite)
    return written


def check_sweep_outputs(sheet_path: Union[str, os.PathLike], axes: Sequence[tuple[str, Sequence[Any]]], overwrite: bool = False) -> list[Path]:
    """The cell image paths, after checking that nothing would be replaced without `overwrite`
    (called before the runs too, so a long sweep cannot fail at its end)."""
    sheet_path = check_image_output(sheet_path, overwrite)
    folder = cells_folder(sheet_path)
    if folder.exists() and not folder.is_dir():
        raise ImpastoError(f"{folder}: exists and is not a folder")
    n_rows = len(axes[0][1]) if len(axes) == 2 else 1
    values = [cell_values(axes, r, c) for r in range(n_rows) for c in range(len(axes[-1][1]))]
    targets = [folder / cell_filename(v, sheet_path.suffix or ".png") for v in values]
    if len(set(targets)) != len(targets):
        raise ImpastoError("two grid cells would share a file name; make the grid values distinct")
    for target in targets:
        if target.exists() and not overwrite:
            raise ImpastoError(f"{target}: already exists (pass {option('overwrite', True)} to replace it)")
    return targets
