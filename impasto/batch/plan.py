"""What a batch will do: jobs read from a manifest or paired from two folders.

Everything here runs on the driver before any image is painted, so a malformed
manifest or a folder without images is one clear error at once, while a bad
row (no content, an unknown setting) becomes a job that is recorded as failed.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Collection, Iterable, Iterator, Mapping, Optional, Sequence, Union

from ..errors import ImpastoError, option, warn
from ..images import heif_readable
from ..settings import Settings, check_names, parse_setting, parse_style

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
AVIF_SUFFIXES = (".avif",)  # listed only where this Pillow reads them (11.3+)
HEIC_SUFFIXES = (".heic", ".heif")
OUTPUT_FORMATS = ("png", "jpg", "webp")
# Manifest fields that are not settings; every other field overrides a setting for its row.
CONTENT_FIELD, STYLE_FIELDS, OUTPUT_FIELD, SETTINGS_FIELD = "content", ("style", "styles"), "output", "settings"
STYLE_SEPARATOR = ";"  # several styles in one CSV cell: "a.jpg:0.7;b.jpg:0.3"

PathLike = Union[str, os.PathLike]
Row = Mapping[str, Any]


@dataclass
class Job:
    """One content painted in one style blend, written to `output` (relative to the output folder)."""

    output: str
    content: str = ""
    styles: tuple[tuple[str, float], ...] = ()
    overrides: dict[str, Any] = field(default_factory=dict)
    origin: str = ""  # where the job came from, for messages: "manifest.csv line 4"
    settings: Optional[Settings] = None
    error: Optional[str] = None  # why it cannot run, found while planning
    settings_hash: str = ""
    # Inputs + settings: a finished record with this key need not be redone. Each input is known by
    # its path from the output folder, both resolved: the same file however it is spelled, and the
    # same key after photos, paintings and outputs were moved (or mounted elsewhere) together.
    key: str = ""
    # Each input file as [size, mtime_ns] (None where it cannot be read), content first: a done
    # record whose files have changed since is redone, in place (its picture is this job's own).
    inputs: list[Optional[list[int]]] = field(default_factory=list)
    # The key as earlier indexes have it: on the absolute resolved paths (absolute_key), and, before
    # paths were resolved, on the paths as spelled (legacy_key).
    absolute_key: str = ""
    legacy_key: str = ""

    def record(self) -> dict[str, Any]:
        """The job's part of an index record."""
        return {
            "output": self.output,
            "content": self.content,
            "styles": [[path, weight] for path, weight in self.styles],
            "overrides": self.overrides,
            "settings_hash": self.settings_hash,
            # All of them, for readers of the index; the hash (what matches a job) leaves out the device
            # and settings added later while they hold their old value, so older indexes still match.
            "settings": self.settings.to_dict_without_device() if self.settings is not None else None,
            "key": self.key,
            "inputs": self.inputs,
            "origin": self.origin,
        }


# -- settings ------------------------------------------------------------------------------------


