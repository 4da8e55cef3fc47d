"""Task state machine (FSx T-1, T-2) and its counters.

Pure: standard library only.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class TaskLifecycle(str, Enum):
    PENDING = "PENDING"
    EXECUTING = "EXECUTING"
    CANCELING = "CANCELING"
    CANCELED = "CANCELED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def active(self) -> bool:
        return not self.terminal


TERMINAL = frozenset({TaskLifecycle.CANCELED, TaskLifecycle.SUCCEEDED, TaskLifecycle.FAILED})

_ALLOWED: dict[TaskLifecycle, frozenset[TaskLifecycle]] = {
    TaskLifecycle.PENDING: frozenset({TaskLifecycle.EXECUTING, TaskLifecycle.CANCELING,
                                      TaskLifecycle.FAILED}),
    TaskLifecycle.EXECUTING: frozenset({TaskLifecycle.SUCCEEDED, TaskLifecycle.FAILED,
                                        TaskLifecycle.CANCELING}),
    TaskLifecycle.CANCELING: frozenset({TaskLifecycle.CANCELED}),
    TaskLifecycle.CANCELED: frozenset(),
    TaskLifecycle.SUCCEEDED: frozenset(),
    TaskLifecycle.FAILED: frozenset(),
}


class InvalidTransition(ValueError):
    pass


def transition(current: TaskLifecycle, new: TaskLifecycle) -> TaskLifecycle:
    """Return `new` if the move is allowed, else raise InvalidTransition."""
    if new not in _ALLOWED[current]:
        raise InvalidTransition(f"task cannot go from {current.value} to {new.value}")
    return new


@dataclass(slots=True)
class Counts:
    """Status counts: files, directories and symlinks; warnings count as succeeded (T-5)."""

    total: int = 0
    succeeded: int = 0
    failed: int = 0

    def add(self, succeeded: bool) -> None:
        self.total += 1
        if succeeded:
            self.succeeded += 1
        else:
            self.failed += 1


def end_state(canceled: bool, failed: int) -> TaskLifecycle:
    """Where a task that ran ends: CANCELED if asked, else FAILED when any file failed (T-3)."""
    if canceled:
        return TaskLifecycle.CANCELED
    return TaskLifecycle.FAILED if failed > 0 else TaskLifecycle.SUCCEEDED
