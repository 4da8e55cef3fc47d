"""pfsxport.schedule.Scheduler driven by hand: no MPI, no S3, fake units and outcomes.

Requirements: STOP only when nothing is left anywhere; every multipart upload ends in exactly one
FinishUnit; cancel (T-7) drops queued work but lets open uploads finish; an abort (a second signal,
the end of the grace) ends every open upload at once; counts add up (T-5)."""
from __future__ import annotations

import pickle

import pytest

from pfsxport.halt import Halt
from pfsxport.model import (
    BatchUnit,
    DirUnit,
    Discovered,
    Entry,
    EntryKind,
    FinishUnit,
    LargeFileUnit,
    Part,
    PartDone,
    PartUnit,
    ReportRow,
    RowStatus,
    UnitOutcome,
    UploadStarted,
)
from pfsxport.schedule import STOP, WAIT, Request, Scheduler
from pfsxport.share import Status, Tally

MiB = 1 << 20


def fentry(path="big", size=48 * MiB) -> Entry:
    return Entry(path, EntryKind.FILE, size, 0o100644, 1, 1, 10, 20, 30, ino=7)


def rows(*statuses: RowStatus, path="f") -> list[ReportRow]:
    return [ReportRow(f"{path}{i}", "file", 1, s) for i, s in enumerate(statuses)]


def started(upload_id="up1", entry=None, nparts=3, osts=None) -> UploadStarted:
    entry = entry or fentry()
    psize = 16 * MiB
    parts = [Part(n, (n - 1) * psize, psize, (osts[n - 1],) if osts else ()) for n in range(1, nparts + 1)]
    return UploadStarted(upload_id, "prefix/" + entry.path, entry, parts, attempt=0, started=123.0)


def done(unit: PartUnit, **kw) -> UnitOutcome:
    p = unit.part
    pd = PartDone(unit.upload_id, p.number, etag=f"etag{p.number}", crc_b64=f"b64-{p.number}", crc=p.number,
                  length=p.length, **kw)
    return UnitOutcome(unit.uid, parts=[pd], bytes_sent=0 if (kw.get("changed") or kw.get("error_code")) else p.length)


class Ranks(Scheduler):
    """The scheduler as the ranks' workers drive it: each outcome's rows go to a rank's
    report shard (`sink`) and counts, and only the status of the rows (for hard links) and
    the counts travel on."""

    def __init__(self, roots, sink, nranks, **kw):
        super().__init__(roots, nranks, **kw)
        self.sink, self.counted = sink, Tally()

    def exchange(self, rank, outcomes, want_light, want_heavy):
        for o in outcomes:
            if o.rows:
                o.linked = [(r.path, r.status, r.checksum) for r in o.rows]
                self.counted.rows(o.rows)
                try:
                    self.sink(o.rows)
                except Exception as e:  # as the worker sends a fault of its shard
                    o.fault = e
                o.rows = []
            if o.discovered:
                self.counted.discovered += o.discovered.entries
            self.counted.bytes_sent += o.bytes_sent
        self.tallies[0] = self.counted
        return super().exchange(rank, outcomes, want_light, want_heavy)


def make(roots, nranks=1, **kw):
    got: list[ReportRow] = []
    return Ranks(list(roots), got.extend, nranks, **kw), got


def open_upload(nparts=3, **kw):
    """A scheduler with one LargeFileUnit handed to rank 0, and that upload started: returns the
    scheduler and the PartUnits it then hands out."""
    s, sink = make([LargeFileUnit(fentry())])
    [lfu] = s.exchange(0, [], 0, 1)
    assert isinstance(lfu, LargeFileUnit)
    given = s.exchange(0, [UnitOutcome(lfu.uid, started=[started(nparts=nparts, **kw)])], 0, 10)
    return s, given


# ---- STOP and WAIT -----------------------------------------------------------------------------

def test_empty_scheduler_stops():
    s, _ = make([])
    assert s.exchange(0, [], 1, 1) is STOP


