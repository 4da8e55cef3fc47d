"""One import task (IMPORT_METADATA_FROM_REPOSITORY) from start to end: prepare -> list and
fetch -> report.

`run_import` is collective (every rank calls it). Rank 0 records the task (the one task per
file system rule of state.create holds for imports and exports together), checks the target,
the paths and the repository. The key space is then listed by every rank at once through a
shared queue (parallel.share_queue): a rank that takes a prefix lists it with the delimiter,
puts its common prefixes back in the queue at once, and its pages of objects after the first,
so one huge prefix is listed by one rank but fetched by all, and a deep tree is listed by all.
Every rank's files are written before any directory gets its metadata (a barrier between).

The report: for an import task, `report.csv` is FSx's import report (R-2: FilePath,FileStatus,
ErrorCode, the failures.csv format); the per-entry CSV is `entries.csv`; `report.h5` as for export.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass

from .config import ExportConfig
from .errors import ExitCode, InputError, StateError, StoreError, TaskError
from .fetch import FetchOptions, Importer
from .halt import SignalWatch
from .importmanifest import ImportManifest, manifest_dir
from .job import _attrs, _end, _exit_code, _Shard, _skip_set, _store, _upload_report
from .lifecycle import TaskLifecycle, end_state
from .metadata import S3Url, printable
from .parallel import share_queue
from .report import FAILURES, REPORT_CSV, REPORT_H5, ReportWriter, combine
from .share import Tally
from .state import IMPORT_TASK_TYPE, StateDir, TaskRecord, new_task_id
from .store import S3Store

log = logging.getLogger("pfsxport")

ENTRIES_CSV = "entries.csv"  # pfsxport's per-entry CSV of an import (report.csv is FSx's there)


@dataclass
class ImportSetup:
    task_id: str
    subtrees: list[str]  # key prefixes ("" or ending in '/') whose objects are imported
    exact: list[str]  # keys named by a task path that may be an object of their own


@dataclass
class ImportStop:
    exit_code: ExitCode


def import_prefixes(repository: S3Url, paths: list[str]) -> tuple[list[str], list[str]]:
    """Task paths (s3:// URLs inside the repository; none: the whole repository) as key prefixes
    to import, and the keys that a path without a trailing '/' may name as one object."""
    if not paths:
        return [repository.prefix], []
    subtrees, exact = [], []
    for p in paths:
        if not p.startswith("s3://"):
            raise InputError(f"path {p!r}: an import path is an s3://BUCKET/KEY URL inside the repository")
        bucket, _, key = p[5:].partition("/")
        if bucket != repository.bucket or not (key + "/").startswith(repository.prefix):
            raise InputError(f"path {p!r} is not inside the repository {repository}")
        if any(seg in (".", "..") for seg in key.split("/")) or "//" in key:
            raise InputError(f"path {p!r} has a '.', '..' or empty segment")
        if key.endswith("/") or key + "/" == repository.prefix:
            subtrees.append(key if key.endswith("/") else key + "/")
        else:
            subtrees.append(key + "/")
            exact.append(key)
    return sorted(set(subtrees)), sorted(set(exact))


def _write_names(paths: dict[str, str]) -> dict[str, str]:
    """An import's report files under the names FSx gives them: the failures-format file is
    report.csv (R-2), and pfsxport's per-entry CSV becomes entries.csv."""
    d = os.path.dirname(paths[REPORT_H5])
    os.replace(paths[REPORT_CSV], os.path.join(d, ENTRIES_CSV))
    os.replace(paths[FAILURES], os.path.join(d, REPORT_CSV))
    return {REPORT_CSV: os.path.join(d, REPORT_CSV), ENTRIES_CSV: os.path.join(d, ENTRIES_CSV),
            REPORT_H5: paths[REPORT_H5]}


def _fail_early(state: StateDir, rec: TaskRecord, message: str, code: ExitCode) -> ImportStop:
    log.error("task %s FAILED: %s", rec.task_id, message)
    rec.fail(message)
    state.write_last(rec)
    try:
        ReportWriter(state.task_dir(rec.task_id), 0).finish()
        _write_names(combine(state.task_dir(rec.task_id), 1, _attrs(rec)))
    except (StateError, OSError) as e:
        log.error("no local report for task %s: %s", rec.task_id, e)
    return ImportStop(code)


def _prepare(cfg: ExportConfig, state: StateDir, nranks: int) -> ImportSetup | ImportStop:
    """Rank 0: record the task, check the paths, the repository and the report's bucket."""
    rec = TaskRecord(new_task_id(), cfg.file_system_id, list(cfg.paths), f"{cfg.report_path}", str(cfg.repository),
                     ranks=nranks, task_type=IMPORT_TASK_TYPE)
    try:
        state.create(rec, own=True)
    except (TaskError, StateError) as e:
        log.error("%s", e)
        return ImportStop(e.exit_code)
    print(rec.task_id, flush=True)
    log.info("task %s (import) on %s: %s -> %s with %d rank(s)", rec.task_id, cfg.file_system_id, cfg.repository,
             cfg.fs_root, nranks)
    try:
        subtrees, exact = import_prefixes(cfg.repository, cfg.paths)
    except InputError as e:
        return _fail_early(state, rec, str(e), ExitCode.BAD_INPUT)
    store = _store(cfg, cfg.repository)
    try:
        empty = [p for p in subtrees if not _holds(store.list_page(p, "/"))]
        for prefix in empty if cfg.paths else []:
            key = prefix[:-1]
            if key not in exact or not any(o.key == key for o in store.list_page(key, "/").objects):
                return _fail_early(state, rec, f"path s3://{cfg.repository.bucket}/{key} holds no objects",
                                   ExitCode.BAD_INPUT)
        report = cfg.report_path
        _store(cfg, report).check_writable(f"{report.prefix}/" if report.prefix else "")
    except StoreError as e:
        return _fail_early(state, rec, f"cannot import from {cfg.repository}: {e}", ExitCode.STORE_UNREACHABLE)
    rec.move(TaskLifecycle.EXECUTING)
    rec.start_time = time.time()
    state.write(rec)
    return ImportSetup(rec.task_id, subtrees, exact)


def _holds(page) -> bool:
    return bool(page.objects or page.prefixes)


class _Stopping:
    """Whether this rank is to stop starting objects: a signal here, or a cancel request in the
    state directory (looked at no more than once a second)."""

    def __init__(self, watch: SignalWatch, state: StateDir, task_id: str):
        self.watch, self.state, self.task_id = watch, state, task_id
        self._last, self._asked = 0.0, False

    def __call__(self) -> bool:
        if self.watch.level():
            return True
        now = time.monotonic()
        if not self._asked and now - self._last >= 1.0:
            self._last = now
            self._asked = self.state.cancel_requested(self.task_id)
        return self._asked


def _shadowed(keys: list[str]) -> set[str]:
    """The keys of a page that are also a directory there (`k` and `k/...` both listed)."""
    parents = set()
    for k in keys:
        at = k.find("/")
        while at != -1:
            parents.add(k[:at])
            at = k.find("/", at + 1)
    return {k for k in keys if k in parents}


def _items(setup: ImportSetup) -> list:
    return [("prefix", p) for p in setup.subtrees] + [("exact", k) for k in setup.exact]


def _handler(world, store: S3Store, importer: Importer):
    """How a rank runs one item of the shared queue (parallel.share_queue): a prefix is listed
    with the delimiter, its common prefixes go back to the queue at once (any rank lists them)
    and so do its pages of objects after the first (any rank fetches them); a batch is fetched;
    an exact key is fetched if it is an object."""
    def handle(item, push) -> None:
        what, arg = item
        if importer.check_stop():
            return
        if what == "batch":
            for obj, shadowed in arg:
                importer.take(obj, shadowed)
            return
        if what == "exact":
            try:
                objects = store.list_page(arg, "/").objects
            except StoreError as e:
                importer.fail_listing(arg, e)
                return
            for obj in objects:
                if obj.key == arg:
                    importer.take(obj)
            return
        token, first = None, True
        while not importer.check_stop():
            try:
                page = store.list_page(arg, "/", token)
            except StoreError as e:
                importer.fail_listing(arg, e)
                return
            push([("prefix", p) for p in page.prefixes])
            shadows = {p[:-1] for p in page.prefixes}
            batch = [(o, o.key in shadows) for o in page.objects]
            if first or world.size == 1:
                for obj, shadowed in batch:
                    importer.take(obj, shadowed)
            else:
                push([("batch", batch)])
            first, token = False, page.next_token
            if token is None:
                return
    return handle


class _Watch(threading.Thread):
    """Rank 0: a cancel (signal or `task cancel`) moves the record to CANCELING at once; the
    record's LastUpdatedTime is refreshed every status interval."""

    def __init__(self, state: StateDir, rec: TaskRecord, stopping: _Stopping, interval: float,
                 progress=None, progress_interval: float = 10.0):
        super().__init__(name="pfsxport-import-watch", daemon=True)
        self.state, self.rec, self.stopping, self.interval = state, rec, stopping, interval
        self.progress, self.progress_interval = progress, progress_interval  # progress(): a line of text
        self.done = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        last = shown = time.monotonic()
        while not self.done.wait(0.25):
            if self.progress is not None and time.monotonic() - shown >= self.progress_interval:
                shown = time.monotonic()
                log.info("progress: %s", self.progress())
            with self.lock:
                try:
                    if self.rec.lifecycle is TaskLifecycle.EXECUTING and self.stopping():
                        self.rec.move(TaskLifecycle.CANCELING)
                        self.state.write(self.rec)
                        log.warning("task %s: canceling; objects not started are left, objects in flight finish",
                                    self.rec.task_id)
                    elif time.monotonic() - last >= self.interval:
                        last = time.monotonic()
                        self.rec.last_updated = time.time()
                        self.state.write(self.rec)
                except StateError as e:
                    log.error("%s", e)


def run_import(world, cfg: ExportConfig, opts: FetchOptions, watch: SignalWatch | None = None) -> ExitCode:
    """Collective: run one import task on every rank of `world`; returns the exit code."""
    watch = watch or SignalWatch(cfg.transfer.cancel_grace)
    state = StateDir(cfg.state_dir)
    setup = _prepare(cfg, state, world.size) if world.rank == 0 else None
    setup = world.bcast(setup)
    if isinstance(setup, ImportStop):
        return setup.exit_code
    stopping = _Stopping(watch, state, setup.task_id)
    monitor = None
    tally = Tally()
    shard = _Shard(state.task_dir(setup.task_id), world.rank)
    lock = threading.Lock()

    def rows(batch) -> None:
        with lock:
            tally.rows(batch)
            shard.add(batch)
    store = _store(cfg, cfg.repository)
    fault = None
    manifest = ImportManifest(manifest_dir(cfg.state_dir, cfg.file_system_id, str(cfg.repository)))
    try:
        manifest.load().open(setup.task_id, world.rank)
    except StateError as e:
        log.error("%s", e)
        manifest, fault = None, e
    importer = Importer(cfg.fs_root, cfg.repository, store, opts, world.rank, rows, stopping, manifest,
                        _skip_set(cfg, cfg.fs_root))
    if world.rank == 0:
        t0 = time.monotonic()

        def progress() -> str:  # rank 0's own share: the other ranks' counts arrive at the end
            dt = max(time.monotonic() - t0, 1e-9)
            return (f"rank 0 of {world.size}: {tally.total} entries written ({tally.failed} failed), "
                    f"{importer.unchanged} unchanged, {importer.bytes / 1e6:.1f} MB received, "
                    f"{tally.total / dt:.0f} entries/s, {importer.bytes / dt / 1e6:.1f} MB/s")
        monitor = _Watch(state, state.read(setup.task_id), stopping, cfg.status_interval,
                         None if cfg.progress == "off" else progress, cfg.progress_interval)
        monitor.start()
    try:
        share_queue(world, _items(setup) if world.rank == 0 else [], _handler(world, store, importer))
        importer.drain()
    except StateError as e:
        fault = e
    world.barrier()  # every rank's files are written: the directories' metadata can be set
    try:
        importer.settle_dirs()
    except StateError as e:
        fault = fault or e
    importer.shutdown()
    tally.bytes_sent, tally.unchanged = importer.bytes, importer.unchanged
    if manifest is not None:
        manifest.close()
    lost = shard.finish(_store(cfg, cfg.report_path), cfg.report_path, setup.task_id)
    fault = fault or importer.fault or shard.fault
    ends = world.allgather((tally, importer.canceled and importer.fault is None, fault, lost))
    importer.sweep(importer.touched)  # every rank is done writing
    if world.rank == 0:
        if manifest is not None and not any(f for _, _, f, _ in ends):
            try:
                manifest.compact()
            except StateError as e:
                log.error("the import manifest could not be compacted (the next run reads its parts): %s", e)
    importer.close()
    code = None
    if world.rank == 0:
        monitor.done.set()
        monitor.join()
        code = _finish(cfg, state, monitor.rec, ends)
    return world.bcast(code)


def _finish(cfg: ExportConfig, state: StateDir, rec: TaskRecord, ends: list) -> ExitCode:
    """Rank 0, every rank done: the record's end state and counts, the report combined and put
    in the bucket."""
    total = Tally.summed(t for t, _, _, _ in ends)
    canceled = any(c for _, c, _, _ in ends) or rec.lifecycle is TaskLifecycle.CANCELING
    fault = next((f for _, _, f, _ in ends if f), None)
    rec.counts.total, rec.counts.succeeded, rec.counts.failed = total.total, total.succeeded, total.failed
    if canceled and rec.lifecycle is TaskLifecycle.EXECUTING:
        rec.move(TaskLifecycle.CANCELING)
    final = end_state(canceled, total.failed)
    report_at = f"{cfg.report_path}/{rec.task_id}/{REPORT_CSV}"
    message = f"{total.failed} of {total.total} entries failed to import; see {report_at}" \
        if final is TaskLifecycle.FAILED else ""
    if fault is not None and not canceled:
        final, message = TaskLifecycle.FAILED, str(fault)
    _end(rec, final, message)
    lost = next((x for _, _, _, x in ends if x), "")
    try:
        paths = _write_names(combine(state.task_dir(rec.task_id), rec.ranks, _attrs(rec)))
        lost = _upload_report(_store(cfg, cfg.report_path), cfg.report_path, rec.task_id, paths) or lost
    except (StateError, OSError) as e:
        log.error("the completion report of task %s could not be written: %s", rec.task_id, e)
    code = _exit_code(final)
    if lost and final is not TaskLifecycle.CANCELED:
        rec.lifecycle = TaskLifecycle.EXECUTING  # the end is written again, as FAILED
        rec.fail(f"the completion report could not be written to {cfg.report_path}/{rec.task_id}/ ({lost})")
        code = ExitCode.STORE_UNREACHABLE
    state.write_last(rec)
    log.info("task %s %s: %d succeeded, %d failed, %d skipped, %d unchanged, %d bytes received; report %s",
             rec.task_id, rec.lifecycle.value, total.succeeded, total.failed, total.skipped, total.unchanged,
             total.bytes_sent,
             printable(report_at))
    if fault is not None:
        return ExitCode.STATE_UNUSABLE
    return code
