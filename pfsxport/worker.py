"""One rank's work loop: run units on a fixed set of threads; keep the light units it finds and
share them with idle peers; talk to the coordinator (rank 0's scheduler) about the rest. Local:
no MPI (a channel hides where the scheduler is, `Peers` where the other ranks are).

Three budgets: light tasks (directories, symlinks, small files: many in flight, they wait
on the network), heavy tasks (multipart starts and parts: each holds a part in memory, so
few in flight) and directory scans (CPU and metadata bound: a few).

What a scan finds stays here: directories to scan, batches of small entries and deletes go to
this rank's `share.LocalQueue`, and a peer that runs dry steals half of it. What needs one
view of the job goes to the coordinator: large files (their parts are spread over the ranks
and the OSTs), hard links (paired by inode across ranks), and what multipart uploads report.
The coordinator hears this rank's counts and `share.Status` with each request: about once a
`heartbeat` while the rank has work of its own, so its load grows with time and ranks, not
with entries.

The rows of every outcome stay here too: they go to this rank's report shard (`rows`) and
its counts (`tally`).

When the delta log or the report shard cannot be written (errors.StateError), units whose
intents did not get to disk are not run, and the fault goes to the scheduler with the next
request: it halts the task.

Stopping (halt.Halt, from rank 0's replies): on a cancel, queued entries (and the local
queue) are dropped and the rest runs out; on an abort, queued parts go too, and at STOP the
rank leaves without waiting for the parts and files in flight. It waits only for what makes or
ends an upload, and aborts the uploads it started that rank 0 may not have heard of, so none
is left open.
"""
from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from .errors import ErrorCode, StateError
from .halt import Halt
from .model import (
    BatchUnit,
    DeleteTreeUnit,
    DeleteUnit,
    DirUnit,
    EntryKind,
    FinishUnit,
    LargeFileUnit,
    PartUnit,
    ReportRow,
    RowStatus,
    UnitOutcome,
    UploadStarted,
)
from .schedule import STOP, WAIT, Reply, Request
from .share import LocalQueue, Status, Tally

log = logging.getLogger("pfsxport")

# Directory scans in flight per rank: lstat releases the GIL, so a few overlap well; more
# only contend for the GIL (measured: 32 scan threads cost ~1.35x the CPU of one).
SCANS = 4
# Seconds between a busy rank's reports to the coordinator: its counts for the progress line
# and its share.Status; a cancel reaches a busy rank within one (a signal reaches each rank itself)
HEARTBEAT = 2.0
# Longest wait between two thefts that came back empty: a theft costs the victim one iprobe and
# one small answer, so idle ranks keep trying often; at the start of a walk the work is all on
# one rank and spreads by halves (bench/simulate.py: a cap of 0.25 s left 100 ranks at a
# tenth of their rate, 10 ms does not)
STEAL_BACKOFF = 0.01
_NEVER = Halt.ABORT + 1  # a queued finish is never dropped: its upload must end


def _drop_at(unit) -> int:
    """How far the task must stop for a queued task of this unit to be dropped."""
    return Halt.ABORT if isinstance(unit, PartUnit) else _NEVER if isinstance(unit, FinishUnit) else Halt.CANCEL


def _vital(unit) -> bool:
    """Units a rank finishes before it leaves an aborted task: they make or end an upload, or
    read the manifest that closes when the rank leaves (all quick)."""
    return isinstance(unit, (LargeFileUnit, FinishUnit, DirUnit))


def _linked_entry(e) -> bool:
    return e.nlink > 1 and e.kind is EntryKind.FILE


def split(units: list) -> tuple[list, list]:
    """(kept here, for the coordinator): scans, deletes and batches of small entries stay with
    the rank that found them; large files and hard links (paired across ranks) do not."""
    local: list = []
    central: list = []
    for u in units:
        if isinstance(u, (DirUnit, DeleteUnit, DeleteTreeUnit)):
            local.append(u)
        elif isinstance(u, BatchUnit):
            linked = [e for e in u.entries if _linked_entry(e)]
            if linked:
                central.append(BatchUnit(linked))
                u.entries = [e for e in u.entries if not _linked_entry(e)]
            if u.entries:
                local.append(u)
        else:
            central.append(u)
    return local, central


class Channel(Protocol):
    def post(self, request: Request) -> None:
        """Send outcomes, counts and status, and ask for units; one request at a time."""

    def poll(self) -> Reply | None:
        """The reply to the request posted, or None if not yet there."""


