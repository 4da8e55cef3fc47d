"""The import manifest: what each entry was when an import last wrote it, so a re-run skips
entries that are already identical (the same ETag and size in the listing, the same type,
size, mode, owner and mtime on disk) without a request, and a run after a kill -9 goes on
where the dead one stopped.

Local: no MPI, no S3. One directory per (file system, repository) in the state directory:
`entries.jsonl` (compacted) and one `delta-*.jsonl` per rank and task, appended a line per
entry as it is written (a killed job's lines are there for the next run: the page cache
outlives the process). Every rank reads them all at its start, whatever the rank count was;
rank 0 compacts them at the end of a task. About 200 bytes of memory per entry per rank.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import threading
from dataclasses import astuple, dataclass

from .errors import corrupt, unusable

ENTRIES = "entries.jsonl"


@dataclass(frozen=True, slots=True)
class Written:
    """One entry as an import left it: the object's ETag and size, and what lstat shows."""

    path: str
    etag: str
    size: int
    kind: str
    mode: int  # permission bits
    uid: int
    gid: int
    mtime_ns: int
    atime_ns: int
    data: bool = True  # False: --metadata-only left the file empty


def manifest_dir(state_dir: str, file_system_id: str, repository: str) -> str:
    digest = hashlib.sha256(repository.encode("utf-8")).hexdigest()[:16]
    return os.path.join(state_dir, "import-manifests", file_system_id, digest)


class ImportManifest:
    def __init__(self, directory: str):
        self.directory = directory
        self.entries: dict[str, Written] = {}
        self._out = None
        self._lock = threading.Lock()

    def load(self) -> ImportManifest:
        """Read the compacted file and every delta, later lines winning."""
        files = [os.path.join(self.directory, ENTRIES)] + sorted(glob.glob(os.path.join(self.directory, "delta-*")))
        for path in files:
            try:
                with open(path, encoding="utf-8", errors="surrogateescape") as f:
                    for line in f:
                        if not line.endswith("\n"):
                            break  # the last line of a killed job: cut off
                        try:
                            w = Written(*json.loads(line))
                        except (ValueError, TypeError) as e:
                            raise corrupt(path, e, "import manifest", "move it aside (the next import then "
                                          "fetches every object again)") from None
                        self.entries[w.path] = w
            except FileNotFoundError:
                continue
            except OSError as e:
                raise unusable(path, e, "read") from None
        return self

    def open(self, task_id: str, rank: int) -> None:
        try:
            os.makedirs(self.directory, exist_ok=True)
            self._out = open(os.path.join(self.directory, f"delta-{task_id}-{rank:05d}.jsonl"), "a", buffering=1,
                             encoding="utf-8", errors="surrogateescape")
        except OSError as e:
            raise unusable(self.directory, e) from None

    def add(self, w: Written) -> None:
        if self._out is None:
            return
        line = json.dumps(astuple(w), ensure_ascii=False) + "\n"
        with self._lock:
            try:
                self._out.write(line)
            except OSError as e:
                raise unusable(self.directory, e) from None

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def compact(self) -> None:
        """Rank 0, every rank done: one file again (temporary file, rename), deltas removed."""
        deltas = sorted(glob.glob(os.path.join(self.directory, "delta-*")))
        if not deltas:
            return
        self.entries = {}
        self.load()
        target = os.path.join(self.directory, ENTRIES)
        tmp = target + ".tmp"
        try:
            with open(tmp, "w", encoding="utf-8", errors="surrogateescape") as f:
                for w in self.entries.values():
                    f.write(json.dumps(astuple(w), ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
            for d in deltas:
                os.unlink(d)
        except OSError as e:
            raise unusable(target, e) from None
