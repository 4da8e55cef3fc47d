"""One multipart upload as a chain of steps: start (create, or resume a dead job's upload with
the parts the store still holds), parts (each read from the same unchanged version of the
file), finish (complete when every part is in and the file is unchanged, else abort, and
export again if it only changed under us).

Local: no MPI. The scheduler sees to it that every upload started ends in one finish.
"""
from __future__ import annotations

import logging
import os
import time
import zlib

from .. import checksum
from ..errors import ErrorCode, StoreError
from ..metadata import content_type, fsx_headers, key_error, object_key, printable
from ..model import (
    Entry,
    FinishUnit,
    LargeFileUnit,
    PartDone,
    PartUnit,
    ReportRow,
    RowStatus,
    UnitOutcome,
    UploadStarted,
)
from ..plan import plan_parts
from ..walk import read_range, same_file
from .context import BUSY, KEY_MESSAGES, TEST_DELAY, TEST_KILL_AT, Context, test_kill
from .upload import Upload

log = logging.getLogger("pfsxport")


class Multipart:
    def __init__(self, ctx: Context, upload: Upload):
        self.ctx = ctx
        self.upload = upload

    def start_large(self, unit: LargeFileUnit) -> UnitOutcome:
        e = unit.entry
        out = UnitOutcome(unit.uid)
        t0 = time.time()
        key = object_key(self.ctx.repo, e)
        bad = key_error(key)
        if bad is not None:
            out.rows.append(self.ctx.row(e, RowStatus.FAILED, bad, message=KEY_MESSAGES[bad]))
            return out
        fd = self.upload.open(e)
        if isinstance(fd, ReportRow):
            out.rows.append(fd)
            return out
        try:
            fresh = Entry.from_stat(e.path, os.fstat(fd))
        finally:
            os.close(fd)
        if fresh.size > self.ctx.opts.max_object_size:
            out.rows.append(self.upload.too_large(fresh))
            return out
        if fresh.size <= self.ctx.opts.multipart_threshold:  # shrank since the walk
            return self.upload.export_entry(fresh)
        layout = unit.layout if unit.layout is not None and fresh.snapshot() == e.snapshot() else \
            self.ctx.layouts.layout(self.ctx.abspath(e.path))
        parts = plan_parts(fresh.size, layout, self.ctx.opts.part_size)
        if self.ctx.dry_run:
            out.rows.append(self.upload.would(fresh, len(parts), f"{len(parts)} parts of {parts[0].length} bytes"))
            return out
        reused = self._reusable(unit.resume, fresh, parts, key)
        try:
            if reused is not None:
                upload_id = unit.resume.upload_id
            else:
                upload_id = self.ctx.store.create_multipart(key, fsx_headers(fresh), content_type(fresh.kind))
                self.ctx.delta.add("U", upload_id, e.path, key, *fresh.snapshot(), parts[0].length)
        except StoreError as err:
            out.rows.append(self.ctx.row(fresh, RowStatus.FAILED, err.code, retries=self.ctx.store.take_retries(),
                                      message=str(err)[:500]))
            return out
        out.started.append(UploadStarted(upload_id, key, fresh, parts, unit.attempt, t0, reused or [],
                                         self.ctx.store.take_retries()))
        return out

    def _reusable(self, resume, fresh: Entry, parts, key: str) -> list[PartDone] | None:
        """Parts of the upload a dead job left open that can stand: same file version, same
        part plan, and still held by the store with the same ETag. Otherwise that upload is
        aborted and None returned."""
        if resume is None:
            return None
        if (resume.snapshot == fresh.snapshot() and resume.key == key and resume.part_size == parts[0].length):
            try:
                held = self.ctx.store.list_parts(key, resume.upload_id)
            except StoreError:
                held = None  # gone (aborted or expired): start over
            if held is not None:
                return [PartDone(resume.upload_id, n, etag, b64, crc, length)
                        for n, (etag, b64, crc, length) in sorted(resume.parts.items())
                        if held.get(n) == etag and n <= len(parts) and parts[n - 1].length == length]
        self.abort_open(resume)
        return None

    def abort_open(self, resume) -> None:
        """Abort an upload that will not be completed: one a dead job left open, or one this
        rank started when the task was aborted (anything with `key` and `upload_id`)."""
        try:
            self.ctx.store.abort_multipart(resume.key, resume.upload_id)
            self.ctx.delta.add("E", resume.upload_id)
        except StoreError as err:
            log.warning("could not abort upload %s of %s: %s", resume.upload_id, resume.key, err)

    def part(self, unit: PartUnit) -> PartDone:
        p = unit.part
        done = PartDone(unit.upload_id, p.number, length=p.length)
        if TEST_DELAY:
            time.sleep(TEST_DELAY * 4)
        try:
            fd = self.ctx.root.open(unit.path)
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
            done.etag, done.crc_b64 = self.ctx.store.upload_part(unit.key, unit.upload_id, p.number, data, done.crc)
            self.ctx.delta.add("p", unit.upload_id, p.number, done.etag, done.crc_b64, done.crc, p.length)
            if TEST_KILL_AT:
                self.ctx.delta.flush()
                test_kill("between-parts" if p.number == 2 else "after-last-part" if p.offset + p.length
                           == unit.snapshot[0] else "", self.ctx.rank)
        except StoreError as err:
            done.error_code = err.code.value
            done.error_message = str(err)[:500]
        except Exception as err:
            log.exception("internal error uploading part %d of %s", p.number, printable(unit.path))
            done.error_code = ErrorCode.INTERNAL_ERROR.value
            done.error_message = f"{type(err).__name__}: {err}"[:500]
        done.retries = self.ctx.store.take_retries()
        return done

    def finish(self, unit: FinishUnit) -> UnitOutcome:
        """Complete the upload if every part is in and the file is unchanged; else abort it,
        and export the file again if it only changed under us (bounded), else fail it."""
        out = UnitOutcome(unit.uid)
        if unit.canceled:  # the task was aborted while its parts were in flight: no row
            self.abort_open(unit)
            return out
        e = unit.entry
        code, message, retry = unit.error_code, unit.error_message, unit.retry_file
        try:
            if not code and not retry:
                try:
                    unchanged = same_file(os.lstat(self.ctx.abspath(e.path)), unit.snapshot)
                except OSError:
                    unchanged = False
                if unchanged:
                    test_kill("before-complete", self.ctx.rank)
                    self.ctx.store.complete_multipart(unit.key, unit.upload_id, unit.parts)
                    self.ctx.delta.add("E", unit.upload_id)
                    self.ctx.delta.put(e.path, e.rec())
                    size = sum(n for _, n in unit.crcs)
                    out.rows.append(ReportRow(
                        e.path, e.kind.value, e.size, RowStatus.SUCCEEDED, bytes=size, parts=len(unit.parts),
                        checksum=checksum.fmt(checksum.combine_all(unit.crcs)),
                        retries=unit.retries + self.ctx.store.take_retries(), rank=self.ctx.rank,
                        osts=",".join(map(str, unit.osts)), seconds=round(time.time() - unit.started, 6)))
                    return out
                retry = True
            self.ctx.store.abort_multipart(unit.key, unit.upload_id)
            self.ctx.delta.add("E", unit.upload_id)
        except StoreError as err:
            code, message = err.code.value, str(err)[:500]
            try:
                self.ctx.store.abort_multipart(unit.key, unit.upload_id)
                self.ctx.delta.add("E", unit.upload_id)
            except StoreError as abort_err:
                log.error("could not abort upload %s of %s: %s", unit.upload_id, unit.key, abort_err)
        if retry and not code:
            if unit.attempt < self.ctx.opts.busy_retries:
                time.sleep(0.05 * 2 ** unit.attempt)
                out.units.append(LargeFileUnit(e, unit.attempt + 1))
                return out
            code, message = ErrorCode.RESOURCE_BUSY.value, BUSY
        out.rows.append(ReportRow(e.path, e.kind.value, e.size, RowStatus.FAILED, code, parts=len(unit.parts),
                                  retries=unit.retries + self.ctx.store.take_retries(), rank=self.ctx.rank,
                                  osts=",".join(map(str, unit.osts)),
                                  seconds=round(time.time() - unit.started, 6), message=message))
        return out
