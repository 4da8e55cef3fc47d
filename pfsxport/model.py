"""Typed records shared by every layer: entries, layouts, parts, work units, report rows.

Pure: standard library only. Work units travel between MPI ranks, so they are small
slotted dataclasses that pickle compactly.
"""
from __future__ import annotations

import stat as _stat
from dataclasses import dataclass, field
from enum import Enum


class EntryKind(str, Enum):
    FILE = "file"
    DIRECTORY = "directory"
    SYMLINK = "symlink"
    SPECIAL = "special"  # FIFO, socket, device: skipped with a warning

    @classmethod
    def of_mode(cls, mode: int) -> EntryKind:
        if _stat.S_ISREG(mode):
            return cls.FILE
        if _stat.S_ISDIR(mode):
            return cls.DIRECTORY
        if _stat.S_ISLNK(mode):
            return cls.SYMLINK
        return cls.SPECIAL


class RowStatus(str, Enum):
    SUCCEEDED = "succeeded"
    SUCCEEDED_WITH_WARNING = "succeeded with warning"
    FAILED = "failed"
    SKIPPED = "skipped"  # special files, entries gone before export: not counted
    DELETED = "deleted"  # --delete removed the object of an entry that is gone: not counted
    WOULD_EXPORT = "would-export"  # --dry-run: would be sent (counted, as its export would be)
    WOULD_DELETE = "would-delete"  # --dry-run --delete: its object would be removed (not counted)


@dataclass(frozen=True, slots=True)
class Entry:
    """One lstat'ed namespace entry; `path` is relative to the file-system root (POSIX, '/'-joined)."""

    path: str
    kind: EntryKind
    size: int
    mode: int
    uid: int
    gid: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    ino: int = 0
    nlink: int = 1

    @classmethod
    def from_stat(cls, path: str, st) -> Entry:
        return cls(path, EntryKind.of_mode(st.st_mode), st.st_size, st.st_mode, st.st_uid, st.st_gid,
                   st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_nlink)

    def rec(self) -> tuple[int, int, int, int, int, int, int]:
        """What the manifest keeps: a change in any of these means export again."""
        return (self.size, self.mtime_ns, self.ctime_ns, self.mode, self.uid, self.gid, self.ino)

    def snapshot(self) -> tuple[int, int, int, int]:
        """What must not move while the entry is read: a change here means a torn read."""
        return (self.size, self.mtime_ns, self.ctime_ns, self.ino)


@dataclass(frozen=True, slots=True)
class Component:
    """One layout component: [start, end) extent with its striping; end None means EOF."""

    start: int
    end: int | None
    stripe_size: int
    osts: tuple[int, ...] = ()  # OST index of stripe i is osts[i % len(osts)]; () if unknown/DoM


@dataclass(frozen=True, slots=True)
class StripeLayout:
    components: tuple[Component, ...]
    source: str = "default"  # "lfs" or "default"

    @property
    def stripe_size(self) -> int:
        """The coarsest stripe size: part boundaries that are multiples of it align every component."""
        return max(c.stripe_size for c in self.components)

    def osts_for(self, offset: int, length: int) -> tuple[int, ...]:
        """OST indices holding bytes [offset, offset+length), in first-touched order."""
        seen: dict[int, None] = {}
        end = offset + length
        for c in self.components:
            c_end = end if c.end is None else min(c.end, end)
            lo = max(c.start, offset)
            if lo >= c_end or not c.osts:
                continue
            # Lustre numbers a component's stripes by absolute file offset (lov_stripe_number)
            first = lo // c.stripe_size
            last = (c_end - 1) // c.stripe_size
            for i in range(first, min(last, first + len(c.osts) - 1) + 1):
                seen.setdefault(c.osts[i % len(c.osts)])
        return tuple(seen)


def default_layout(stripe_size: int) -> StripeLayout:
    return StripeLayout((Component(0, None, stripe_size),), "default")


@dataclass(frozen=True, slots=True)
class Part:
    number: int  # 1-based, as S3 counts
    offset: int
    length: int
    osts: tuple[int, ...] = ()


# ---- work units: what the scheduler hands to ranks -------------------------------------


@dataclass(slots=True)
class DirUnit:
    """Scan one directory (relative path) and emit its children. A shallow scan (auto-export
    of a directory that saw events) descends only into subdirectories new to the manifest.

    `entry`: the directory's own object, when it is due, is written before its children are
    listed: a store with real directories (SeaweedFS) can lose a marker written while its
    first child's upload creates the folder."""

    path: str
    uid: int = 0
    shallow: bool = False
    entry: Entry | None = None