def test_stop_only_after_all_outstanding_outcomes():
    s, sink = make([DirUnit("")])
    [d] = s.exchange(0, [], 1, 0)
    assert isinstance(d, DirUnit) and d.path == ""
    # rank 0 holds the only unit: others must wait, not stop
    assert s.exchange(1, [], 1, 1) is WAIT
    assert s.exchange(1, [], 4, 4) is WAIT
    batch = BatchUnit([fentry("a", 1), fentry("b", 2)])
    sub = DirUnit("sub")
    out = s.exchange(0, [UnitOutcome(d.uid, rows=rows(RowStatus.SUCCEEDED), units=[batch, sub],
                                     discovered=Discovered(3, 3))], 1, 0)
    assert len(out) == 1
    # hand everything out, then return the outcomes one by one
    held = {0: out}
    while True:
        more = s.exchange(1, [], 1, 0)
        if not isinstance(more, list):
            break
        held.setdefault(1, []).extend(more)
    assert more is WAIT
    units = [u for us in held.values() for u in us]
    assert {type(u) for u in units} == {BatchUnit, DirUnit}
    for u in units[:-1]:
        assert s.exchange(0, [UnitOutcome(u.uid)], 0, 0) is WAIT
        assert not s.finished
    assert s.exchange(0, [UnitOutcome(units[-1].uid)], 1, 1) is STOP
    assert s.finished
    assert s.progress().discovered == 3


def test_signals_keep_identity_across_pickling():
    assert pickle.loads(pickle.dumps(STOP)) is STOP
    assert pickle.loads(pickle.dumps(WAIT)) is WAIT
    assert STOP is not WAIT


@pytest.mark.parametrize("want_light, want_heavy, expected", [
    (1, 0, 1), (3, 0, 3), (10, 0, 5), (0, 0, None), (2, 2, 2),
])
def test_exchange_gives_at_most_what_is_wanted(want_light, want_heavy, expected):
    s, _ = make([BatchUnit([fentry(str(i), 1)]) for i in range(5)])
    got = s.exchange(0, [], want_light, want_heavy)
    if expected is None:
        assert got is WAIT  # nothing asked for, yet work remains: not STOP
    else:
        assert len(got) == expected and all(isinstance(u, BatchUnit) for u in got)
        assert len({u.uid for u in got}) == expected


def test_heavy_slots_do_not_take_light_units():
    s, _ = make([BatchUnit([fentry("a", 1)]), LargeFileUnit(fentry())])
    got = s.exchange(0, [], 0, 5)
    assert [type(u) for u in got] == [LargeFileUnit]
    got = s.exchange(1, [], 5, 0)
    assert [type(u) for u in got] == [BatchUnit]


# ---- multipart uploads -------------------------------------------------------------------------

def test_upload_three_parts_one_finish():
    s, parts = open_upload(3, osts=[4, 5, 4])
    assert [type(u) for u in parts] == [PartUnit] * 3
    assert [u.part.number for u in parts] == [1, 2, 3]
    assert all(u.upload_id == "up1" and u.key == "prefix/big" and u.path == "big" for u in parts)
    assert all(u.snapshot == fentry().snapshot() for u in parts)
    # parts finish out of order; no FinishUnit until the last one is in
    assert s.exchange(1, [done(parts[2])], 5, 0) is WAIT
    assert s.exchange(1, [done(parts[0])], 5, 0) is WAIT
    [fin] = s.exchange(1, [done(parts[1])], 5, 0)
    assert isinstance(fin, FinishUnit)
    assert fin.upload_id == "up1" and fin.key == "prefix/big" and fin.entry == fentry()
    assert fin.parts == [(1, "etag1", "b64-1"), (2, "etag2", "b64-2"), (3, "etag3", "b64-3")]
    assert fin.crcs == [(1, 16 * MiB), (2, 16 * MiB), (3, 16 * MiB)]
    assert fin.osts == (4, 5)
    assert fin.error_code == "" and fin.retry_file is False
    assert fin.started == 123.0
    # exactly one FinishUnit
    assert s.exchange(0, [], 5, 5) is WAIT
    assert s.exchange(0, [UnitOutcome(fin.uid, rows=rows(RowStatus.SUCCEEDED))], 5, 5) is STOP
    p = s.progress()
    assert p.open_uploads == 0 and p.bytes_sent == 48 * MiB
    assert (p.counts.total, p.counts.succeeded, p.counts.failed) == (1, 1, 0)


def _drain_finish(s, rank=0):
    """Ask for work until the FinishUnit appears; return (finish units, other units)."""
    finishes, others = [], []
    for _ in range(5):
        got = s.exchange(rank, [], 4, 4)
        if not isinstance(got, list):
            continue
        for u in got:
            (finishes if isinstance(u, FinishUnit) else others).append(u)
        if finishes:
            break
    return finishes, others


