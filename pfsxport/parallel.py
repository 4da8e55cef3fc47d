"""Everything MPI: the world, the scheduler service on rank 0, and the channels to it.

Owns mpi4py (the only module that imports it). Rank 0 runs the scheduler: for its own
worker through a direct, locked call; for the other ranks through a service thread that
answers requests, which those ranks' workers poll for while they go on working. Waits poll
with short sleeps instead of blocking MPI calls, which in MPICH spin a core that the file
system client and the S3 connections need.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("pfsxport")

_REQ, _REP = 11, 12


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

    def post(self, outcomes, want_light, want_heavy, halt, tally) -> None:
        with self.lock:
            self._reply = self.scheduler.serve(0, outcomes, want_light, want_heavy, halt, tally)

    def poll(self):
        reply, self._reply = self._reply, None
        return reply


class _MpiChannel:
    """Another rank's worker: a request goes to rank 0's service thread, and the worker keeps
    running its units until the reply is there (a blocking round trip idled it ~8 ms each)."""

    def __init__(self, world: World):
        self.comm = world.comm

    def post(self, outcomes, want_light, want_heavy, halt, tally) -> None:
        self.comm.send((outcomes, want_light, want_heavy, int(halt), tally), dest=0, tag=_REQ)

    def poll(self):
        return self.comm.recv(source=0, tag=_REP) if self.comm.iprobe(source=0, tag=_REP) else None


def _serve(world: World, scheduler, lock: threading.Lock, stop_signal, failed: list) -> None:
    """Rank 0's service thread: answer every other rank until each has been told to stop."""
    MPI = world.MPI
    comm = world.comm
    remaining = world.size - 1
    status = MPI.Status()
    delay = 0.0
    try:
        while remaining:
            if not comm.iprobe(source=MPI.ANY_SOURCE, tag=_REQ, status=status):
                time.sleep(delay)
                delay = min(delay * 2 or 0.0001, 0.002)
                continue
            delay = 0.0
            src = status.Get_source()
            outcomes, wl, wh, halt, tally = comm.recv(source=src, tag=_REQ)
            with lock:
                reply, told = scheduler.serve(src, outcomes, wl, wh, halt, tally)
            comm.send((reply, int(told)), dest=src, tag=_REP)
            if reply is stop_signal:
                remaining -= 1
    except BaseException as e:  # noqa: BLE001 - reported and turned into an abort by the caller
        failed.append(e)
        log.exception("the scheduler service failed")


def run_work(world: World, scheduler, lock: threading.Lock, make_worker: Callable[[Any], Any],
             stop_signal) -> None:
    """Collective: every rank runs its worker until the scheduler (rank 0) says STOP."""
    if world.rank != 0:
        make_worker(_MpiChannel(world)).run()
        return
    failed: list = []
    service = None
    if world.size > 1:
        service = threading.Thread(target=_serve, args=(world, scheduler, lock, stop_signal, failed),
                                   name="pfsxport-scheduler", daemon=True)
        service.start()
    make_worker(_LocalChannel(scheduler, lock)).run()
    if service is not None:
        while service.is_alive():
            service.join(0.1)
    if failed:
        raise RuntimeError("the scheduler service failed") from failed[0]
