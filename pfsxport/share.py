"""Work sharing between ranks: what a rank keeps of its own work, what it gives a thief, the
counters it reports, and how the coordinator knows that the walk is over.

Pure: standard library only. Each rank keeps the light units it makes (directory scans,
batches of small entries, deletes) in its own `LocalQueue` and runs them itself; a rank with
nothing to do asks a random peer for half of that peer's queue (work stealing, as libcircle
and mpiFileUtils do). Nothing of this passes through the coordinator, which hears a rank's
`Tally` (counts, not rows) every second or so and runs `Termination`: the task's walk is over
when every rank is idle, every unit given away has arrived, and the same holds in two
consecutive rounds of reports (so no report it counts on was overtaken by a theft).

Why stealing and not a tree of coordinators: a coordinator tree still moves every unit
through a process other than the one that found it; stealing moves work only when a rank
runs dry, and then in halves, so the messages per entry fall as the tree grows
(bench/scale.py measures both the traffic and the coordinator's CPU per entry).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, fields

from .model import DirUnit, ReportRow, RowStatus


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


class LocalQueue:
    """A rank's own light units: directory scans on a stack (depth first keeps it small)
    and everything else (batches of small entries, deletes) in arrival order. Scans go first
    while the batches are few, so the walk keeps finding work for every thread."""

    def __init__(self, scarce: int = 16):
        self.dirs: list[DirUnit] = []
        self.batches: deque = deque()
        self.scarce = scarce

    def __len__(self) -> int:
        return len(self.dirs) + len(self.batches)

    def push(self, unit) -> None:
        (self.dirs if isinstance(unit, DirUnit) else self.batches).append(unit)

    def take(self):
        """The next unit to run here, or None."""
        if self.dirs and (len(self.batches) < self.scarce or not self.batches):
            return self.dirs.pop()
        if self.batches:
            return self.batches.popleft()
        return None

    def steal(self) -> list:
        """Half of the queue for a rank that has none: the oldest scans (the highest in the
        tree, so the most work behind each) and the newest batches."""
        nd = (len(self.dirs) + 1) // 2
        out: list = self.dirs[:nd]
        del self.dirs[:nd]
        for _ in range((len(self.batches) + 1) // 2):
            out.append(self.batches.pop())
        return out

    def clear(self) -> None:
        self.dirs.clear()
        self.batches.clear()


@dataclass(frozen=True, slots=True)
class Status:
    """What a rank tells the coordinator about its light work, with each request."""

    idle: bool  # nothing queued, nothing running, nothing asked of a peer
    given: int  # units handed to thieves, ever
    taken: int  # units received from victims, ever
    queued_dirs: int = 0  # scans waiting in its queue (the walk is not over while any wait)


class Termination:
    """The coordinator's view of every rank's light work. `over()` is true once every rank
    is idle and no stolen unit is in flight (given == taken over all ranks), seen the same in
    two consecutive checks with a fresh report from every rank between them."""

    def __init__(self, nranks: int):
        self.status: list[Status | None] = [None] * nranks
        self.fresh = [False] * nranks
        self._candidate: tuple | None = None

    def report(self, rank: int, status: Status) -> None:
        self.status[rank] = status
        self.fresh[rank] = True

    def consistent(self) -> bool:
        """Every rank idle and nothing in flight, as far as the latest reports go."""
        if any(s is None or not s.idle for s in self.status):
            return False
        return sum(s.given for s in self.status) == sum(s.taken for s in self.status)

    def over(self) -> bool:
        if not self.consistent():
            self._candidate = None
            return False
        snapshot = tuple((s.given, s.taken) for s in self.status)
        if self._candidate is None or self._candidate != snapshot:
            self._candidate = snapshot
            self.fresh = [False] * len(self.status)
            return False
        return all(self.fresh)

    def walking(self) -> bool:
        """Whether any rank still has directories to scan (for the ETA)."""
        return any(s is None or s.queued_dirs or not s.idle for s in self.status)
