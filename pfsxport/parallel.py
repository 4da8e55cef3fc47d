"""Everything MPI: the world, the scheduler service on rank 0, the channels to it, and the
peer-to-peer messages of work stealing.

Owns mpi4py (the only module that imports it). Rank 0 runs the scheduler: for its own
worker through a direct, locked call; for the other ranks through a service thread that
answers requests, which those ranks' workers poll for while they go on working. Thefts go
straight from rank to rank (tags _STEAL and _LOOT), never through rank 0. Waits poll with
short sleeps instead of blocking MPI calls, which in MPICH spin a core that the file system
client and the S3 connections need. Rank 0's worker thread and its service thread both call
MPI, on different tags (mpi4py asks for MPI_THREAD_MULTIPLE by default).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("pfsxport")

_REQ, _REP, _STEAL, _LOOT = 11, 12, 13, 14
# Rank 0's service polls for requests at most every _POLL while they come in bursts, and every
# _POLL_QUIET once none came for _BURST: a poll costs ~35 µs of CPU, so at 2 ms the service
# alone took 1.4% of a core for as long as the job ran (2.4 CPU-s of a 172 s export), which
# is what rank 0 spent beyond the other ranks; busy ranks only report every worker.HEARTBEAT.
_POLL, _POLL_QUIET, _BURST = 0.002, 0.02, 0.05


class World:
    """The MPI world of this job (a single process without mpiexec is a world of one)."""

    def __init__(self) -> None:
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.host = MPI.Get_processor_name()

    def bcast(self, obj: Any) -> Any:
        """Collective: rank 0's object on every rank."""
        if self.size == 1:
            return obj
        return self._wait_then(lambda: self.comm.Ibarrier(), lambda: self.comm.bcast(obj, root=0))

    def allgather(self, obj: Any) -> list:
        """Collective."""
        if self.size == 1:
            return [obj]
        return self._wait_then(lambda: self.comm.Ibarrier(), lambda: self.comm.allgather(obj))

    def barrier(self) -> None:
        """Collective, without spinning a core while others are still busy."""
        if self.size > 1:
            self._wait_then(lambda: self.comm.Ibarrier(), lambda: None)

    def _wait_then(self, start, then):
        req = start()
        delay = 0.0005
        while not req.Test():
            time.sleep(delay)
            delay = min(delay * 2, 0.002)  # a late wake-up delays every rank
        return then()

    def abort(self, code: int) -> None:
        """Local: end the whole job now (all ranks) after an unrecoverable error on this rank."""
        if self.size > 1:
            self.comm.Abort(code)
        os._exit(code)


class _Solo:
    """A world of one without MPI: the auto-export service runs the same work loop in-process."""

    rank = 0
    size = 1


SOLO = _Solo()


class _LocalChannel:
    """Rank 0's own worker: the scheduler is called directly, so the reply is there at once."""

    def __init__(self, scheduler, lock: threading.Lock):
        self.scheduler = scheduler
        self.lock = lock
        self._reply = None
        self.posts = 0

    def post(self, request) -> None:
        self.posts += 1
        with self.lock:
            self._reply = self.scheduler.serve(0, request)

    def poll(self):
        reply, self._reply = self._reply, None
        return reply


class _MpiChannel:
    """Another rank's worker: a request goes to rank 0's service thread, and the worker keeps
    running its units until the reply is there (a blocking round trip idled it ~8 ms each)."""

    def __init__(self, world: World):
        self.comm = world.comm

    def post(self, request) -> None:
        self.comm.send(request, dest=0, tag=_REQ)

    def poll(self):
        return self.comm.recv(source=0, tag=_REP) if self.comm.iprobe(source=0, tag=_REP) else None


