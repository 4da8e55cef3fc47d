"""The target tree of an import, navigated safely: `Target` owns the target's descriptor and
every path walked below it.

Local: no MPI, no requests. Nothing is ever written outside the target: every parent is opened
component by component from the target's own descriptor with O_NOFOLLOW, so a symlink already
in the tree is never followed (the entry fails with S3ObjectPathThroughSymlink; the key's path
was checked by importrules.key_path before any of that). Files are written under temporary
names (TMP_PREFIX) that `Target.sweep` removes when a killed job left some behind.
"""
from __future__ import annotations

import errno
import os
import secrets
import stat
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from ..errors import ErrorCode

TMP_PREFIX = ".pfsxport-tmp-"  # a file being written, renamed to its final name when whole
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Refused(Exception):
    """One entry that cannot be written: its report code and the reason."""

    def __init__(self, code: ErrorCode, message: str):
        super().__init__(message)
        self.code = code


def oserror(e: OSError, what: str) -> Refused:
    code = ErrorCode.NO_DISK_SPACE if e.errno in (errno.ENOSPC, errno.EDQUOT) else ErrorCode.LOCAL_WRITE_ERROR
    return Refused(code, f"{what}: {e.strerror or e}")


class Target:
    """The directory `fs_root` one rank imports into; paths are relative to it. Thread-safe."""

    def __init__(self, fs_root: str, rank: int):
        # the target itself may be reached through a symlink (/scratch -> /lustre/scratch): the
        # user named it; nothing below it is ever followed
        self.root_fd = os.open(fs_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.rank = rank
        self._lock = threading.Lock()
        self._seq = 0

    def close(self) -> None:
        os.close(self.root_fd)

    @contextmanager
    def parent(self, path: str) -> Iterator[tuple[int, str]]:
        """(descriptor of the parent directory, final name) of `path`, missing directories on the
        way created (0755), none of them followed if it is a symlink."""
        parts = path.split("/")
        fd = os.dup(self.root_fd)
        try:
            done = []
            for name in parts[:-1]:
                done.append(name)
                nxt = self._open_dir(fd, name, "/".join(done), create=True)
                os.close(fd)
                fd = nxt
            yield fd, parts[-1]
        finally:
            os.close(fd)

    def make_dir(self, path: str) -> bool:
        """The directory `path` (0755) and its missing parents; True if it was already there."""
        with self.parent(path) as (fd, name):
            existed = self.existing(fd, name) is not None
            os.close(self._open_dir(fd, name, path, create=True))
        return existed

    def open_existing(self, path: str) -> int:
        """A new descriptor of the directory `path` ("" the target itself), which must exist."""
        if not path:
            return os.dup(self.root_fd)
        with self.parent(path) as (fd, name):
            return self._open_dir(fd, name, path, create=False)

    @staticmethod
    def existing(fd: int, name: str) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def lstat(self, path: str) -> os.stat_result | None:
        """lstat of `path` in the target, its parents opened as `parent` does, none created."""
        parts = path.split("/")
        fd = os.dup(self.root_fd)
        try:
            for name in parts[:-1]:
                nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = nxt
            return os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
        except OSError:
            return None
        finally:
            os.close(fd)

    def tmp_name(self) -> str:
        with self._lock:
            self._seq += 1
            return f"{TMP_PREFIX}{self.rank}-{self._seq}-{secrets.token_hex(4)}"

    def sweep(self, paths: Iterable[str]) -> int:
        """Remove the temporary files (TMP_PREFIX) that a job killed mid-file left in these
        directories; call it only when no rank writes there any more. Returns how many."""
        removed = 0
        for path in paths:
            try:
                dfd = self.open_existing(path)
            except (Refused, OSError):
                continue
            try:
                for name in os.listdir(dfd):
                    if name.startswith(TMP_PREFIX):
                        try:
                            os.unlink(name, dir_fd=dfd)
                            removed += 1
                        except OSError:
                            pass
            finally:
                os.close(dfd)
        return removed

    def _open_dir(self, fd: int, name: str, path: str, create: bool) -> int:
        for _ in range(3):
            try:
                return os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(name, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
                except OSError as e:
                    raise oserror(e, f"cannot create the directory {path}") from None
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    self._not_a_dir(fd, name, path)
                raise oserror(e, f"cannot open the directory {path}") from None
        raise Refused(ErrorCode.LOCAL_WRITE_ERROR, f"the directory {path} keeps disappearing")

    @staticmethod
    def _not_a_dir(fd: int, name: str, path: str) -> None:
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except OSError as e:
            raise oserror(e, f"cannot open the directory {path}") from None
        if stat.S_ISLNK(st.st_mode):
            raise Refused(ErrorCode.S3_OBJECT_PATH_THROUGH_SYMLINK,
                          f"{path} is a symlink in the target: it is not followed, nothing is written through it")
        raise Refused(ErrorCode.S3_OBJECT_TYPE_MISMATCH, f"{path} is not a directory in the target")
