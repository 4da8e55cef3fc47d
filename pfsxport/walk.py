"""Directory scanning and file reading on any POSIX tree, never outside its root.

Local: no MPI, no S3. Paths are relative to the file-system root and '/'-joined;
names that are not valid UTF-8 stay as surrogate-escaped str (os.fsdecode).

Every directory, file and symlink is opened without following a symlink in its last
component, and the kernel's own name for what was opened (/proc/self/fd) must be the
path inside the root that was asked for: a directory swapped for a symlink between the
scan that found an entry and the open that reads it cannot lead the export outside.
"""
from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from .errors import InputError
from .metadata import one_line
from .model import Entry

SEEK_DATA = getattr(os, "SEEK_DATA", None)
SEEK_HOLE = getattr(os, "SEEK_HOLE", None)
SCAN_PIECE = 8192  # children lstat'ed and held at a time in a directory larger than this

Items = list[tuple[bytes, os.stat_result]]  # (name, lstat) of children

_NOATIME = getattr(os, "O_NOATIME", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC
_LINK_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_NOFOLLOW | os.O_CLOEXEC


class OutsideRoot(OSError):
    """What a path led to is not inside the root (a directory on the way became a symlink)."""

    def __init__(self, rel: str):
        super().__init__(errno.EXDEV, "the path leads outside the file system root (a directory on the way "
                         "was replaced by a symlink)", rel)


def open_noatime(path, flags: int) -> int:
    """Open where permitted (owner or root) without touching atime: an export must not make
    files or directories look recently used to purge policies."""
    if _NOATIME:
        try:
            return os.open(path, flags | _NOATIME)
        except PermissionError:
            pass
    return os.open(path, flags)


class Root:
    """The tree an export reads from; `open` never yields anything outside it."""

    def __init__(self, path: str):
        self.path = path
        self.real = os.fsencode(os.path.realpath(path))

    def open(self, rel: str, flags: int = FILE_FLAGS) -> int:
        """Open fs_root/rel (the last component is never followed) and check that the kernel
        opened that very path, not one reached through a symlink; raises OutsideRoot."""
        fd = open_noatime(os.path.join(self.path, rel) if rel else self.path, flags)
        try:
            opened = os.readlink(b"/proc/self/fd/%d" % fd)
        except OSError:  # no /proc (not Linux): the O_NOFOLLOW of the last component only
            return fd
        want = self.real + b"/" + os.fsencode(rel) if rel else self.real
        if opened != want and opened != want.replace(b"//", b"/"):
            os.close(fd)
            raise OutsideRoot(rel)
        return fd

    def readlink(self, rel: str) -> bytes:
        """The target of the symlink fs_root/rel, read through a checked O_PATH handle."""
        fd = self.open(rel, _LINK_FLAGS)
        try:
            return os.readlink(b"", dir_fd=fd) if _LINK_FLAGS & getattr(os, "O_PATH", 0) else \
                os.readlink(os.fsencode(os.path.join(self.path, rel)))
        finally:
            os.close(fd)


def symlink_on_path(fs_root: str, rel: str, last: bool = False) -> str | None:
    """The first component of `rel` (a '/'-joined path under fs_root) that is a symlink,
    as a path relative to fs_root; the last component counts only with `last`. None when
    there is none, or when a component does not exist (the caller reports that)."""
    parts = [p for p in rel.split("/") if p]
    for i in range(len(parts) if last else len(parts) - 1):
        sub = "/".join(parts[:i + 1])
        try:
            if stat.S_ISLNK(os.lstat(os.path.join(fs_root, sub)).st_mode):
                return sub
        except OSError:
            return None
    return None


@dataclass(slots=True)
class ScanResult:
    items: Items  # the children, or the first SCAN_PIECE of them
    error: OSError | None = None  # the directory itself could not be listed
    more: Iterator[Items] | None = None  # the further pieces of a directory larger than one


def refuse_symlinks(fs_root: str, rel: str, what: str, last: bool = False) -> None:
    """Raise InputError for a task or association path that goes through a symlink (which
    could lead out of the root); the last component counts with `last` (an association's
    root must be a real directory; a task path may name a symlink: it is exported as one)."""
    link = symlink_on_path(fs_root, rel, last)
    if link is not None:
        try:
            target = os.readlink(os.path.join(fs_root, link))
        except OSError:
            target = "?"
        raise InputError(f"{what} {one_line(rel)!r} goes through the symlink {one_line(link)!r} "
                         f"(-> {one_line(target)}); paths are not followed through symlinks")


def join(rel: str, name: str) -> str:
    return f"{rel}/{name}" if rel else name


def lstat_entry(fs_root: str, rel: str) -> Entry:
    return Entry.from_stat(rel, os.lstat(os.path.join(fs_root, rel)))


def scan_dir(root: Root, rel: str, skip: frozenset[str] = frozenset(), piece: int = SCAN_PIECE) -> ScanResult:
    """lstat every child of fs_root/rel (byte names: no decoding on the hot path of a
    no-change walk); children named in `skip` (relative paths, e.g. the state directory)
    and children that vanish meanwhile are left out. A directory of more than `piece`
    children comes in pieces (`more`), so memory holds one piece at a time. The directory
    is opened through `root` (never outside it, without touching its atime)."""
    try:
        fd = root.open(rel, _DIR_FLAGS)
    except OSError as e:
        return ScanResult([], e)
    try:
        it = os.scandir(fd)
    except OSError as e:
        os.close(fd)
        return ScanResult([], e)
    pieces = _pieces(fd, it, rel, skip, piece)
    first = next(pieces)
    return ScanResult(first, None, pieces if len(first) >= piece else None)


def _pieces(fd: int, it, rel: str, skip: frozenset[str], piece: int) -> Iterator[Items]:
    out: Items = []
    fsencode = os.fsencode
    try:
        with it:
            for d in it:
                if skip and join(rel, d.name) in skip:
                    continue
                try:
                    out.append((fsencode(d.name), d.stat(follow_symlinks=False)))  # fstatat(fd, name)
                except FileNotFoundError:
                    continue
                if len(out) >= piece:
                    yield out
                    out = []
    finally:
        os.close(fd)  # the entries' lstat used it until here
    yield out


def same_file(st: os.stat_result, snapshot: tuple[int, int, int, int]) -> bool:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino) == snapshot


