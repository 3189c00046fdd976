"""Writing a file atomically: into a temporary file beside it, then a rename over it.

A reader (a viewer, a batch resumed later, the web app's page polling job.json)
never sees a half-written file: it finds the old version or the new one. And a
write that fails or is interrupted (a full disk, an error in the writer, Ctrl-C)
leaves no stray temporary file: the next run would otherwise trip over it, and a
folder of hidden leftovers is hard for a user to notice and clean.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Iterator, Union

# How many random names to try before giving up; a clash is already unlikely once.
_ATTEMPTS = 100


@contextlib.contextmanager
def atomic_write(path: Union[str, os.PathLike], suffix: str = "") -> Iterator[Path]:
    """Yield a new empty temporary file beside `path` to write; on success it replaces `path`.

    On any failure, KeyboardInterrupt included, the temporary file is removed and `path` is
    left as it was. `suffix` ends the temporary name, for a writer that picks the format from
    it (ffmpeg, or Pillow without format=). The name starts with a dot and `path`'s name, so it
    is hidden and says what it was for. The file gets the permissions a plain open() would give
    it (0666 less the umask), not mkstemp's 0600: a picture written for the user must be
    readable as any other of their files.
    """
    path = Path(path)
    tmp = _create_beside(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        # Cleanup must not hide the error that brought us here.
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def _create_beside(path: Path, suffix: str) -> Path:
    """Create an empty file with a fresh random name in `path`'s folder.

    O_EXCL makes the name ours alone, across threads and processes (the web app's workers write
    job files at once), and the mode 0o666 lets the umask (and a folder's default ACL) decide the
    permissions, as for any file the user's programs create; mkstemp would force 0600.
    """
    for _ in range(_ATTEMPTS):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{suffix}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"{path.parent}: no free temporary name for {path.name} after {_ATTEMPTS} tries")
