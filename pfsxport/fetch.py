"""The data path of an import: objects of the repository written into the target tree.

Local: no MPI here (the task, importjob, hands each rank its share of the key space). Owns
the rules of writing into a tree that may hold hostile entries:
- nothing is ever written outside the target: every parent is opened component by component
  from the target's own descriptor with O_NOFOLLOW, so a symlink already in the tree is never
  followed (the key fails with S3ObjectPathThroughSymlink), and the key's path is checked by
  importrules.key_path before any of that;
- a file is written under a temporary name in its directory (ranges of large objects written in
  place with pwrite, each range with If-Match on the first answer's ETag), then owner, mode and
  times are set on the descriptor, times last, and only then renamed to its final name: a torn
  file never appears under its final name;
- an object whose ETag changes while it comes down is fetched again, then fails (S3ObjectChanged);
- directories get their owner, mode and times at the end, deepest first, after their children.
Memory per rank: objects queued and in flight (2 x concurrency) times one 1 MiB chunk of body,
plus one record per directory it made. On Lustre, large files are created by `lfs setstripe`.
"""
from __future__ import annotations

import errno
import logging
import os
import secrets
import shlex
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from .errors import ErrorCode, StateError, StoreError
from .importmanifest import ImportManifest, Written
from .importrules import KeyRefused, ObjectMeta, key_path, owner_applies, parse_metadata
from .metadata import S3Url, one_line
from .model import EntryKind, ReportRow, RowStatus
from .store import Listed, S3Store

log = logging.getLogger("pfsxport")

TMP_PREFIX = ".pfsxport-tmp-"  # a file being written, renamed to its final name when whole
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20
MAX_SYMLINK_TARGET = 4096


class _Refused(Exception):
    """One entry that cannot be written: its report code and the reason."""

    def __init__(self, code: ErrorCode, message: str):
        super().__init__(message)
        self.code = code


class _Changed(Exception):
    """The object's ETag moved while it was being fetched."""


@dataclass(frozen=True, slots=True)
class FetchOptions:
    concurrency: int = 64  # objects in flight per rank
    ranges_in_flight: int = 8  # ranged GETs of large objects in flight per rank
    range_size: int = 16 << 20  # objects above this come down as ranged GETs of this size
    attempts: int = 3  # fetches of an object whose ETag keeps moving before it fails
    metadata_only: bool = False  # files created empty with their owner, mode and times
    no_overwrite: bool = False  # an entry already in the target is kept
    lfs: str | None = None  # `lfs` to create large files with (Lustre), None: plain files
    setstripe: str = "auto"  # lfs setstripe options for large files; "auto": sized to the file (stripe_options)
    setstripe_min: int = 64 << 20  # files at least this large are created with `lfs setstripe`


GiB = 1 << 30
AUTO_STRIPES_MAX = 32


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


@dataclass(slots=True)
class _Dir:
    path: str
    key: str
    mtime_ns: int  # the marker's LastModified, for times it does not give
    existed: bool = False  # it was in the target before this import
    etag: str = ""
    cached: Written | None = None  # the same marker as the last import's: its metadata without a request


def _oserror(e: OSError, what: str) -> _Refused:
    code = ErrorCode.NO_DISK_SPACE if e.errno in (errno.ENOSPC, errno.EDQUOT) else ErrorCode.LOCAL_WRITE_ERROR
    return _Refused(code, f"{what}: {e.strerror or e}")