def test_changed_part_retries_file_and_drops_queued_parts():
    s, sink = make([LargeFileUnit(fentry())])
    [lfu] = s.exchange(0, [], 0, 1)
    # only one part handed out
    [p1] = s.exchange(0, [UnitOutcome(lfu.uid, started=[started(nparts=3)])], 0, 1)
    assert p1.part.number == 1 and len(s.parts) == 2
    s.exchange(0, [done(p1, changed=True)], 0, 0)
    finishes, others = _drain_finish(s)
    assert others == [], "the remaining parts of a changed file are never handed out"
    [fin] = finishes
    assert fin.retry_file is True
    assert fin.error_code == ""
    assert fin.parts == []  # nothing to complete: the upload is aborted
    assert not s.parts
    assert s.exchange(1, [], 4, 4) is WAIT
    assert s.exchange(0, [UnitOutcome(fin.uid)], 4, 4) is STOP


def test_changed_part_while_other_parts_in_flight():
    s, parts = open_upload(3)
    s.exchange(1, [done(parts[0], changed=True)], 0, 0)
    assert s.exchange(1, [], 4, 4) is WAIT  # parts 2 and 3 still running: no finish yet
    [fin] = s.exchange(1, [done(parts[1]), done(parts[2])], 4, 4)
    assert isinstance(fin, FinishUnit) and fin.retry_file is True and fin.error_code == ""


def test_error_part_aborts_with_error_code():
    s, sink = make([LargeFileUnit(fentry())])
    [lfu] = s.exchange(0, [], 0, 1)
    [p1, p2] = s.exchange(0, [UnitOutcome(lfu.uid, started=[started(nparts=4)])], 0, 2)
    s.exchange(0, [done(p1), done(p2, error_code="S3AccessDenied", error_message="403 Forbidden")], 0, 0)
    finishes, others = _drain_finish(s)
    assert others == [], "parts 3 and 4 are dropped once the upload is broken"
    [fin] = finishes
    assert fin.error_code == "S3AccessDenied"
    assert fin.error_message == "403 Forbidden"
    assert fin.retry_file is False
    assert (2, "etag2", "b64-2") not in fin.parts


def test_first_error_wins():
    s, parts = open_upload(3)
    [fin] = s.exchange(0, [done(parts[0], error_code="S3Error", error_message="first"),
                           done(parts[1], error_code="S3AccessDenied", error_message="second"),
                           done(parts[2])], 4, 0)
    assert (fin.error_code, fin.error_message) == ("S3Error", "first")


def test_part_done_for_unknown_upload_is_ignored():
    s, parts = open_upload(1)
    stray = UnitOutcome(999, parts=[PartDone("nope", 1)])
    assert s.exchange(0, [stray], 4, 0) is WAIT
    [fin] = s.exchange(0, [done(parts[0])], 4, 0)
    assert isinstance(fin, FinishUnit)


def test_upload_without_parts_is_finished_at_once():
    s, sink = make([LargeFileUnit(fentry())])
    [lfu] = s.exchange(0, [], 0, 1)
    [fin] = s.exchange(0, [UnitOutcome(lfu.uid, started=[started(nparts=0)])], 1, 1)
    assert isinstance(fin, FinishUnit) and fin.parts == []


def test_max_open_uploads_limits_large_files():
    s, _ = make([LargeFileUnit(fentry("a")), LargeFileUnit(fentry("b"))], max_open_uploads=1)
    [a] = s.exchange(0, [], 0, 1)
    got = s.exchange(0, [UnitOutcome(a.uid, started=[started("upA", fentry("a"), nparts=1)])], 0, 5)
    assert [type(u) for u in got] == [PartUnit], "b waits while upload A is open"
    [fin] = s.exchange(0, [done(got[0])], 1, 0)
    got = s.exchange(0, [UnitOutcome(fin.uid)], 0, 5)
    assert [type(u) for u in got] == [LargeFileUnit] and got[0].entry.path == "b"


def test_max_open_uploads_holds_within_one_request():
    s, _ = make([LargeFileUnit(fentry(f"f{i}")) for i in range(10)], max_open_uploads=3)
    got = s.exchange(0, [], 0, 10)
    assert [u.entry.path for u in got] == ["f0", "f1", "f2"], "an upload is open once its file is handed out"
    assert s.exchange(1, [], 0, 10) is WAIT
    # a start that opened no upload (e.g. the file went small) frees its slot
    [nxt] = s.exchange(0, [UnitOutcome(got[0].uid)], 0, 10)
    assert nxt.entry.path == "f3"


