"""A lock on a folder that one process at a time may work in (a batch's output folder, the
web server's jobs), held as an flock, so the OS lets it go if the process dies. Where there
is no flock (Windows) there is no lock."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from .errors import ImpastoError


class FolderLock:
    def __init__(self, folder: Path, name: str, busy: str, advice: str, here: Optional[str] = None) -> None:
        """`busy`: what another holder is doing there; `advice`: what the user can do about it;
        `here`: what to say when the holder is this very process."""
        self.folder, self.name, self.busy, self.advice, self.here = Path(folder), name, busy, advice, here
        self.handle: Optional[Any] = None

    def acquire(self) -> "FolderLock":
        try:
            import fcntl
        except ImportError:
            return self
        handle = open(self.folder / self.name, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            if self.here and holder == str(os.getpid()):
                raise ImpastoError(f"{self.folder}: {self.here}") from None
            by = f" (process {holder})" if holder.isdigit() else ""
            raise ImpastoError(f"{self.folder}: {self.busy}{by}; {self.advice}") from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        self.handle = handle
        return self

    def release(self) -> None:
        if self.handle is not None:
            self.handle.close()  # closing lets the lock go
            self.handle = None
