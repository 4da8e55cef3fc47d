"""pfsxport.autoexport.BatchResult: what a batch did, for the metrics: objects and bytes, failures
by FSx error code, and each durable object's lag from the oldest pending change that made it due."""
from __future__ import annotations

from pfsxport.autoexport import BatchResult, Runner
from pfsxport.dra import Association
from pfsxport.model import ReportRow
from pfsxport.model import RowStatus as S


def row(path, status, kind="file", size=10, code=""):
    return ReportRow(path, kind, size, status, code)


def test_counts_bytes_and_failures_by_code():
    stamped = [(row("a", S.SUCCEEDED), 5.0), (row("d", S.SUCCEEDED, "directory", 4096), 5.0),
               (row("l", S.SUCCEEDED, "symlink", 3), 5.0), (row("g", S.DELETED, size=7), 5.0),
               (row("x" * 9, S.FAILED, code="PathSizeTooLong"), 5.0), (row("s", S.SKIPPED), 5.0),
               (row("y", S.FAILED, code="S3AccessDenied"), 5.0), (row("z", S.FAILED, code="S3AccessDenied"), 5.0)]
    r = BatchResult.of(stamped, {"": 1.0}, rescan=False)
    assert (r.exported, r.exported_bytes, r.deleted, r.deleted_bytes) == (3, 13, 1, 7)  # a directory object is empty
    assert r.failures == {"PathSizeTooLong": 1, "S3AccessDenied": 2}
    assert r.lags == [4.0] * 4  # exported and deleted objects, not failures or skips


def test_lag_from_the_directory_or_its_nearest_pending_ancestor():
    dirty = {"a": 10.0, "a/b/new": 12.0}
    stamped = [(row("a/f", S.SUCCEEDED), 20.0),  # its directory
               (row("a/b/new/deep/f", S.SUCCEEDED), 20.0),  # a new directory walked whole: nearest ancestor
               (row("a/b/c", S.SUCCEEDED), 21.0),
               (row("elsewhere/f", S.SUCCEEDED), 20.0)]  # no pending change above it
    assert BatchResult.of(stamped, dirty, rescan=False).lags == [10.0, 8.0, 11.0]
    # in a full rescan only an entry whose own directory had a change is measured
    assert BatchResult.of(stamped, dirty, rescan=True).lags == [10.0]


def test_the_backlog_keeps_the_oldest_change_per_directory():
    r = Runner(Association("dra-1", "fs-1", "/p", "s3://b/p/", ["NEW"]), "/mnt", rescan=False)
    assert r.touch("d", now=5.0) is True and r.since == 5.0
    assert r.touch("d", now=6.0) is False  # coalesced with the pending change
    assert r.touch("d", now=7.0, at=4.0) is False  # a changelog record older than what is pending
    assert r.dirty == {"d": 4.0} and r.since == 5.0  # the debounce counts from when changes arrived