def two_single_stripe_files(cap: int, osts_a=0, osts_b=1, nparts=4):
    """Files a (every part on OST osts_a) and b (on osts_b), both uploads started."""
    s, _ = make([LargeFileUnit(fentry("a")), LargeFileUnit(fentry("b"))], reads_per_ost=cap)
    a, b = s.exchange(0, [], 0, 2)
    s.exchange(0, [UnitOutcome(a.uid, started=[started("upA", fentry("a"), nparts, [osts_a] * nparts)]),
                   UnitOutcome(b.uid, started=[started("upB", fentry("b"), nparts, [osts_b] * nparts)])], 0, 0)
    return s


def test_parts_spread_over_osts_and_capped_per_ost():
    s = two_single_stripe_files(cap=2)
    got = s.exchange(0, [], 0, 10)
    assert [(u.upload_id, u.part.number) for u in got] == [("upA", 1), ("upB", 1), ("upA", 2), ("upB", 2)], \
        "the least busy OST first, and at most 2 reads in flight on each"
    assert s.exchange(1, [], 0, 10) is WAIT, "parts are queued but both OSTs are at their cap"
    [nxt] = s.exchange(0, [done(got[1])], 0, 10)
    assert (nxt.upload_id, nxt.part.number) == ("upB", 3), "a read coming back frees its OST only"


def test_parts_on_one_ost_wait_for_the_cap_and_all_finish():
    s = two_single_stripe_files(cap=1, osts_a=5, osts_b=5)
    order = []
    given = s.exchange(0, [], 0, 10)
    while given is not STOP:
        assert given is not WAIT and sum(isinstance(u, PartUnit) for u in given) <= 1, "one read at a time on OST 5"
        order += [type(u).__name__ for u in given]
        given = s.exchange(0, [done(u) if isinstance(u, PartUnit) else UnitOutcome(u.uid) for u in given], 1, 10)
    assert order.count("PartUnit") == 8 and order.count("FinishUnit") == 2


def test_parts_without_a_layout_are_not_capped():
    s, _ = make([LargeFileUnit(fentry())], reads_per_ost=1)
    [lfu] = s.exchange(0, [], 0, 1)
    got = s.exchange(0, [UnitOutcome(lfu.uid, started=[started(nparts=5)])], 0, 10)
    assert [u.part.number for u in got] == [1, 2, 3, 4, 5]


def test_a_part_reading_several_osts_counts_on_each():
    s, _ = make([LargeFileUnit(fentry("a")), LargeFileUnit(fentry("b"))], reads_per_ost=1)
    a, b = s.exchange(0, [], 0, 2)
    wide = UploadStarted("upA", "prefix/a", fentry("a"),
                         [Part(1, 0, 16 * MiB, (1, 2)), Part(2, 16 * MiB, 16 * MiB, (1, 2))],
                         attempt=0, started=0.0)
    s.exchange(0, [UnitOutcome(a.uid, started=[wide]),
                   UnitOutcome(b.uid, started=[started("upB", fentry("b"), 2, [2, 2])])], 0, 0)
    got = s.exchange(0, [], 0, 10)
    assert [(u.upload_id, u.part.number) for u in got] == [("upA", 1)], "OST 2 is busy: b's part 1 waits too"
    got = s.exchange(0, [done(got[0])], 0, 10)
    assert [(u.upload_id, u.part.number) for u in got] == [("upA", 2)]


def test_finish_units_go_before_other_light_work():
    s, _ = make([LargeFileUnit(fentry())] + [BatchUnit([fentry(str(i), 1)]) for i in range(3)])
    [lfu] = s.exchange(0, [], 0, 1)
    [part] = s.exchange(0, [UnitOutcome(lfu.uid, started=[started(nparts=1)])], 0, 1)
    got = s.exchange(0, [done(part)], 1, 0)
    assert [type(u) for u in got] == [FinishUnit]


# ---- cancel (T-7) -------------------------------------------------------------------------------

