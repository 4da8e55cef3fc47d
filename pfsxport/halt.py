"""SIGTERM and SIGINT during an export: how far the task is to stop.

Pure: standard library only. Local: each rank watches its own signals; what another rank saw
reaches rank 0's scheduler with that rank's next request (see schedule.Scheduler.serve).
scancel, walltime and a node drain send SIGTERM to every rank (srun, and mpiexec, which passes
it on); Ctrl-C gives mpiexec or a single process SIGINT; a plain `kill` reaches one rank only.

The first signal is a cancel, as `pfsxport task cancel` is: queued entries are not started,
entries in flight finish. A later signal, or the grace running out, is an abort: open
multipart uploads are aborted and the job ends at once.
"""
from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from enum import IntEnum

SIGNALS = (signal.SIGTERM, signal.SIGINT)
# A signal this soon after the previous one is the same signal delivered twice (under
# `mpiexec` in a Slurm job, each rank gets scancel's SIGTERM from Slurm and again from mpiexec).
REPEAT = 1.0
# After an abort, the job ends within this many seconds whatever it still waits for (twice
# that if the report is being written then: the task's end is let finish first).
ABORT_WAIT = 5.0


class Halt(IntEnum):
    NONE = 0
    CANCEL = 1  # queued entries are not started; entries in flight finish, within the grace
    ABORT = 2  # open uploads are aborted, nothing else is waited for


class SignalWatch:
    """Counts SIGTERM and SIGINT once installed (main thread only), and says how far to stop.
    The handler only records: the monitor and the work loop act on `level()`."""

    def __init__(self, grace: float = 15.0, clock: Callable[[], float] = time.monotonic):
        self.grace = grace
        self.clock = clock
        self.signals = 0  # distinct deliveries (repeats within REPEAT count once)
        self.since: float | None = None  # when the cancel began (a signal here, or another rank's)
        self.forced = False
        self.reason = ""  # of the cancel, then of the abort, for the log
        self._last = 0.0
        self._previous: dict[int, object] = {}

    def install(self) -> SignalWatch:
        """Catch the signals (only the main thread can; elsewhere this watch sees none)."""
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def __enter__(self) -> SignalWatch:
        return self.install()

    def __exit__(self, *exc) -> None:
        self.restore()

    def _on_signal(self, signum, frame) -> None:
        now = self.clock()
        if self.signals and now - self._last < REPEAT:
            return
        self._last = now
        self.signals += 1
        name = signal.Signals(signum).name
        if self.signals == 1:
            self.escalate(Halt.CANCEL, name)
        else:
            self.escalate(Halt.ABORT, f"a second signal ({name})")

    def escalate(self, level: Halt, reason: str) -> None:
        """Stop at least this far (a signal here, or one that another rank got)."""
        if level >= Halt.CANCEL and self.since is None:
            self.since, self.reason = self.clock(), reason
        if level >= Halt.ABORT and not self.forced:
            self.forced, self.reason = True, reason

    def level(self) -> Halt:
        if self.forced:
            return Halt.ABORT
        if self.since is None:
            return Halt.NONE
        if self.clock() - self.since >= self.grace:
            self.escalate(Halt.ABORT, f"the grace of {self.grace:g} s ran out")
            return Halt.ABORT
        return Halt.CANCEL
