"""Run inside `mpiexec -n N python -m pytest --with-mpi tests/mpi` (tests/e2e/test_mpi_suite.py
does that for N = 2 and 4). Asserts collectively, so a failure on any rank fails every rank."""
from __future__ import annotations

import os
import threading
import time
from collections import Counter

import pytest

from pfsxport.model import DirUnit, Entry, EntryKind, ReportRow, RowStatus, UnitOutcome
from pfsxport.parallel import World, run_work
from pfsxport.schedule import STOP, Scheduler
from pfsxport.worker import Worker

pytestmark = pytest.mark.mpi


@pytest.fixture(scope="module")
def world():
    return World()


def test_world_size_is_what_mpiexec_was_asked_for(world):
    # a wrong launcher gives N singletons that would each pass alone
    assert world.size == int(os.environ["EXPECTED_WORLD_SIZE"]) > 1
    assert sorted(world.allgather(world.rank)) == list(range(world.size))
    assert world.bcast("from rank 0" if world.rank == 0 else None) == "from rank 0"


class FakeTree:
    """A synthetic namespace: directory dN/... has FANOUT subdirectories down to DEPTH and
    FILES files each; nothing touches disk or S3."""

    FANOUT, DEPTH, FILES = 3, 4, 7

    def __init__(self, rank):
        self.rank = rank

    def route(self, entries):
        from pfsxport.model import BatchUnit

        return [BatchUnit(entries[i:i + 5]) for i in range(0, len(entries), 5)]

    def run(self, unit):
        assert isinstance(unit, DirUnit)
        depth = unit.path.count("/") + 1 if unit.path else 0
        time.sleep(0.002)  # a listing takes time: one rank alone cannot finish before the others take part
        files = [Entry(f"{unit.path}/f{i}".lstrip("/"), EntryKind.FILE, 1, 0o100644, 0, 0, 0, 0, 0)
                 for i in range(self.FILES)]
        dirs = [] if depth >= self.DEPTH else [f"{unit.path}/d{i}".lstrip("/") for i in range(self.FANOUT)]
        return UnitOutcome(unit.uid, units=self.route(files) + [DirUnit(d) for d in dirs])

    def intend(self, units):
        pass

    def export_entry(self, e):
        return UnitOutcome(0, rows=[ReportRow(e.path, "file", 1, RowStatus.SUCCEEDED, rank=self.rank)])

    @classmethod
    def expected_files(cls):
        dirs = sum(cls.FANOUT ** d for d in range(cls.DEPTH + 1))
        return dirs * cls.FILES


def test_every_unit_runs_exactly_once_across_ranks(world):
    rows: list[ReportRow] = []
    lock = threading.Lock()
    scheduler = Scheduler([DirUnit("")], world.size) if world.rank == 0 else None
    run_work(world, scheduler, lock,
             lambda ch, peers: Worker(FakeTree(world.rank), ch, 4, 2, rows=rows.extend, peers=peers), STOP)
    rows = [r for mine in world.allgather(rows) for r in mine]  # each rank kept its own rows
    ok = True
    if world.rank == 0:
        paths = [r.path for r in rows]
        ok = (len(paths) == len(set(paths)) == FakeTree.expected_files()
              and scheduler.finished and len({r.rank for r in rows}) > 1)
    assert all(world.allgather(world.bcast(ok)))


class FlatTree(FakeTree):
    """One directory of many files, each taking a moment to send (as a PUT would)."""

    FILES = 8000

    def run(self, unit):
        files = [Entry(f"f{i}", EntryKind.FILE, 1, 0o100644, 0, 0, 0, 0, 0) for i in range(self.FILES)]
        return UnitOutcome(unit.uid, units=self.route(files))

    def export_entry(self, e):
        time.sleep(0.001)
        return super().export_entry(e)


def test_one_huge_directory_is_shared_by_every_rank_without_passing_through_rank_0(world):
    rows: list[ReportRow] = []
    scheduler = Scheduler([DirUnit("")], world.size) if world.rank == 0 else None
    traffic = run_work(world, scheduler, threading.Lock(),
                       lambda ch, peers: Worker(FlatTree(world.rank), ch, 8, 2, rows=rows.extend, peers=peers), STOP)
    rows = [r for mine in world.allgather(rows) for r in mine]
    ok = True
    if world.rank == 0:
        per_rank = Counter(r.rank for r in rows)
        ok = (sorted(r.path for r in rows) == sorted(f"f{i}" for i in range(FlatTree.FILES))
              and set(per_rank) == set(range(world.size))  # every rank sent some of the one directory
              and min(per_rank.values()) >= FlatTree.FILES // (4 * world.size)
              and traffic.moved > 0  # by theft, rank to rank
              and traffic.requests < FlatTree.FILES // 10)  # rank 0 hears of work in counts, not entries
        if not ok:
            print("per rank", per_rank, traffic)
    assert all(world.allgather(world.bcast(ok)))
