"""Task records in the state directory: create, refresh, describe, cancel.

Local: no MPI, no S3. Records are JSON written atomically (temporary file, fsync, rename),
so a reader on another node always sees a whole record. One record per task:
`STATE/tasks/TASK_ID.json`; a cancel request is the file `STATE/tasks/TASK_ID.cancel`;
reports live in `STATE/tasks/TASK_ID/`. Creating a task takes a lock so that the
one-task-per-file-system rule (T-6) holds between concurrent `export` commands.
"""
from __future__ import annotations

import fcntl
import json
import os
import secrets
import socket
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from .errors import ConfigError, ExitCode, TaskError
from .lifecycle import Counts, TaskLifecycle, transition

TASK_TYPE = "EXPORT_TO_REPOSITORY"
REPORT_FORMAT = "REPORT_CSV_20191124"
REPORT_SCOPE = "FAILED_FILES_ONLY"
MAX_MESSAGE = 256
# A running task refreshes its record every few seconds; one not refreshed for this long,
# whose process is not alive on this host, belongs to a job that is gone.
STALE_SECONDS = 120.0


def new_task_id() -> str:
    return "task-" + secrets.token_hex(9)[:17]


@dataclass
class TaskRecord:
    task_id: str
    file_system_id: str
    paths: list[str]
    report_path: str
    repository: str
    lifecycle: TaskLifecycle = TaskLifecycle.PENDING
    creation_time: float = field(default_factory=time.time)
    start_time: float | None = None
    end_time: float | None = None
    counts: Counts = field(default_factory=Counts)
    last_updated: float = field(default_factory=time.time)
    failure_message: str | None = None
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    ranks: int = 1
    slurm_job_id: str | None = field(default_factory=lambda: os.environ.get("SLURM_JOB_ID"))
    request: dict | None = None  # a PENDING task's export arguments and working directory

    def move(self, new: TaskLifecycle) -> None:
        self.lifecycle = transition(self.lifecycle, new)

    def fail(self, message: str) -> None:
        self.failure_message = message[:MAX_MESSAGE]
        self.move(TaskLifecycle.FAILED)
        self.end_time = time.time()

    def to_fsx(self) -> dict[str, Any]:
        """The DataRepositoryTask shape of the FSx API (T-4, T-5)."""
        d: dict[str, Any] = {
            "TaskId": self.task_id,
            "Lifecycle": self.lifecycle.value,
            "Type": TASK_TYPE,
            "CreationTime": round(self.creation_time, 3),
        }
        if self.start_time is not None:
            d["StartTime"] = round(self.start_time, 3)
        if self.end_time is not None and self.lifecycle.terminal:
            d["EndTime"] = round(self.end_time, 3)
        d["ResourceARN"] = f"arn:pfsxport:fsx:local::task/{self.task_id}"
        d["Paths"] = list(self.paths)
        d["FileSystemId"] = self.file_system_id
        d["Status"] = {
            "TotalCount": self.counts.total,
            "SucceededCount": self.counts.succeeded,
            "FailedCount": self.counts.failed,
            "LastUpdatedTime": round(self.last_updated, 3),
        }
        if self.lifecycle is TaskLifecycle.FAILED and self.failure_message:
            d["FailureDetails"] = {"Message": self.failure_message}
        d["Report"] = {"Enabled": True, "Path": self.report_path, "Format": REPORT_FORMAT,
                       "Scope": REPORT_SCOPE}
        return d

    def to_json(self) -> dict[str, Any]:
        d = self.to_fsx()
        d["FailureMessage"] = self.failure_message
        d["EndTime"] = self.end_time
        d["Owner"] = {"Host": self.host, "Pid": self.pid, "Ranks": self.ranks, "SlurmJobId": self.slurm_job_id}
        d["DataRepositoryPath"] = self.repository
        d["Request"] = self.request
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "TaskRecord":
        st = d.get("Status", {})
        owner = d.get("Owner", {})
        return cls(
            task_id=d["TaskId"], file_system_id=d["FileSystemId"], paths=d.get("Paths", []),
            report_path=d.get("Report", {}).get("Path", ""), repository=d.get("DataRepositoryPath", ""),
            lifecycle=TaskLifecycle(d["Lifecycle"]), creation_time=d["CreationTime"],
            start_time=d.get("StartTime"), end_time=d.get("EndTime"),
            counts=Counts(st.get("TotalCount", 0), st.get("SucceededCount", 0), st.get("FailedCount", 0)),
            last_updated=st.get("LastUpdatedTime", d["CreationTime"]), failure_message=d.get("FailureMessage"),
            host=owner.get("Host", ""), pid=owner.get("Pid", 0), ranks=owner.get("Ranks", 1),
            slurm_job_id=owner.get("SlurmJobId"), request=d.get("Request"))