def test_cancel_drops_queued_work_keeps_open_uploads():
    s, sink = make([LargeFileUnit(fentry("big")), LargeFileUnit(fentry("big2")), DirUnit("d1"), DirUnit("d2"),
                    BatchUnit([fentry("x", 1)])])
    [lfu] = s.exchange(0, [], 0, 1)
    assert lfu.entry.path == "big"
    [p1] = s.exchange(0, [UnitOutcome(lfu.uid, started=[started(nparts=3)])], 0, 1)
    s.cancel()
    assert s.progress().canceled
    assert not s.large and not s.batches and not s.dirs
    assert len(s.parts) == 2, "parts of an open upload stay queued"
    # new light work arriving after the cancel is not queued; parts and finishes are
    late = UnitOutcome(p1.uid, parts=done(p1).parts, units=[DirUnit("late"), BatchUnit([fentry("y", 1)]),
                                                         LargeFileUnit(fentry("late"))])
    got = s.exchange(0, [late], 4, 4)
    assert [type(u) for u in got] == [PartUnit, PartUnit]
    assert s.exchange(1, [], 4, 4) is WAIT
    [fin] = s.exchange(0, [done(u) for u in got], 4, 4)
    assert isinstance(fin, FinishUnit)
    assert fin.parts == [(1, "etag1", "b64-1"), (2, "etag2", "b64-2"), (3, "etag3", "b64-3")]
    assert fin.error_code == ""  # in-flight files finish normally
    assert s.exchange(0, [UnitOutcome(fin.uid, rows=rows(RowStatus.SUCCEEDED))], 4, 4) is STOP


def test_cancel_with_nothing_in_flight_stops():
    s, _ = make([DirUnit(""), BatchUnit([fentry("a", 1)])])
    s.cancel()
    assert s.exchange(0, [], 4, 4) is STOP


def test_cancel_lets_in_flight_large_file_start_and_finish():
    s, _ = make([LargeFileUnit(fentry())])
    [lfu] = s.exchange(0, [], 0, 1)
    s.cancel()
    parts = s.exchange(0, [UnitOutcome(lfu.uid, started=[started(nparts=2)])], 0, 4)
    assert [type(u) for u in parts] == [PartUnit, PartUnit]
    [fin] = s.exchange(0, [done(p) for p in parts], 4, 0)
    assert isinstance(fin, FinishUnit)


def ask(s: Scheduler, rank, outcomes, wl, wh, halt=Halt.NONE, status=None):
    """A rank's request as the worker sends it; (units, halt) of the reply."""
    reply = s.serve(rank, Request(outcomes, wl, wh, halt, status=status))
    return reply.units, reply.halt


# ---- the ranks' own work: the walk is over when they say so, twice -----------------------------

def test_stop_waits_until_every_rank_reported_idle_twice_with_no_theft_in_flight():
    s, _ = make([DirUnit("")])
    [d] = s.exchange(0, [], 1, 0)
    busy, idle = Status(False, queued=5), Status(True)
    assert ask(s, 0, [UnitOutcome(d.uid)], 1, 1, status=busy)[0] is WAIT  # its finds stay with it
    assert ask(s, 1, [], 1, 1, status=idle)[0] is WAIT
    assert ask(s, 0, [], 1, 1, status=Status(True, given=2))[0] is WAIT  # gave 2 away, then went idle
    assert ask(s, 1, [], 1, 1, status=idle)[0] is WAIT  # an old report: the theft is not in it
    assert ask(s, 1, [], 1, 1, status=Status(True, taken=2))[0] is WAIT  # first sight: a candidate
    assert ask(s, 0, [], 1, 1, status=Status(True, given=2))[0] is WAIT  # rank 1 must say it again
    assert ask(s, 1, [], 1, 1, status=Status(True, taken=2))[0] is STOP
    assert ask(s, 0, [], 1, 1, status=Status(True, given=2))[0] is STOP


def test_the_reply_says_what_is_queued_so_busy_ranks_ask_only_then():
    s, _ = make([DirUnit("a"), DirUnit("b"), LargeFileUnit(fentry())])
    reply = s.serve(1, Request([], 1, 0, status=Status(True)))
    assert len(reply.units) == 1 and (reply.light, reply.heavy) == (1, 1)


# ---- abort: a second signal, the end of the grace ----------------------------------------------

