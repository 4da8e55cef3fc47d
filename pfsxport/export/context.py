"""What every step of one rank's export data path shares: the tree and the repository, the
store, the options, the manifest and its delta log, and the policy of what to act on.

Local: no MPI. The store and the layout source are injected.
"""
from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ErrorCode
from ..lustre import LayoutSource
from ..metadata import S3Url
from ..model import Entry, EntryKind, ReportRow, RowStatus
from ..walk import Root

TASK_EVENTS = frozenset({"NEW", "CHANGED"})


@dataclass(slots=True)
class TransferOptions:
    part_size: int
    multipart_threshold: int
    max_object_size: int
    batch_entries: int
    busy_retries: int
    body_budget: int = 0  # bytes of single-PUT bodies a rank holds at once (0: no cap)

    @classmethod
    def of(cls, t, max_object_size: int) -> TransferOptions:
        """From the transfer settings: single-PUT bodies may hold as much memory as the
        parts in flight."""
        return cls(t.part_size, t.multipart_threshold, max_object_size, t.batch_entries, t.busy_retries,
                   t.parts_in_flight * t.part_size)


# Files this small go without asking the budget: `concurrency` of them are little memory.
UNBUDGETED = 64 << 10


class ByteBudget:
    """The bytes of file bodies a rank holds in memory for single PUTs. A thread waits for
    room before it reads, so many files just under the multipart threshold cannot add up to
    concurrency x threshold; one file larger than the whole budget waits for all of it."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.free = capacity
        self._cond = threading.Condition()

    def take(self, n: int) -> int:
        n = min(n, self.capacity)
        with self._cond:
            while self.free < n:
                self._cond.wait()
            self.free -= n
        return n

    def give(self, n: int) -> None:
        with self._cond:
            self.free += n
            self._cond.notify_all()


# Test hook: seconds to sleep before each entry and part, so tests can cancel or interrupt
# an export at a known moment. Never set in production.
TEST_DELAY = float(os.environ.get("PFSXPORT_TEST_ENTRY_DELAY", "0") or 0)
# Test hook: "POINT" or "POINT@RANK" kills this process with SIGKILL the first time it reaches
# POINT (after-put, between-parts, after-last-part, before-complete), to test crash and resume.
TEST_KILL_AT = os.environ.get("PFSXPORT_TEST_KILL_AT", "")


def test_kill(point: str, rank: int) -> None:
    if TEST_KILL_AT and TEST_KILL_AT in (point, f"{point}@{rank}"):
        os.kill(os.getpid(), 9)


class NoDelta:
    """The delta log of a rank that records nothing (a dry run, or a test)."""

    def add(self, *record) -> None:
        pass

    def put(self, path, rec) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        return None


@dataclass
class Context:
    """One rank's side of a task leg. `manifest` (a manifest.Reader) makes scans incremental:
    entries whose stat matches their last export are left out unless `full`. `events` says
    which differences are acted on: NEW (not in the manifest), CHANGED (in it, with another
    stat, or renamed) and DELETED (in it, gone: the object is removed). `delta` (a
    manifest.DeltaLog) records each object as soon as it is durable in S3.

    Auto-export adds three hooks: `hold(path)` keeps a file a writer still has open out of
    a scan; `renamed(path)` marks a path that arrived or left by a rename (a CHANGED event
    whatever the manifest says); `passed` ({path: rec}) remembers entries the policy left
    alone, so that a later scan does not take them for new again."""

    fs_root: str
    repo: S3Url
    store: Any
    layouts: LayoutSource | None
    opts: TransferOptions
    rank: int = 0
    skip: frozenset[str] = frozenset()
    manifest: Any = None
    delta: Any = None
    full: bool = False
    events: frozenset[str] = TASK_EVENTS
    hold: Callable[[str], bool] | None = None
    renamed: Callable[[str], bool] | None = None
    passed: dict | None = None
    dry_run: bool = False  # plan only: each step says what it would do, and sends and records nothing
    root: Root = field(init=False)
    bodies: ByteBudget | None = field(init=False)

    def __post_init__(self) -> None:
        self.root = Root(self.fs_root)
        self.delta = self.delta or NoDelta()
        self.renamed = self.renamed or (lambda path: False)
        self.bodies = ByteBudget(self.opts.body_budget) if self.opts and self.opts.body_budget else None

    def abspath(self, rel: str) -> str:
        return os.path.join(self.fs_root, rel)

    def is_large(self, e: Entry) -> bool:
        return e.kind is EntryKind.FILE and e.size > self.opts.multipart_threshold

    def key_of(self, path: str, mode: int) -> str:
        """The key of a manifest record (path and mode): a directory's ends in '/'."""
        return self.repo.key(path) + ("/" if stat.S_ISDIR(mode) else "")

    def row(self, e: Entry, status: RowStatus, code: ErrorCode | str = "", **kw) -> ReportRow:
        return ReportRow(e.path, e.kind.value, e.size, status, getattr(code, "value", code), rank=self.rank, **kw)


BUSY = "the file was being modified by another client while it was exported; retry later"
KEY_MESSAGES = {
    ErrorCode.PATH_SIZE_TOO_LONG: "the object key would be longer than 1024 bytes",
    ErrorCode.PATH_NOT_UTF8: "the path is not valid UTF-8, so it cannot be an S3 key",
}
