"""Work sharing between ranks: the counts a rank reports instead of its rows, the light units
it keeps, the halves it gives a thief, and how the coordinator knows that the walk is over.

Pure: standard library only. Each rank writes its own rows to its report shard and keeps a
`Tally`; the coordinator shows the sum of the latest ones as the task's progress, and the final
ones are summed in one collective at the end of the task.

Each rank keeps the light units it makes (directory scans, batches of small entries, deletes)
in its own `LocalQueue` and runs them itself; a rank with nothing to do asks a random peer for
half of that peer's queue (work stealing, as libcircle and mpiFileUtils do). None of this
passes through the coordinator: it hears each rank's `Status` with the rank's requests (about
one a second while the rank is busy) and runs `Termination`: the walk is over when every rank
is idle and every unit given away has arrived, seen the same in two consecutive rounds of
reports (so no report it counts on was overtaken by a theft).

Why stealing and not a tree of coordinators: a tree still moves every unit through a process
other than the one that found it; stealing moves work only when a rank runs dry, and then in
halves, so messages fall per entry as the tree grows. bench/scale.py measures both the
traffic and the coordinator's CPU per entry.
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
    """A rank's own light units: directory scans on a stack (depth first keeps it small) and
    everything else (batches of small entries, deletes) in arrival order. Scans go first while
    the batches are few, so the walk keeps finding work for every thread, and wait while they
    are not, so what a rank holds is bounded by `scarce` batches and the largest directory."""

    def __init__(self, scarce: int = 16):
        self.dirs: list[DirUnit] = []
        self.batches: deque = deque()
        self.scarce = scarce

    def __len__(self) -> int:
        return len(self.dirs) + len(self.batches)

    def push(self, unit) -> None:
        (self.dirs if isinstance(unit, DirUnit) else self.batches).append(unit)

    def take(self, scan: bool = True, batch: bool = True):
        """The next unit to run here, or None; no scan when `scan` is false and no batch when
        `batch` is (enough of that kind run already)."""
        if scan and self.dirs and len(self.batches) < self.scarce:
            return self.dirs.pop()
        if batch and self.batches:
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

    def clear(self) -> int:
        """Drop every unit (a canceled task starts no more entries); returns how many."""
        n = len(self)
        self.dirs.clear()
        self.batches.clear()
        return n


@dataclass(frozen=True, slots=True)
class Status:
    """What a rank tells the coordinator about its light work, with each request."""

    idle: bool  # nothing queued, nothing running, no theft of its own under way
    given: int = 0  # units handed to thieves, ever (in this leg)
    taken: int = 0  # units received from victims, ever (in this leg)
    queued: int = 0  # units in its LocalQueue


class Termination:
    """The coordinator's view of the ranks' light work. `over()` is true once every rank that
    ever reported is idle and no stolen unit is in flight (given == taken summed over ranks),
    seen the same in two consecutive checks with a fresh report from each of them between.
    A rank that never reported has no work (it got none from anybody: a theft from it would
    show in its victim's `given`). With no reports at all there is no local work anywhere.
    Each report and check is O(1): sums are kept, not recomputed over the ranks."""

    def __init__(self) -> None:
        self.status: dict[int, Status] = {}
        self.fresh: set[int] = set()
        self.busy = self.given = self.taken = self.queued = 0
        self.version = 0  # moves whenever a rank's (idle, given, taken) does
        self._candidate: int | None = None
        self.ended = False

    def report(self, rank: int, status: Status) -> None:
        old = self.status.get(rank)
        if old is not None:
            self.busy -= not old.idle
            self.given -= old.given
            self.taken -= old.taken
            self.queued -= old.queued
        if old is None or (old.idle, old.given, old.taken) != (status.idle, status.given, status.taken):
            self.version += 1
        self.status[rank] = status
        self.busy += not status.idle
        self.given += status.given
        self.taken += status.taken
        self.queued += status.queued
        self.fresh.add(rank)

    def consistent(self) -> bool:
        """Every rank idle and nothing in flight, as far as the latest reports go."""
        return not self.busy and self.given == self.taken

    def over(self) -> bool:
        if self.ended or not self.status:
            return True
        if not self.consistent():
            self._candidate = None
            return False
        if self._candidate != self.version:
            self._candidate = self.version
            self.fresh = set()
            return False
        self.ended = len(self.fresh) == len(self.status)
        return self.ended