class _MpiPeers:
    """worker.Peers over MPI: a theft is a message to the victim (_STEAL) and its answer (_LOOT).
    Answers go out with isend: a large half of a queue must not block the victim's loop."""

    def __init__(self, world: World):
        self.comm = world.comm
        self.MPI = world.MPI
        self.rank, self.size = world.rank, world.size
        self.victim: int | None = None
        self.sending: list = []
        self.thefts = 0  # thefts of ours, and answers we gave: the traffic figures
        self.answers = 0
        self._status = world.MPI.Status()

    def ask(self, victim: int) -> None:
        self.victim = victim
        self.thefts += 1
        self.comm.send(None, dest=victim, tag=_STEAL)

    def loot(self):
        if self.victim is None or not self.comm.iprobe(source=self.victim, tag=_LOOT):
            return None
        got = self.comm.recv(source=self.victim, tag=_LOOT)
        self.victim = None
        return got

    def thieves(self) -> list[int]:
        out = []
        while self.comm.iprobe(source=self.MPI.ANY_SOURCE, tag=_STEAL, status=self._status):
            src = self._status.Get_source()
            self.comm.recv(source=src, tag=_STEAL)
            out.append(src)
        return out

    def give(self, thief: int, units: list) -> None:
        self.answers += 1
        self.sending = [r for r in self.sending if not r.Test()]
        self.sending.append(self.comm.isend(units, dest=thief, tag=_LOOT))

    def drain(self, until) -> None:
        """Answer every thief with nothing (and drop any late loot) until `until()` holds."""
        delay = 0.0001
        while not until():
            for thief in self.thieves():
                self.give(thief, [])
            if self.victim is not None:
                self.loot()
            time.sleep(delay)
            delay = min(delay * 2, 0.002)

    def close(self) -> None:
        """Collective: our own theft answered, then thieves answered until every rank is here,
        so no theft is left without its answer when the work loop is over."""
        self.drain(lambda: self.victim is None)
        req = self.comm.Ibarrier()
        self.drain(req.Test)
        self.MPI.Request.Waitall(self.sending)
        self.sending = []


def _serve(world: World, scheduler, lock: threading.Lock, stop_signal, failed: list) -> None:
    """Rank 0's service thread: answer every other rank until each has been told to stop."""
    MPI = world.MPI
    comm = world.comm
    remaining = world.size - 1
    status = MPI.Status()
    delay, last = 0.0, time.monotonic()
    try:
        while remaining:
            if not comm.iprobe(source=MPI.ANY_SOURCE, tag=_REQ, status=status):
                time.sleep(delay)
                quiet = time.monotonic() - last > _BURST
                delay = min(delay * 2 or 0.0001, _POLL_QUIET if quiet else _POLL)
                continue
            delay, last = 0.0, time.monotonic()
            src = status.Get_source()
            request = comm.recv(source=src, tag=_REQ)
            with lock:
                reply = scheduler.serve(src, request)
            comm.send(reply, dest=src, tag=_REP)
            if reply.units is stop_signal:
                remaining -= 1
    except BaseException as e:  # noqa: BLE001 - reported and turned into an abort by the caller
        failed.append(e)
        log.exception("the scheduler service failed")


@dataclass(frozen=True, slots=True)
class Traffic:
    """Messages of one leg seen from rank 0: requests it served for other ranks, and thefts
    it answered or made; `moved` is the number of units that changed rank by theft (all ranks)."""

    requests: int = 0
    answers: int = 0
    thefts: int = 0
    moved: int = 0

    @property
    def messages(self) -> int:
        return 2 * (self.requests + self.answers + self.thefts)


def run_work(world: World, scheduler, lock: threading.Lock, make_worker: Callable[[Any, Any], Any],
             stop_signal) -> Traffic:
    """Collective: every rank runs its worker until the scheduler (rank 0) says STOP; idle ranks
    steal from the others (worker.Peers). Returns rank 0's traffic figures (zeros elsewhere)."""
    if world.size == 1:  # no peers: None
        make_worker(_LocalChannel(scheduler, lock), None).run()
        return Traffic()
    peers = _MpiPeers(world)
    if world.rank != 0:
        worker = make_worker(_MpiChannel(world), peers)
        worker.run()
        peers.close()
        world.comm.reduce(worker.stolen, root=0)
        return Traffic()
    failed: list = []
    served = scheduler.requests
    service = threading.Thread(target=_serve, args=(world, scheduler, lock, stop_signal, failed),
                               name="pfsxport-scheduler", daemon=True)
    service.start()
    local = _LocalChannel(scheduler, lock)
    worker = make_worker(local, peers)
    worker.run()
    peers.drain(lambda: not service.is_alive())
    peers.close()
    moved = world.comm.reduce(worker.stolen, root=0)
    if failed:
        raise RuntimeError("the scheduler service failed") from failed[0]
    # rank 0's own worker calls the scheduler: calls, not messages
    return Traffic(scheduler.requests - served - local.posts, peers.answers, peers.thefts, moved)


