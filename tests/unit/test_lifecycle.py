"""pfsxport.lifecycle: the task state machine (FSX-FACTS T-1, T-2, T-3, T-5; SPEC §4)."""
from __future__ import annotations

import itertools

import pytest

from pfsxport.lifecycle import TERMINAL, Counts, InvalidTransition, TaskLifecycle, end_state, transition

L = TaskLifecycle

# T-2: PENDING -> EXECUTING -> {SUCCEEDED | FAILED}; {PENDING | EXECUTING} -> CANCELING -> CANCELED.
# PENDING -> FAILED too: SPEC §2 makes a task whose path does not exist FAILED "before any upload" (T-3).
ALLOWED = {
    (L.PENDING, L.EXECUTING),
    (L.PENDING, L.CANCELING),
    (L.PENDING, L.FAILED),
    (L.EXECUTING, L.SUCCEEDED),
    (L.EXECUTING, L.FAILED),
    (L.EXECUTING, L.CANCELING),
    (L.CANCELING, L.CANCELED),
}
ALL_PAIRS = list(itertools.product(L, L))


def test_lifecycle_values_are_fsx_names():
    assert {x.value for x in L} == {"PENDING", "EXECUTING", "CANCELING", "CANCELED", "SUCCEEDED", "FAILED"}


@pytest.mark.parametrize("current, new", sorted(ALLOWED, key=str))
def test_allowed_transitions(current, new):
    assert transition(current, new) is new


@pytest.mark.parametrize("current, new", [p for p in ALL_PAIRS if p not in ALLOWED],
                         ids=[f"{a.value}->{b.value}" for a, b in ALL_PAIRS if (a, b) not in ALLOWED])
def test_forbidden_transitions(current, new):
    with pytest.raises(InvalidTransition) as ei:
        transition(current, new)
    assert current.value in str(ei.value) and new.value in str(ei.value)
    assert isinstance(ei.value, ValueError)


@pytest.mark.parametrize("state, terminal", [
    (L.PENDING, False), (L.EXECUTING, False), (L.CANCELING, False),
    (L.CANCELED, True), (L.SUCCEEDED, True), (L.FAILED, True),
])
def test_terminal_states(state, terminal):
    assert state.terminal is terminal
    assert state.active is (not terminal)
    assert (state in TERMINAL) is terminal
    if terminal:  # nothing leaves a terminal state
        for new in L:
            with pytest.raises(InvalidTransition):
                transition(state, new)


@pytest.mark.parametrize("canceled, failed, expected", [
    (False, 0, L.SUCCEEDED),
    (False, 1, L.FAILED),        # T-3: FAILED whenever FailedCount > 0
    (False, 10_000, L.FAILED),
    (True, 0, L.CANCELED),
    (True, 3, L.CANCELED),       # a cancel wins over failures
])
def test_end_state(canceled, failed, expected):
    assert end_state(canceled, failed) is expected


@pytest.mark.parametrize("outcomes, total, succeeded, failed", [
    ([], 0, 0, 0),
    ([True], 1, 1, 0),
    ([False], 1, 0, 1),
    ([True, False, True, True, False], 5, 3, 2),
])
def test_counts(outcomes, total, succeeded, failed):
    c = Counts()
    for ok in outcomes:
        c.add(ok)
    assert (c.total, c.succeeded, c.failed) == (total, succeeded, failed)
    assert c.total == c.succeeded + c.failed  # T-5 on completion
