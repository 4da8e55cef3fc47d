"""Exception tree, FSx error codes and the process exit codes they map to.

Pure: standard library only. Errors are classed by behaviour (retryable or not) and each
carries the FSx report ErrorCode it becomes and the exit code a scheduler can act on.
"""
from __future__ import annotations

import errno
from enum import Enum, IntEnum


class ErrorCode(str, Enum):
    """ErrorCode column of failures.csv (FSx R-8) plus the codes pfsxport adds."""

    PATH_SIZE_TOO_LONG = "PathSizeTooLong"
    FILE_SIZE_TOO_LARGE = "FileSizeTooLarge"
    S3_ACCESS_DENIED = "S3AccessDenied"
    S3_ERROR = "S3Error"
    RESOURCE_BUSY = "ResourceBusy"
    INTERNAL_ERROR = "InternalError"
    # pfsxport's own: a name that is not valid UTF-8 cannot become an S3 key.
    PATH_NOT_UTF8 = "PathNotUtf8"
    # pfsxport's own: the file system refused to let us read the entry (EACCES/EPERM/EIO).
    LOCAL_READ_ERROR = "LocalReadError"
    # import (FSx R-8 and the import events of G-2)
    S3_OBJECT_PATH_NOT_POSIX_COMPLIANT = "S3ObjectPathNotPosixCompliant"
    S3_OBJECT_TYPE_MISMATCH = "S3ObjectTypeMismatch"
    S3_OBJECT_NOT_FOUND = "S3ObjectNotFound"
    S3_FILE_DELETED = "S3FileDeleted"  # the object went away between its listing and its download
    NO_DISK_SPACE = "NoDiskSpace"
    # pfsxport's own: the key's path goes through a symlink already in the target (never followed)
    S3_OBJECT_PATH_THROUGH_SYMLINK = "S3ObjectPathThroughSymlink"
    # pfsxport's own: the object's ETag changed while it was downloaded, on every attempt
    S3_OBJECT_CHANGED = "S3ObjectChanged"
    # pfsxport's own: the target file system refused to let us write the entry (EACCES, EIO, ...)
    LOCAL_WRITE_ERROR = "LocalWriteError"


class ExitCode(IntEnum):
    """Process exit status of `pfsxport export` and friends; documented in the README."""

    SUCCEEDED = 0
    INTERNAL = 1  # a bug or an unexpected crash: report it
    BAD_INPUT = 2  # bad config, bad arguments, missing path: fix the input, do not requeue
    FILES_FAILED = 3  # the task ran; some files failed (see failures.csv): requeue may help
    CANCELED = 4  # the task was canceled
    STORE_UNREACHABLE = 5  # endpoint down, bucket missing or access denied: fix or retry later
    TASK_EXECUTING = 6  # another task is executing on this file system (DataRepositoryTaskExecuting)
    STATE_UNUSABLE = 7  # the state directory cannot be written (read-only, not a directory, full) or is corrupt
    DIFFERENCES = 8  # `verify`: the tree and the repository differ (see the report)


class PfsxError(Exception):
    code: ErrorCode = ErrorCode.INTERNAL_ERROR
    exit_code: ExitCode = ExitCode.INTERNAL
    retryable = False


class ConfigError(PfsxError):
    """Bad configuration or arguments; the message names the key and the file."""

    exit_code = ExitCode.BAD_INPUT


class InputError(PfsxError):
    """A request that cannot run: a path that does not exist, too many paths, ..."""

    exit_code = ExitCode.BAD_INPUT


class StoreError(PfsxError):
    """Any S3 failure, after retries where retries make sense."""

    code = ErrorCode.S3_ERROR
    exit_code = ExitCode.STORE_UNREACHABLE

    def __init__(self, message: str, *, s3_code: str = "", status: int = 0, retries: int = 0):
        super().__init__(message)
        self.s3_code = s3_code
        self.status = status
        self.retries = retries


class RetryableStoreError(StoreError):
    """Throttling, 5xx, resets, timeouts: worth another try with backoff."""

    retryable = True


class AccessDenied(StoreError):
    code = ErrorCode.S3_ACCESS_DENIED


class NoSuchBucket(StoreError):
    pass


class StoreUnreachable(StoreError):
    """The endpoint could not be reached at all (after retries)."""


class NoSuchUpload(StoreError):
    """The multipart upload is gone (aborted or expired)."""


class FileChanged(PfsxError):
    """The file moved (size, mtime, ctime or inode) while it was being read."""

    code = ErrorCode.RESOURCE_BUSY


class TaskError(PfsxError):
    """FSx API-shaped task errors; `name` is the FSx error name."""

    exit_code = ExitCode.BAD_INPUT

    def __init__(self, name: str, message: str, exit_code: ExitCode | None = None):
        super().__init__(f"{name}: {message}")
        self.name = name
        if exit_code is not None:
            self.exit_code = exit_code


class StateError(PfsxError):
    """The state directory cannot be used: a file in it cannot be written or read back.
    `name` is StateDirectoryUnusable (the file system refused: read-only, not a directory,
    full) or StateFileCorrupt (a file is there but cut off or overwritten)."""

    exit_code = ExitCode.STATE_UNUSABLE

    def __init__(self, name: str, message: str):
        super().__init__(f"{name}: {message}")
        self.name = name
        self.detail = message

    def __reduce__(self):  # it travels between ranks
        return type(self), (self.name, self.detail)


def unusable(path: str, err: OSError, doing: str = "write") -> StateError:
    """A StateError for an OSError on `path` in the state directory: the reason first (a
    task's FailureDetails keep 256 characters), then the file."""
    reason = err.strerror or type(err).__name__
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        advice = "free space there"
    elif err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        advice = "make it writable"
    elif err.errno in (errno.ENOTDIR, errno.EEXIST):
        advice = "the state directory must be a directory"
    else:
        advice = "check the state directory"
    return StateError("StateDirectoryUnusable", f"{reason}: cannot {doing} {path} ({advice}, or give another "
                      "--state-dir; then re-run the same command)")


def corrupt(path: str, err: Exception, what: str, advice: str) -> StateError:
    """A StateError for a file in the state directory that is there but cannot be parsed."""
    detail = f"missing {err}" if isinstance(err, KeyError) else str(err)
    return StateError("StateFileCorrupt", f"{what} {path} cannot be read: {detail}; {advice}")
