"""Entries that go in one request each: directories (their marker object), symlinks (their
target), small files (read whole from one unchanged version), and hard links made by
server-side copy of a link already exported.

Local: no MPI. Never raises for a per-entry problem: those become report rows.
"""
from __future__ import annotations

import errno
import logging
import os
import stat as _stat
import time
import zlib

from .. import checksum
from ..errors import ErrorCode, StoreError
from ..metadata import content_type, fsx_headers, key_error, object_key, printable
from ..model import CopyUnit, Entry, EntryKind, LargeFileUnit, ReportRow, RowStatus, UnitOutcome
from ..plan import S3_MAX_PUT as S3_MAX_COPY
from ..walk import OutsideRoot, read_range, same_file, snapshot_of
from .context import BUSY, KEY_MESSAGES, TEST_DELAY, TEST_KILL_AT, UNBUDGETED, Context, test_kill

log = logging.getLogger("pfsxport")


class Upload:
    def __init__(self, ctx: Context):
        self.ctx = ctx

    def export_entry(self, e: Entry) -> UnitOutcome:
        """Export one directory, symlink or small file (a grown file becomes a LargeFileUnit)."""
        t0 = time.monotonic()
        out = UnitOutcome(0)
        if TEST_DELAY:
            time.sleep(TEST_DELAY)
        try:
            row_or_unit = self._export_entry(e, t0)
        except StoreError as err:
            row_or_unit = self.ctx.row(e, RowStatus.FAILED, err.code, retries=self.ctx.store.take_retries(),
                                    message=str(err)[:500])
        except Exception as err:  # a bug must fail one entry, not the job
            log.exception("internal error exporting %s", printable(e.path))
            row_or_unit = self.ctx.row(e, RowStatus.FAILED, ErrorCode.INTERNAL_ERROR,
                                    message=f"{type(err).__name__}: {err}"[:500])
        if isinstance(row_or_unit, ReportRow):
            row_or_unit.seconds = round(time.monotonic() - t0, 6)
            out.rows.append(row_or_unit)
            out.bytes_sent = 0 if row_or_unit.status is RowStatus.WOULD_EXPORT else row_or_unit.bytes
        else:
            out.units.append(row_or_unit)
        return out

    def _export_entry(self, e: Entry, t0: float):
        if e.kind is EntryKind.SPECIAL:
            log.warning("skipped special file (%s): %s", _stat.filemode(e.mode), printable(e.path))
            return self.ctx.row(e, RowStatus.SKIPPED, message="special file: not exported")
        key = object_key(self.ctx.repo, e)
        bad = key_error(key)
        if bad is not None:
            return self.ctx.row(e, RowStatus.FAILED, bad, message=KEY_MESSAGES[bad])
        if self.ctx.dry_run:
            return self.would(e)
        if e.kind is EntryKind.DIRECTORY:
            self.ctx.store.put_object(key, b"", fsx_headers(e), content_type(e.kind), zlib.crc32(b""))
            self.ctx.delta.put(e.path, e.rec())
            return self.ctx.row(e, RowStatus.SUCCEEDED, retries=self.ctx.store.take_retries(),
                             checksum=checksum.fmt(0))
        if e.kind is EntryKind.SYMLINK:
            try:
                target = self.ctx.root.readlink(e.path)
            except FileNotFoundError:
                return self.ctx.row(e, RowStatus.SKIPPED, message="gone before it was exported")
            except OSError as err:
                return self._unreadable(e, err)
            crc = zlib.crc32(target)
            self.ctx.store.put_object(key, target, fsx_headers(e), content_type(e.kind), crc)
            self.ctx.delta.put(e.path, e.rec())
            return self.ctx.row(e, RowStatus.SUCCEEDED, bytes=len(target), retries=self.ctx.store.take_retries(),
                             checksum=checksum.fmt(crc))
        budget = self.ctx.bodies
        if budget is None or e.size <= UNBUDGETED:
            return self._export_small_file(e, key)
        held = budget.take(e.size)
        try:
            return self._export_small_file(e, key)
        finally:
            budget.give(held)

    def would(self, e: Entry, parts: int = 1, message: str = "") -> ReportRow:
        """A dry run's row: what its export would send (or why it would fail), nothing sent."""
        if e.kind is EntryKind.FILE and e.size > self.ctx.opts.max_object_size:
            return self.too_large(e)
        return self.ctx.row(e, RowStatus.WOULD_EXPORT, bytes=0 if e.kind is EntryKind.DIRECTORY else e.size,
                            parts=parts if e.kind is EntryKind.FILE else 0, message=message)

    def too_large(self, e: Entry) -> ReportRow:
        return self.ctx.row(e, RowStatus.FAILED, ErrorCode.FILE_SIZE_TOO_LARGE,
                         message=f"{e.size} bytes is more than the store's maximum object size "
                                 f"({self.ctx.opts.max_object_size} bytes)")

    def open(self, e: Entry) -> int | ReportRow:
        try:
            return self.ctx.root.open(e.path)
        except FileNotFoundError:
            return self.ctx.row(e, RowStatus.SKIPPED, message="gone before it was exported")
        except OSError as err:
            return self._unreadable(e, err)

    def _unreadable(self, e: Entry, err: OSError) -> ReportRow:
        if err.errno == errno.ELOOP:  # replaced by a symlink since the walk
            return self.ctx.row(e, RowStatus.FAILED, ErrorCode.RESOURCE_BUSY,
                             message="the file was replaced while being exported")
        if isinstance(err, OutsideRoot):
            log.warning("not read: %s leads outside %s (a directory on its path was replaced by a symlink)",
                        printable(e.path), self.ctx.fs_root)
        return self.ctx.row(e, RowStatus.FAILED, ErrorCode.LOCAL_READ_ERROR, message=f"cannot open: {err.strerror}")

    def _export_small_file(self, e: Entry, key: str):
        for attempt in range(self.ctx.opts.busy_retries + 1):
            fd = self.open(e)
            if isinstance(fd, ReportRow):
                return fd
            try:
                st = os.fstat(fd)
                fresh = Entry.from_stat(e.path, st)
                if fresh.kind is not EntryKind.FILE:
                    return self.ctx.row(e, RowStatus.FAILED, ErrorCode.RESOURCE_BUSY,
                                     message="the entry changed type while being exported")
                if st.st_size > self.ctx.opts.multipart_threshold:
                    return LargeFileUnit(fresh)
                if st.st_size > self.ctx.opts.max_object_size:
                    return self.too_large(fresh)
                try:
                    data = read_range(fd, 0, st.st_size)
                    extra = os.pread(fd, 1, st.st_size)
                except OSError as err:
                    return self.ctx.row(e, RowStatus.FAILED, ErrorCode.LOCAL_READ_ERROR,
                                     message=f"cannot read: {err.strerror}")
                if extra or len(data) != st.st_size or not same_file(os.fstat(fd), snapshot_of(st)):
                    time.sleep(0.02 * 2 ** attempt)
                    continue
            finally:
                os.close(fd)
            crc = zlib.crc32(data)
            self.ctx.store.put_object(key, data, fsx_headers(fresh), content_type(fresh.kind), crc)
            if TEST_KILL_AT:
                test_kill("after-put", self.ctx.rank)
            self.ctx.delta.put(e.path, fresh.rec())
            return ReportRow(e.path, fresh.kind.value, fresh.size, RowStatus.SUCCEEDED, bytes=len(data),
                             parts=1, checksum=checksum.fmt(crc), retries=self.ctx.store.take_retries() + attempt,
                             rank=self.ctx.rank)
        return self.ctx.row(e, RowStatus.FAILED, ErrorCode.RESOURCE_BUSY, retries=self.ctx.opts.busy_retries,
                         message=BUSY)

    # ---- hard links ------------------------------------------------------------------

    def copy(self, unit: CopyUnit) -> UnitOutcome:
        """Make a hard link's object by copying the object of a link already exported, if
        the inode is still the version that was exported; otherwise (or where the store
        cannot copy) upload it like any file."""
        e = unit.entry
        t0 = time.monotonic()
        key = object_key(self.ctx.repo, e)
        try:
            fresh = Entry.from_stat(e.path, os.lstat(self.ctx.abspath(e.path)))
        except FileNotFoundError:
            gone = self.ctx.row(e, RowStatus.SKIPPED, message="gone before it was exported")
            return UnitOutcome(unit.uid, rows=[gone])
        if fresh.snapshot() != e.snapshot() or key_error(key) is not None or fresh.size > S3_MAX_COPY:
            return self._as_upload(unit, fresh)
        if self.ctx.dry_run:
            return UnitOutcome(unit.uid, rows=[self.would(fresh, 0, f"hard link: would be a server-side copy of "
                                                                   f"{printable(unit.source)}")])
        try:
            self.ctx.store.copy_object(self.ctx.repo.key(unit.source), key, fsx_headers(fresh),
                                       content_type(fresh.kind))
        except StoreError as err:  # its retries count on the upload that replaces it
            log.info("server-side copy to %s failed (%s); uploading it instead", key, err)
            return self._as_upload(unit, fresh)
        self.ctx.delta.put(e.path, fresh.rec())
        return UnitOutcome(unit.uid, rows=[ReportRow(
            e.path, e.kind.value, e.size, RowStatus.SUCCEEDED, checksum=unit.checksum,
            retries=self.ctx.store.take_retries(), rank=self.ctx.rank, seconds=round(time.monotonic() - t0, 6),
            message=f"hard link: server-side copy of {printable(unit.source)}")])

    def _as_upload(self, unit: CopyUnit, fresh: Entry) -> UnitOutcome:
        if self.ctx.is_large(fresh):
            return UnitOutcome(unit.uid, units=[LargeFileUnit(fresh, plain=True)])
        out = self.export_entry(fresh)
        out.uid = unit.uid
        return out
