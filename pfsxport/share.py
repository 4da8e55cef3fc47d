"""What a rank tells the coordinator instead of its report rows: its counts.

Pure: standard library only. Each rank writes its own rows to its report shard and keeps a
`Tally`; the tally goes with each of its requests, the coordinator shows the sum of the
latest ones as the task's progress, and the final ones are summed in one collective at the
end of the task.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from .model import ReportRow, RowStatus


@dataclass(slots=True)
class Tally:
    """One rank's counts for a task (all monotonic); the job's are the sums over ranks."""

    succeeded: int = 0
    failed: int = 0
    skipped: int = 0  # special files, entries gone before export, entries under no association
    deleted: int = 0
    unchanged: int = 0
    discovered: int = 0
    discovered_bytes: int = 0
    bytes_sent: int = 0
    retries: int = 0
    files: int = 0  # of the entries exported (or that would be), by kind, and the files' bytes
    directories: int = 0
    symlinks: int = 0
    file_bytes: int = 0

    def rows(self, rows: list[ReportRow]) -> None:
        for r in rows:
            self.retries += r.retries
            if r.counted:
                if r.status is RowStatus.FAILED:
                    self.failed += 1
                    continue
                self.succeeded += 1
                if r.kind == "file":
                    self.files += 1
                    self.file_bytes += r.size
                elif r.kind == "directory":
                    self.directories += 1
                elif r.kind == "symlink":
                    self.symlinks += 1
            elif r.status in (RowStatus.DELETED, RowStatus.WOULD_DELETE):
                self.deleted += 1
            else:
                self.skipped += 1

    @property
    def total(self) -> int:
        return self.succeeded + self.failed

    def add(self, other: Tally) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_tuple(self) -> tuple[int, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))

    @classmethod
    def summed(cls, tallies) -> Tally:
        out = cls()
        for t in tallies:
            out.add(t)
        return out
