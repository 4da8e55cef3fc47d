"""One object of the repository written into the target: `ObjectWriter` owns its GETs (ranged
for large objects), its bytes on disk and its owner, mode and times.

Local: threads, no MPI. A file is written under a temporary name in its directory (ranges of
large objects written in place with pwrite, each range with If-Match on the first answer's
ETag), then owner, mode and times are set on the descriptor, times last, and only then renamed
to its final name: a torn file never appears under its final name. An object whose ETag
changes while it comes down raises Changed (the importer fetches it again). On Lustre, large
files are created by `lfs setstripe`. Memory: one 1 MiB chunk of body per GET in flight.
"""
from __future__ import annotations

import errno
import logging
import os
import shlex
import stat
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from ..errors import ErrorCode, StoreError
from ..importmanifest import Written
from ..importrules import ObjectMeta, owner_applies, parse_metadata
from ..metadata import one_line
from ..model import EntryKind
from ..store import Listed, S3Store
from .options import FetchOptions
from .target import Refused, Target, oserror

log = logging.getLogger("pfsxport")

_CHUNK = 1 << 20
MAX_SYMLINK_TARGET = 4096
GiB = 1 << 30
AUTO_STRIPES_MAX = 32


class Changed(Exception):
    """The object's ETag moved while it was being fetched."""


class Kept(Exception):
    """--no-overwrite: the entry is already in the target."""