def test_abort_ends_open_uploads_at_once_and_hands_out_nothing_else():
    s, sink = make([LargeFileUnit(fentry("big")), LargeFileUnit(fentry("big2")), DirUnit("d"),
                    BatchUnit([fentry("x", 1)])])
    [lfu] = s.exchange(0, [], 0, 1)
    [p1] = s.exchange(0, [UnitOutcome(lfu.uid, started=[started("up1", nparts=3)])], 0, 1)
    s.abort()
    assert s.canceled and s.aborted and s.level is Halt.ABORT and s.aborted_uploads == 1
    # the part in flight is not waited for: the upload's abort goes out first, and only that
    reply, halt = ask(s, 1, [], 8, 8)
    assert halt is Halt.ABORT
    [fin] = reply
    assert isinstance(fin, FinishUnit) and fin.canceled and fin.upload_id == "up1" and fin.key == "prefix/big"
    assert ask(s, 1, [], 8, 8) == (STOP, Halt.ABORT)
    # the late part and the abort's outcome change nothing; a rank asking now is told STOP
    assert s.exchange(0, [done(p1), UnitOutcome(fin.uid)], 8, 8) is STOP
    assert sink == [] and s.progress().counts.total == 0


def test_abort_lets_queued_finishes_go_out_as_they_are():
    s, _ = open_upload(nparts=1)  # its one part is handed out
    [part] = [u for u in _ if isinstance(u, PartUnit)]
    s.exchange(0, [done(part)], 0, 0)  # every part in: its finish (a complete) is queued
    s.abort()
    [fin] = s.exchange(0, [], 8, 0)
    assert isinstance(fin, FinishUnit) and not fin.canceled and fin.parts  # completed, not thrown away
    assert s.exchange(0, [], 8, 0) is STOP


def test_an_upload_reported_after_the_abort_is_left_to_its_rank():
    """The rank that started it hears ABORT in the same reply and aborts it itself."""
    s, _ = make([LargeFileUnit(fentry())])
    [lfu] = s.exchange(0, [], 0, 1)
    s.abort()
    reply, halt = ask(s, 0, [UnitOutcome(lfu.uid, started=[started("late")])], 8, 8)
    assert (reply, halt) == (STOP, Halt.ABORT) and not s.uploads


@pytest.mark.parametrize("told, canceled, aborted", [(Halt.NONE, False, False), (Halt.CANCEL, True, False),
                                                     (Halt.ABORT, True, True)])
def test_a_rank_signalled_stops_the_task(told, canceled, aborted):
    """Any rank's signal reaches rank 0 with that rank's next request."""
    s, _ = make([DirUnit("a"), DirUnit("b"), LargeFileUnit(fentry())])
    reply, halt = ask(s, 1, [], 1, 0, told)
    assert (s.told, s.canceled, s.aborted, halt) == (told, canceled, aborted, told)
    assert (reply is STOP) == canceled


def test_after_a_cancel_waiting_hard_links_are_not_started():
    a, b = (Entry(p, EntryKind.FILE, 10, 0o100644, 1, 1, 10, 20, 30, ino=9, nlink=2) for p in ("a", "b"))
    s, _ = make([BatchUnit([a, b])])
    [batch] = s.exchange(0, [], 1, 0)
    assert [e.path for e in batch.entries] == ["a"]  # b waits to be copied from a
    s.cancel()
    assert s.exchange(0, [UnitOutcome(batch.uid, rows=[ReportRow("a", "file", 10, RowStatus.SUCCEEDED)])],
                      8, 0) is STOP


# ---- counts (T-5) --------------------------------------------------------------------------------

@pytest.mark.parametrize("statuses, total, succeeded, failed, skipped", [
    ([], 0, 0, 0, 0),
    ([RowStatus.SUCCEEDED], 1, 1, 0, 0),
    ([RowStatus.FAILED], 1, 0, 1, 0),
    ([RowStatus.SUCCEEDED_WITH_WARNING], 1, 1, 0, 0),   # warnings count as succeeded
    ([RowStatus.SKIPPED], 0, 0, 0, 1),                  # skipped: not counted
    ([RowStatus.SUCCEEDED, RowStatus.FAILED, RowStatus.SKIPPED, RowStatus.SUCCEEDED_WITH_WARNING,
      RowStatus.FAILED, RowStatus.SKIPPED], 4, 2, 2, 2),
])
def test_counts_add_up(statuses, total, succeeded, failed, skipped):
    units = [BatchUnit([fentry(str(i), 1)]) for i in range(2)]
    s, sink = make(units)
    got = s.exchange(0, [], 2, 0)
    half = len(statuses) // 2
    r1 = [ReportRow(f"a{i}", "file", 1, st, retries=1) for i, st in enumerate(statuses[:half])]
    r2 = [ReportRow(f"b{i}", "file", 1, st) for i, st in enumerate(statuses[half:])]
    assert s.exchange(0, [UnitOutcome(got[0].uid, rows=r1), UnitOutcome(got[1].uid, rows=r2)], 2, 0) is STOP
    p = s.progress()
    assert (p.counts.total, p.counts.succeeded, p.counts.failed, p.skipped) == (total, succeeded, failed, skipped)
    assert p.counts.total == p.counts.succeeded + p.counts.failed
    assert p.retries == len(r1)
    assert sink == r1 + r2, "every row reaches the report sink, skipped ones too"