def snapshot_of(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def read_range(fd: int, offset: int, length: int) -> bytes:
    """Read [offset, offset+length) of an open file; holes of a sparse file come back as
    zeros without being read from disk (SEEK_DATA/SEEK_HOLE where the OS has them)."""
    if length == 0:
        return b""
    if SEEK_DATA is None:
        return _pread_all(fd, offset, length)
    end = offset + length
    try:
        data_at = os.lseek(fd, offset, SEEK_DATA)
    except OSError as e:
        if e.errno == errno.ENXIO:  # only a hole from here to EOF
            return bytes(length)
        if e.errno in (errno.EINVAL, errno.EOPNOTSUPP):
            return _pread_all(fd, offset, length)
        raise
    if data_at == offset:
        hole_at = os.lseek(fd, offset, SEEK_HOLE)
        if hole_at >= end:  # the common case: no hole in this range
            return _pread_all(fd, offset, length)
    buf = bytearray(length)
    pos = offset
    while pos < end:
        try:
            data_at = os.lseek(fd, pos, SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:
                break
            raise
        if data_at >= end:
            break
        hole_at = min(os.lseek(fd, data_at, SEEK_HOLE), end)
        chunk = _pread_all(fd, data_at, hole_at - data_at)
        buf[data_at - offset:data_at - offset + len(chunk)] = chunk
        pos = hole_at
    return bytes(buf)


def _pread_all(fd: int, offset: int, length: int) -> bytes:
    data = os.pread(fd, length, offset)
    if len(data) == length:
        return data
    parts = [data]
    got = len(data)
    while got < length:
        more = os.pread(fd, length - got, offset + got)
        if not more:  # EOF: the file shrank; the caller's stat check sees it
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)
