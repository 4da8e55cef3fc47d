"""The shared queue's bookkeeping on rank 0 (parallel._Queue): over only when no item is left
and no rank holds one, pushes counted before the pusher's next request."""
from __future__ import annotations

from pfsxport.parallel import SOLO, _Queue, share_queue


def test_over_only_when_empty_and_idle():
    q = _Queue(["a"])
    assert q.serve(1, [], True) == ("item", "a")
    assert q.serve(2, [], True) == ("wait", None)  # rank 1 may still push
    assert q.serve(1, ["b", "c"], False) is None
    assert q.serve(2, [], True) == ("item", "b")
    assert q.serve(1, [], True) == ("item", "c")
    assert q.serve(2, [], True) == ("wait", None)
    assert q.serve(1, [], True) == ("stop", None)
    assert q.serve(2, [], True) == ("stop", None) and q.handed == 3


def test_a_world_of_one_runs_every_item_and_what_it_pushes():
    class One:
        rank, size = SOLO.rank, SOLO.size

    seen = []

    def handle(item, push):
        seen.append(item)
        if item < 3:
            push([item + 1, item + 10])
    assert share_queue(One(), [0], handle) == 7
    assert sorted(seen) == [0, 1, 2, 3, 10, 11, 12]