# ---- the task paths' own units (job._root_units) ---------------------------------------------------

class _Dir:
    """A stand-in manifest reader: what was exported per directory."""

    def __init__(self, recs):
        self.recs = recs

    def directory(self, path):
        return dict(self.recs.get(path, {}))


def _transfer(manifest=None, full=False):
    from pfsxport.export import Transfer, TransferOptions
    from pfsxport.metadata import S3Url

    return Transfer("/nonexistent", S3Url("bucket", "p/"), store=None, layouts=None,
                    opts=TransferOptions(16 * MiB, 16 * MiB, 1 << 40, 64, 3), manifest=manifest, full=full)


def test_root_units_export_the_paths_but_not_the_root():
    from pfsxport.job import _root_units

    d = Entry("", EntryKind.DIRECTORY, 0, 0o40755, 0, 0, 0, 0, 0)
    sub = Entry("sub", EntryKind.DIRECTORY, 0, 0o40755, 0, 0, 0, 0, 0)
    f = fentry("file", 1)
    units = _root_units(_transfer(), [d, sub, f])
    assert [type(u) for u in units] == [BatchUnit, DirUnit, DirUnit]
    assert units[0].entries == [sub, f], "the root's own entry is not exported (SPEC §2)"
    assert [u.path for u in units[1:]] == ["", "sub"]


@pytest.mark.parametrize("full, exported", [(False, []), (True, ["a/file"])])
def test_root_units_skip_an_unchanged_path_unless_full(full, exported):
    from pfsxport.job import _root_units

    f = fentry("a/file", 1)
    units = _root_units(_transfer(_Dir({"a": {b"file": f.rec()}}), full=full), [f])
    assert [e.path for u in units for e in u.entries] == exported


# ---- hard links (E-9): data once, the other link paths by server-side copy -----------------------

def link(path, ino=42, nlink=3, size=10):
    return Entry(path, EntryKind.FILE, size, 0o100644, 1, 1, 10, 20, 30, ino=ino, nlink=nlink)


def drain(s, rank=0):
    """Hand out everything queued, in order."""
    got = []
    while True:
        reply = s.exchange(rank, [], 100, 100)
        if reply in (STOP, WAIT):
            return got, reply
        got += reply


def test_hard_links_upload_once_then_copy():
    from pfsxport.model import CopyUnit

    s, _ = make([BatchUnit([link("a"), link("b"), link("c"), fentry("plain", 1)])])
    units, _ = drain(s)
    assert [e.path for u in units for e in u.entries] == ["a", "plain"]  # b, c wait for a
    s.exchange(0, [UnitOutcome(units[0].uid, rows=[ReportRow("a", "file", 10, RowStatus.SUCCEEDED,
                                                             checksum="crc32:0000002a"),
                                                   ReportRow("plain", "file", 1, RowStatus.SUCCEEDED)])], 0, 0)
    copies, _ = drain(s)
    assert all(isinstance(u, CopyUnit) for u in copies)
    assert [(u.entry.path, u.source, u.checksum) for u in copies] == [("b", "a", "crc32:0000002a"),
                                                                       ("c", "a", "crc32:0000002a")]
    # a link path seen later copies at once
    s.exchange(0, [UnitOutcome(0, units=[BatchUnit([link("d")])])], 0, 0)
    later, _ = drain(s)
    assert [(type(u).__name__, u.entry.path) for u in later] == [("CopyUnit", "d")]


def test_hard_links_upload_themselves_when_the_primary_failed():
    s, _ = make([BatchUnit([link("a"), link("b")])])
    units, _ = drain(s)
    s.exchange(0, [UnitOutcome(units[0].uid, rows=[ReportRow("a", "file", 10, RowStatus.FAILED, "S3Error")])],
               0, 0)
    again, _ = drain(s)
    assert [(type(u).__name__, [e.path for e in u.entries]) for u in again] == [("BatchUnit", ["b"])]


