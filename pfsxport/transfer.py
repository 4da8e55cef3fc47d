"""Executes work units on one rank: scans, single PUTs, multipart starts, parts, finishes.

Local: no MPI. The store and the layout source are injected. Every method returns a
UnitOutcome and never raises for a per-entry problem: those become report rows.
Nothing is ever written to a final key unless its bytes were read from one unchanged
version of the file (stat before and after each read, and before completing).
"""
from __future__ import annotations

import errno
import itertools
import logging
import os
import stat as _stat
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Callable

from . import checksum
from .errors import ErrorCode, StoreError
from .lustre import LayoutSource
from .metadata import S3Url, content_type, fsx_headers, key_error, object_key, printable
from .model import (BatchUnit, CopyUnit, DeleteTreeUnit, DeleteUnit, DirUnit, Discovered, Entry, EntryKind, FinishUnit,
                    LargeFileUnit, PartDone, PartUnit, ReportRow, RowStatus, UnitOutcome, UploadStarted)
from .plan import S3_MAX_PUT as S3_MAX_COPY
from .plan import plan_parts
from .walk import join as join_path
from .walk import OutsideRoot, Root, read_range, same_file, scan_dir, snapshot_of

log = logging.getLogger("pfsxport")


@dataclass(slots=True)
class TransferOptions:
    part_size: int
    multipart_threshold: int
    max_object_size: int
    batch_entries: int
    busy_retries: int
    body_budget: int = 0  # bytes of single-PUT bodies a rank holds at once (0: no cap)

    @classmethod
    def of(cls, t, max_object_size: int) -> "TransferOptions":
        """From the transfer settings: single-PUT bodies may hold as much memory as the
        parts in flight."""
        return cls(t.part_size, t.multipart_threshold, max_object_size, t.batch_entries, t.busy_retries,
                   t.parts_in_flight * t.part_size)


# Files this small go without asking the budget: `concurrency` of them are little memory.
_UNBUDGETED = 64 << 10


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
_TEST_DELAY = float(os.environ.get("PFSXPORT_TEST_ENTRY_DELAY", "0") or 0)
# Test hook: "POINT" or "POINT@RANK" kills this process with SIGKILL the first time it reaches
# POINT (after-put, between-parts, after-last-part, before-complete), to test crash and resume.
_TEST_KILL_AT = os.environ.get("PFSXPORT_TEST_KILL_AT", "")


def _test_kill(point: str, rank: int) -> None:
    if _TEST_KILL_AT and _TEST_KILL_AT in (point, f"{point}@{rank}"):
        os.kill(os.getpid(), 9)

class _NoDelta:
    def add(self, *record) -> None:
        pass

    def put(self, path, rec) -> None:
        pass

    def flush(self) -> None:
        pass


TASK_EVENTS = frozenset({"NEW", "CHANGED"})