def settings_hash(settings: Settings) -> str:
    """What decides the picture. Not the device: a batch resumed on another machine keeps its jobs."""
    text = json.dumps(settings.identity(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def resolve_settings(base: Settings, overrides: Mapping[str, Any], fixed: Collection[str] = ()) -> Settings:
    """`base` with a row's overrides, checked as a single run checks its settings.

    A row's `preset` goes on top of the batch's settings but for those named in `fixed` (options
    given explicitly, which beat a preset as in a single run), and the row's own values on top.
    """
    overrides = dict(overrides)
    preset = overrides.pop("preset", None)
    check_names(overrides)
    # Lists with ',' between the items as everywhere, or '+' (a CSV cell's commas need quotes).
    row = {name: parse_setting(name, value, other_sep="+") for name, value in overrides.items()}
    kept = base.to_dict()
    given = {name: kept[name] for name in fixed if name in kept} | row
    return Settings.from_given(str(preset) if preset else None, given, under=kept)


def unused_in_row(settings: Settings, base: Settings, overrides: Mapping[str, Any], fixed: Collection[str] = ()) -> list[str]:
    """What a row's settings are warned of: settings given that change nothing in its run, less those
    already unused in the batch's own settings (the command line said those once, at its start)."""
    given = (set(fixed) - set(base.unused(fixed))) | (set(overrides) - {"preset"})
    return settings.unused_notes(given)


def job_key(content: str, styles: Sequence[tuple[str, float]], settings_hash_: str, error: Optional[str]) -> str:
    identity = {"content": content, "styles": styles, "settings": settings_hash_, "error": error}
    return hashlib.sha256(json.dumps(identity, default=str).encode()).hexdigest()[:16]


def canonical_path(path: str, folders: Optional[dict[str, str]] = None) -> str:
    """`path` absolute, its folders resolved (symlinks, "..", the working directory), its own name
    kept: the same file however a run spells it, and a symlinked file (a data set's blob store)
    keeps the name and the class folder a data loader reads labels from. `folders` keeps the
    folders resolved so far (a data set has many files per folder)."""
    full = os.path.join(os.getcwd(), os.path.expanduser(path))  # as given where it is absolute
    parent, name = os.path.split(full)
    if name in ("", ".", ".."):
        return str(Path(full).resolve())
    folders = {} if folders is None else folders
    if parent not in folders:
        folders[parent] = str(Path(parent).resolve())
    return os.path.join(folders[parent], name)


def file_version(path: str, cache: Optional[dict[str, Optional[list[int]]]] = None) -> Optional[list[int]]:
    """[size, mtime_ns] of a file, as cheaply as "the same file as before" can be known; None if unreadable."""
    if cache is not None and path in cache:
        return cache[path]
    try:
        stat = os.stat(path)
        version: Optional[list[int]] = [stat.st_size, stat.st_mtime_ns]
    except OSError:
        version = None
    if cache is not None:
        cache[path] = version
    return version


@dataclass
class PlanCache:
    """What planning many jobs would otherwise work out again for each: the settings of each set of
    overrides (one for a whole folder pairing), each folder resolved, each file's version."""

    settings: dict[str, tuple[Settings, str]] = field(default_factory=dict)
    folders: dict[str, str] = field(default_factory=dict)
    versions: dict[str, Optional[list[int]]] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)  # each set of overrides' unused_in_row
    unused: dict[str, list[str]] = field(default_factory=dict)  # each of those notes -> the jobs it concerns


def key_path(path: str, output: Optional[str]) -> str:
    """How a job's key knows an input (resolved, see canonical_path): by its path from the resolved
    output folder `output`, so the key stays when the inputs and the outputs move together; the
    absolute path where there is no output folder or no path between them (another drive)."""
    if output is None:
        return path
    try:
        return Path(os.path.relpath(path, output)).as_posix()
    except ValueError:
        return path


def finish_job(
    job: Job, base: Settings, fixed: Collection[str] = (), cache: Optional[PlanCache] = None, output: Optional[str] = None
) -> Job:
    """Fill in the job's settings, hash and key, or its error; resolve its paths and note its files' versions.
    `output`: the batch's output folder, resolved, which the key's paths are taken from (absolute without it)."""
    cache = PlanCache() if cache is None else cache
    if job.error is None:
        overrides = json.dumps(job.overrides, sort_keys=True, default=repr)
        if overrides not in cache.settings:
            try:
                resolved = resolve_settings(base, job.overrides, fixed)
                cache.settings[overrides] = (resolved, settings_hash(resolved))
                cache.notes[overrides] = unused_in_row(resolved, base, job.overrides, fixed)
            except ImpastoError as exc:
                job.error = f"{job.origin}: {exc}" if job.origin else str(exc)
        if job.error is None:
            job.settings, job.settings_hash = cache.settings[overrides]
            for note in cache.notes[overrides]:
                cache.unused.setdefault(note, []).append(job.origin)
    job.legacy_key = job_key(job.content, job.styles, job.settings_hash, job.error)
    job.content = canonical_path(job.content, cache.folders) if job.content else ""
    job.styles = tuple((canonical_path(path, cache.folders), weight) for path, weight in job.styles)
    job.absolute_key = job_key(job.content, job.styles, job.settings_hash, job.error)
    content = key_path(job.content, output) if job.content else ""
    job.key = job_key(content, tuple((key_path(path, output), weight) for path, weight in job.styles), job.settings_hash, job.error)
    paths = ([job.content] if job.content else []) + [path for path, _ in job.styles]
    job.inputs = [file_version(path, cache.versions) for path in paths]
    return job


# -- names ---------------------------------------------------------------------------------------


def default_output(content: str, styles: Sequence[tuple[str, float]], fmt: str, style_names: Optional[Sequence[str]] = None) -> str:
    """PHOTO__PAINTING.fmt, from the files' stems, or from `style_names` where given."""
    names = [Path(path).stem for path, _ in styles] if style_names is None else style_names
    style_part = "+".join(names) or "nostyle"
    return f"{Path(content).stem or 'nocontent'}__{style_part}.{fmt}"


def clean_output(name: str, fmt: str, origin: str) -> str:
    """An output name from a manifest: relative, inside the output folder, with an image suffix."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or not path.name:
        raise ImpastoError(f"{origin}: output {name!r} must be a file name inside the output folder")
    if path.suffix.lower().lstrip(".") not in OUTPUT_FORMATS + ("jpeg",):
        path = path.with_name(path.name + "." + fmt)
    return str(path)


def check_unique_outputs(jobs: Sequence[Job]) -> None:
    seen: dict[str, Job] = {}
    for job in jobs:
        other = seen.get(job.output.lower())
        if other is not None:
            raise ImpastoError(f"{other.origin} and {job.origin} would both write {job.output}; rename one of the "
                               "pictures, or give each job its own output name in a manifest")  # fmt: skip
        seen[job.output.lower()] = job


# -- manifests -----------------------------------------------------------------------------------


def parse_styles(value: Any, origin: str) -> tuple[tuple[str, float], ...]:
    """Styles from a manifest cell: "a.jpg", "a.jpg:0.7;b.jpg:0.3", or (JSON) a list of
    paths, [path, weight] pairs or {"path", "weight"} objects."""
    if value is None or value == "" or value == []:
        return ()
    items = value if isinstance(value, list) else [part for part in str(value).split(STYLE_SEPARATOR) if part.strip()]
    styles = []
    for item in items:
        if isinstance(item, str):
            styles.append(parse_style(item.strip()))
        elif isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], (int, float)):
            styles.append((item[0], float(item[1])))
        elif isinstance(item, dict) and isinstance(item.get("path"), str) and isinstance(item.get("weight", 1.0), (int, float)):
            styles.append((item["path"], float(item.get("weight", 1.0))))
        else:
            raise ImpastoError(f"{origin}: cannot read the style {item!r} (give a path, 'path:weight', [path, weight] or {{\"path\": .., \"weight\": ..}})")
    return tuple(styles)


def job_from_row(row: Row, origin: str, folder: Path, fmt: str) -> Job:
    """One manifest row as a job; a row that cannot run gets its reason in `error`."""
    row = {str(k).strip().lower().replace("-", "_"): v for k, v in row.items() if k is not None}
    overrides = {k: v for k, v in row.items() if k not in (CONTENT_FIELD, OUTPUT_FIELD, SETTINGS_FIELD, *STYLE_FIELDS)}
    overrides = {k: v for k, v in overrides.items() if v is not None and v != ""}  # an empty cell keeps the batch's value
    nested = row.get(SETTINGS_FIELD)
    if isinstance(nested, dict):
        overrides.update(nested)
    content = str(row.get(CONTENT_FIELD) or "").strip()
    error = None
    try:
        styles = parse_styles(next((row[f] for f in STYLE_FIELDS if row.get(f) not in (None, "")), None), origin)
    except ImpastoError as exc:
        styles, error = (), str(exc)
    content = str(resolve_path(content, folder)) if content else ""
    styles = tuple((str(resolve_path(path, folder)), weight) for path, weight in styles)
    if nested is not None and not isinstance(nested, dict):
        error = f"{origin}: 'settings' must be an object of setting names and values"
    elif not content:
        error = f"{origin}: no content image"
    elif not styles and error is None:
        error = f"{origin}: no style image"
    name = str(row.get(OUTPUT_FIELD) or "").strip()
    output = clean_output(name, fmt, origin) if name else default_output(content, styles, fmt)
    return Job(output=output, content=content, styles=styles, overrides=overrides, origin=origin, error=error)


def resolve_path(path: str, folder: Path) -> Path:
    """Manifest paths are relative to the manifest's folder, so a data set can move as a whole."""
    p = Path(os.path.expanduser(path))
    return p if p.is_absolute() else folder / p


def folder_options() -> str:
    """Folder mode's two settings, as the reader types them (flags or keywords)."""
    return f"{option('contents', 'DIR', placeholder=True)} and {option('styles', 'DIR', placeholder=True)}"


def read_manifest(path: PathLike, fmt: str = "png") -> list[Job]:
    """Jobs from a CSV (header row; columns content, style, output, then settings) or a JSONL file."""
    path = Path(path)
    if not path.exists():
        raise ImpastoError(f"{path}: no such manifest")
    if path.is_dir():
        raise ImpastoError(f"{path}: is a folder; give a manifest (.csv or .jsonl), or use {folder_options()}")
    suffix = path.suffix.lower()
    # Checked before reading: a picture or a video given by mistake is not "unreadable text".
    if suffix not in (".csv", ".jsonl", ".ndjson"):
        raise ImpastoError(f"{path}: a manifest is a .csv or .jsonl file, not {suffix or 'a file without suffix'!r}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ImpastoError(f"{path}: the manifest is not UTF-8 text (save it as UTF-8: a spreadsheet's \"CSV UTF-8\")") from None
    except OSError as exc:
        raise ImpastoError(f"{path}: cannot read the manifest ({exc.strerror or exc.__class__.__name__})") from None
    rows = csv_rows(text, path) if suffix == ".csv" else jsonl_rows(text, path)
    jobs = []
    for origin, row in rows:
        if isinstance(row, str):  # a line that did not parse: a failed job, not a failed batch
            jobs.append(Job(output=f"{path.stem}-line{origin.rsplit(' ', 1)[-1]}.{fmt}", origin=origin, error=row))
        else:
            jobs.append(job_from_row(row, origin, path.parent, fmt))
    if not jobs:
        raise ImpastoError(f"{path}: the manifest has no rows")
    return jobs


def csv_rows(text: str, path: Path) -> list[tuple[str, Union[Row, str]]]:
    reader = csv.DictReader(text.splitlines())
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    if CONTENT_FIELD not in header or not any(f in header for f in STYLE_FIELDS):
        raise ImpastoError(f"{path}: the first line must name the columns, with at least 'content' and 'style' (found: {', '.join(header) or 'nothing'})")
    rows: list[tuple[str, Union[Row, str]]] = []
    for row in reader:
        origin = f"{path.name} line {reader.line_num}"
        if None in row:
            rows.append((origin, f"{origin}: more fields than the header has columns"))
        elif any((v or "").strip() for v in row.values()):
            rows.append((origin, row))
    return rows


def jsonl_rows(text: str, path: Path) -> list[tuple[str, Union[Row, str]]]:
    rows: list[tuple[str, Union[Row, str]]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        origin = f"{path.name} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            rows.append((origin, f"{origin}: not valid JSON ({exc.msg})"))
            continue
        rows.append((origin, row if isinstance(row, dict) else f"{origin}: each line must be a JSON object"))
    return rows


def jobs_from_rows(rows: Iterable[Row], fmt: str = "png", folder: Optional[PathLike] = None) -> list[Job]:
    """Jobs from rows given in Python (the same fields as a JSONL manifest)."""
    base = Path(folder) if folder is not None else Path.cwd()
    jobs = []
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, Mapping):
            raise ImpastoError(f"job {number}: give each job as a dict with content, style, ... not {type(row).__name__}")
        jobs.append(job_from_row(dict(row), f"job {number}", base, fmt))
    if not jobs:
        raise ImpastoError("no jobs given")
    return jobs


# -- folders -------------------------------------------------------------------------------------


def tree_files(folder: Path) -> Iterator[Path]:
    """The files of `folder` and of its subfolders (symlinked ones too, each real folder once), hidden ones left out."""
    seen: set[str] = set()
    for root, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a link back up the tree
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = Path(root) / name
            if not name.startswith(".") and path.is_file():
                yield path


def list_images(folder: PathLike, what: str, recursive: bool = False) -> list[Path]:
    """The images of a folder, sorted by their path in it; with `recursive`, those of its subfolders too."""
    folder = Path(folder)
    if folder.is_file():
        raise ImpastoError(f"{folder}: is a file; --{what} takes a folder of images (a list of jobs is a manifest)")
    if not folder.is_dir():
        raise ImpastoError(f"{folder}: no such folder (--{what})")
    if recursive:
        files = list(tree_files(folder))
    else:
        files = [p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file()]
    avif, heif = avif_readable(), heif_readable()
    suffixes = IMAGE_SUFFIXES + (AVIF_SUFFIXES if avif else ()) + (HEIC_SUFFIXES if heif else ())
    # Sorted as paths (by their parts; without case on Windows), as batches have always drawn their
    # paintings from this order: the same --pair-seed draws the same paintings as before, on every OS.
    images = sorted((p for p in files if p.suffix.lower() in suffixes), key=lambda p: p.relative_to(folder))
    # Pictures a user would expect in a batch but this machine cannot read: left out like any
    # other file, but said, so a folder of them is not a mystery.
    unreadable = (
        (() if heif else HEIC_SUFFIXES, "HEIC/HEIF photo", "reading {them} needs the heic extra (pip install 'impasto[heic]'), or convert {them} to JPEG or PNG first"),
        (() if avif else AVIF_SUFFIXES, "AVIF picture", "reading {them} needs Pillow 11.3 or later"),
    )
    notes = []  # (what, it or them)
    for kinds, name, advice in unreadable:
        count = sum(p.suffix.lower() in kinds for p in files)
        if count:
            them = "them" if count > 1 else "it"
            notes.append((f"{count} {name}{'s' if count > 1 else ''} in it cannot be read: {advice.format(them=them)}", them))
    if not images:
        deeper = ""
        if not recursive and any(p.suffix.lower() in suffixes for p in tree_files(folder)):
            # An ImageNet-style tree (class/photo.jpg): say how to read it rather than "no images".
            deeper = f"; its subfolders have images: pass {option('recursive', True)} to read them"
        raise ImpastoError(f"{folder}: no images in it (looked for {', '.join(suffixes)})" + "".join(f"; {n}" for n, _ in notes) + deeper)
    for note, them in notes:
        warn(f"{folder}: {note}; the batch leaves {them} out")
    return images


def avif_readable() -> bool:
    """Whether this Pillow opens AVIF files (built in from 11.3)."""
    from PIL import features

    return "avif" in features.modules and bool(features.check("avif"))


def pair_folders(
    contents: PathLike, styles: PathLike, per_content: Optional[int] = None, seed: int = 0, fmt: str = "png", recursive: bool = False
) -> list[Job]:
    """Every content with every style, or `per_content` styles drawn at random for each content.

    The draw for a content depends only on the seed and the content's path in its folder (its
    file name, at the top level), so adding photos to the folder leaves the earlier pairs (and
    their finished outputs) as they were. With `recursive`, the subfolders' images are read
    too, and a content's output goes into the same subfolder of the output folder; a painting in
    a subfolder is named by its path in the styles folder (monet/001.png: PHOTO__monet-001.png),
    so paintings of one file name in two subfolders make two pictures.
    """
    contents, styles = Path(contents), Path(styles)
    content_paths = list_images(contents, "contents", recursive)
    style_paths = list_images(styles, "styles", recursive)
    if per_content is not None:
        if per_content < 1:
            raise ImpastoError(f"{option('per_content')} must be at least 1, not {per_content}")
        if per_content > len(style_paths):
            raise ImpastoError(f"{option('per_content', per_content)}: there are only {len(style_paths)} styles in {styles}")
    jobs = []
    for content in content_paths:
        place = content.relative_to(contents).as_posix()  # "photo.jpg", or "class_a/0001.jpg" in a tree
        if per_content is None:
            chosen = style_paths
        else:
            chosen = sorted(random.Random(f"{seed}:{place}").sample(style_paths, per_content))
        for style in chosen:
            styles_ = ((str(style), 1.0),)
            name = style.relative_to(styles).as_posix()
            label = [style_label(name)] if recursive else None
            output = str(PurePosixPath(place).parent / default_output(str(content), styles_, fmt, label))
            jobs.append(Job(output=output, content=str(content), styles=styles_, origin=f"{place} x {name}"))
    return jobs


def style_label(name: str) -> str:
    """A painting's part of an output name from its path in the styles folder: "monet/001.png" ->
    "monet-001"; one at the top level keeps its stem."""
    return "-".join(PurePosixPath(name).with_suffix("").parts)


def plan(jobs: Sequence[Job], base: Settings, fixed: Collection[str] = (), output: Optional[PathLike] = None) -> list[Job]:
    """Settings, hashes and keys for every job (keyed on their inputs' paths from the output folder
    `output`, if given); two jobs writing one file is an error."""
    check_unique_outputs(jobs)
    cache = PlanCache()
    folder = None if output is None else str(Path(os.path.expanduser(output)).resolve())
    finished = [finish_job(job, base, fixed, cache, folder) for job in jobs]
    for note, origins in cache.unused.items():  # once per batch, not once per row: a manifest repeats its settings
        where = origins[0] if len(origins) == 1 else f"{origins[0]} and {len(origins) - 1} other job{'s' if len(origins) > 2 else ''}"
        warn(f"{where}: {note}" if origins[0] else note)
    return finished
