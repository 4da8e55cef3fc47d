"""pfsxport.state: task records in FSx's DataRepositoryTask shape (T-4, T-5), one active task per
file system (T-6), cancel (T-7), and reaping records whose job is gone."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest

from pfsxport.errors import ExitCode, TaskError
from pfsxport.lifecycle import Counts, TaskLifecycle
from pfsxport.state import (MAX_MESSAGE, STALE_SECONDS, StateDir, TaskRecord, matches, new_task_id)

L = TaskLifecycle
FSX_FIELDS = {"TaskId", "Lifecycle", "Type", "CreationTime", "StartTime", "EndTime", "ResourceARN", "Paths",
              "FileSystemId", "Status", "FailureDetails", "Report"}
FSID = "fs-0123456789abcdef0"


def rec(task_id=None, fsid=FSID, paths=("a",), lifecycle=L.PENDING, **kw) -> TaskRecord:
    return TaskRecord(task_id or new_task_id(), fsid, list(paths), "s3://bucket/reports", "s3://bucket/data/",
                      lifecycle=lifecycle, **kw)


@pytest.fixture(scope="module")
def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.fixture
def state(tmp_path) -> StateDir:
    return StateDir(str(tmp_path / "state"))


# ---- ids and the FSx shape ---------------------------------------------------------------------

def test_task_ids():
    ids = {new_task_id() for _ in range(200)}
    assert len(ids) == 200
    for i in ids:
        assert re.fullmatch(r"task-[0-9a-f]{17}", i)  # T-4 / SPEC §4: task- + 17 hex digits


def _walk(r: TaskRecord, *moves):
    for m in moves:
        r.move(m)
    return r


@pytest.mark.parametrize("moves, end_time, has_end, has_failure", [
    ((), None, False, False),
    ((L.EXECUTING,), None, False, False),
    ((L.EXECUTING, L.CANCELING), 50.0, False, False),   # EndTime only when terminal
    ((L.EXECUTING, L.SUCCEEDED), 50.0, True, False),
    ((L.EXECUTING, L.CANCELING, L.CANCELED), 50.0, True, False),
    ((L.EXECUTING, L.FAILED), 50.0, True, True),
])
def test_to_fsx_shape(moves, end_time, has_end, has_failure):
    r = _walk(rec(creation_time=10.1234, start_time=None if not moves else 20.5, last_updated=30.0,
                  failure_message="2 of 5 entries failed", counts=Counts(5, 3, 2)), *moves)
    r.end_time = end_time
    d = r.to_fsx()
    assert set(d) <= FSX_FIELDS, f"non-FSx fields: {set(d) - FSX_FIELDS}"
    assert re.fullmatch(r"task-[0-9a-f]{17}", d["TaskId"])
    assert d["Lifecycle"] == r.lifecycle.value
    assert d["Type"] == "EXPORT_TO_REPOSITORY"
    assert d["CreationTime"] == 10.123
    assert ("StartTime" in d) is bool(moves)
    assert ("EndTime" in d) is has_end
    if has_end:
        assert d["EndTime"] == 50.0
    assert ("FailureDetails" in d) is has_failure
    if has_failure:
        assert d["FailureDetails"] == {"Message": "2 of 5 entries failed"}
    assert d["ResourceARN"].endswith("task/" + r.task_id)
    assert d["Paths"] == ["a"]
    assert d["FileSystemId"] == FSID
    assert d["Status"] == {"TotalCount": 5, "SucceededCount": 3, "FailedCount": 2, "LastUpdatedTime": 30.0}
    assert d["Report"] == {"Enabled": True, "Path": "s3://bucket/reports", "Format": "REPORT_CSV_20191124",
                           "Scope": "FAILED_FILES_ONLY"}
    json.dumps(d)


@pytest.mark.parametrize("message, expected_len", [("x", 1), ("y" * 256, 256), ("z" * 1000, 256)])
def test_failure_details_at_most_256(message, expected_len):
    r = _walk(rec(), L.EXECUTING)
    r.fail(message)
    d = r.to_fsx()
    assert r.lifecycle is L.FAILED and "EndTime" in d
    assert len(d["FailureDetails"]["Message"]) == expected_len <= MAX_MESSAGE


def test_json_round_trip():
    r = _walk(rec(paths=("a", "b/c"), creation_time=1571863850.075, start_time=1571863851.5, last_updated=1571863852.25,
                  counts=Counts(7, 6, 1), host="node7", pid=4242, ranks=16, slurm_job_id="991"), L.EXECUTING)
    r.fail("1 of 7 entries failed")
    r.end_time = 1571863860.125
    back = TaskRecord.from_json(json.loads(json.dumps(r.to_json())))
    assert back == r
    assert back.to_fsx() == r.to_fsx()


# ---- create: one active task per file system (T-6) -----------------------------------------------

def test_create_then_refuse_second(state):
    first = rec(paths=("a",))
    state.create(first)
    assert state.read(first.task_id).lifecycle is L.PENDING
    for paths in (("a",), ("b",)):  # a duplicate and a different task are both refused
        with pytest.raises(TaskError) as ei:
            state.create(rec(paths=paths))
        assert ei.value.name == "DataRepositoryTaskExecuting"
        assert ei.value.exit_code == ExitCode.TASK_EXECUTING == 6
        assert first.task_id in str(ei.value)
    assert "duplicate" in str(pytest.raises(TaskError, state.create, rec(paths=("a",))).value)
    assert [r.task_id for r in state.all()] == [first.task_id]


def test_executing_task_blocks_too(state):
    first = _walk(rec(), L.EXECUTING)
    state.create(first)
    with pytest.raises(TaskError) as ei:
        state.create(rec())
    assert ei.value.name == "DataRepositoryTaskExecuting"


def test_other_file_system_is_not_blocked(state):
    state.create(rec(fsid=FSID))
    other = rec(fsid="fs-fedcba9876543210f")
    state.create(other)
    assert state.read(other.task_id).file_system_id == "fs-fedcba9876543210f"


@pytest.mark.parametrize("moves", [(L.EXECUTING, L.SUCCEEDED), (L.EXECUTING, L.FAILED),
                                   (L.CANCELING, L.CANCELED)])
def test_ended_task_does_not_block(state, moves):
    state.create(_walk(rec(), *moves))
    state.create(rec())
    assert len(list(state.all())) == 2


@pytest.mark.parametrize("lifecycle, reaped", [(L.EXECUTING, L.FAILED), (L.CANCELING, L.CANCELED)])
def test_dead_owner_is_reaped_and_does_not_block(state, dead_pid, lifecycle, reaped):
    stale = rec(lifecycle=lifecycle, pid=dead_pid, host=socket.gethostname())
    state.ensure()
    state.write(stale)
    new = rec()
    state.create(new)
    r = state.read(stale.task_id)
    assert r.lifecycle is reaped
    assert r.end_time is not None
    d = r.to_fsx()
    assert "EndTime" in d
    if reaped is L.FAILED:
        assert 1 <= len(d["FailureDetails"]["Message"]) <= 256
    assert state.read(new.task_id).lifecycle is L.PENDING


def test_pending_task_waits_for_its_job_whatever_its_creator(state, dead_pid, monkeypatch):
    """A PENDING task's creator (`task create`) exits at once; the task waits for the job that
    will run it. Without a Slurm job it is never reaped; with one, when Slurm no longer has it."""
    pending = rec(lifecycle=L.PENDING, pid=dead_pid, host=socket.gethostname(), last_updated=0.0)
    assert not state.is_gone(pending)
    pending.slurm_job_id = "4242"
    monkeypatch.setattr("pfsxport.state.slurm_job_gone", lambda job: job == "4242")
    assert state.is_gone(pending)


def test_live_owner_on_this_host_is_not_reaped_even_if_old(state):
    r = rec(lifecycle=L.EXECUTING, pid=os.getpid(), host=socket.gethostname(), last_updated=0.0)
    assert not state.is_gone(r)


@pytest.mark.parametrize("age, gone", [(0, False), (STALE_SECONDS / 2, False), (STALE_SECONDS + 60, True)])
def test_other_host_is_gone_when_stale(state, age, gone):
    now = time.time()
    r = rec(lifecycle=L.EXECUTING, host="some-other-node.invalid", pid=1, last_updated=now - age)
    assert state.is_gone(r, now) is gone


def test_terminal_record_is_never_gone(state, dead_pid):
    r = _walk(rec(pid=dead_pid, host=socket.gethostname()), L.EXECUTING, L.SUCCEEDED)
    assert not state.is_gone(r)


# ---- cancel (T-7) --------------------------------------------------------------------------------

def test_request_cancel_of_a_pending_task_ends_it_at_once(state):
    r = rec(lifecycle=L.PENDING)
    state.create(r)
    out = state.request_cancel(r.task_id)
    assert out.lifecycle is L.CANCELED and state.read(r.task_id).lifecycle is L.CANCELED
    assert "EndTime" in state.read(r.task_id).to_fsx()
    with pytest.raises(TaskError) as ei:  # and a job that starts it late does not run it
        state.adopt(r.task_id, 2)
    assert ei.value.name == "DataRepositoryTaskEnded" and ei.value.exit_code == 4


@pytest.mark.parametrize("lifecycle", [L.EXECUTING])
def test_request_cancel(state, lifecycle):
    r = rec(lifecycle=lifecycle)
    state.create(r)
    assert not state.cancel_requested(r.task_id)
    out = state.request_cancel(r.task_id)
    assert out.lifecycle is L.CANCELING
    assert state.read(r.task_id).lifecycle is L.CANCELING
    assert state.cancel_requested(r.task_id)
    assert "EndTime" not in state.read(r.task_id).to_fsx()
    # asking again is harmless
    assert state.request_cancel(r.task_id).lifecycle is L.CANCELING


@pytest.mark.parametrize("moves", [(L.EXECUTING, L.SUCCEEDED), (L.EXECUTING, L.FAILED),
                                   (L.CANCELING, L.CANCELED)])
def test_cancel_ended_task(state, moves):
    r = _walk(rec(), *moves)
    state.create(r)
    with pytest.raises(TaskError) as ei:
        state.request_cancel(r.task_id)
    assert ei.value.name == "DataRepositoryTaskEnded"
    assert not state.cancel_requested(r.task_id)


def test_cancel_task_whose_job_died(state, dead_pid):
    r = rec(lifecycle=L.EXECUTING, pid=dead_pid, host=socket.gethostname())
    state.ensure()
    state.write(r)
    with pytest.raises(TaskError) as ei:
        state.request_cancel(r.task_id)
    assert ei.value.name == "DataRepositoryTaskEnded"
    assert state.read(r.task_id).lifecycle is L.FAILED


@pytest.mark.parametrize("task_id", ["task-00000000000000000", "task-unknown"])
def test_cancel_unknown(state, task_id):
    state.ensure()
    with pytest.raises(TaskError) as ei:
        state.request_cancel(task_id)
    assert ei.value.name == "DataRepositoryTaskNotFound"


def test_read_unknown(state):
    with pytest.raises(TaskError) as ei:
        state.read("task-00000000000000000")
    assert ei.value.name == "DataRepositoryTaskNotFound"


# ---- storage ---------------------------------------------------------------------------------------

def test_records_are_whole_json_files(state):
    r = rec()
    state.create(r)
    names = os.listdir(state.tasks)
    assert f"{r.task_id}.json" in names
    assert not [n for n in names if n.endswith(".tmp")]
    with open(state.record_path(r.task_id)) as f:
        d = json.load(f)
    assert d["TaskId"] == r.task_id


def test_all_skips_broken_records(state):
    r = rec()
    state.create(r)
    with open(os.path.join(state.tasks, "task-deadbeefdeadbeef0.json"), "w") as f:
        f.write("{}")
    assert [x.task_id for x in state.all()] == [r.task_id]


def test_all_on_missing_dir(tmp_path):
    assert list(StateDir(str(tmp_path / "nothing")).all()) == []


@pytest.mark.parametrize("filters, expected", [
    ([], True),
    ([("file-system-id", [FSID])], True),
    ([("file-system-id", ["fs-11111111"])], False),
    ([("task-lifecycle", ["EXECUTING", "PENDING"])], True),
    ([("task-lifecycle", ["FAILED"])], False),
    ([("file-system-id", [FSID]), ("task-lifecycle", ["FAILED"])], False),
    ([("data-repository-association-id", ["dra-01234567"])], False),
])
def test_matches(filters, expected):
    assert matches(rec(lifecycle=L.PENDING), filters) is expected


def test_matches_unknown_filter():
    with pytest.raises(TaskError) as ei:
        matches(rec(), [("bogus", ["x"])])
    assert ei.value.name == "BadRequest"