def test_different_versions_of_an_inode_number_are_not_confused():
    s, _ = make([BatchUnit([link("a", size=10), link("b", size=11)])])  # same ino, other size: other file
    units, _ = drain(s)
    assert [e.path for u in units for e in u.entries] == ["a", "b"]


def test_a_link_path_never_waits_forever():
    """The primary turned into a new version on the way (it grew into a large file): its
    waiting link path is uploaded by itself once nothing else is left."""
    s, _ = make([BatchUnit([link("a"), link("b")])])
    units, _ = drain(s)
    grown = link("a", size=99 * MiB)
    s.exchange(0, [UnitOutcome(units[0].uid, units=[LargeFileUnit(grown)])], 0, 0)
    big, _ = drain(s)
    assert [type(u).__name__ for u in big] == ["LargeFileUnit"]
    s.exchange(0, [UnitOutcome(big[0].uid, rows=[ReportRow("a", "file", grown.size, RowStatus.SUCCEEDED)])],
               0, 0)
    rest, reply = drain(s)
    assert [(type(u).__name__, [e.path for e in u.entries]) for u in rest] == [("BatchUnit", ["b"])]


def test_scarce_work_is_shared_not_taken_by_the_first_rank_to_ask():
    """Five parts of one big file and four ranks: the first rank to ask gets its share (2),
    not all five, and every rank that asks next gets some."""
    s, _ = make([], nranks=4)
    s.exchange(0, [UnitOutcome(0, started=[started(nparts=5)])], 0, 0)
    first = s.exchange(0, [], 0, 16)
    assert len(first) == 2
    others = [s.exchange(r, [], 0, 16) for r in (1, 2, 3)]
    assert [len(o) for o in others] == [1, 1, 1]
    assert len({u.uid for u in first + sum(others, [])}) == 5


def test_gone_entries_are_deleted_except_where_no_object_can_be():
    """An intent for an entry whose key no store takes (over 1024 bytes) left a record but
    never an object: it is forgotten, not sent to the store as a delete."""
    t = _transfer()
    t.ctx.events = frozenset({"NEW", "CHANGED", "DELETED"})
    records = []
    t.ctx.delta.add = lambda *r: records.append(r)
    long_name = "n" * 1100
    gone = {b"f": (1, 0, 0, 0o100644, 0, 0, 1), b"d": (-1, 0, 0, 0o40755, 0, 0, 0),
            long_name.encode(): (-1, 0, 0, 0o100644, 0, 0, 0)}
    units = t.scanner.deletions("dir", gone)
    assert sorted(type(u).__name__ for u in units) == ["DeleteTreeUnit", "DeleteUnit"]
    assert [u.gone for u in units if type(u).__name__ == "DeleteUnit"] == [[("dir/f", 0o100644, 1)]]
    assert records == [("D", f"dir/{long_name}")]


# ---- a fault of the state directory halts the task --------------------------------------------

def test_a_rank_reporting_a_state_fault_halts_the_task_as_a_cancel_would():
    from pfsxport.errors import StateError

    s, sink = make([DirUnit("d1"), DirUnit("d2"), BatchUnit([fentry("x", 1)])])
    [d] = s.exchange(0, [], 1, 0)
    fault = StateError("StateDirectoryUnusable", "No space left on device: cannot write rank-1.log")
    back = pickle.loads(pickle.dumps(UnitOutcome(0, fault=fault)))  # it travels from another rank
    assert s.exchange(1, [back], 4, 4) is WAIT  # d is still out
    assert s.canceled and str(s.fault) == str(fault) and not s.dirs and not s.batches
    assert s.exchange(0, [UnitOutcome(d.uid, units=[BatchUnit([fentry("y", 1)])])], 4, 4) is STOP


def test_a_report_sink_that_cannot_write_halts_the_task_and_keeps_counting():
    from pfsxport.errors import StateError

    def full(rows):
        raise StateError("StateDirectoryUnusable", "No space left on device: cannot write report.csv")

    s = Ranks([BatchUnit([fentry("x", 1)]), DirUnit("d")], full, 1)
    [b] = s.exchange(0, [], 1, 0)
    assert s.exchange(0, [UnitOutcome(b.uid, rows=rows(RowStatus.SUCCEEDED))], 4, 4) is STOP
    assert s.canceled and "report.csv" in str(s.fault)
    assert s.progress().counts.succeeded == 1