class Peers(Protocol):
    """The other ranks, for work stealing. One theft of this rank's own at a time."""

    rank: int
    size: int

    def ask(self, victim: int) -> None:
        """Ask `victim` for half of its local queue."""

    def loot(self) -> list | None:
        """The units the victim asked gave (maybe none), or None while its answer is not in."""

    def thieves(self) -> list[int]:
        """The ranks asking this one for work now; each gets one `give`."""

    def give(self, thief: int, units: list) -> None:
        """Answer a thief (an empty list: nothing to spare)."""


class NoPeers:
    """A world of one: nobody to steal from."""

    rank, size = 0, 1

    def ask(self, victim: int) -> None:
        raise AssertionError("no peers to ask")

    def loot(self) -> list | None:
        return None

    def thieves(self) -> list[int]:
        return []

    def give(self, thief: int, units: list) -> None:
        raise AssertionError("no peers to give to")


NO_PEERS = NoPeers()


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


class _Thefts:
    """This rank's side of work stealing: when to ask a random peer, and what to give one.
    Thefts that come back empty back off, up to `longest` seconds between two."""

    def __init__(self, peers: Peers, longest: float):
        self.peers = peers or NO_PEERS
        self.asked = False  # a theft of ours is under way
        self.given = self.taken = 0  # units, in this leg
        self.wait = 0.0
        self.next = 0.0
        self.longest = longest
        self.rng = random.Random(peers.rank)

    def try_steal(self, now: float) -> None:
        if self.peers.size > 1 and not self.asked and now >= self.next:
            victim = self.rng.randrange(self.peers.size - 1)
            self.peers.ask(victim + (victim >= self.peers.rank))
            self.asked = True

    def collect(self, now: float) -> list:
        """The units of our theft, once its answer is in ([] otherwise)."""
        got = self.peers.loot() if self.asked else None
        if got is None:
            return []
        self.asked = False
        self.taken += len(got)
        self.wait = 0.0 if got else min(self.longest, self.wait * 2 or 0.001)
        self.next = now + self.wait
        return got

    def answer(self, pool: LocalQueue, spare: bool) -> None:
        """Every thief asking gets half of `pool` if we can spare it, else nothing."""
        for thief in self.peers.thieves():
            units = pool.steal() if spare and len(pool) else []
            self.given += len(units)
            self.peers.give(thief, units)


class Worker:
    def __init__(self, transfer, channel: Channel, concurrency: int, parts_in_flight: int,
                 before_exchange=lambda: None, rows: Callable[[list[ReportRow]], None] = lambda rows: None,
                 tally: Tally | None = None, watch=None, peers: Peers | None = None, heartbeat: float = HEARTBEAT):
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
        self.peers = peers or NO_PEERS
        self.heartbeat = heartbeat
        # idle ranks ask again after this long at most: rank 0 hears at most ~2,000 requests a
        # second from idle ranks (a few % of its core), and the end of the walk is seen within
        # two of these waits
        self.longest = min(0.25, max(0.02, 0.0005 * self.peers.size))
        self.pool = LocalQueue()
        self.stolen = 0  # units this rank got by theft (after run)
        self._local_uid = 0  # local units get negative uids: the scheduler's are positive

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

    def _adopt(self, units: list) -> None:
        """Units found here or stolen: into the local queue, each with a local uid."""
        for u in units:
            self._local_uid -= 1
            u.uid = self._local_uid
            self.pool.push(u)

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
        loop = _Loop(self)
        loop.run()
        self.stolen = loop.thefts.taken