class Transfer:
    """One rank's executor. `manifest` (a manifest.Reader) makes scans incremental: entries
    whose stat matches their last export are left out unless `full`. `events` says which
    differences are acted on: NEW (not in the manifest), CHANGED (in it, with another
    stat, or renamed) and DELETED (in it, gone: the object is removed). `delta` (a
    manifest.DeltaLog) records each object as soon as it is durable in S3.

    Auto-export adds three hooks: `hold(path)` keeps a file a writer still has open out of
    this scan; `renamed(path)` marks a path that arrived or left by a rename (a CHANGED
    event whatever the manifest says); `passed` ({path: rec}) remembers entries the policy
    left alone, so that a later scan does not take them for new again."""

    def __init__(self, fs_root: str, repo: S3Url, store, layouts: LayoutSource, opts: TransferOptions,
                 rank: int = 0, skip: frozenset[str] = frozenset(), manifest=None, delta=None,
                 full: bool = False, events: frozenset[str] = TASK_EVENTS,
                 hold: Callable[[str], bool] | None = None, renamed: Callable[[str], bool] | None = None,
                 passed: dict | None = None):
        self.fs_root = fs_root
        self.root = Root(fs_root)
        self.repo = repo
        self.store = store
        self.layouts = layouts
        self.opts = opts
        self.rank = rank
        self.skip = skip
        self.manifest = manifest
        self.delta = delta or _NoDelta()
        self.full = full
        self.events = events
        self.hold = hold
        self.renamed = renamed or (lambda path: False)
        self.passed = passed
        self.bodies = ByteBudget(opts.body_budget) if opts.body_budget else None

    def abspath(self, rel: str) -> str:
        return os.path.join(self.fs_root, rel)

    def is_large(self, e: Entry) -> bool:
        return e.kind is EntryKind.FILE and e.size > self.opts.multipart_threshold

    def intend(self, units: list) -> None:
        """Record the entries these units may write to S3 before any of them is sent. A
        process killed between a PUT and its put record then still leaves the manifest
        knowing that the key may exist: the next scan sends it again, or deletes it if the
        entry is gone by then (an `I` record never replaces what the manifest knew)."""
        added = False
        for unit in units:
            if isinstance(unit, BatchUnit):
                entries = unit.entries
            elif isinstance(unit, (LargeFileUnit, CopyUnit, DirUnit)):
                entries = [unit.entry] if unit.entry else []
            else:
                continue
            for e in entries:
                self.delta.add("I", e.path, e.mode)
                added = True
        if added:
            self.delta.flush()

    def run(self, unit) -> UnitOutcome:
        """Execute one unit other than a BatchUnit (whose entries run one by one)."""
        if isinstance(unit, DirUnit):
            return self.scan(unit)
        if isinstance(unit, LargeFileUnit):
            return self.start_large(unit)
        if isinstance(unit, PartUnit):
            done = self.part(unit)
            return UnitOutcome(unit.uid, parts=[done], bytes_sent=done.length if done.etag else 0)
        if isinstance(unit, FinishUnit):
            return self.finish(unit)
        if isinstance(unit, CopyUnit):
            return self.copy(unit)
        if isinstance(unit, DeleteUnit):
            return self.delete_gone(unit)
        if isinstance(unit, DeleteTreeUnit):
            return self.delete_tree(unit)
        raise TypeError(f"unknown unit {unit!r}")

    # ---- walking ---------------------------------------------------------------------

    def route(self, entries: list[Entry]) -> list:
        """Group entries into units: batches of small entries, one unit per large file
        (with its layout, looked up for all of them in one batched `lfs` call)."""
        units: list = []
        batch: list[Entry] = []
        large = [self.abspath(e.path) for e in entries if self.is_large(e)]
        layouts = self.layouts.layouts(large) if len(large) > 1 else {}
        for e in entries:
            if self.is_large(e):
                units.append(LargeFileUnit(e, layout=layouts.get(self.abspath(e.path))))
                continue
            batch.append(e)
            if len(batch) >= self.opts.batch_entries:
                units.append(BatchUnit(batch))
                batch = []
        if batch:
            units.append(BatchUnit(batch))
        return units

    def scan(self, unit: DirUnit) -> UnitOutcome:
        """List one directory; new and changed children become units, every subdirectory a
        scan. Unchanged children cost an lstat and a tuple comparison, nothing more.

        A directory larger than one scan piece is compared a piece at a time against just
        that piece's manifest records, so what it holds does not grow with the directory
        beyond its changed entries."""
        res = scan_dir(self.root, unit.path, self.skip)
        if res.error is not None:  # one outcome for the directory: failed, its object not written
            out = UnitOutcome(unit.uid)
            if not isinstance(res.error, FileNotFoundError):
                if isinstance(res.error, OutsideRoot):
                    log.warning("not listed: %s leads outside %s", printable(unit.path), self.fs_root)
                e = unit.entry or Entry(unit.path, EntryKind.DIRECTORY, 0, 0, 0, 0, 0, 0, 0)
                out.rows.append(self._row(e, RowStatus.FAILED, ErrorCode.LOCAL_READ_ERROR,
                                          message=f"cannot list directory: {res.error.strerror}"))
            return out
        # the directory's own object goes before any child is handed out
        out = self.export_entry(unit.entry) if unit.entry is not None else UnitOutcome(0)
        out.uid = unit.uid
        changed: list[Entry] = []
        dirs: list[DirUnit] = []
        if res.more is None:
            gone = self.manifest.directory(unit.path) if self.manifest else {}
            unchanged = self._compare(unit, res.items, gone, changed, dirs)
            count = len(res.items)
        else:
            unchanged = count = matched = 0
            for items in itertools.chain([res.items], res.more):
                previous = self.manifest.entries(unit.path, [name for name, _ in items]) if self.manifest else {}
                matched += len(previous)
                unchanged += self._compare(unit, items, previous, changed, dirs)
                count += len(items)
            gone = {}
            # records the scan did not match are entries gone since (or, rarely, gone during
            # the scan): found by paging the records, only where a gone entry can mean a delete
            if self.manifest and (self.passed is not None or "DELETED" in self.events) and \
                    self.manifest.count_children(unit.path) > matched:
                base = os.fsencode(self.abspath(unit.path))
                for page in self.manifest.pages(unit.path):
                    gone.update((name, rec) for name, rec in page if not os.path.lexists(os.path.join(base, name)))
        out.units += self.route(changed) + dirs
        if gone:  # what is left of the manifest's records is gone from the directory
            out.units += self.deletions(unit.path, gone)
        out.discovered = Discovered(count, sum(e.size for e in changed if e.kind is EntryKind.FILE), unchanged)
        return out

    def _compare(self, unit: DirUnit, items, previous: dict, changed: list[Entry], dirs: list[DirUnit]) -> int:
        """Sort a directory's children (or a piece of them) into changed entries and
        subdirectory scans; pops each seen name from `previous`; returns how many were
        unchanged."""
        prefix = unit.path + "/" if unit.path else ""
        unchanged = 0
        for name, st in items:
            before = previous.pop(name, None)
            mode = st.st_mode
            walk = _stat.S_ISDIR(mode) and (before is None or not unit.shallow)
            if before is not None and not self.full and before == (
                    st.st_size, st.st_mtime_ns, st.st_ctime_ns, mode, st.st_uid, st.st_gid, st.st_ino):
                unchanged += 1
                if walk:
                    dirs.append(DirUnit(prefix + os.fsdecode(name)))
                continue
            e = Entry.from_stat(prefix + os.fsdecode(name), st)
            left_alone = self.passed is not None and self.passed.get(e.path) == e.rec()  # by the policy, unchanged
            wanted = not left_alone and self._wanted(e, before is None)
            if walk:  # its own object goes first, then its children (DirUnit.entry)
                dirs.append(DirUnit(e.path, entry=e if wanted else None))
            elif wanted:
                changed.append(e)
        return unchanged

    def _wanted(self, e: Entry, new: bool) -> bool:
        """Whether the policy exports this new or changed entry now."""
        if self.hold is not None and e.kind is EntryKind.FILE and self.hold(e.path):
            return False
        if ("NEW" if new and not self.renamed(e.path) else "CHANGED") in self.events:
            return True
        if self.passed is not None:
            self.passed[e.path] = e.rec()
        return False

    def changed(self, entries: list[Entry], previous: dict) -> tuple[list[Entry], int]:
        """Entries to export (new or changed since their last export, or all with `full`);
        pops every seen name from `previous` (keyed by byte name), leaving those gone."""
        out = []
        for e in entries:
            before = previous.pop(os.fsencode(e.path.rpartition("/")[2]), None)
            if (self.full or before is None or tuple(before) != e.rec()) and self._wanted(e, before is None):
                out.append(e)
        return out, len(entries) - len(out)

    def deletions(self, parent: str, gone: dict) -> list:
        """Units removing the objects of entries gone from `parent`, as far as the policy
        says (DELETED; or CHANGED for the old name of a rename)."""
        named = []
        for name, rec in gone.items():
            path = join_path(parent, os.fsdecode(name))
            if self.passed is not None and path in self.passed and self.passed[path] is None:
                continue  # left in S3 by the policy before
            if key_error(self._key_of(path, rec[3])) is not None:
                self.delta.add("D", path)  # an intent whose key no store takes: no object to delete
                continue
            if ("CHANGED" if self.renamed(path) else "DELETED") in self.events:
                named.append((path, rec[3]))
            elif self.passed is not None:
                self.passed[path] = None
        units: list = [DeleteTreeUnit(path) for path, mode in named if _stat.S_ISDIR(mode)]
        files = [(path, mode) for path, mode in named if not _stat.S_ISDIR(mode)]
        units += [DeleteUnit(files[i:i + 1000]) for i in range(0, len(files), 1000)]
        return units

    # ---- hard links ------------------------------------------------------------------

    def copy(self, unit: CopyUnit) -> UnitOutcome:
        """Make a hard link's object by copying the object of a link already exported, if
        the inode is still the version that was exported; otherwise (or where the store
        cannot copy) upload it like any file."""
        e = unit.entry
        t0 = time.monotonic()
        key = object_key(self.repo, e)
        try:
            fresh = Entry.from_stat(e.path, os.lstat(self.abspath(e.path)))
        except FileNotFoundError:
            return UnitOutcome(unit.uid, rows=[self._row(e, RowStatus.SKIPPED, message="gone before it was exported")])
        if fresh.snapshot() != e.snapshot() or key_error(key) is not None or fresh.size > S3_MAX_COPY:
            return self._as_upload(unit, fresh)
        try:
            self.store.copy_object(self.repo.key(unit.source), key, fsx_headers(fresh), content_type(fresh.kind))
        except StoreError as err:  # its retries count on the upload that replaces it
            log.info("server-side copy to %s failed (%s); uploading it instead", key, err)
            return self._as_upload(unit, fresh)
        self.delta.put(e.path, fresh.rec())
        return UnitOutcome(unit.uid, rows=[ReportRow(
            e.path, e.kind.value, e.size, RowStatus.SUCCEEDED, checksum=unit.checksum,
            retries=self.store.take_retries(), rank=self.rank, seconds=round(time.monotonic() - t0, 6),
            message=f"hard link: server-side copy of {printable(unit.source)}")])

    def _as_upload(self, unit: CopyUnit, fresh: Entry) -> UnitOutcome:
        if self.is_large(fresh):
            return UnitOutcome(unit.uid, units=[LargeFileUnit(fresh, plain=True)])
        out = self.export_entry(fresh)
        out.uid = unit.uid
        return out

    # ---- deletes (--delete) ----------------------------------------------------------

    def _key_of(self, path: str, mode: int) -> str:
        return self.repo.key(path) + ("/" if _stat.S_ISDIR(mode) else "")

    def _delete(self, gone: list[tuple[str, int]]) -> tuple[list[ReportRow], bool]:
        keys = {self._key_of(p, m): (p, m) for p, m in gone}
        try:
            errors = self.store.delete_objects(list(keys))
        except StoreError as err:
            errors = {k: str(err)[:500] for k in keys}
            code = err.code.value
        else:
            code = ErrorCode.S3_ERROR.value
        rows = []
        for key, (path, mode) in keys.items():
            kind = EntryKind.of_mode(mode).value
            if key in errors:
                rows.append(ReportRow(path, kind, 0, RowStatus.FAILED, code, rank=self.rank,
                                      message=f"could not delete {key}: {errors[key]}"))
            else:
                rows.append(ReportRow(path, kind, 0, RowStatus.DELETED, rank=self.rank,
                                      message="gone from the file system; object deleted"))
        return rows, not errors

    def delete_gone(self, unit: DeleteUnit) -> UnitOutcome:
        rows, _ = self._delete(unit.gone)
        for r in rows:
            if r.status is RowStatus.DELETED:
                self.delta.add("D", r.path)
        return UnitOutcome(unit.uid, rows=rows)

    def delete_tree(self, unit: DeleteTreeUnit) -> UnitOutcome:
        """Delete the objects of a vanished (or renamed) directory and all its descendants,
        as the manifest knows them; the manifest forgets the subtree only if all went."""
        out = UnitOutcome(unit.uid)
        ok = True
        for batch in (self.manifest.subtree(unit.path) if self.manifest else ()):
            rows, batch_ok = self._delete(batch)
            out.rows += rows
            ok = ok and batch_ok
        if ok:
            self.delta.add("T", unit.path)
        else:
            for r in out.rows:
                if r.status is RowStatus.DELETED:
                    self.delta.add("D", r.path)
        return out

    # ---- single-request entries ------------------------------------------------------

    def _row(self, e: Entry, status: RowStatus, code: ErrorCode | str = "", **kw) -> ReportRow:
        return ReportRow(e.path, e.kind.value, e.size, status, getattr(code, "value", code),
                         rank=self.rank, **kw)

    def export_entry(self, e: Entry) -> UnitOutcome:
        """Export one directory, symlink or small file (a grown file becomes a LargeFileUnit)."""
        t0 = time.monotonic()
        out = UnitOutcome(0)
        if _TEST_DELAY:
            time.sleep(_TEST_DELAY)
        try:
            row_or_unit = self._export_entry(e, t0)
        except StoreError as err:
            row_or_unit = self._row(e, RowStatus.FAILED, err.code, retries=self.store.take_retries(),
                                    message=str(err)[:500])
        except Exception as err:  # a bug must fail one entry, not the job
            log.exception("internal error exporting %s", printable(e.path))
            row_or_unit = self._row(e, RowStatus.FAILED, ErrorCode.INTERNAL_ERROR,
                                    message=f"{type(err).__name__}: {err}"[:500])
        if isinstance(row_or_unit, ReportRow):
            row_or_unit.seconds = round(time.monotonic() - t0, 6)
            out.rows.append(row_or_unit)
            out.bytes_sent = row_or_unit.bytes
        else:
            out.units.append(row_or_unit)
        return out

    def _export_entry(self, e: Entry, t0: float):
        if e.kind is EntryKind.SPECIAL:
            log.warning("skipped special file (%s): %s", _stat.filemode(e.mode), printable(e.path))
            return self._row(e, RowStatus.SKIPPED, message="special file: not exported")
        key = object_key(self.repo, e)
        bad = key_error(key)
        if bad is not None:
            return self._row(e, RowStatus.FAILED, bad, message=_KEY_MESSAGES[bad])
        if e.kind is EntryKind.DIRECTORY:
            self.store.put_object(key, b"", fsx_headers(e), content_type(e.kind), zlib.crc32(b""))
            self.delta.put(e.path, e.rec())
            return self._row(e, RowStatus.SUCCEEDED, retries=self.store.take_retries(),
                             checksum=checksum.fmt(0))
        if e.kind is EntryKind.SYMLINK:
            try:
                target = self.root.readlink(e.path)
            except FileNotFoundError:
                return self._row(e, RowStatus.SKIPPED, message="gone before it was exported")
            except OSError as err:
                return self._unreadable(e, err)
            crc = zlib.crc32(target)
            self.store.put_object(key, target, fsx_headers(e), content_type(e.kind), crc)
            self.delta.put(e.path, e.rec())
            return self._row(e, RowStatus.SUCCEEDED, bytes=len(target), retries=self.store.take_retries(),
                             checksum=checksum.fmt(crc))
        budget = self.bodies
        if budget is None or e.size <= _UNBUDGETED:
            return self._export_small_file(e, key)
        held = budget.take(e.size)
        try:
            return self._export_small_file(e, key)
        finally:
            budget.give(held)

    def _too_large(self, e: Entry) -> ReportRow:
        return self._row(e, RowStatus.FAILED, ErrorCode.FILE_SIZE_TOO_LARGE,
                         message=f"{e.size} bytes is more than the store's maximum object size "
                                 f"({self.opts.max_object_size} bytes)")

    def _open(self, e: Entry) -> int | ReportRow:
        try:
            return self.root.open(e.path)
        except FileNotFoundError:
            return self._row(e, RowStatus.SKIPPED, message="gone before it was exported")
        except OSError as err:
            return self._unreadable(e, err)

    def _unreadable(self, e: Entry, err: OSError) -> ReportRow:
        if err.errno == errno.ELOOP:  # replaced by a symlink since the walk
            return self._row(e, RowStatus.FAILED, ErrorCode.RESOURCE_BUSY,
                             message="the file was replaced while being exported")
        if isinstance(err, OutsideRoot):
            log.warning("not read: %s leads outside %s (a directory on its path was replaced by a symlink)",
                        printable(e.path), self.fs_root)
        return self._row(e, RowStatus.FAILED, ErrorCode.LOCAL_READ_ERROR, message=f"cannot open: {err.strerror}")

    def _export_small_file(self, e: Entry, key: str):
        for attempt in range(self.opts.busy_retries + 1):
            fd = self._open(e)
            if isinstance(fd, ReportRow):
                return fd
            try:
                st = os.fstat(fd)
                fresh = Entry.from_stat(e.path, st)
                if fresh.kind is not EntryKind.FILE:
                    return self._row(e, RowStatus.FAILED, ErrorCode.RESOURCE_BUSY,
                                     message="the entry changed type while being exported")
                if st.st_size > self.opts.multipart_threshold:
                    return LargeFileUnit(fresh)
                if st.st_size > self.opts.max_object_size:
                    return self._too_large(fresh)
                try:
                    data = read_range(fd, 0, st.st_size)
                    extra = os.pread(fd, 1, st.st_size)
                except OSError as err:
                    return self._row(e, RowStatus.FAILED, ErrorCode.LOCAL_READ_ERROR,
                                     message=f"cannot read: {err.strerror}")
                if extra or len(data) != st.st_size or not same_file(os.fstat(fd), snapshot_of(st)):
                    time.sleep(0.02 * 2 ** attempt)
                    continue
            finally:
                os.close(fd)
            crc = zlib.crc32(data)
            self.store.put_object(key, data, fsx_headers(fresh), content_type(fresh.kind), crc)
            if _TEST_KILL_AT:
                _test_kill("after-put", self.rank)
            self.delta.put(e.path, fresh.rec())
            return ReportRow(e.path, fresh.kind.value, fresh.size, RowStatus.SUCCEEDED, bytes=len(data),
                             parts=1, checksum=checksum.fmt(crc), retries=self.store.take_retries() + attempt,
                             rank=self.rank)
        return self._row(e, RowStatus.FAILED, ErrorCode.RESOURCE_BUSY, retries=self.opts.busy_retries,
                         message=_BUSY)

    # ---- multipart ---------------------------------------------------------------------

    def start_large(self, unit: LargeFileUnit) -> UnitOutcome:
        e = unit.entry
        out = UnitOutcome(unit.uid)
        t0 = time.time()
        key = object_key(self.repo, e)
        bad = key_error(key)
        if bad is not None:
            out.rows.append(self._row(e, RowStatus.FAILED, bad, message=_KEY_MESSAGES[bad]))
            return out
        fd = self._open(e)
        if isinstance(fd, ReportRow):
            out.rows.append(fd)
            return out
        try:
            fresh = Entry.from_stat(e.path, os.fstat(fd))
        finally:
            os.close(fd)
        if fresh.size > self.opts.max_object_size:
            out.rows.append(self._too_large(fresh))
            return out
        if fresh.size <= self.opts.multipart_threshold:  # shrank since the walk
            return self.export_entry(fresh)
        layout = unit.layout if unit.layout is not None and fresh.snapshot() == e.snapshot() else \
            self.layouts.layout(self.abspath(e.path))
        parts = plan_parts(fresh.size, layout, self.opts.part_size)
        reused = self._reusable(unit.resume, fresh, parts, key)
        try:
            if reused is not None:
                upload_id = unit.resume.upload_id
            else:
                upload_id = self.store.create_multipart(key, fsx_headers(fresh), content_type(fresh.kind))
                self.delta.add("U", upload_id, e.path, key, *fresh.snapshot(), parts[0].length)
        except StoreError as err:
            out.rows.append(self._row(fresh, RowStatus.FAILED, err.code, retries=self.store.take_retries(),
                                      message=str(err)[:500]))
            return out
        out.started.append(UploadStarted(upload_id, key, fresh, parts, unit.attempt, t0, reused or [],
                                         self.store.take_retries()))
        return out

    def _reusable(self, resume, fresh: Entry, parts, key: str) -> list[PartDone] | None:
        """Parts of the upload a dead job left open that can stand: same file version, same
        part plan, and still held by the store with the same ETag. Otherwise that upload is
        aborted and None returned."""
        if resume is None:
            return None
        if (resume.snapshot == fresh.snapshot() and resume.key == key and resume.part_size == parts[0].length):
            try:
                held = self.store.list_parts(key, resume.upload_id)
            except StoreError:
                held = None  # gone (aborted or expired): start over
            if held is not None:
                return [PartDone(resume.upload_id, n, etag, b64, crc, length)
                        for n, (etag, b64, crc, length) in sorted(resume.parts.items())
                        if held.get(n) == etag and n <= len(parts) and parts[n - 1].length == length]
        self.abort_open(resume)
        return None

    def abort_open(self, resume) -> None:
        """Abort an upload left open by a dead job (it will not be completed)."""
        try:
            self.store.abort_multipart(resume.key, resume.upload_id)
            self.delta.add("E", resume.upload_id)
        except StoreError as err:
            log.warning("could not abort upload %s of %s: %s", resume.upload_id, resume.key, err)

    def part(self, unit: PartUnit) -> PartDone:
        p = unit.part
        done = PartDone(unit.upload_id, p.number, length=p.length)
        if _TEST_DELAY:
            time.sleep(_TEST_DELAY * 4)
        try:
            fd = self.root.open(unit.path)
        except OSError:
            done.changed = True
            return done
        try:
            if not same_file(os.fstat(fd), unit.snapshot):
                done.changed = True
                return done
            data = read_range(fd, p.offset, p.length)
            if len(data) != p.length or not same_file(os.fstat(fd), unit.snapshot):
                done.changed = True
                return done
        except OSError as err:
            done.error_code = ErrorCode.LOCAL_READ_ERROR.value
            done.error_message = f"cannot read: {err.strerror}"
            return done
        finally:
            os.close(fd)
        done.crc = zlib.crc32(data)
        try:
            done.etag, done.crc_b64 = self.store.upload_part(unit.key, unit.upload_id, p.number, data, done.crc)
            self.delta.add("p", unit.upload_id, p.number, done.etag, done.crc_b64, done.crc, p.length)
            if _TEST_KILL_AT:
                self.delta.flush()
                _test_kill("between-parts" if p.number == 2 else "after-last-part" if p.offset + p.length
                           == unit.snapshot[0] else "", self.rank)
        except StoreError as err:
            done.error_code = err.code.value
            done.error_message = str(err)[:500]
        except Exception as err:
            log.exception("internal error uploading part %d of %s", p.number, printable(unit.path))
            done.error_code = ErrorCode.INTERNAL_ERROR.value
            done.error_message = f"{type(err).__name__}: {err}"[:500]
        done.retries = self.store.take_retries()
        return done

    def finish(self, unit: FinishUnit) -> UnitOutcome:
        """Complete the upload if every part is in and the file is unchanged; else abort it,
        and export the file again if it only changed under us (bounded), else fail it."""
        out = UnitOutcome(unit.uid)
        e = unit.entry
        code, message, retry = unit.error_code, unit.error_message, unit.retry_file
        try:
            if not code and not retry:
                try:
                    unchanged = same_file(os.lstat(self.abspath(e.path)), unit.snapshot)
                except OSError:
                    unchanged = False
                if unchanged:
                    _test_kill("before-complete", self.rank)
                    self.store.complete_multipart(unit.key, unit.upload_id, unit.parts)
                    self.delta.add("E", unit.upload_id)
                    self.delta.put(e.path, e.rec())
                    size = sum(n for _, n in unit.crcs)
                    out.rows.append(ReportRow(
                        e.path, e.kind.value, e.size, RowStatus.SUCCEEDED, bytes=size, parts=len(unit.parts),
                        checksum=checksum.fmt(checksum.combine_all(unit.crcs)),
                        retries=unit.retries + self.store.take_retries(), rank=self.rank,
                        osts=",".join(map(str, unit.osts)), seconds=round(time.time() - unit.started, 6)))
                    return out
                retry = True
            self.store.abort_multipart(unit.key, unit.upload_id)
            self.delta.add("E", unit.upload_id)
        except StoreError as err:
            code, message = err.code.value, str(err)[:500]
            try:
                self.store.abort_multipart(unit.key, unit.upload_id)
                self.delta.add("E", unit.upload_id)
            except StoreError as abort_err:
                log.error("could not abort upload %s of %s: %s", unit.upload_id, unit.key, abort_err)
        if retry and not code:
            if unit.attempt < self.opts.busy_retries:
                time.sleep(0.05 * 2 ** unit.attempt)
                out.units.append(LargeFileUnit(e, unit.attempt + 1))
                return out
            code, message = ErrorCode.RESOURCE_BUSY.value, _BUSY
        out.rows.append(ReportRow(e.path, e.kind.value, e.size, RowStatus.FAILED, code, parts=len(unit.parts),
                                  retries=unit.retries + self.store.take_retries(), rank=self.rank,
                                  osts=",".join(map(str, unit.osts)),
                                  seconds=round(time.time() - unit.started, 6), message=message))
        return out


_BUSY = "the file was being modified by another client while it was exported; retry later"
_KEY_MESSAGES = {
    ErrorCode.PATH_SIZE_TOO_LONG: "the object key would be longer than 1024 bytes",
    ErrorCode.PATH_NOT_UTF8: "the path is not valid UTF-8, so it cannot be an S3 key",
}
