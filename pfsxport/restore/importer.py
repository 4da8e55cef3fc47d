"""One rank's import: `Importer` owns the queue of listed objects, the report rows, the
manifest's lines and the directories' metadata; it composes a Target (where entries go) and an
ObjectWriter (how one object comes down).

Local: threads, no MPI (the task, importjob, hands each rank its share of the key space).
Directories are made when listed and get their owner, mode and times at the end, deepest first,
after their children. Memory per rank: objects queued and in flight (2 x concurrency) times one
1 MiB chunk of body, plus one record per directory it made.
"""
from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from ..errors import ErrorCode, StateError, StoreError
from ..importmanifest import ImportManifest, Written
from ..importrules import KeyRefused, ObjectMeta, key_path, parse_metadata
from ..metadata import S3Url, one_line
from ..model import EntryKind, ReportRow, RowStatus
from ..store import Listed, S3Store
from .options import FetchOptions
from .target import Refused, Target, oserror
from .write import Changed, Kept, ObjectWriter

log = logging.getLogger("pfsxport")


@dataclass(slots=True)
class _Dir:
    path: str
    key: str
    mtime_ns: int  # the marker's LastModified, for times it does not give
    existed: bool = False  # it was in the target before this import
    etag: str = ""
    cached: Written | None = None  # the same marker as the last import's: its metadata without a request


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
        self.target = Target(fs_root, rank)
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
        self.writer = ObjectWriter(self.target, store, opts, rank, self._add if manifest is not None else None)
        self.pool = ThreadPoolExecutor(opts.concurrency, thread_name_prefix=f"pfsxport-get{rank}")
        self._slots = threading.Semaphore(opts.concurrency * 2)  # queued + in flight: memory stays bounded
        self._futures: set[Future] = set()

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
                existed = self.target.make_dir(where.path)
            except (Refused, OSError) as e:
                err = e if isinstance(e, Refused) else oserror(e, f"cannot create the directory {where.path}")
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
        self.writer.shutdown()

    def close(self) -> None:
        self.target.close()

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
                    kind, size, got = self.writer.fetch(obj, path)
                    self._row(path, kind, size, RowStatus.SUCCEEDED, started=started, received=got,
                              retries=retries + self.store.take_retries())
                    return
                except Changed:
                    retries += 1
                    log.info("%s changed while it was fetched (attempt %d of %d)", one_line(obj.key), attempt + 1,
                             self.opts.attempts)
            raise Refused(ErrorCode.S3_OBJECT_CHANGED,
                          f"the object changed while it was fetched, {self.opts.attempts} times")
        except Kept:
            self._row(path, kind, obj.size, RowStatus.SKIPPED, message="kept: already in the target (--no-overwrite)")
        except Refused as e:
            self._row(path, kind, obj.size, RowStatus.FAILED, e.code, str(e), started=started, retries=retries)
        except KeyRefused as e:
            self._row(path, kind, obj.size, RowStatus.FAILED, e.code, str(e), started=started)
        except OSError as e:
            err = oserror(e, f"cannot write {path}")
            self._row(path, kind, obj.size, RowStatus.FAILED, err.code, str(err), started=started)
        except StoreError as e:
            code = ErrorCode.S3_FILE_DELETED if e.s3_code in ("NoSuchKey", "404") or e.status == 404 else e.code
            self._row(path, kind, obj.size, RowStatus.FAILED, code, str(e)[:500], started=started,
                      retries=retries + e.retries)

    def _unchanged(self, obj: Listed, path: str) -> bool:
        """The entry is what the last import wrote from this very object, and still is on disk."""
        w = self.manifest.entries.get(path) if self.manifest else None
        if w is None or w.etag != obj.etag or w.size != obj.size or w.kind == "directory":
            return False
        if not w.data and not self.opts.metadata_only:
            return False  # --metadata-only left it empty: a full import brings the data
        st = self.target.lstat(path)
        if st is None or EntryKind.of_mode(st.st_mode).value != w.kind:
            return False
        size_ok = w.kind != "file" or st.st_size == (w.size if w.data else 0)
        return size_ok and (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns) == \
            (w.mode, w.uid, w.gid, w.mtime_ns)

    # ---- directories -----------------------------------------------------------------------

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
            dfd = self.target.open_existing(d.path)
            try:
                self.writer.settle(dfd, meta, d.mtime_ns)
                st = os.fstat(dfd)
            finally:
                os.close(dfd)
        except (Refused, KeyRefused) as e:
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
