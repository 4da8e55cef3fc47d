"""Single-PUT bodies a rank holds at once are capped (transfer.parts_in_flight x part_size):
many threads exporting files just under the multipart threshold wait for room instead of
holding concurrency x threshold bytes. The store here only counts what it is holding."""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from pfsxport.export import Transfer, TransferOptions
from pfsxport.metadata import S3Url
from pfsxport.model import Entry, RowStatus

KiB = 1 << 10


class HoldingStore:
    """Keeps each body for a while, as a slow network would, and notes the most it held."""

    def __init__(self):
        self.lock = threading.Lock()
        self.held = self.peak = 0
        self.keys: list[str] = []

    def put_object(self, key, body, metadata, content_type, crc=None):
        with self.lock:
            self.held += len(body)
            self.peak = max(self.peak, self.held)
        time.sleep(0.02)
        with self.lock:
            self.held -= len(body)
            self.keys.append(key)
        return "etag"

    def take_retries(self):
        return 0


def export_all(root, names, budget):
    store = HoldingStore()
    t = Transfer(str(root), S3Url("b", "x/"), store, None,
                 TransferOptions(1 << 20, 8 << 20, 1 << 40, 64, 3, body_budget=budget))
    entries = [Entry.from_stat(n, os.lstat(root / n)) for n in names]
    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(t.export_entry, entries))
    assert all(o.rows[0].status is RowStatus.SUCCEEDED for o in outcomes)
    assert sorted(store.keys) == sorted(f"x/{n}" for n in names)
    return store.peak


@pytest.fixture
def tree(tmp_path):
    names = [f"f{i}" for i in range(16)]
    for n in names:
        (tmp_path / n).write_bytes(os.urandom(300 * KiB))
    (tmp_path / "larger-than-the-budget").write_bytes(os.urandom(1000 * KiB))
    return tmp_path, names


def test_bodies_in_memory_stay_within_the_budget(tree):
    root, names = tree
    assert export_all(root, names, 0) > 700 * KiB  # uncapped, the threads overlap
    assert export_all(root, names, 700 * KiB) <= 700 * KiB


def test_a_file_larger_than_the_whole_budget_still_goes(tree):
    root, names = tree
    assert export_all(root, names + ["larger-than-the-budget"], 700 * KiB) <= 1000 * KiB
