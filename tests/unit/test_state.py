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
from pfsxport.state import MAX_MESSAGE, STALE_SECONDS, StateDir, TaskRecord, matches, new_task_id

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
    why = str(pytest.raises(TaskError, state.create, rec(paths=("b",))).value)
    assert "another data repository task" in why and "is PENDING" in why and "executing" not in why
    assert f"pfsxport export --task-id {first.task_id}" in why


def test_executing_task_blocks_too(state):
    first = _walk(rec(), L.EXECUTING)
    state.create(first)
    with pytest.raises(TaskError) as ei:
        state.create(rec())
    assert ei.value.name == "DataRepositoryTaskExecuting" and "is currently executing" in str(ei.value)


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


# ---- liveness: what the kernel drops when the owner dies ------------------------------------------

def _proc_stat(pid: int) -> list[str]:
    """Fields 3.. of /proc/PID/stat (after the command name): [0] is the state, [19] the start time."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()


def _wait_zombie(pid: int) -> None:
    deadline = time.monotonic() + 30
    while _proc_stat(pid)[0] != "Z":
        assert time.monotonic() < deadline, f"{pid} did not exit"
        time.sleep(0.01)


@pytest.fixture
def zombie():
    """A process that has exited and that nobody has reaped yet, as a killed job's rank is
    until init gets to it: os.kill(pid, 0) still succeeds."""
    p = subprocess.Popen(["true"])
    _wait_zombie(p.pid)
    yield p.pid
    p.wait()


@pytest.fixture
def sleeper():
    """A live process that has nothing to do with any task."""
    p = subprocess.Popen(["sleep", "60"])
    yield p.pid
    p.kill()
    p.wait()


def test_zombie_owner_of_an_old_record_is_gone(state, zombie):
    """A record written without a lock file (an older version): the pid is checked, and a
    zombie is dead."""
    r = rec(lifecycle=L.EXECUTING, pid=zombie, host=socket.gethostname())
    assert state.is_gone(r)


_ADOPT_AND_EXIT = """
import sys
from pfsxport.lifecycle import TaskLifecycle
from pfsxport.state import StateDir
s = StateDir(sys.argv[1])
r = s.adopt(sys.argv[2], 1)
r.move(TaskLifecycle.EXECUTING)
s.write(r)
"""


def test_owner_that_died_unreaped_is_gone_and_a_rerun_is_accepted(state):
    """The job's process took the task over, started it and died; it is a zombie nobody has
    reaped yet. Its task does not block a re-run, and nothing of its liveness is left behind."""
    pending = rec()
    state.create(pending)
    child = subprocess.Popen([sys.executable, "-c", _ADOPT_AND_EXIT, state.root, pending.task_id])
    try:
        _wait_zombie(child.pid)
        r = state.read(pending.task_id)
        assert (r.lifecycle, r.pid) == (L.EXECUTING, child.pid)
        assert state.is_gone(r)
        rerun = rec()
        state.create(rerun)
        assert state.read(pending.task_id).lifecycle is L.FAILED
        assert [n for n in os.listdir(state.tasks) if n.startswith(pending.task_id)] == [f"{pending.task_id}.json"]
    finally:
        child.wait()


def _start_ticks(pid: int) -> int:
    return int(_proc_stat(pid)[19])


def test_live_unrelated_process_with_the_recorded_pid_is_not_the_owner(state, sleeper):
    """The owner died and its pid went to another process: the start time recorded with the
    pid tells them apart."""
    r = rec(lifecycle=L.EXECUTING, host=socket.gethostname())
    d = r.to_json()
    d["Owner"].update({"Pid": sleeper, "StartTicks": _start_ticks(os.getpid())})
    state.ensure()
    with open(state.record_path(r.task_id), "w") as f:
        json.dump(d, f)
    assert _start_ticks(sleeper) != _start_ticks(os.getpid())
    assert state.is_gone(state.read(r.task_id))
    state.create(rec())
    assert state.read(r.task_id).lifecycle is L.FAILED


def test_a_free_lock_file_means_gone_whoever_has_the_pid(state, sleeper):
    """The lock file of a job that was killed stays; nobody holds it, so the task is gone even
    when its pid now belongs to a live process, on this host or another."""
    for host in (socket.gethostname(), "some-other-node.invalid"):
        r = rec(lifecycle=L.PENDING, host=host)
        state.create(r, own=True)
        state.release(r.task_id, remove=False)  # as a kill leaves it: the file, no holder
        assert os.path.exists(state.owner_path(r.task_id))
        r = state.read(r.task_id)
        r.pid, r.lifecycle, r.last_updated = sleeper, L.EXECUTING, time.time()
        state.write(r)
        assert state.is_gone(r)
        assert state.reap(r).lifecycle is L.FAILED
        assert not os.path.exists(state.owner_path(r.task_id))


def test_owner_holding_its_lock_is_alive_even_if_stale_on_another_host(state):
    r = rec(lifecycle=L.PENDING)
    state.create(r, own=True)
    r.move(L.EXECUTING)
    r.host, r.last_updated = "some-other-node.invalid", 0.0
    state.write(r)
    assert not state.is_gone(state.read(r.task_id))
    with pytest.raises(TaskError) as ei:
        state.create(rec())
    assert ei.value.exit_code == ExitCode.TASK_EXECUTING


def test_lock_file_goes_with_the_owners_last_write(state):
    r = rec(lifecycle=L.PENDING)
    state.create(r, own=True)
    assert os.path.exists(state.owner_path(r.task_id))
    r.move(L.EXECUTING)
    state.write(r)
    assert os.path.exists(state.owner_path(r.task_id))
    r.move(L.SUCCEEDED)
    state.write(r)
    assert not os.path.exists(state.owner_path(r.task_id))
    assert not state.is_gone(state.read(r.task_id))


def test_pending_task_whose_adopting_job_died_is_gone(state):
    """`export --task-id` took a PENDING task and died before starting it."""
    pending = rec()
    state.create(pending)
    child = subprocess.Popen([sys.executable, "-c", "import sys\nfrom pfsxport.state import StateDir\n"
                              "StateDir(sys.argv[1]).adopt(sys.argv[2], 1)", state.root, pending.task_id])
    child.wait()
    assert state.is_gone(state.read(pending.task_id))
    state.create(rec())
    assert state.read(pending.task_id).lifecycle is L.FAILED


# ---- a state directory that cannot be used, or is corrupt ------------------------------------------

def test_a_state_directory_that_is_a_file_is_refused_with_its_path(tmp_path):
    from pfsxport.errors import StateError

    (tmp_path / "st").write_text("a file")
    s = StateDir(str(tmp_path / "st"))
    for call in (lambda: s.create(rec(), own=True), lambda: list(s.all()), lambda: s.read("task-00000000000000000")):
        with pytest.raises(StateError) as ei:
            call()
        assert ei.value.exit_code == ExitCode.STATE_UNUSABLE
        assert "Not a directory" in str(ei.value) and str(tmp_path / "st") in str(ei.value)


def test_a_cut_off_record_is_named_and_warned_about(state, caplog):
    from pfsxport.errors import StateError

    good, cut = rec(), rec(fsid="fs-fedcba9876543210f")
    state.create(good)
    state.create(cut)
    path = state.record_path(cut.task_id)
    with open(path, "r+") as f:
        f.truncate(40)
    with pytest.raises(StateError) as ei:
        state.read(cut.task_id)
    assert ei.value.name == "StateFileCorrupt" and path in str(ei.value)
    assert [r.task_id for r in state.all()] == [good.task_id]
    assert [r.levelname for r in caplog.records if path in r.getMessage()] == ["WARNING"]
