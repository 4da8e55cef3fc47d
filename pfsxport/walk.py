"""Directory scanning and file reading on any POSIX tree.

Local: no MPI, no S3. Paths are relative to the file-system root and '/'-joined;
names that are not valid UTF-8 stay as surrogate-escaped str (os.fsdecode).
"""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Iterator

from .model import Entry

SEEK_DATA = getattr(os, "SEEK_DATA", None)
SEEK_HOLE = getattr(os, "SEEK_HOLE", None)
SCAN_PIECE = 8192  # children lstat'ed and held at a time in a directory larger than this

Items = list[tuple[bytes, os.stat_result]]  # (name, lstat) of children


@dataclass(slots=True)
class ScanResult:
    items: Items  # the children, or the first SCAN_PIECE of them
    error: OSError | None = None  # the directory itself could not be listed
    more: Iterator[Items] | None = None  # the further pieces of a directory larger than one


def join(rel: str, name: str) -> str:
    return f"{rel}/{name}" if rel else name


def lstat_entry(fs_root: str, rel: str) -> Entry:
    return Entry.from_stat(rel, os.lstat(os.path.join(fs_root, rel)))


def scan_dir(fs_root: str, rel: str, skip: frozenset[str] = frozenset(), piece: int = SCAN_PIECE) -> ScanResult:
    """lstat every child of fs_root/rel (byte names: no decoding on the hot path of a
    no-change walk); children named in `skip` (relative paths, e.g. the state directory)
    and children that vanish meanwhile are left out. A directory of more than `piece`
    children comes in pieces (`more`), so memory holds one piece at a time."""
    try:
        it = os.scandir(os.fsencode(os.path.join(fs_root, rel) if rel else fs_root))
    except OSError as e:
        return ScanResult([], e)
    pieces = _pieces(it, rel, skip, piece)
    first = next(pieces)
    return ScanResult(first, None, pieces if len(first) >= piece else None)


def _pieces(it, rel: str, skip: frozenset[str], piece: int) -> Iterator[Items]:
    out: Items = []
    with it:
        for d in it:
            if skip and join(rel, os.fsdecode(d.name)) in skip:
                continue
            try:
                out.append((d.name, d.stat(follow_symlinks=False)))
            except FileNotFoundError:
                continue
            if len(out) >= piece:
                yield out
                out = []
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