# ---- a shared queue: items handed out one at a time (the import's listing) ----------------

_QREQ, _QREP = 21, 22


class _Queue:
    """Rank 0's side of share_queue: the items, and which ranks hold one. Over when no item is
    left and no rank holds one (a rank holds its item until it asks again, and what it pushed
    while running it arrives before that request: messages between two ranks keep their order)."""

    def __init__(self, items: list) -> None:
        from collections import deque

        self.items = deque(items)
        self.busy: set[int] = set()
        self.over = False
        self.handed = 0

    def serve(self, rank: int, pushed: list, want: bool):
        self.items.extend(pushed)
        if not want:
            return None
        self.busy.discard(rank)
        if self.items:
            self.busy.add(rank)
            self.handed += 1
            return "item", self.items.popleft()
        if not self.busy:
            self.over = True
        return ("stop", None) if self.over else ("wait", None)


def share_queue(world: World, initial: list, handle: Callable[[Any, Callable[[list], None]], None]) -> int:
    """Collective: the `initial` items (rank 0's) are handed out one at a time to whichever rank
    asks first; handle(item, push) runs one, and push(items) adds new items to the queue at
    once, for any rank to take. Returns when the queue is empty and every rank idle (on rank 0:
    the number of items handed out). A rank with nothing to do polls every 10 ms."""
    lock = threading.Lock()
    if world.size == 1 or world.rank == 0:
        queue = _Queue(initial if world.rank == 0 else [])

        def ask(pushed: list, want: bool):
            with lock:
                return queue.serve(0, pushed, want)
        service = None
        failed: list = []
        if world.size > 1:
            service = threading.Thread(target=_serve_queue, args=(world, queue, lock, failed),
                                       name="pfsxport-queue", daemon=True)
            service.start()
        _queue_worker(ask, lambda items: ask(items, False), handle)
        if service is not None:
            service.join()
            if failed:
                raise RuntimeError("the queue service failed") from failed[0]
        return queue.handed
    comm = world.comm

    def remote(pushed: list, want: bool):
        comm.send((pushed, want), dest=0, tag=_QREQ)
        if not want:
            return None
        delay = 0.0001
        while not comm.iprobe(source=0, tag=_QREP):
            time.sleep(delay)
            delay = min(delay * 2, 0.002)
        return comm.recv(source=0, tag=_QREP)
    _queue_worker(remote, lambda items: remote(items, False), handle)
    return 0


def _queue_worker(ask, push, handle) -> None:
    while True:
        what, item = ask([], True)
        if what == "stop":
            return
        if what == "wait":
            time.sleep(0.01)
            continue
        handle(item, lambda items: push(list(items)) if items else None)


def _serve_queue(world: World, queue: _Queue, lock: threading.Lock, failed: list) -> None:
    """Rank 0's service thread of share_queue: answers until every other rank was told to stop."""
    MPI, comm = world.MPI, world.comm
    status = MPI.Status()
    stopped: set[int] = set()
    delay = 0.0
    try:
        while len(stopped) < world.size - 1:
            if not comm.iprobe(source=MPI.ANY_SOURCE, tag=_QREQ, status=status):
                time.sleep(delay)
                delay = min(delay * 2 or 0.0001, 0.002)
                continue
            delay = 0.0
            src = status.Get_source()
            pushed, want = comm.recv(source=src, tag=_QREQ)
            with lock:
                reply = queue.serve(src, pushed, want)
            if want:
                comm.send(reply, dest=src, tag=_QREP)
                if reply[0] == "stop":
                    stopped.add(src)
    except BaseException as e:  # noqa: BLE001 - raised again by share_queue
        failed.append(e)
        log.exception("the queue service failed")