def _write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: str, obj: Any) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _write_atomic(path, json.dumps(obj, indent=1).encode())


class FileLock:
    """An flock on a file in the state directory (cluster-wide where the state directory
    is on a file system with flock, e.g. Lustre mounted with -o flock)."""

    def __init__(self, path: str):
        self.path = path
        self._f = None

    def acquire(self, wait: bool) -> bool:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            f.close()
            return False
        self._f = f
        return True

    def release(self) -> None:
        if self._f is not None:
            fcntl.flock(self._f, fcntl.LOCK_UN)
            self._f.close()
            self._f = None

    def announce(self, who: str) -> None:
        """Write who holds the lock into it (read by `holder`)."""
        self._f.seek(0)
        self._f.truncate()
        self._f.write(who)
        self._f.flush()

    def holder(self) -> str:
        try:
            with open(self.path, encoding="utf-8") as f:
                return f.read().strip()
        except OSError:
            return ""


class StateDir:
    def __init__(self, root: str):
        self.root = root
        self.tasks = os.path.join(root, "tasks")

    def ensure(self) -> None:
        os.makedirs(self.tasks, exist_ok=True)

    def record_path(self, task_id: str) -> str:
        return os.path.join(self.tasks, task_id + ".json")

    def task_dir(self, task_id: str) -> str:
        return os.path.join(self.tasks, task_id)

    def cancel_path(self, task_id: str) -> str:
        return os.path.join(self.tasks, task_id + ".cancel")

    def write(self, rec: TaskRecord) -> None:
        _write_atomic(self.record_path(rec.task_id), json.dumps(rec.to_json(), indent=1).encode())

    def read(self, task_id: str) -> TaskRecord:
        try:
            with open(self.record_path(task_id), encoding="utf-8") as f:
                return TaskRecord.from_json(json.load(f))
        except FileNotFoundError:
            raise TaskError("DataRepositoryTaskNotFound", f"no task {task_id} in {self.tasks}") from None

    def all(self) -> Iterator[TaskRecord]:
        try:
            names = sorted(os.listdir(self.tasks))
        except FileNotFoundError:
            return
        for n in names:
            if n.startswith("task-") and n.endswith(".json"):
                try:
                    yield self.read(n[:-5])
                except (TaskError, ValueError, KeyError):
                    continue

    @contextmanager
    def _lock(self) -> Iterator[None]:
        self.ensure()
        with open(os.path.join(self.tasks, ".lock"), "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def is_gone(self, rec: TaskRecord, now: float | None = None) -> bool:
        """True when the job that owns an active record is no longer running."""
        if rec.lifecycle.terminal:
            return False
        if rec.lifecycle is TaskLifecycle.PENDING:  # waits for its job (or for `export --task-id`)
            return slurm_job_gone(rec.slurm_job_id) if rec.slurm_job_id else False
        if rec.host == socket.gethostname() and rec.pid:
            try:
                os.kill(rec.pid, 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                pass
            return False
        return ((now or time.time()) - rec.last_updated) > STALE_SECONDS

    def reap(self, rec: TaskRecord) -> TaskRecord:
        """Mark an active record whose job is gone as FAILED (CANCELED if a cancel was asked)."""
        if self.is_gone(rec):
            if rec.lifecycle is TaskLifecycle.CANCELING:
                rec.move(TaskLifecycle.CANCELED)
                rec.end_time = time.time()
            else:
                if rec.lifecycle is TaskLifecycle.PENDING:
                    rec.move(TaskLifecycle.EXECUTING)
                rec.fail("the job running this task ended without finishing it")
            self.write(rec)
        return rec

    def create(self, rec: TaskRecord) -> None:
        """Record a new PENDING task, refusing when another one is active on the file system."""
        with self._lock():
            for other in self.all():
                if other.file_system_id != rec.file_system_id or other.lifecycle.terminal:
                    continue
                if self.reap(other).lifecycle.terminal:
                    continue
                same = sorted(other.paths) == sorted(rec.paths)
                raise TaskError(
                    "DataRepositoryTaskExecuting",
                    f"{'a duplicate of this task' if same else 'another data repository task'} "
                    f"({other.task_id}, {other.lifecycle.value}) is currently executing on file system "
                    f"{rec.file_system_id}; wait for it or cancel it with: pfsxport task cancel {other.task_id}",
                    ExitCode.TASK_EXECUTING)
            self.write(rec)

    def request_cancel(self, task_id: str) -> TaskRecord:
        """Ask a PENDING or EXECUTING task to stop (T-7). A running job sees the request
        within a second and moves the task on to CANCELED; a PENDING one (queued in Slurm
        or never started) has its job removed and ends CANCELED at once."""
        with self._lock():
            rec = self.reap(self.read(task_id))
            if rec.lifecycle.terminal:
                raise TaskError("DataRepositoryTaskEnded",
                                f"task {task_id} has already ended ({rec.lifecycle.value})")
            _write_atomic(self.cancel_path(task_id), str(time.time()).encode())
            if rec.lifecycle is TaskLifecycle.PENDING:
                if rec.slurm_job_id:
                    subprocess.run(["scancel", rec.slurm_job_id], capture_output=True, timeout=60)
                rec.move(TaskLifecycle.CANCELING)
                rec.move(TaskLifecycle.CANCELED)
                rec.end_time = time.time()
            elif rec.lifecycle is not TaskLifecycle.CANCELING:
                rec.move(TaskLifecycle.CANCELING)
            rec.last_updated = time.time()
            self.write(rec)
            return rec

    def adopt(self, task_id: str, ranks: int) -> TaskRecord:
        """The job that runs a PENDING task (`export --task-id`) takes its record over."""
        with self._lock():
            rec = self.read(task_id)
            if rec.lifecycle is not TaskLifecycle.PENDING:
                raise TaskError("DataRepositoryTaskEnded", f"task {task_id} is {rec.lifecycle.value}, not PENDING",
                                ExitCode.CANCELED if rec.lifecycle is TaskLifecycle.CANCELED else None)
            rec.host, rec.pid, rec.ranks = socket.gethostname(), os.getpid(), ranks
            rec.slurm_job_id = os.environ.get("SLURM_JOB_ID") or rec.slurm_job_id
            rec.last_updated = time.time()
            self.write(rec)
            return rec

    def fs_lock(self, file_system_id: str) -> FileLock:
        """Held by an export task from start to end and by each auto-export batch: the two
        never run at once on a file system (E-18)."""
        return FileLock(os.path.join(self.root, "locks", file_system_id + ".activity"))

    def service_lock(self, file_system_id: str) -> FileLock:
        """Held by the one auto-export service of a file system for as long as it runs."""
        return FileLock(os.path.join(self.root, "locks", file_system_id + ".autoexport"))

    # ---- data repository associations ------------------------------------------------

    def associations_path(self, file_system_id: str) -> str:
        return os.path.join(self.root, "associations", file_system_id + ".json")

    def associations(self, file_system_id: str) -> list:
        from .dra import Association

        try:
            with open(self.associations_path(file_system_id), encoding="utf-8") as f:
                return [Association.from_fsx(d) for d in json.load(f)]
        except FileNotFoundError:
            return []

    def save_associations(self, file_system_id: str, assocs: list) -> None:
        os.makedirs(os.path.dirname(self.associations_path(file_system_id)), exist_ok=True)
        _write_atomic(self.associations_path(file_system_id),
                      json.dumps([a.to_fsx() for a in assocs], indent=1).encode())

    @contextmanager
    def editing_associations(self, file_system_id: str) -> Iterator[list]:
        """Read, change and write a file system's associations under the state lock."""
        with self._lock():
            assocs = self.associations(file_system_id)
            yield assocs
            self.save_associations(file_system_id, assocs)

    def declare_associations(self, file_system_id: str, declared: list) -> None:
        """Create or update the associations a config file declares (see dra.declare)."""
        if not declared:
            return
        from .dra import declare

        try:
            with self.editing_associations(file_system_id) as assocs:
                declare(assocs, file_system_id, declared)
        except ConfigError as e:
            raise ConfigError(f"key 'associations': {e}") from None

    def cancel_requested(self, task_id: str) -> bool:
        return os.path.exists(self.cancel_path(task_id))


def slurm_job_gone(job_id: str) -> bool:
    """True when Slurm no longer knows the job as pending or running (False if unsure)."""
    try:
        r = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    if r.returncode != 0:
        return "Invalid job id" in r.stderr
    return r.stdout.strip() not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "SUSPENDED",
                                    "RESIZING", "REQUEUE_HOLD", "REQUEUE_FED")


def matches(rec: TaskRecord, filters: list[tuple[str, list[str]]]) -> bool:
    """Describe filters (T-8): file-system-id, task-lifecycle, data-repository-association-id."""
    for name, values in filters:
        if name == "file-system-id":
            ok = rec.file_system_id in values
        elif name == "task-lifecycle":
            ok = rec.lifecycle.value in values
        elif name == "data-repository-association-id":
            ok = False  # associations arrive with `pfsxport dra`; no task carries one yet
        else:
            raise TaskError("BadRequest", f"unknown filter name {name!r} (use file-system-id, "
                            "task-lifecycle or data-repository-association-id)")
        if not ok:
            return False
    return True