def stripe_options(size: int, setting: str, minimum: int) -> list[str] | None:
    """The `lfs setstripe` options a new file of `size` bytes is created with, or None for the
    directory's default layout: "auto" gives a file of 1 GiB or more one stripe per GiB (at
    most AUTO_STRIPES_MAX); "off" never; other text is the user's options, for files of at
    least `minimum` bytes."""
    if setting == "off":
        return None
    if setting == "auto":
        if size < GiB:
            return None
        return ["-c", str(min(-(-size // GiB), AUTO_STRIPES_MAX))]
    return shlex.split(setting) if size >= minimum else None


class ObjectWriter:
    """Writes objects into `target` from `store`; `record` (None: no manifest) is given the
    manifest's line of each entry written. Thread-safe: the importer's pool calls `fetch`."""

    def __init__(self, target: Target, store: S3Store, opts: FetchOptions, rank: int,
                 record: Callable[[Written], None] | None):
        self.target, self.store, self.opts, self.record = target, store, opts, record
        self.owner = owner_applies(os.geteuid())
        self.ranges = ThreadPoolExecutor(opts.ranges_in_flight, thread_name_prefix=f"pfsxport-range{rank}")
        self._stripe_off = False

    def shutdown(self) -> None:
        self.ranges.shutdown()

    def fetch(self, obj: Listed, path: str) -> tuple[EntryKind, int, int]:
        """One attempt at one object: (kind, size, bytes received); raises Changed, Kept,
        Refused, KeyRefused or StoreError. The entry is whole under a temporary name before
        it is renamed to `path`; on any failure the temporary name is removed."""
        with self.target.parent(path) as (fd, name):
            before = self.target.existing(fd, name)
            if before is not None and stat.S_ISDIR(before.st_mode):
                raise Refused(ErrorCode.S3_OBJECT_TYPE_MISMATCH,
                              f"{path} is a directory in the target and a file in the repository")
            if before is not None and self.opts.no_overwrite:
                raise Kept()
            tmp = self.target.tmp_name()
            try:
                kind, size, got = self._write(obj, fd, tmp)
                try:
                    os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
                except OSError as e:
                    if e.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                        raise Refused(ErrorCode.S3_OBJECT_TYPE_MISMATCH,
                                      f"{path} is a directory in the target and a file in the repository") from None
                    raise oserror(e, f"cannot rename into {path}") from None
                self._record(path, obj, kind, fd, name)
                return kind, size, got
            except BaseException:
                try:
                    os.unlink(tmp, dir_fd=fd)
                except OSError:
                    pass
                raise

    def settle(self, fd: int, meta: ObjectMeta, fallback_ns: int) -> None:
        """Owner (as root), then mode, then times, on an open file or directory."""
        try:
            if self.owner:
                os.fchown(fd, meta.uid, meta.gid)
            os.fchmod(fd, meta.mode)
            times = self._times(meta, fallback_ns)
            if times is not None:
                os.utime(fd, ns=times)
        except OSError as e:
            raise oserror(e, "cannot set owner, mode or times") from None

    def _write(self, obj: Listed, fd: int, tmp: str) -> tuple[EntryKind, int, int]:
        """The entry under `tmp` in directory `fd`, with its owner, mode and times (times last)."""
        if self.opts.metadata_only:
            head = self.store.head_object(obj.key)
            meta = parse_metadata(False, head.get("Metadata") or {})
            if meta.kind is EntryKind.FILE:  # the namespace only: an empty file, its owner, mode, times
                out = self._create(fd, tmp)
                try:
                    self.settle(out, meta, obj.mtime_ns)
                finally:
                    os.close(out)
                return EntryKind.FILE, int(head.get("ContentLength") or 0), 0
        out = self._create(fd, tmp, obj.size)
        try:
            try:
                os.ftruncate(out, obj.size)  # holes where the body is zeros: sparse files stay sparse
            except OSError as e:
                raise oserror(e, "cannot size the file") from None
            sink = self._sink(out)
            whole = obj.size <= self.opts.range_size
            first = self.store.get_object(obj.key, sink, 0, None if whole else self.opts.range_size - 1,
                                          chunk=_CHUNK)
            meta = parse_metadata(False, first.metadata)
            if meta.kind is EntryKind.SYMLINK:
                if first.size > MAX_SYMLINK_TARGET or first.received != first.size:
                    raise Refused(ErrorCode.LOCAL_WRITE_ERROR, f"a symlink target of {first.size} bytes is too long")
                target = os.pread(out, first.size, 0)
            else:
                if first.size != obj.size:
                    os.ftruncate(out, first.size)
                self._rest(obj.key, out, first.etag, first.received, first.size)
                self.settle(out, meta, first.mtime_ns or obj.mtime_ns)
                return EntryKind.FILE, first.size, first.size
        except OSError as e:
            raise oserror(e, "cannot write the file") from None
        finally:
            os.close(out)
        os.unlink(tmp, dir_fd=fd)
        return self._symlink(fd, tmp, target, meta, first.mtime_ns or obj.mtime_ns), len(target), len(target)

    def _create(self, fd: int, tmp: str, size: int = 0) -> int:
        options = stripe_options(size, self.opts.setstripe, self.opts.setstripe_min) \
            if self.opts.lfs and not self._stripe_off else None
        if options is not None and self._setstripe(fd, tmp, options):
            try:  # lfs made it: open what is there, never a symlink, and only a fresh empty file
                out = os.open(tmp, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as e:
                raise oserror(e, "cannot open the file lfs created") from None
            st = os.fstat(out)
            if stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and st.st_size == 0:
                return out
            os.close(out)
            raise Refused(ErrorCode.LOCAL_WRITE_ERROR, "the file lfs setstripe created is not a new empty file")
        try:
            return os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=fd)
        except OSError as e:
            raise oserror(e, "cannot create the file") from None

    def _setstripe(self, fd: int, tmp: str, options: list[str]) -> bool:
        """`lfs setstripe OPTIONS` creates the file under its temporary name, reached through
        this process's descriptor of the directory (/proc/PID/fd/N/NAME), so no path of the tree
        is resolved again. A failure falls back to a plain file (warned about once)."""
        path = f"/proc/{os.getpid()}/fd/{fd}/{tmp}"
        try:
            r = subprocess.run([self.opts.lfs, "setstripe", *options, path], capture_output=True, text=True,
                               timeout=120)
            ok, why = r.returncode == 0, r.stderr.strip()
        except (OSError, subprocess.TimeoutExpired) as e:
            ok, why = False, str(e)
        if not ok and not self._stripe_off:
            self._stripe_off = True  # not Lustre, or lfs cannot: not asked again in this task
            log.warning("lfs setstripe %s failed (%s): large files get the directory's default layout",
                        " ".join(options), one_line(why))
        return ok

    @staticmethod
    def _sink(out: int):
        def write(offset: int, data: bytes) -> None:
            if data.count(0) == len(data):
                return  # the file was sized first: this range reads as zeros already
            view = memoryview(data)
            try:
                while view:
                    n = os.pwrite(out, view, offset)
                    view, offset = view[n:], offset + n
            except OSError as e:  # not an OSError, which the store's retry loop takes for the network's
                raise oserror(e, "cannot write the file") from None
        return write

    def _rest(self, key: str, out: int, etag: str, start: int, size: int) -> None:
        """The ranges after the first, in parallel, each required to have the first's ETag."""
        step = self.opts.range_size
        sink = self._sink(out)

        def one(offset: int) -> None:
            try:
                got = self.store.get_object(key, sink, offset, min(offset + step, size) - 1, if_match=etag,
                                            chunk=_CHUNK)
            except StoreError as e:
                if e.status == 412 or e.s3_code == "PreconditionFailed":
                    raise Changed() from None
                raise
            if etag and got.etag and got.etag != etag:
                raise Changed()
        futures = [self.ranges.submit(one, off) for off in range(start, size, step)]
        error = None
        for f in futures:
            e = f.exception()
            if e is not None and (error is None or isinstance(e, Changed)):
                error = e
        if error is not None:
            raise error

    @staticmethod
    def _times(meta: ObjectMeta, fallback_ns: int) -> tuple[int, int] | None:
        mtime = meta.mtime_ns if meta.mtime_ns is not None else fallback_ns or None
        if mtime is None:
            return None
        return (meta.atime_ns if meta.atime_ns is not None else mtime), mtime

    def _symlink(self, fd: int, tmp: str, target: bytes, meta: ObjectMeta, fallback_ns: int) -> EntryKind:
        try:
            os.symlink(target, os.fsencode(tmp), dir_fd=fd)
            if self.owner:
                os.chown(tmp, meta.uid, meta.gid, dir_fd=fd, follow_symlinks=False)
            times = self._times(meta, fallback_ns)
            if times is not None:
                os.utime(tmp, ns=times, dir_fd=fd, follow_symlinks=False)
        except OSError as e:
            raise oserror(e, "cannot create the symlink") from None
        return EntryKind.SYMLINK

    def _record(self, path: str, obj: Listed, kind: EntryKind, fd: int, name: str) -> None:
        """The manifest's line for an entry just written (the listing's ETag: an object replaced
        since is fetched again by the next run either way)."""
        if self.record is None:
            return
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        data = not self.opts.metadata_only or kind is not EntryKind.FILE
        self.record(Written(path, obj.etag, obj.size, kind.value, stat.S_IMODE(st.st_mode), st.st_uid,
                            st.st_gid, st.st_mtime_ns, st.st_atime_ns, data))