class _Loop:
    """The state of one run of a Worker: its queues, what is in flight, the request out."""

    def __init__(self, w: Worker):
        self.w = w
        # a Queue, not a SimpleQueue: this thread takes the process's signals, and an interrupted
        # SimpleQueue.get(timeout=...) (CPython 3.11) can wait past its timeout, until the next put
        self.done: queue.Queue = queue.Queue()
        self.light: deque = deque()
        self.heavy: deque = deque()
        self.scans: deque = deque()
        self.running = {"light": 0, "heavy": 0, "scan": 0}
        self.partial: dict[int, list] = {}  # uid -> [tasks left, merged outcome, hard-link paths]
        self.outbox: list[UnitOutcome] = []
        self.urgent = self.asked = False  # asked: a request is out and its reply not yet in
        self.backoff = 0.0
        self.wait_reply = 0.0
        self.last = 0.0
        self.told = self.sent = Halt.NONE  # how far rank 0 says the task stops; what this rank's signals said
        self.unreported: dict[str, UploadStarted] = {}  # uploads started here that rank 0 may not know of
        self.posted: list[str] = []  # their ids in the request out
        self.vital: set[int] = set()  # uids of _vital units queued or running
        self.stopping = False  # STOP came in an abort: finish the vital units, then leave
        self.central = (1, 1)  # (light, heavy) units the coordinator has queued, as last told
        self.thefts = _Thefts(w.peers, STEAL_BACKOFF)

    # ---- queues ----------------------------------------------------------------------

    def _queue(self, unit) -> None:
        tasks = self.w._tasks(unit)
        self.partial[unit.uid] = [len(tasks), UnitOutcome(unit.uid), _linked(unit)]
        q = self.heavy if isinstance(unit, (PartUnit, LargeFileUnit)) else \
            self.scans if isinstance(unit, DirUnit) else self.light
        drop_at = _drop_at(unit)
        q.extend((unit.uid, t, drop_at) for t in tasks)
        if _vital(unit):
            self.vital.add(unit.uid)

    def _feed(self) -> None:
        """Move local units into the run queues while there is room, their intents durable first."""
        pool = self.w.pool
        scans = len(self.scans) + self.running["scan"]
        light = len(self.light) + self.running["light"]
        taken: list = []
        while pool:
            u = pool.take(scan=scans < SCANS, batch=light < self.w.concurrency)
            if u is None:
                break
            taken.append(u)
            if isinstance(u, DirUnit):
                scans += 1
            else:
                light += len(u.entries) if isinstance(u, BatchUnit) else 1
        if not taken:
            return
        try:
            self.w.transfer.intend(taken)
        except StateError as err:  # not durable: what would write to S3 is not run (the task halts)
            self.w._failed(err, self.outbox)
            self.urgent = True
            return
        for u in taken:
            self._queue(u)

    def _drop_queued(self) -> None:
        """Queued tasks the stop level drops: their units end with what ran of them."""
        for q in (self.light, self.heavy, self.scans):
            kept = [t for t in q if t[2] > self.told]
            for uid, _, _ in (t for t in q if t[2] <= self.told):
                self.vital.discard(uid)
                slot = self.partial[uid]
                slot[0] -= 1
                if slot[0] == 0:
                    del self.partial[uid]
                    self._finished(slot)
            q.clear()
            q.extend(kept)
        self.w.pool.clear()

    def _dispatch(self, lanes: _Lanes) -> None:
        C, P = self.w.concurrency, self.w.parts_in_flight
        for q, kind, cap in ((self.light, "light", C), (self.heavy, "heavy", P), (self.scans, "scan", SCANS)):
            if self.told >= Halt.ABORT:  # only finishes are left queued: all at once, beside what is in flight
                cap = self.running[kind] + len(q)
            while q and self.running[kind] < cap:
                uid, fn, _ = q.popleft()
                self.running[kind] += 1
                lanes.put(kind, uid, fn, self.running[kind])

    # ---- outcomes --------------------------------------------------------------------

    def _finished(self, slot: list) -> None:
        """A unit is done: its rows stay here, its local finds go to the pool, and what the
        coordinator must hear of goes in the outbox."""
        merged: UnitOutcome = slot[1]
        self.w._keep(merged, slot[2], self.outbox)
        local, merged.units = split(merged.units)
        if self.told < Halt.CANCEL:
            self.w._adopt(local)
        if merged.uid > 0 or merged.units or merged.started or merged.parts or merged.linked or merged.fault:
            self.outbox.append(merged)
            self.urgent = self.urgent or bool(merged.units or merged.started or merged.parts)
        for st in merged.started:
            self.unreported[st.upload_id] = st

    def _collect(self, item) -> None:
        while True:
            kind, (uid, o) = item
            self.running[kind] -= 1
            slot = self.partial[uid]
            slot[0] -= 1
            merged: UnitOutcome = slot[1]
            merged.rows += o.rows
            merged.units += o.units
            merged.started += o.started
            merged.parts += o.parts
            merged.bytes_sent += o.bytes_sent
            merged.discovered = o.discovered or merged.discovered
            if slot[0] == 0:
                del self.partial[uid]
                self.vital.discard(uid)
                self._finished(slot)
            try:
                item = self.done.get_nowait()
            except queue.Empty:
                break

    # ---- the coordinator -------------------------------------------------------------

    def _idle(self) -> bool:
        return not (self.w.pool or self.partial or self.thefts.asked)

    def _post(self, now: float) -> None:
        w = self.w
        C, P = w.concurrency, w.parts_in_flight
        if self.told < Halt.ABORT:
            # the coordinator's light units (finishes, copies of hard links) are taken even by a
            # rank with work of its own: open uploads wait for their finish
            short = not w.pool and len(self.light) < C and len(self.scans) < SCANS
            want_light = max(1, min(8, C - len(self.light) - self.running["light"])) \
                if short or self.central[0] > 0 else 0
            want_heavy = max(0, 2 * P - len(self.heavy) - self.running["heavy"])
        else:  # what is handed out now is the finishes of the open uploads
            want_light, want_heavy = 8, 0
        mine = w.watch.level() if w.watch is not None else Halt.NONE
        idle = self._idle()
        # outcomes wait a little to travel together, unless nothing here can add to them
        quiet = not (self.light or self.heavy or self.scans or any(self.running.values()))
        flush = self.urgent or mine > self.sent or len(self.outbox) >= 64 or \
            (self.outbox and (quiet or now - self.last >= 0.05))
        due = now - self.last >= self.backoff
        hungry = due and (idle or (want_heavy > 0 and self.central[1] > 0)
                          or (want_light > 0 and self.central[0] > 0))
        if not (flush or hungry or now - self.last >= w.heartbeat):
            return
        w._durable(self.outbox)
        status = Status(idle, self.thefts.given, self.thefts.taken, len(w.pool))
        w.channel.post(Request(self.outbox, max(0, want_light), want_heavy, mine, Tally(*w.tally.as_tuple()),
                               status))
        self.posted = [s.upload_id for o in self.outbox for s in o.started]
        self.outbox, self.urgent, self.last, self.asked, self.wait_reply, self.sent = [], False, now, True, 0.0, mine

    def _reply(self, got: Reply) -> bool:
        """Take rank 0's reply; True when the loop is to end now."""
        self.asked, self.last = False, time.monotonic()
        self.told = max(self.told, Halt(got.halt))
        self.central = (got.light, got.heavy)
        if self.told < Halt.ABORT:  # rank 0 has them: their ends are its business
            for upload_id in self.posted:
                self.unreported.pop(upload_id, None)
        self.posted = []
        if self.told:  # queued entries are not started (T-7); on an abort, nor are parts
            self._drop_queued()
        if got.units is STOP:
            if self.told < Halt.ABORT:
                return True
            self.stopping = True
            return False
        if got.units is WAIT:  # nothing queued there: no hurry to ask again
            self.backoff = self.w.longest if got.light + got.heavy == 0 else \
                min(self.w.longest, max(0.001, self.backoff * 2))
            return False
        self.backoff = 0.0
        units = got.units
        try:
            self.w.transfer.intend(units)
        except StateError as err:  # not durable: what would write to S3 is not run
            self.w._failed(err, self.outbox)
            self.outbox += [UnitOutcome(u.uid) for u in units if not isinstance(u, (PartUnit, FinishUnit))]
            units = [u for u in units if isinstance(u, (PartUnit, FinishUnit))]
            self.urgent = True
        for unit in units:
            self._queue(unit)
        return False

    # ---- the loop --------------------------------------------------------------------

    def run(self) -> None:
        w = self.w
        with _Lanes(self.done, w._safe) as lanes:
            while True:
                now = time.monotonic()
                spare = self.told < Halt.CANCEL and bool(self.partial or len(w.pool) > 1)
                self.thefts.answer(w.pool, spare)
                stolen = self.thefts.collect(now)
                if stolen and self.told < Halt.CANCEL:
                    w._adopt(stolen)
                if self.told < Halt.CANCEL:
                    self._feed()
                self._dispatch(lanes)
                if self.stopping and not self.vital:
                    for s in self.unreported.values():
                        w.transfer.abort_open(s)
                    w._durable(self.outbox)
                    lanes.abandon()
                    return
                if not self.asked and not self.stopping:
                    self._post(now)
                got = w.channel.poll() if self.asked else None
                if got is not None:
                    if self._reply(got):
                        return
                    continue
                if self.told < Halt.CANCEL and not w.pool and len(self.light) + self.running["light"] < w.concurrency:
                    self.thefts.try_steal(now)
                busy = any(self.running.values())
                if self.asked:  # look for the reply again soon, more rarely the longer it takes
                    self.wait_reply = min(self.wait_reply * 2 or 0.0001, 0.002)
                    timeout = self.wait_reply
                elif self.thefts.asked:
                    timeout = 0.0005
                else:
                    timeout = 0.005 if busy else max(self.backoff, 0.001)
                try:
                    item = self.done.get(timeout=timeout)
                except queue.Empty:
                    continue
                self._collect(item)
