"""The batch index: one JSON record per job in the output folder.

Records are appended (and flushed to disk) as jobs finish, so a crash or Ctrl-C
loses at most the jobs in flight; at the end the file is rewritten with one
record per output, the latest, so it can be compared with the files on disk.
Each record says whether it belongs to the batch last run there ("current"), so a
data loader can leave out the records of jobs that batch no longer has.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Collection, Iterator, Mapping, Optional

from .. import locks
from ..files import atomic_write

INDEX_NAME = "index.jsonl"
LOCK_NAME = ".impasto-batch.lock"
# "writing": the picture was being written when the run stopped; a record of that status is
# always followed by the job's final one, unless the process died in between.
STATUSES = ("done", "failed", "skipped", "writing")


class Index:
    """Latest record per output, read from and appended to a JSONL file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[str, dict[str, Any]] = {}
        self.unreadable = 0
        if path.exists():
            self._load()

    def _load(self) -> None:
        with open(self.path, encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    self.unreadable += 1  # a line cut short by a crash; its job is simply redone
                    continue
                if isinstance(record, dict) and isinstance(record.get("output"), str):
                    self.records[record["output"]] = record

    def get(self, output: str) -> Optional[dict[str, Any]]:
        return self.records.get(output)

    def append(self, record: dict[str, Any]) -> None:
        self.records[record["output"]] = record
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, default=str) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def mark_current(self, keys: Mapping[str, str], stale: Collection[str] = ()) -> bool:
        """Set each record's "current": whether it is the record of a job of this batch (`keys`: output
        name -> the key of the job that writes it now). A record of a job the batch no longer has (a
        photo left out, another draw of styles, other settings) stays, with "current": false, as do
        the outputs in `stale` (made from an input replaced since) until they are redone. Returns
        whether any record changed."""
        changed = False
        for output, record in self.records.items():
            current = keys.get(output) == record.get("key") and output not in stale
            if record.get("current") is not current:
                record["current"] = current
                changed = True
        return changed

    def compact(self) -> None:
        """Rewrite the file atomically with one line per output."""
        with atomic_write(self.path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
            for record in self.records.values():
                handle.write(json.dumps(record, default=str) + "\n")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records.values())


class FolderLock(locks.FolderLock):
    """One batch at a time in an output folder. Two at once would each record the other's
    pictures as files they did not make ("skipped"), and the one to end last would leave its
    index, disowning the other's work for good. Held from planning (the index is read then)
    to the end of the run."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder, LOCK_NAME, "another batch is writing into this folder",
                         "wait until it ends, or give this one an output folder of its own",
                         # A notebook cell run again after its loop was left early (a break, an error).
                         here="a batch started earlier in this process into this folder is still open (its loop was "
                         "left before the end): call that run's close(), or use `with impasto.batch(...) as run:`, "
                         "which closes it however its loop ends")
