"""share: a rank's counts, its own queue and the halves it gives away, and the coordinator's
termination check (no round trip per unit, never fooled by a theft in flight)."""
from __future__ import annotations

from pfsxport.model import BatchUnit, DirUnit, ReportRow, RowStatus
from pfsxport.share import LocalQueue, Status, Tally, Termination


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


def test_a_thief_gets_the_oldest_scans_and_the_newest_batches():
    q = LocalQueue()
    for i in range(5):
        q.push(DirUnit(f"d{i}"))
    for i in range(3):
        q.push(BatchUnit([], uid=i))
    got = q.steal()
    assert [u.path for u in got if isinstance(u, DirUnit)] == ["d0", "d1", "d2"]
    assert [u.uid for u in got if isinstance(u, BatchUnit)] == [2, 1]
    assert len(q) == 3 and q.take().path == "d4"  # depth first at home


def test_a_lone_unit_can_be_stolen_and_an_empty_queue_gives_nothing():
    q = LocalQueue()
    assert q.steal() == []
    q.push(DirUnit("only"))
    assert [u.path for u in q.steal()] == ["only"] and len(q) == 0


def test_batches_go_first_once_there_are_enough_of_them_or_when_scans_are_full():
    q = LocalQueue(scarce=2)
    q.push(DirUnit("d"))
    q.push(BatchUnit([], uid=1))
    assert isinstance(q.take(), DirUnit)  # few batches: keep the walk going
    q.push(DirUnit("e"))
    q.push(BatchUnit([], uid=2))
    q.push(BatchUnit([], uid=3))
    assert isinstance(q.take(), BatchUnit)
    q.push(DirUnit("f"))
    assert [q.take(scan=False).uid, q.take(scan=False).uid, q.take(scan=False)] == [2, 3, None]
    assert q.take(batch=False).path == "f" and q.take(scan=True, batch=False).path == "e" and len(q) == 0
    q.push(DirUnit("g"))
    assert q.clear() == 1 and len(q) == 0


def test_termination_needs_two_rounds_with_every_rank_idle_and_nothing_in_flight():
    term = Termination()
    for r in range(3):
        term.report(r, Status(True))
    assert not term.over()  # a first sight is only a candidate
    for r in range(2):
        term.report(r, Status(True))
    assert not term.over()  # rank 2 has not reported again since
    term.report(2, Status(True))
    assert term.over() and term.over()  # and it stays over


def test_a_theft_in_flight_keeps_the_walk_going():
    term = Termination()
    term.report(0, Status(True, given=1, taken=0))  # rank 0 gave a unit away and went idle
    term.report(1, Status(True, given=0, taken=0))  # rank 1's report is older than the theft
    assert not term.over() and not term.over()
    term.report(1, Status(False, 0, 1))  # the unit arrived: busy
    assert not term.over()
    for _ in range(2):
        term.report(0, Status(True, 1, 0))
        term.report(1, Status(True, 0, 1))
        done = term.over()
    assert done


def test_a_busy_rank_keeps_the_walk_going_and_no_reports_mean_no_local_work():
    assert Termination().over()
    term = Termination()
    term.report(0, Status(True))
    term.report(1, Status(False, queued=3))
    assert not term.over() and not term.over() and term.queued == 3


def test_no_scan_runs_while_enough_batches_wait_even_when_the_batch_lanes_are_full():
    """A rank whose upload lanes are full must not keep scanning: what the scans find would
    queue up here until the whole tree's entries were in memory (2,000,000 empty files, two
    ranks: 518 MiB on one of them)."""
    q = LocalQueue(scarce=2)
    for i in range(3):
        q.push(DirUnit(f"d{i}"))
    q.push(BatchUnit([], uid=1))
    q.push(BatchUnit([], uid=2))
    assert q.take(batch=False) is None  # the lanes are full and enough batches wait: nothing
    assert q.take().uid == 1  # lanes free again: the batches go first
    assert isinstance(q.take(batch=False), DirUnit)  # one batch left: scarce, so the walk goes on
