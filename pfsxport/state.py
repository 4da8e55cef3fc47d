"""Task records in the state directory: create, refresh, describe, cancel.

Local: no MPI, no S3. Records are JSON written atomically (temporary file, fsync, rename),
so a reader on another node always sees a whole record. One record per task:
`STATE/tasks/TASK_ID.json`; a cancel request is the file `STATE/tasks/TASK_ID.cancel`;
reports live in `STATE/tasks/TASK_ID/`. Creating a task takes a lock so that the
one-task-per-file-system rule (T-6) holds between concurrent `export` commands.

Liveness: the process that runs a task holds an flock on `STATE/tasks/TASK_ID.owner` from
the moment it owns the task until it writes the task's last record. The kernel drops the
lock when the process dies (a zombie holds none), and on Lustre mounted with `-o flock`
every node sees it. Without the file (a record of an older version, or a file system with
no flock) the recorded pid and its start time stand in on the same host, and the record's
age on another one. Files that cannot be written or read back raise StateError.
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError, ExitCode, StateError, TaskError, corrupt, unusable
from .lifecycle import Counts, TaskLifecycle, transition

log = logging.getLogger("pfsxport")

TASK_TYPE = "EXPORT_TO_REPOSITORY"
IMPORT_TASK_TYPE = "IMPORT_METADATA_FROM_REPOSITORY"
REPORT_FORMAT = "REPORT_CSV_20191124"
REPORT_SCOPE = "FAILED_FILES_ONLY"
MAX_MESSAGE = 256
# A running task refreshes its record every few seconds; one from another host with no lock
# file to test, not refreshed for this long, belongs to a job that is gone.
STALE_SECONDS = 120.0
TREE_XATTR = b"user.pfsxport.state_dir"  # on a tree's root: the state directory its tasks are recorded in
_FULL = (errno.ENOSPC, errno.EDQUOT)


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks since boot) of a process from /proc/PID/stat
    (fields 3 and 22), or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
        return fields[0].decode(), int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def process_start(pid: int) -> int | None:
    """The start time of a process, which with its pid names it uniquely on a host."""
    stat = _proc_stat(pid)
    return stat[1] if stat else None


def process_alive(pid: int, start_ticks: int | None) -> bool:
    """Whether `pid` on this host is still the process that started at `start_ticks`
    (unknown: any live process with that pid). A zombie is dead, and so is a pid taken
    over by another process since."""
    if not os.path.exists("/proc/self/stat"):  # no procfs: all we can ask is whether the pid exists
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    stat = _proc_stat(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return False
    return start_ticks is None or stat[1] == start_ticks


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
    start_ticks: int | None = field(default_factory=lambda: process_start(os.getpid()))  # of the pid
    ranks: int = 1
    slurm_job_id: str | None = field(default_factory=lambda: os.environ.get("SLURM_JOB_ID"))
    request: dict | None = None  # a PENDING task's export arguments and working directory
    dry_run: bool = False  # --dry-run: the task planned, sent nothing
    task_type: str = TASK_TYPE  # the FSx Type: EXPORT_TO_REPOSITORY or IMPORT_METADATA_FROM_REPOSITORY

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
            "Type": self.task_type,
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
        if self.dry_run:  # not an FSx field: a plan, nothing was exported
            d["DryRun"] = True
        return d

    def to_json(self) -> dict[str, Any]:
        d = self.to_fsx()
        d["FailureMessage"] = self.failure_message
        d["EndTime"] = self.end_time
        d["Owner"] = {"Host": self.host, "Pid": self.pid, "StartTicks": self.start_ticks, "Ranks": self.ranks,
                      "SlurmJobId": self.slurm_job_id}
        d["DataRepositoryPath"] = self.repository
        d["Request"] = self.request
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TaskRecord:
        st = d.get("Status", {})
        owner = d.get("Owner", {})
        return cls(
            task_id=d["TaskId"], file_system_id=d["FileSystemId"], paths=d.get("Paths", []),
            report_path=d.get("Report", {}).get("Path", ""), repository=d.get("DataRepositoryPath", ""),
            lifecycle=TaskLifecycle(d["Lifecycle"]), creation_time=d["CreationTime"],
            start_time=d.get("StartTime"), end_time=d.get("EndTime"),
            counts=Counts(st.get("TotalCount", 0), st.get("SucceededCount", 0), st.get("FailedCount", 0)),
            last_updated=st.get("LastUpdatedTime", d["CreationTime"]), failure_message=d.get("FailureMessage"),
            host=owner.get("Host", ""), pid=owner.get("Pid", 0), start_ticks=owner.get("StartTicks"),
            ranks=owner.get("Ranks", 1),
            slurm_job_id=owner.get("SlurmJobId"), request=d.get("Request"), dry_run=bool(d.get("DryRun")),
            task_type=d.get("Type", TASK_TYPE))


def _replace(path: str, data: bytes) -> None:
    """Write a temporary file, fsync it, rename it over `path`; on failure nothing is left."""
    tmp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _write_atomic(path: str, data: bytes) -> None:
    try:
        _replace(path, data)
    except OSError as e:
        raise unusable(path, e) from None


def _overwrite(path: str, data: bytes) -> bool:
    """Last resort on a full file system: rewrite an existing file in the blocks it has
    (a record is well under one block); not atomic for a reader meanwhile."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
        os.fsync(fd)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _makedirs(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise unusable(path, e, "create the directory") from None


def write_json_atomic(path: str, obj: Any) -> None:
    _makedirs(os.path.dirname(path))
    _write_atomic(path, json.dumps(obj, indent=1).encode())


class FileLock:
    """An flock on a file in the state directory (cluster-wide where the state directory
    is on a file system with flock, e.g. Lustre mounted with -o flock)."""

    def __init__(self, path: str):
        self.path = path
        self._f = None

    def acquire(self, wait: bool) -> bool:
        _makedirs(os.path.dirname(self.path))
        try:
            f = open(self.path, "a+")
        except OSError as e:
            raise unusable(self.path, e, "open") from None
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


class OwnerLock:
    """The flock on `STATE/tasks/TASK_ID.owner` by which the process running a task shows
    that it lives. The file is locked under a temporary name and then renamed, so it is
    never there unlocked while its owner lives."""

    def __init__(self, path: str):
        self.path = path
        self._fd: int | None = None

    def hold(self) -> bool:
        """Create the file locked; False where the file system has no flock."""
        tmp = f"{self.path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise unusable(tmp, e, "create") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.replace(tmp, self.path)
        except OSError as e:
            os.close(fd)
            try:
                os.unlink(tmp)
            except OSError:
                pass
            if e.errno in (errno.ENOLCK, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                log.warning("no flock on %s (%s): liveness of this task falls back to its pid and the age of "
                            "its record (on Lustre, mount with -o flock)", self.path, e.strerror)
                return False
            raise unusable(self.path, e, "create") from None
        self._fd = fd
        return True

    def release(self, remove: bool = True) -> None:
        """Drop the lock; `remove` takes the file away first (nobody needs it any more)."""
        if self._fd is None:
            return
        if remove:
            try:
                os.unlink(self.path)
            except OSError:
                pass
        os.close(self._fd)
        self._fd = None

    @staticmethod
    def test(path: str) -> bool | None:
        """True: someone holds the lock; False: nobody does (its owner is gone); None:
        nothing to test (no such file, or no flock on this file system)."""
        for mode in (os.O_WRONLY, os.O_RDONLY):  # NFS-style flock emulation wants a writer
            try:
                fd = os.open(path, mode | os.O_CLOEXEC)
                break
            except OSError as e:
                if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                    return None
        else:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return None
        finally:
            os.close(fd)  # and with it the lock, if this test took it
        return False


class StateDir:
    def __init__(self, root: str):
        self.root = root
        self.tasks = os.path.join(root, "tasks")
        self._owned: dict[str, OwnerLock] = {}  # task id -> the lock this process holds as its owner

    def ensure(self) -> None:
        _makedirs(self.tasks)

    def record_path(self, task_id: str) -> str:
        return os.path.join(self.tasks, task_id + ".json")

    def task_dir(self, task_id: str) -> str:
        return os.path.join(self.tasks, task_id)

    def cancel_path(self, task_id: str) -> str:
        return os.path.join(self.tasks, task_id + ".cancel")

    def owner_path(self, task_id: str) -> str:
        return os.path.join(self.tasks, task_id + ".owner")

    def _own(self, task_id: str) -> None:
        """This process becomes the task's owner: it holds its lock until the task ends."""
        lock = OwnerLock(self.owner_path(task_id))
        if lock.hold():
            self._owned[task_id] = lock

    def release(self, task_id: str, remove: bool = True) -> None:
        """Give up ownership of a task (done by the write of its last record)."""
        lock = self._owned.pop(task_id, None)
        if lock is not None:
            lock.release(remove)

    def write(self, rec: TaskRecord) -> None:
        """Write a record atomically. A task's last record goes in place if the file system
        is full; writing it gives up this process's ownership of the task."""
        path = self.record_path(rec.task_id)
        data = json.dumps(rec.to_json(), indent=1).encode()
        try:
            _replace(path, data)
        except OSError as e:
            if not (rec.lifecycle.terminal and e.errno in _FULL and _overwrite(path, data)):
                raise unusable(path, e) from None
            log.warning("the state directory is full: %s was rewritten in place", path)
        finally:
            if rec.lifecycle.terminal:
                self.release(rec.task_id)

    def write_last(self, rec: TaskRecord) -> bool:
        """A task's last record, as far as it can still be written: never raises (the task
        ends either way); False, with an ERROR, when it could not be written."""
        try:
            self.write(rec)
            return True
        except StateError as e:
            log.error("%s: the last record of task %s (%s) could not be written", e, rec.task_id,
                      rec.lifecycle.value)
            return False

    def read(self, task_id: str) -> TaskRecord:
        path = self.record_path(task_id)
        try:
            with open(path, encoding="utf-8") as f:
                return TaskRecord.from_json(json.load(f))
        except FileNotFoundError:
            raise TaskError("DataRepositoryTaskNotFound", f"no task {task_id} in {self.tasks}") from None
        except OSError as e:
            raise unusable(path, e, "read") from None
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise corrupt(path, e, "task record", f"it was cut off or overwritten: move it out of {self.tasks} "
                          f"(the task's report, if any, is in {self.task_dir(task_id)})") from None

    def all(self) -> Iterator[TaskRecord]:
        """Every task record that can be read; a WARNING for each one that cannot."""
        try:
            names = sorted(os.listdir(self.tasks))
        except FileNotFoundError:
            return
        except OSError as e:
            raise unusable(self.tasks, e, "list") from None
        for n in names:
            if n.startswith("task-") and n.endswith(".json"):
                try:
                    yield self.read(n[:-5])
                except (TaskError, StateError) as e:
                    log.warning("%s (the task is left out)", e)

    @contextmanager
    def _lock(self) -> Iterator[None]:
        self.ensure()
        path = os.path.join(self.tasks, ".lock")
        try:
            f = open(path, "a")
        except OSError as e:
            raise unusable(path, e, "open") from None
        with f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def is_gone(self, rec: TaskRecord, now: float | None = None) -> bool:
        """True when the job that owns an active record is no longer running."""
        if rec.lifecycle.terminal:
            return False
        held = OwnerLock.test(self.owner_path(rec.task_id))
        if held:
            return False
        if rec.lifecycle is TaskLifecycle.PENDING:  # waits for its job (or for `export --task-id`)
            if rec.slurm_job_id:  # which may be requeued to run it again
                return slurm_job_gone(rec.slurm_job_id)
            return held is False  # the process that took it over died
        if held is False:
            return True
        if rec.host == socket.gethostname() and rec.pid:
            return not process_alive(rec.pid, rec.start_ticks)
        return ((now or time.time()) - rec.last_updated) > STALE_SECONDS

    def reap(self, rec: TaskRecord) -> TaskRecord:
        """Mark an active record whose job is gone as FAILED (CANCELED if a cancel was asked)
        and remove its lock file. A record that cannot be rewritten is reaped in memory only."""
        if not self.is_gone(rec):
            return rec
        try:  # its owner may have ended it between the caller's read and the test
            current = self.read(rec.task_id)
        except (TaskError, StateError):
            current = rec
        if current.lifecycle.terminal:
            return current
        rec = current
        if rec.lifecycle is TaskLifecycle.CANCELING:
            rec.move(TaskLifecycle.CANCELED)
            rec.end_time = time.time()
        else:
            if rec.lifecycle is TaskLifecycle.PENDING:
                rec.move(TaskLifecycle.EXECUTING)
            rec.fail("the job running this task ended without finishing it")
        try:
            self.write(rec)
        except StateError as e:
            log.warning("task %s's job is gone, but its record stays as it was: %s", rec.task_id, e)
            return rec
        try:
            os.unlink(self.owner_path(rec.task_id))
        except OSError:
            pass
        return rec

    def create(self, rec: TaskRecord, own: bool = False) -> None:
        """Record a new PENDING task, refusing when another one is active on the file system.
        `own`: this process runs the task and holds its lock until its last record."""
        with self._lock():
            for other in self.all():
                if other.file_system_id != rec.file_system_id or other.lifecycle.terminal:
                    continue
                if self.reap(other).lifecycle.terminal:
                    continue
                raise TaskError("DataRepositoryTaskExecuting", _blocked_by(other, rec), ExitCode.TASK_EXECUTING)
            if own:
                self._own(rec.task_id)
            try:
                self.write(rec)
            except StateError:
                self.release(rec.task_id)
                raise

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
            rec.host, rec.pid, rec.start_ticks, rec.ranks = socket.gethostname(), os.getpid(), \
                process_start(os.getpid()), ranks
            rec.slurm_job_id = os.environ.get("SLURM_JOB_ID") or rec.slurm_job_id
            rec.last_updated = time.time()
            self._own(task_id)
            try:
                self.write(rec)
            except StateError:
                self.release(task_id)
                raise
            return rec

    def claim_tree(self, fs_root: str) -> str | None:
        """Record this state directory on the tree it runs tasks on (an extended attribute of
        the tree's root) and return the one recorded there before if it is another that still
        exists: two state directories do not see each other's tasks. Quietly nothing where
        the file system has no user xattrs or the root cannot be changed."""
        mine = os.fsencode(os.path.realpath(self.root))
        try:
            before = os.getxattr(fs_root, TREE_XATTR)
        except OSError:
            before = None
        if before != mine:
            try:
                os.setxattr(fs_root, TREE_XATTR, mine)
            except OSError:
                pass
        return os.fsdecode(before) if before and before != mine and os.path.isdir(before) else None

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

        path = self.associations_path(file_system_id)
        try:
            with open(path, encoding="utf-8") as f:
                return [Association.from_fsx(d) for d in json.load(f)]
        except FileNotFoundError:
            return []
        except OSError as e:
            raise unusable(path, e, "read") from None
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise corrupt(path, e, "association list", "it was cut off or overwritten: move it aside and create "
                          "the associations again (`pfsxport dra create`)") from None

    def save_associations(self, file_system_id: str, assocs: list) -> None:
        _makedirs(os.path.dirname(self.associations_path(file_system_id)))
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


def _blocked_by(other: TaskRecord, rec: TaskRecord) -> str:
    """Why `rec` cannot start: which task holds the file system, in what state, and what to do."""
    what = "a duplicate of this task" if sorted(other.paths) == sorted(rec.paths) else "another data repository task"
    if other.lifecycle is TaskLifecycle.PENDING:
        how = (f"is PENDING (waiting for Slurm job {other.slurm_job_id})" if other.slurm_job_id else
               f"is PENDING (to run with: pfsxport export --task-id {other.task_id})")
    elif other.lifecycle is TaskLifecycle.CANCELING:
        how = "is being canceled"
    else:
        how = "is currently executing"
    return (f"{what} ({other.task_id}) {how} on file system {rec.file_system_id}; wait for it or cancel it "
            f"with: pfsxport task cancel {other.task_id}")


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