@dataclass(slots=True)
class BatchUnit:
    """Export a batch of already-stat'ed entries that each fit in one request."""

    entries: list[Entry]
    uid: int = 0


@dataclass(slots=True)
class LargeFileUnit:
    """Start a multipart upload for one file (or resume the open one a dead job left);
    its parts come back to the scheduler."""

    entry: Entry
    attempt: int = 0
    uid: int = 0
    resume: object = None  # manifest.OpenUpload
    plain: bool = False  # upload even if it is a hard link whose data was exported under another path
    layout: object = None  # StripeLayout found by the scan (one `lfs` call per directory), if any


@dataclass(slots=True)
class CopyUnit:
    """A hard link whose data another link path already exported: server-side copy (E-9)."""

    entry: Entry
    source: str  # the link path whose object holds the data
    checksum: str = ""
    uid: int = 0


@dataclass(slots=True)
class DeleteUnit:
    """--delete: remove the objects of entries that are gone (path, mode, size as last exported)."""

    gone: list[tuple[str, int, int]]
    uid: int = 0


@dataclass(slots=True)
class DeleteTreeUnit:
    """--delete: remove the objects of a directory that is gone and of everything under it."""

    path: str
    uid: int = 0


@dataclass(slots=True)
class PartUnit:
    upload_id: str
    key: str
    path: str
    part: Part
    snapshot: tuple[int, int, int, int]
    uid: int = 0


@dataclass(slots=True)
class FinishUnit:
    """Complete (parts given) or abort (error_code given, or canceled) a multipart upload."""

    upload_id: str
    key: str
    entry: Entry
    snapshot: tuple[int, int, int, int]
    parts: list[tuple[int, str, str]]  # (number, etag, base64 crc32 or "")
    crcs: list[tuple[int, int]]  # (crc32, length) per part, in order, for the whole-object CRC
    retries: int
    attempt: int
    osts: tuple[int, ...]
    error_code: str = ""
    error_message: str = ""
    retry_file: bool = False  # after aborting, export the file again (it changed under us)
    started: float = 0.0
    uid: int = 0
    canceled: bool = False  # abort it: the task stops before its parts are all in (no report row)


Unit = DirUnit | BatchUnit | LargeFileUnit | PartUnit | FinishUnit | CopyUnit | DeleteUnit | DeleteTreeUnit


# ---- results: what ranks hand back -----------------------------------------------------


@dataclass(slots=True)
class ReportRow:
    """One entry's outcome: a row of the HDF5/CSV report."""

    path: str
    kind: str
    size: int
    status: RowStatus
    error_code: str = ""
    bytes: int = 0
    parts: int = 0
    checksum: str = ""
    retries: int = 0
    rank: int = 0
    osts: str = ""
    seconds: float = 0.0
    message: str = ""
    end: float = 0.0  # Unix time the outcome was known (0: when its report shard took it)

    @property
    def counted(self) -> bool:
        return self.status not in (RowStatus.SKIPPED, RowStatus.DELETED, RowStatus.WOULD_DELETE)


@dataclass(slots=True)
class UploadStarted:
    """A multipart upload exists now; the scheduler owns its parts and its end."""

    upload_id: str
    key: str
    entry: Entry
    parts: list[Part]
    attempt: int
    started: float
    reused: list[PartDone] = field(default_factory=list)  # parts a dead job already uploaded
    retries: int = 0  # retries of the create


@dataclass(slots=True)
class PartDone:
    upload_id: str
    number: int
    etag: str = ""
    crc_b64: str = ""
    crc: int = 0
    length: int = 0
    retries: int = 0
    changed: bool = False
    error_code: str = ""
    error_message: str = ""


@dataclass(slots=True)
class Discovered:
    entries: int = 0
    bytes: int = 0
    unchanged: int = 0  # unchanged since their last export: not sent, not counted


@dataclass(slots=True)
class UnitOutcome:
    """Everything one executed unit produced."""

    uid: int
    rows: list[ReportRow] = field(default_factory=list)
    units: list = field(default_factory=list)
    started: list[UploadStarted] = field(default_factory=list)
    parts: list[PartDone] = field(default_factory=list)
    discovered: Discovered | None = None
    bytes_sent: int = 0
    fault: Exception | None = None  # the state directory failed the rank (errors.StateError): stop the task
    # (path, status, checksum) of the rows of hard links, which the scheduler pairs; the rows
    # themselves stay on the rank that made them (its report shard)
    linked: list[tuple[str, RowStatus, str]] = field(default_factory=list)
