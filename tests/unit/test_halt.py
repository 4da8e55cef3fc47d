"""pfsxport.halt.SignalWatch: the first SIGTERM/SIGINT is a cancel, a later one (or the end of
the grace) an abort; the same signal delivered twice counts once; handlers go back at the end."""
from __future__ import annotations

import os
import signal

import pytest

from pfsxport.halt import REPEAT, Halt, SignalWatch


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock():
    return Clock()


def test_no_signal_no_stop(clock):
    assert SignalWatch(10, clock).level() is Halt.NONE


def test_first_signal_cancels_a_second_one_aborts(clock):
    w = SignalWatch(60, clock)
    w._on_signal(signal.SIGTERM, None)
    assert (w.level(), w.reason) == (Halt.CANCEL, "SIGTERM")
    clock.t += REPEAT + 0.1
    w._on_signal(signal.SIGINT, None)
    assert (w.level(), w.signals) == (Halt.ABORT, 2)
    assert "second signal" in w.reason and "SIGINT" in w.reason


def test_the_same_signal_delivered_twice_is_one(clock):
    """Under mpiexec in a Slurm job a rank gets scancel's SIGTERM from Slurm and from mpiexec."""
    w = SignalWatch(60, clock)
    w._on_signal(signal.SIGTERM, None)
    clock.t += REPEAT / 10
    w._on_signal(signal.SIGTERM, None)
    assert (w.level(), w.signals) == (Halt.CANCEL, 1)


def test_the_end_of_the_grace_aborts(clock):
    w = SignalWatch(5, clock)
    w._on_signal(signal.SIGINT, None)
    clock.t += 4.9
    assert w.level() is Halt.CANCEL
    clock.t += 0.2
    assert w.level() is Halt.ABORT and "grace of 5 s ran out" in w.reason
    clock.t -= 100  # once aborted, always aborted
    assert w.level() is Halt.ABORT


def test_a_signal_to_another_rank_starts_the_grace_here(clock):
    w = SignalWatch(5, clock)
    w.escalate(Halt.CANCEL, "a signal to another rank")
    assert (w.level(), w.reason, w.signals) == (Halt.CANCEL, "a signal to another rank", 0)
    clock.t += 1
    w.escalate(Halt.CANCEL, "again")  # the grace runs from the first
    clock.t += 4
    assert w.level() is Halt.ABORT
    w2 = SignalWatch(5, clock)
    w2.escalate(Halt.ABORT, "another rank aborted")
    assert w2.level() is Halt.ABORT


def test_installed_handlers_catch_both_signals_and_go_back():
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    with SignalWatch(60) as w:
        os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt, no death
        assert w.level() is Halt.CANCEL and w.reason == "SIGINT"
    assert {s: signal.getsignal(s) for s in before} == before
