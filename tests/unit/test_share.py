"""share.Tally: a rank's counts, as the task record counts its rows."""
from __future__ import annotations

from pfsxport.model import ReportRow, RowStatus
from pfsxport.share import Tally


def test_tally_counts_rows_as_the_task_record_does():
    t = Tally()
    t.rows([ReportRow("a", "file", 1, RowStatus.SUCCEEDED, retries=2), ReportRow("b", "file", 1, RowStatus.FAILED),
            ReportRow("c", "special", 0, RowStatus.SKIPPED), ReportRow("d", "file", 0, RowStatus.DELETED)])
    assert (t.total, t.succeeded, t.failed, t.skipped, t.deleted, t.retries) == (2, 1, 1, 1, 1, 2)
    s = Tally.summed([t, t])
    assert s.total == 4 and s.as_tuple() == tuple(2 * x for x in t.as_tuple())


def test_tally_counts_what_went_by_kind_and_what_a_dry_run_would_do():
    t = Tally()
    t.rows([ReportRow("f", "file", 10, RowStatus.SUCCEEDED), ReportRow("d", "directory", 0, RowStatus.SUCCEEDED),
            ReportRow("l", "symlink", 3, RowStatus.WOULD_EXPORT), ReportRow("g", "file", 7, RowStatus.WOULD_EXPORT),
            ReportRow("x", "file", 5, RowStatus.FAILED), ReportRow("gone", "file", 2, RowStatus.WOULD_DELETE)])
    assert (t.files, t.file_bytes, t.directories, t.symlinks) == (2, 17, 1, 1)
    assert (t.total, t.succeeded, t.failed, t.deleted) == (5, 4, 1, 1)
