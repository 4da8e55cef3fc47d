"""One rank's work loop: pull units through a channel, run them on a fixed set of threads,
push outcomes back, one request out at a time, working on while it is answered. Local: no MPI
(the channel hides where the scheduler is).

Three budgets: light tasks (directories, symlinks, small files: many in flight, they wait
on the network), heavy tasks (multipart starts and parts: each holds a part in memory, so
few in flight) and directory scans (CPU and metadata bound: a few).

The rows of every outcome stay here: they go to this rank's report shard (`rows`) and its
counts (`tally`, sent with each request); what travels to the scheduler is the rest of the
outcome (units found, uploads started, parts done) and, for hard links only, the status of
their rows.

When the delta log or the report shard cannot be written (errors.StateError), units whose
intents did not get to disk are not run, and the fault goes to the scheduler with the next
outcomes: it halts the task.

Stopping (halt.Halt, from rank 0's replies): on a cancel, queued entries are dropped and the
rest runs out; on an abort, queued parts go too, and at STOP the rank leaves without waiting
for the parts and files in flight. It waits only for what makes or ends an upload, and aborts
the uploads it started that rank 0 may not have heard of, so none is left open.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from .errors import ErrorCode, StateError
from .halt import Halt
from .model import (
    BatchUnit,
    DirUnit,
    FinishUnit,
    LargeFileUnit,
    PartUnit,
    ReportRow,
    RowStatus,
    UnitOutcome,
    UploadStarted,
)
from .schedule import STOP, WAIT
from .share import Tally

log = logging.getLogger("pfsxport")

# Directory scans in flight per rank: lstat releases the GIL, so a few overlap well; more
# only contend for the GIL (measured: 32 scan threads cost ~1.35x the CPU of one).
SCANS = 4
_NEVER = Halt.ABORT + 1  # a queued finish is never dropped: its upload must end


def _drop_at(unit) -> int:
    """How far the task must stop for a queued task of this unit to be dropped."""
    return Halt.ABORT if isinstance(unit, PartUnit) else _NEVER if isinstance(unit, FinishUnit) else Halt.CANCEL


def _vital(unit) -> bool:
    """Units a rank finishes before it leaves an aborted task: they make or end an upload, or
    read the manifest that closes when the rank leaves (all quick)."""
    return isinstance(unit, (LargeFileUnit, FinishUnit, DirUnit))


class Channel(Protocol):
    def post(self, outcomes: list[UnitOutcome], want_light: int, want_heavy: int, halt: Halt,
             tally: Tally) -> None:
        """Send outcomes and this rank's counts, saying how far this rank's signals say to stop,
        and ask for units; one request at a time."""

    def poll(self):
        """The reply to the request posted, (units | STOP | WAIT, Halt), or None if not yet."""


class _Lanes:
    """Long-lived threads per kind of task, each taking (uid, fn) from its kind's queue and
    putting (kind, fn's outcome) on `done`: no future, lock or condition made per task, which a
    thread pool costs for every small file. A kind's threads are started as its tasks in
    flight first need them (a task with few entries never pays for 40 threads)."""

    def __init__(self, done: queue.Queue, run: Callable):
        self.done, self.run = done, run
        self.queues: dict[str, queue.SimpleQueue] = {}
        self.threads: list[tuple[str, threading.Thread]] = []
        self.started: dict[str, int] = {}
        self.abandoned = False

    def _loop(self, q: queue.SimpleQueue, kind: str) -> None:
        while (task := q.get()) is not None:
            self.done.put((kind, self.run(*task)))

    def put(self, kind: str, uid: int, fn, in_flight: int) -> None:
        """Queue a task; `in_flight` counts it among its kind's tasks not yet done."""
        q = self.queues.setdefault(kind, queue.SimpleQueue())
        if in_flight > self.started.get(kind, 0):
            t = threading.Thread(target=self._loop, args=(q, kind), name=f"pfsxport-{kind}", daemon=True)
            t.start()
            self.threads.append((kind, t))
            self.started[kind] = self.started.get(kind, 0) + 1
        q.put((uid, fn))

    def __enter__(self) -> _Lanes:
        return self

    def abandon(self) -> None:
        """Leave without waiting for the tasks in flight (an aborted task)."""
        self.abandoned = True

    def __exit__(self, *exc) -> None:
        """Every thread finishes the task it is on (as a thread pool's shutdown would), then ends;
        it is waited for unless abandoned."""
        for kind, _ in self.threads:
            self.queues[kind].put(None)
        for _, t in self.threads:
            if not self.abandoned:
                t.join()


def _linked(unit) -> frozenset[str]:
    """Paths of the hard links among a unit's entries: the scheduler pairs them by inode."""
    if isinstance(unit, BatchUnit):
        return frozenset(e.path for e in unit.entries if e.nlink > 1)
    if isinstance(unit, (LargeFileUnit, FinishUnit)) and unit.entry.nlink > 1:
        return frozenset((unit.entry.path,))
    return frozenset()


class Worker:
    def __init__(self, transfer, channel: Channel, concurrency: int, parts_in_flight: int,
                 before_exchange=lambda: None, rows: Callable[[list[ReportRow]], None] = lambda rows: None,
                 tally: Tally | None = None, watch=None):
        self.transfer = transfer
        self.rows = rows  # this rank's report shard (or the service's own use of the rows)
        self.tally = tally if tally is not None else Tally()
        self.channel = channel
        self.concurrency = concurrency
        self.parts_in_flight = parts_in_flight
        # runs before outcomes leave the rank: the manifest delta is durable before anyone counts on it
        self.before_exchange = before_exchange
        self.fault: StateError | None = None
        self.watch = watch  # this rank's halt.SignalWatch (None: no signals watched)

    def _failed(self, err: StateError, outbox: list[UnitOutcome]) -> None:
        """The first fault of the state directory goes to the scheduler; later ones are the same."""
        if self.fault is None:
            self.fault = err
            log.error("%s; the task stops", err)
            outbox.append(UnitOutcome(0, fault=err))

    def _durable(self, outbox: list[UnitOutcome]) -> None:
        """The manifest delta made durable before outcomes leave the rank; a fault goes with them
        (they go anyway: their objects are in S3)."""
        try:
            self.before_exchange()
        except StateError as err:
            self._failed(err, outbox)

    def _keep(self, o: UnitOutcome, linked: frozenset[str], outbox: list[UnitOutcome]) -> None:
        """Write a finished unit's rows to the shard and count them here; the outcome goes on
        without them (but for the status of the hard links among them)."""
        t = self.tally
        if o.rows:
            if linked:
                o.linked = [(r.path, r.status, r.checksum) for r in o.rows if r.path in linked]
            t.rows(o.rows)
            try:
                self.rows(o.rows)
            except StateError as err:
                self._failed(err, outbox)
            o.rows = []
        if o.discovered is not None:
            t.discovered += o.discovered.entries
            t.discovered_bytes += o.discovered.bytes
            t.unchanged += o.discovered.unchanged
            o.discovered = None
        t.bytes_sent += o.bytes_sent

    def _tasks(self, unit) -> list:
        if isinstance(unit, BatchUnit):
            return [lambda e=e: self.transfer.export_entry(e) for e in unit.entries]
        return [lambda: self.transfer.run(unit)]

    def _safe(self, uid: int, fn) -> tuple[int, UnitOutcome]:
        try:
            return uid, fn()
        except Exception as err:  # a bug in one task must not hang the job
            log.exception("internal error in a work unit")
            return uid, UnitOutcome(uid, rows=[ReportRow("", "unknown", 0, RowStatus.FAILED,
                                                         ErrorCode.INTERNAL_ERROR.value,
                                                         message=f"{type(err).__name__}: {err}"[:500])])

    def run(self) -> None:
        C, P = self.concurrency, self.parts_in_flight
        # a Queue, not a SimpleQueue: this thread takes the process's signals, and an interrupted
        # SimpleQueue.get(timeout=...) (CPython 3.11) can wait past its timeout, until the next put
        done: queue.Queue = queue.Queue()
        light: deque = deque()
        heavy: deque = deque()
        scans: deque = deque()
        running = {"light": 0, "heavy": 0, "scan": 0}
        partial: dict[int, list] = {}  # uid -> [tasks left, merged outcome]
        outbox: list[UnitOutcome] = []
        urgent = asked = False  # asked: a request is out and its reply not yet in
        backoff = wait_reply = 0.0
        last = 0.0
        told = sent = Halt.NONE  # how far rank 0 says the task stops; what this rank's signals said
        unreported: dict[str, UploadStarted] = {}  # uploads started here that rank 0 may not know of
        posted: list[str] = []  # their ids in the request out
        vital: set[int] = set()  # uids of _vital units queued or running
        stopping = False  # STOP came in an abort: finish the vital units, then leave
        with _Lanes(done, self._safe) as lanes:
            while True:
                for q, kind, cap in ((light, "light", C), (heavy, "heavy", P), (scans, "scan", SCANS)):
                    if told >= Halt.ABORT:  # only finishes are left queued: all at once, beside what is in flight
                        cap = running[kind] + len(q)
                    while q and running[kind] < cap:
                        uid, fn, _ = q.popleft()
                        running[kind] += 1
                        lanes.put(kind, uid, fn, running[kind])
                if stopping and not vital:
                    for s in unreported.values():
                        self.transfer.abort_open(s)
                    self._durable(outbox)
                    lanes.abandon()
                    return
                if told < Halt.ABORT:
                    want_light = min(8, C - len(light) - running["light"]) if len(light) < C and len(scans) < SCANS \
                        else 0
                    want_heavy = max(0, 2 * P - len(heavy) - running["heavy"])
                else:  # what is handed out now is the finishes of the open uploads
                    want_light, want_heavy = 8, 0
                now = time.monotonic()
                mine = self.watch.level() if self.watch is not None else Halt.NONE
                # outcomes wait a little to travel together, unless nothing here can add to them
                idle = not (light or heavy or scans or running["light"] or running["heavy"] or running["scan"])
                flush = urgent or mine > sent or len(outbox) >= 64 or (outbox and (idle or now - last >= 0.05))
                hungry = (want_light > 0 or want_heavy > 0) and now - last >= backoff
                if not asked and not stopping and (flush or hungry):
                    self._durable(outbox)
                    self.channel.post(outbox, max(0, want_light), want_heavy, mine, Tally(*self.tally.as_tuple()))
                    posted = [s.upload_id for o in outbox for s in o.started]
                    outbox, urgent, last, asked, wait_reply, sent = [], False, now, True, 0.0, mine
                got = self.channel.poll() if asked else None
                if got is not None:
                    asked, last = False, time.monotonic()
                    reply, halt = got
                    told = max(told, Halt(halt))
                    if told < Halt.ABORT:  # rank 0 has them: their ends are its business
                        for upload_id in posted:
                            unreported.pop(upload_id, None)
                    posted = []
                    if told:  # queued entries are not started (T-7); on an abort, nor are parts
                        for q in (light, heavy, scans):
                            kept = [t for t in q if t[2] > told]
                            for uid, _, _ in (t for t in q if t[2] <= told):
                                vital.discard(uid)
                                slot = partial[uid]
                                slot[0] -= 1
                                if slot[0] == 0:
                                    del partial[uid]
                                    self._keep(slot[1], slot[2], outbox)
                                    outbox.append(slot[1])
                            q.clear()
                            q.extend(kept)
                    if reply is STOP:
                        if told < Halt.ABORT:
                            return
                        stopping = True
                        continue
                    if reply is WAIT:
                        backoff = min(0.02, max(0.001, backoff * 2))
                    else:
                        backoff = 0.0
                        try:
                            self.transfer.intend(reply)
                        except StateError as err:  # not durable: what would write to S3 is not run
                            self._failed(err, outbox)
                            outbox += [UnitOutcome(u.uid) for u in reply if not isinstance(u, (PartUnit, FinishUnit))]
                            reply = [u for u in reply if isinstance(u, (PartUnit, FinishUnit))]
                            urgent = True
                        for unit in reply:
                            tasks = self._tasks(unit)
                            partial[unit.uid] = [len(tasks), UnitOutcome(unit.uid), _linked(unit)]
                            q = heavy if isinstance(unit, (PartUnit, LargeFileUnit)) else \
                                scans if isinstance(unit, DirUnit) else light
                            drop_at = _drop_at(unit)
                            q.extend((unit.uid, t, drop_at) for t in tasks)
                            if _vital(unit):
                                vital.add(unit.uid)
                        continue
                busy = running["light"] + running["heavy"] + running["scan"]
                if asked:  # look for the reply again soon, more rarely the longer it takes
                    wait_reply = min(wait_reply * 2 or 0.0001, 0.002)
                    timeout = wait_reply
                else:
                    timeout = 0.005 if busy else max(backoff, 0.001)
                try:
                    item = done.get(timeout=timeout)
                except queue.Empty:
                    continue
                while True:
                    kind, (uid, o) = item
                    running[kind] -= 1
                    slot = partial[uid]
                    slot[0] -= 1
                    merged: UnitOutcome = slot[1]
                    merged.rows += o.rows
                    merged.units += o.units
                    merged.started += o.started
                    merged.parts += o.parts
                    merged.bytes_sent += o.bytes_sent
                    merged.discovered = o.discovered or merged.discovered
                    if slot[0] == 0:
                        del partial[uid]
                        vital.discard(uid)
                        self._keep(merged, slot[2], outbox)
                        outbox.append(merged)
                        urgent = urgent or bool(merged.units or merged.started or merged.parts)
                        for st in merged.started:
                            unreported[st.upload_id] = st
                    try:
                        item = done.get_nowait()
                    except queue.Empty:
                        break