class Importer:
    """One rank's importer into `fs_root` from `repository`. Local (threads, no MPI): listed
    objects are queued with `take` (directories are made at once, files fetched by the pool);
    `drain` waits for the files, `settle_dirs` then sets the directories' metadata (the task
    calls it once every rank has drained), `finish` does both for a rank alone. Rows go to
    `rows`, called under a lock from the pool's threads."""

    def __init__(self, fs_root: str, repository: S3Url, store: S3Store, opts: FetchOptions, rank: int,
                 rows: Callable[[list[ReportRow]], None], stopping: Callable[[], bool] = lambda: False,
                 manifest: ImportManifest | None = None, skip: frozenset[str] = frozenset()):
        self.repository, self.store, self.opts, self.rank = repository, store, opts, rank
        # the target itself may be reached through a symlink (/scratch -> /lustre/scratch): the
        # user named it; nothing below it is ever followed
        self.root_fd = os.open(fs_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.owner = owner_applies(os.geteuid())
        self._rows, self._lock = rows, threading.Lock()
        self.stopping = stopping
        self.manifest = manifest
        self.skip = skip  # paths never written (the state directory, when it lies in the target)
        self.unchanged = 0  # entries identical to what the last import wrote: not fetched, no row
        self.canceled = False
        self.fault: StateError | None = None  # the report shard or the manifest failed: the task fails
        self.bytes = 0
        self.dirs: dict[str, _Dir] = {}
        self.touched: set[str] = set()  # directories files were written into ("" the target itself)
        self.pool = ThreadPoolExecutor(opts.concurrency, thread_name_prefix=f"pfsxport-get{rank}")
        self.ranges = ThreadPoolExecutor(opts.ranges_in_flight, thread_name_prefix=f"pfsxport-range{rank}")
        self._slots = threading.Semaphore(opts.concurrency * 2)  # queued + in flight: memory stays bounded
        self._futures: set[Future] = set()
        self._seq = 0
        self._stripe_off = False

    # ---- rows ------------------------------------------------------------------------------

    def _row(self, path: str, kind: EntryKind | str, size: int, status: RowStatus, code: ErrorCode | str = "",
             message: str = "", started: float = 0.0, received: int = 0, retries: int = 0) -> None:
        row = ReportRow(path, kind.value if isinstance(kind, EntryKind) else kind, size, status,
                        code.value if isinstance(code, ErrorCode) else code, bytes=received, retries=retries,
                        rank=self.rank, seconds=time.monotonic() - started if started else 0.0, message=message)
        with self._lock:
            self.bytes += received
            try:
                self._rows([row])
            except StateError as e:  # the report shard cannot be written: the rank stops starting objects
                self._faulted(e)
        if status is RowStatus.FAILED:
            log.warning("%s: %s: %s", row.error_code, one_line(path), one_line(message))

    def _faulted(self, e: StateError) -> None:
        if self.fault is None:
            self.fault, self.canceled = e, True
            log.error("%s; this rank stops starting objects", e)

    def _add(self, w: Written) -> None:
        try:
            self.manifest.add(w)
        except StateError as e:
            self._faulted(e)

    def fail_listing(self, prefix: str, err: StoreError) -> None:
        """A prefix that could not be listed (S3ImportListObjectError): its entries are not imported."""
        rel = prefix[len(self.repository.prefix):].rstrip("/")
        self._row(rel, EntryKind.DIRECTORY, 0, RowStatus.FAILED, err.code, f"cannot list {prefix}: {err}"[:500])

    # ---- the queue -------------------------------------------------------------------------

    def check_stop(self) -> bool:
        if not self.canceled and self.stopping():
            self.canceled = True
        return self.canceled

    def take(self, obj: Listed, shadowed: bool = False) -> None:
        """Queue one listed object. `shadowed`: the listing also holds `key/...`, so a file at
        this key would clash with that directory (the directory wins)."""
        if self.check_stop():
            return
        rel = obj.key[len(self.repository.prefix):]
        try:
            where = key_path(rel)
        except KeyRefused as e:
            self._row(rel, "directory" if rel.endswith("/") else "file", obj.size, RowStatus.FAILED, e.code, str(e))
            return
        if where.path == "":
            return  # the repository prefix's own marker: the target's root is not changed
        if any(where.path == s or where.path.startswith(s + "/") for s in self.skip):
            self._row(where.path, "directory" if where.directory else "file", obj.size, RowStatus.SKIPPED,
                      message="inside the state directory, which an import never writes to")
            return
        if where.directory:
            try:
                with self._parent(where.path) as (fd, name):
                    existed = self._existing(fd, name) is not None
                    self._make_dir(fd, name, where.path)
            except (_Refused, OSError) as e:
                err = e if isinstance(e, _Refused) else _oserror(e, f"cannot create the directory {where.path}")
                self._row(where.path, EntryKind.DIRECTORY, 0, RowStatus.FAILED, err.code, str(err))
                return
            w = self.manifest.entries.get(where.path) if self.manifest else None
            cached = w if w is not None and w.kind == "directory" and w.etag == obj.etag and existed else None
            self.dirs[where.path] = _Dir(where.path, obj.key, obj.mtime_ns, existed, obj.etag, cached)
            return
        if shadowed:
            self._row(where.path, EntryKind.FILE, obj.size, RowStatus.FAILED, ErrorCode.S3_OBJECT_TYPE_MISMATCH,
                      f"the repository holds both the object {obj.key!r} and objects under {obj.key + '/'!r}")
            return
        self.touched.add(where.path.rpartition("/")[0])
        self._slots.acquire()
        fut = self.pool.submit(self._object, obj, where.path)
        with self._lock:
            self._futures.add(fut)
        fut.add_done_callback(self._done)

    def _done(self, fut: Future) -> None:
        with self._lock:
            self._futures.discard(fut)
        self._slots.release()
        exc = fut.exception()
        if exc is not None:  # a bug: the entry is reported, the task goes on
            log.error("import of an object crashed: %r", exc)

    def drain(self) -> None:
        """Wait for the objects in flight."""
        while True:
            with self._lock:
                pending = list(self._futures)
            if not pending:
                return
            for f in pending:
                f.exception()

    def settle_dirs(self) -> None:
        """The directories' owner, mode and times, deepest first; only once no rank writes into
        them any more (setting a directory's never moves another directory's times)."""
        if not self.canceled:
            heads = {p: self.pool.submit(self._head, d) for p, d in self.dirs.items() if d.cached is None}
            for path in sorted(self.dirs, key=lambda p: (-p.count("/"), p)):
                self._dir_metadata(self.dirs[path], heads[path].result() if path in heads else None)

    def finish(self) -> None:
        """One rank alone: wait for the objects in flight, then set the directories' metadata."""
        self.drain()
        self.settle_dirs()
        self.shutdown()

    def shutdown(self) -> None:
        self.pool.shutdown()
        self.ranges.shutdown()

    def close(self) -> None:
        os.close(self.root_fd)

    def sweep(self, paths) -> int:
        """Remove the temporary files (TMP_PREFIX) that a job killed mid-file left in these
        directories; call it only when no rank writes there any more. Returns how many."""
        removed = 0
        for path in paths:
            try:
                if path:
                    with self._parent(path) as (fd, name):
                        dfd = self._open_dir(fd, name, path, create=False)
                else:
                    dfd = os.dup(self.root_fd)
            except (_Refused, OSError):
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

    # ---- safe paths ------------------------------------------------------------------------

    @contextmanager
    def _parent(self, path: str) -> Iterator[tuple[int, str]]:
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
                    raise _oserror(e, f"cannot create the directory {path}") from None
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    self._not_a_dir(fd, name, path)
                raise _oserror(e, f"cannot open the directory {path}") from None
        raise _Refused(ErrorCode.LOCAL_WRITE_ERROR, f"the directory {path} keeps disappearing")

    @staticmethod
    def _not_a_dir(fd: int, name: str, path: str) -> None:
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except OSError as e:
            raise _oserror(e, f"cannot open the directory {path}") from None
        if stat.S_ISLNK(st.st_mode):
            raise _Refused(ErrorCode.S3_OBJECT_PATH_THROUGH_SYMLINK,
                           f"{path} is a symlink in the target: it is not followed, nothing is written through it")
        raise _Refused(ErrorCode.S3_OBJECT_TYPE_MISMATCH, f"{path} is not a directory in the target")

    def _make_dir(self, fd: int, name: str, path: str) -> None:
        os.close(self._open_dir(fd, name, path, create=True))

    def _tmp_name(self) -> str:
        with self._lock:
            self._seq += 1
            return f"{TMP_PREFIX}{self.rank}-{self._seq}-{secrets.token_hex(4)}"

    def _existing(self, fd: int, name: str) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    # ---- objects ---------------------------------------------------------------------------

    def _object(self, obj: Listed, path: str) -> None:
        started = time.monotonic()
        if self.check_stop():
            return
        kind: EntryKind | str = EntryKind.FILE
        retries = 0
        try:
            if self._unchanged(obj, path):
                with self._lock:
                    self.unchanged += 1
                return
            for attempt in range(self.opts.attempts):
                try:
                    kind, size, got = self._fetch(obj, path)
                    self._row(path, kind, size, RowStatus.SUCCEEDED, started=started, received=got,
                              retries=retries + self.store.take_retries())
                    return
                except _Changed:
                    retries += 1
                    log.info("%s changed while it was fetched (attempt %d of %d)", one_line(obj.key), attempt + 1,
                             self.opts.attempts)
            raise _Refused(ErrorCode.S3_OBJECT_CHANGED,
                           f"the object changed while it was fetched, {self.opts.attempts} times")
        except _Kept:
            self._row(path, kind, obj.size, RowStatus.SKIPPED, message="kept: already in the target (--no-overwrite)")
        except _Refused as e:
            self._row(path, kind, obj.size, RowStatus.FAILED, e.code, str(e), started=started, retries=retries)
        except KeyRefused as e:
            self._row(path, kind, obj.size, RowStatus.FAILED, e.code, str(e), started=started)
        except OSError as e:
            err = _oserror(e, f"cannot write {path}")
            self._row(path, kind, obj.size, RowStatus.FAILED, err.code, str(err), started=started)
        except StoreError as e:
            code = ErrorCode.S3_FILE_DELETED if e.s3_code in ("NoSuchKey", "404") or e.status == 404 else e.code
            self._row(path, kind, obj.size, RowStatus.FAILED, code, str(e)[:500], started=started,
                      retries=retries + e.retries)

    def _fetch(self, obj: Listed, path: str) -> tuple[EntryKind, int, int]:
        """One attempt at one object: (kind, size, bytes received); raises _Changed, _Kept,
        _Refused, KeyRefused or StoreError. The entry is whole under a temporary name before
        it is renamed to `path`; on any failure the temporary name is removed."""
        with self._parent(path) as (fd, name):
            before = self._existing(fd, name)
            if before is not None and stat.S_ISDIR(before.st_mode):
                raise _Refused(ErrorCode.S3_OBJECT_TYPE_MISMATCH,
                               f"{path} is a directory in the target and a file in the repository")
            if before is not None and self.opts.no_overwrite:
                raise _Kept()
            tmp = self._tmp_name()
            try:
                kind, size, got = self._write(obj, fd, tmp)
                try:
                    os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
                except OSError as e:
                    if e.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                        raise _Refused(ErrorCode.S3_OBJECT_TYPE_MISMATCH,
                                       f"{path} is a directory in the target and a file in the repository") from None
                    raise _oserror(e, f"cannot rename into {path}") from None
                self._record(path, obj, kind, fd, name)
                return kind, size, got
            except BaseException:
                try:
                    os.unlink(tmp, dir_fd=fd)
                except OSError:
                    pass
                raise

    def _write(self, obj: Listed, fd: int, tmp: str) -> tuple[EntryKind, int, int]:
        """The entry under `tmp` in directory `fd`, with its owner, mode and times (times last)."""
        if self.opts.metadata_only:
            head = self.store.head_object(obj.key)
            meta = parse_metadata(False, head.get("Metadata") or {})
            if meta.kind is EntryKind.FILE:  # the namespace only: an empty file, its owner, mode, times
                out = self._create(fd, tmp)
                try:
                    self._settle(out, meta, obj.mtime_ns)
                finally:
                    os.close(out)
                return EntryKind.FILE, int(head.get("ContentLength") or 0), 0
        out = self._create(fd, tmp, obj.size)
        try:
            try:
                os.ftruncate(out, obj.size)  # holes where the body is zeros: sparse files stay sparse
            except OSError as e:
                raise _oserror(e, "cannot size the file") from None
            sink = self._sink(out)
            whole = obj.size <= self.opts.range_size
            first = self.store.get_object(obj.key, sink, 0, None if whole else self.opts.range_size - 1,
                                          chunk=_CHUNK)
            meta = parse_metadata(False, first.metadata)
            if meta.kind is EntryKind.SYMLINK:
                if first.size > MAX_SYMLINK_TARGET or first.received != first.size:
                    raise _Refused(ErrorCode.LOCAL_WRITE_ERROR, f"a symlink target of {first.size} bytes is too long")
                target = os.pread(out, first.size, 0)
            else:
                if first.size != obj.size:
                    os.ftruncate(out, first.size)
                self._rest(obj.key, out, first.etag, first.received, first.size)
                self._settle(out, meta, first.mtime_ns or obj.mtime_ns)
                return EntryKind.FILE, first.size, first.size
        except OSError as e:
            raise _oserror(e, "cannot write the file") from None
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
                raise _oserror(e, "cannot open the file lfs created") from None
            st = os.fstat(out)
            if stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and st.st_size == 0:
                return out
            os.close(out)
            raise _Refused(ErrorCode.LOCAL_WRITE_ERROR, "the file lfs setstripe created is not a new empty file")
        try:
            return os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=fd)
        except OSError as e:
            raise _oserror(e, "cannot create the file") from None

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
                raise _oserror(e, "cannot write the file") from None
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
                    raise _Changed() from None
                raise
            if etag and got.etag and got.etag != etag:
                raise _Changed()
        futures = [self.ranges.submit(one, off) for off in range(start, size, step)]
        error = None
        for f in futures:
            e = f.exception()
            if e is not None and (error is None or isinstance(e, _Changed)):
                error = e
        if error is not None:
            raise error

    def _times(self, meta: ObjectMeta, fallback_ns: int) -> tuple[int, int] | None:
        mtime = meta.mtime_ns if meta.mtime_ns is not None else fallback_ns or None
        if mtime is None:
            return None
        return (meta.atime_ns if meta.atime_ns is not None else mtime), mtime

    def _settle(self, fd: int, meta: ObjectMeta, fallback_ns: int) -> None:
        """Owner (as root), then mode, then times, on an open file or directory."""
        try:
            if self.owner:
                os.fchown(fd, meta.uid, meta.gid)
            os.fchmod(fd, meta.mode)
            times = self._times(meta, fallback_ns)
            if times is not None:
                os.utime(fd, ns=times)
        except OSError as e:
            raise _oserror(e, "cannot set owner, mode or times") from None

    def _symlink(self, fd: int, tmp: str, target: bytes, meta: ObjectMeta, fallback_ns: int) -> EntryKind:
        try:
            os.symlink(target, os.fsencode(tmp), dir_fd=fd)
            if self.owner:
                os.chown(tmp, meta.uid, meta.gid, dir_fd=fd, follow_symlinks=False)
            times = self._times(meta, fallback_ns)
            if times is not None:
                os.utime(tmp, ns=times, dir_fd=fd, follow_symlinks=False)
        except OSError as e:
            raise _oserror(e, "cannot create the symlink") from None
        return EntryKind.SYMLINK

    # ---- directories -----------------------------------------------------------------------

    def _record(self, path: str, obj: Listed, kind: EntryKind, fd: int, name: str) -> None:
        """The manifest's line for an entry just written (the listing's ETag: an object replaced
        since is fetched again by the next run either way)."""
        if self.manifest is None:
            return
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        data = not self.opts.metadata_only or kind is not EntryKind.FILE
        self._add(Written(path, obj.etag, obj.size, kind.value, stat.S_IMODE(st.st_mode), st.st_uid,
                                  st.st_gid, st.st_mtime_ns, st.st_atime_ns, data))

    def _lstat(self, path: str) -> os.stat_result | None:
        """lstat of `path` in the target, its parents opened as _parent does, none created."""
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

    def _unchanged(self, obj: Listed, path: str) -> bool:
        """The entry is what the last import wrote from this very object, and still is on disk."""
        w = self.manifest.entries.get(path) if self.manifest else None
        if w is None or w.etag != obj.etag or w.size != obj.size or w.kind == "directory":
            return False
        if not w.data and not self.opts.metadata_only:
            return False  # --metadata-only left it empty: a full import brings the data
        st = self._lstat(path)
        if st is None or EntryKind.of_mode(st.st_mode).value != w.kind:
            return False
        size_ok = w.kind != "file" or st.st_size == (w.size if w.data else 0)
        return size_ok and (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns) == \
            (w.mode, w.uid, w.gid, w.mtime_ns)

    def _head(self, d: _Dir):
        try:
            return self.store.head_object(d.key)
        except StoreError as e:
            return e

    def _dir_metadata(self, d: _Dir, head) -> None:
        started = time.monotonic()
        if isinstance(head, StoreError):
            self._row(d.path, EntryKind.DIRECTORY, 0, RowStatus.FAILED, head.code, str(head)[:500], started=started)
            return
        if d.existed and self.opts.no_overwrite:
            self._row(d.path, EntryKind.DIRECTORY, 0, RowStatus.SKIPPED, message="kept: already in the target "
                      "(--no-overwrite)")
            return
        w = d.cached
        try:
            meta = parse_metadata(True, head.get("Metadata") or {}) if w is None else \
                ObjectMeta(EntryKind.DIRECTORY, w.mode, w.uid, w.gid, w.atime_ns, w.mtime_ns)
            with self._parent(d.path) as (fd, name):
                dfd = self._open_dir(fd, name, d.path, create=False)
                try:
                    self._settle(dfd, meta, d.mtime_ns)
                    st = os.fstat(dfd)
                finally:
                    os.close(dfd)
        except (_Refused, KeyRefused) as e:
            self._row(d.path, EntryKind.DIRECTORY, 0, RowStatus.FAILED, e.code, str(e), started=started)
            return
        except FileNotFoundError:
            self._row(d.path, EntryKind.DIRECTORY, 0, RowStatus.FAILED, ErrorCode.LOCAL_WRITE_ERROR,
                      "the directory was removed during the import", started=started)
            return
        if w is not None:  # the same marker as last time: its metadata set again (its children may have moved
            with self._lock:  # its mtime), no row
                self.unchanged += 1
            return
        if self.manifest is not None:
            self._add(Written(d.path, d.etag, 0, "directory", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                                      st.st_mtime_ns, st.st_atime_ns))
        self._row(d.path, EntryKind.DIRECTORY, 0, RowStatus.SUCCEEDED, started=started)


class _Kept(Exception):
    """--no-overwrite: the entry is already in the target."""
