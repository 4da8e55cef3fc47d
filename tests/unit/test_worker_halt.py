"""pfsxport.worker.Worker when the task stops, with a scripted channel and a fake transfer (the
orderings here, an upload that rank 0 has not heard of when the abort comes, cannot be made to
happen on purpose with real ranks).

A rank says how far its own signals say to stop with each request; on an abort it aborts the
uploads it started that rank 0 may not know of, and leaves without waiting for parts in flight."""
from __future__ import annotations

import os
import signal
import threading
import time

from pfsxport.halt import Halt
from pfsxport.model import (
    Entry,
    EntryKind,
    FinishUnit,
    LargeFileUnit,
    Part,
    PartDone,
    PartUnit,
    UnitOutcome,
    UploadStarted,
)
from pfsxport.schedule import STOP, WAIT, Reply
from pfsxport.worker import Worker

BIG = Entry("big", EntryKind.FILE, 10 << 20, 0o100644, 1, 1, 10, 20, 30, ino=7)


class Transfer:
    def __init__(self):
        self.aborted: list[str] = []
        self.finished: list[FinishUnit] = []
        self.release = threading.Event()  # a part in flight blocks until set

    def intend(self, units):
        pass

    def run(self, unit):
        if isinstance(unit, LargeFileUnit):
            parts = [Part(1, 0, 5 << 20, ()), Part(2, 5 << 20, 5 << 20, ())]
            return UnitOutcome(unit.uid, started=[UploadStarted("up-new", "x/big", unit.entry, parts, 0, 0.0)])
        if isinstance(unit, PartUnit):
            self.release.wait(30)
            return UnitOutcome(unit.uid, parts=[PartDone(unit.upload_id, unit.part.number)])
        if isinstance(unit, FinishUnit):
            self.finished.append(unit)
            return UnitOutcome(unit.uid)
        raise AssertionError(unit)

    def abort_open(self, upload) -> None:
        self.aborted.append(upload.upload_id)


class Channel:
    """Answers each request with the next scripted reply once `when(outcomes)` holds; records
    the requests as (outcomes, halt)."""

    def __init__(self, script):
        self.script = list(script)
        self.requests: list[tuple[list, Halt]] = []
        self._reply = None

    def post(self, request):
        self.requests.append((request.outcomes, request.halt))
        when, reply = self.script[0]
        if when(request.outcomes):
            self.script.pop(0)
            self._reply = Reply(*reply)
        else:
            self._reply = Reply(WAIT, Halt.NONE)

    def poll(self):
        reply, self._reply = self._reply, None
        return reply


def started_in(outcomes) -> bool:
    return any(o.started for o in outcomes)


def always(outcomes) -> bool:
    return True


def part(uid, n):
    return PartUnit("up-old", "x/old", "old", Part(n, 0, 5 << 20, ()), BIG.snapshot(), uid=uid)


def test_abort_aborts_the_upload_rank_0_never_heard_of_and_leaves_parts_in_flight():
    t = Transfer()
    ch = Channel([
        (always, ([LargeFileUnit(BIG, uid=1), part(2, 1)], Halt.NONE)),
        # the request carrying the new upload is answered: abort (rank 0 will not schedule it)
        (started_in, (STOP, Halt.ABORT)),
    ])
    try:
        Worker(t, ch, 4, 2).run()  # returns although the part of the older upload is still in flight
    finally:
        t.release.set()
    assert t.aborted == ["up-new"]


def test_queued_finishes_run_before_the_rank_leaves_an_abort():
    t = Transfer()
    fin = FinishUnit("up-old", "x/old", BIG, BIG.snapshot(), [], [], 0, 0, (), canceled=True, uid=3)
    ch = Channel([
        (always, ([part(1, 1), part(2, 2)], Halt.NONE)),
        (always, ([fin, part(4, 3)], Halt.ABORT)),  # the queued part is dropped, the finish runs
        (always, (STOP, Halt.ABORT)),
    ])
    try:
        Worker(t, ch, 4, 1).run()
    finally:
        t.release.set()
    assert t.finished == [fin] and t.aborted == []


def test_a_new_upload_known_to_rank_0_is_left_to_it():
    t = Transfer()
    t.release.set()
    ch = Channel([
        (always, ([LargeFileUnit(BIG, uid=1)], Halt.NONE)),
        (started_in, (WAIT, Halt.CANCEL)),  # rank 0 has it now: it ends it (a complete or an abort)
        (always, (STOP, Halt.ABORT)),
    ])
    Worker(t, ch, 4, 2).run()
    assert t.aborted == []


class Watch:
    def __init__(self, level):
        self.level_now = level

    def level(self):
        return self.level_now


def test_the_rank_tells_rank_0_of_its_own_signal():
    t = Transfer()
    ch = Channel([(lambda o: True, (STOP, Halt.CANCEL))])
    Worker(t, ch, 4, 2, watch=Watch(Halt.CANCEL)).run()
    assert [h for _, h in ch.requests] == [Halt.CANCEL]


def test_a_signal_during_the_wait_does_not_stall_the_loop():
    """Signals land in this thread while it waits for its tasks; the wait must still end on
    time (an interrupted SimpleQueue.get with a timeout waits for the next put instead), so the
    rank hears the abort and leaves while its part is still in flight."""
    t = Transfer()
    burst_done = threading.Event()

    class AfterBurst(Channel):
        def post(self, request):
            self.requests.append((request.outcomes, request.halt))
            if len(self.requests) == 1:
                self._reply = Reply([part(1, 1)], Halt.NONE)
            else:
                self._reply = Reply(STOP, Halt.ABORT) if burst_done.is_set() else Reply(WAIT, Halt.NONE)

    def burst():
        time.sleep(0.2)
        for _ in range(50):
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.01)
        burst_done.set()

    previous = signal.signal(signal.SIGUSR1, lambda *a: None)
    safety = threading.Timer(20, t.release.set)
    try:
        safety.start()
        threading.Thread(target=burst, daemon=True).start()
        Worker(t, AfterBurst([]), 4, 2).run()
        assert not t.release.is_set(), "the loop waited for the part in flight"
    finally:
        signal.signal(signal.SIGUSR1, previous)
        t.release.set()
        safety.cancel()
