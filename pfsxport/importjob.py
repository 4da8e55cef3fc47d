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
from .halt import SignalWatch
from .importmanifest import ImportManifest, manifest_dir
from .job import (
    ReportShard,
    Stop,
    end_record,
    exit_code_of,
    fail_early,
    linked,
    prefixed,
    skip_set,
    store_for,
    task_attrs,
    task_paths,
    upload_report,
)
from .lifecycle import TaskLifecycle, end_state
from .metadata import S3Url, parse_s3_url, printable
from .parallel import share_queue
from .report import FAILURES, REPORT_CSV, REPORT_H5, combine
from .restore import FetchOptions, Importer
from .share import Tally
from .state import IMPORT_TASK_TYPE, StateDir, TaskRecord, new_task_id
from .store import S3Store
from .walk import refuse_symlinks

log = logging.getLogger("pfsxport")

ENTRIES_CSV = "entries.csv"  # pfsxport's per-entry CSV of an import (report.csv is FSx's there)


@dataclass
class ImportLeg:
    """One repository an import restores from, into `fs_root`: the task's --repository, or one
    data repository association (its FileSystemPath, `prefix`, relative to the task's root)."""

    prefix: str
    fs_root: str
    repository: S3Url
    subtrees: list[str]  # key prefixes ("" or ending in '/') whose objects are imported
    exact: list[str]  # keys named by a task path that may be an object of their own
    explicit: bool = False  # named by task paths (each must hold an object), not the whole repository


@dataclass
class ImportSetup:
    task_id: str
    legs: list[ImportLeg]




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


def _as_urls(cfg: ExportConfig) -> list[str]:
    """With --repository: task paths as s3:// URLs; a file-system path (relative to the root,
    or absolute inside it) names the key it was exported to."""
    return [p if p.startswith("s3://") else f"{cfg.repository}{task_paths(cfg.fs_root, [p])[0]}"
            for p in cfg.paths]


def _in_repository(url: str, repository: S3Url) -> bool:
    bucket, _, key = url[5:].partition("/")
    return bucket == repository.bucket and (key + "/").startswith(repository.prefix)


def mapped_legs(cfg: ExportConfig, state: StateDir) -> list[ImportLeg]:
    """Without --repository: the legs of the file system's associations. Task paths are s3://
    URLs inside an association's repository, or file-system paths (relative to the root, or
    absolute inside it) mapped through the association whose FileSystemPath holds them; none:
    every association whole. A FileSystemPath that goes through a symlink is refused; one that
    does not exist yet is made."""
    roots = {a.file_system_path.strip("/"): parse_s3_url(a.data_repository_path) for a in linked(state, cfg)}
    asked: dict[str, list[str]] = {r: [] for r in roots}
    whole = set() if cfg.paths else set(roots)
    for p in cfg.paths:
        if p.startswith("s3://"):
            found = [r for r, url in roots.items() if _in_repository(p, url)]
            if not found:
                raise InputError(f"path {p!r} is not inside the repository of any data repository association")
            asked[found[0]].append(p)
            continue
        rel = task_paths(cfg.fs_root, [p])[0]
        r = next((r for r in roots if not r or rel == r or rel.startswith(r + "/")), None)
        if r is None:
            below = [r for r in roots if not rel or r.startswith(rel + "/")]
            if not below:
                raise InputError(f"path {p!r} is under no data repository association's FileSystemPath")
            whole.update(below)
            continue
        sub = rel[len(r):].lstrip("/") if r else rel
        if sub:
            asked[r].append(str(roots[r]) + sub)
        else:
            whole.add(r)
    legs = []
    for r in sorted(roots):
        if r not in whole and not asked[r]:
            continue
        paths = [] if r in whole else asked[r]
        leg_root = os.path.join(cfg.fs_root, r) if r else cfg.fs_root
        if r:
            refuse_symlinks(cfg.fs_root, r, "FileSystemPath", last=True)
            os.makedirs(leg_root, exist_ok=True)
        legs.append(ImportLeg(r, leg_root, roots[r], *import_prefixes(roots[r], paths), explicit=bool(paths)))
    return legs


def _write_names(paths: dict[str, str]) -> dict[str, str]:
    """An import's report files under the names FSx gives them: the failures-format file is
    report.csv (R-2), and pfsxport's per-entry CSV becomes entries.csv."""
    d = os.path.dirname(paths[REPORT_H5])
    os.replace(paths[REPORT_CSV], os.path.join(d, ENTRIES_CSV))
    os.replace(paths[FAILURES], os.path.join(d, REPORT_CSV))
    return {REPORT_CSV: os.path.join(d, REPORT_CSV), ENTRIES_CSV: os.path.join(d, ENTRIES_CSV),
            REPORT_H5: paths[REPORT_H5]}


def _failed(state: StateDir, rec: TaskRecord, message: str, code: ExitCode) -> Stop:
    return fail_early(state, rec, message, code, _write_names)


def _prepare(cfg: ExportConfig, state: StateDir, nranks: int) -> ImportSetup | Stop:
    """Rank 0: record the task, check the paths, the repository and the report's bucket."""
    rec = TaskRecord(new_task_id(), cfg.file_system_id, list(cfg.paths), f"{cfg.report_path}",
                     str(cfg.repository) if cfg.repository else "", ranks=nranks, task_type=IMPORT_TASK_TYPE)
    try:
        state.create(rec, own=True)
    except (TaskError, StateError) as e:
        log.error("%s", e)
        return Stop(e.exit_code)
    print(rec.task_id, flush=True)
    log.info("task %s (import) on %s: %s -> %s with %d rank(s)", rec.task_id, cfg.file_system_id,
             cfg.repository or "its data repository associations", cfg.fs_root, nranks)
    try:
        legs = [ImportLeg("", cfg.fs_root, cfg.repository, *import_prefixes(cfg.repository, _as_urls(cfg)),
                          explicit=bool(cfg.paths))] if cfg.repository else mapped_legs(cfg, state)
    except InputError as e:
        return _failed(state, rec, str(e), ExitCode.BAD_INPUT)
    except OSError as e:
        return _failed(state, rec, f"cannot make a FileSystemPath: {e}", ExitCode.BAD_INPUT)
    for leg in legs:
        store = store_for(cfg, leg.repository)
        try:
            empty = [p for p in leg.subtrees if not _holds(store.list_page(p, "/"))]
            for prefix in empty if leg.explicit else []:
                key = prefix[:-1]
                if key not in leg.exact or not any(o.key == key for o in store.list_page(key, "/").objects):
                    return _failed(state, rec, f"path s3://{leg.repository.bucket}/{key} holds no objects",
                                       ExitCode.BAD_INPUT)
        except StoreError as e:
            return _failed(state, rec, f"cannot import from {leg.repository}: {e}", ExitCode.STORE_UNREACHABLE)
    try:
        report = cfg.report_path
        store_for(cfg, report).check_writable(f"{report.prefix}/" if report.prefix else "")
    except StoreError as e:
        return _failed(state, rec, f"cannot write the report to {cfg.report_path}: {e}",
                           ExitCode.STORE_UNREACHABLE)
    rec.move(TaskLifecycle.EXECUTING)
    rec.start_time = time.time()
    state.write(rec)
    return ImportSetup(rec.task_id, legs)


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


def _items(leg: ImportLeg) -> list:
    return [("prefix", p) for p in leg.subtrees] + [("exact", k) for k in leg.exact]


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
    if isinstance(setup, Stop):
        return setup.exit_code
    stopping = _Stopping(watch, state, setup.task_id)
    monitor = None
    canceled = False
    tally = Tally()
    shard = ReportShard(state.task_dir(setup.task_id), world.rank)
    lock = threading.Lock()

    def rows(batch) -> None:
        with lock:
            tally.rows(batch)
            shard.add(batch)
    fault = None
    t0 = time.monotonic()
    current: list = [None]  # the leg's importer, whose bytes are not in the tally yet

    def progress() -> str:  # rank 0's own share: the other ranks' counts arrive at the end
        dt = max(time.monotonic() - t0, 1e-9)
        with lock:
            imp = current[0]
            received = tally.bytes_sent + (imp.bytes if imp else 0)
            unchanged = tally.unchanged + (imp.unchanged if imp else 0)
        return (f"rank 0 of {world.size}: {tally.total} entries written ({tally.failed} failed), "
                f"{unchanged} unchanged, {received / 1e6:.1f} MB received, "
                f"{tally.total / dt:.0f} entries/s, {received / dt / 1e6:.1f} MB/s")
    if world.rank == 0:
        monitor = _Watch(state, state.read(setup.task_id), stopping, cfg.status_interval,
                         None if cfg.progress == "off" else progress, cfg.progress_interval)
        monitor.start()
    for leg in setup.legs:
        if world.rank == 0 and len(setup.legs) > 1:
            log.info("%s -> %s", leg.repository, leg.fs_root)
        store = store_for(cfg, leg.repository)
        manifest = ImportManifest(manifest_dir(cfg.state_dir, cfg.file_system_id, str(leg.repository)))
        try:
            manifest.load().open(setup.task_id, world.rank)
        except StateError as e:
            log.error("%s", e)
            manifest, fault = None, e
        importer = Importer(leg.fs_root, leg.repository, store, opts, world.rank, prefixed(rows, leg.prefix),
                            stopping, manifest, skip_set(cfg, leg.fs_root))
        with lock:
            current[0] = importer
        fault = _run_leg(world, leg, store, importer, manifest) or fault
        with lock:
            tally.bytes_sent += importer.bytes
            tally.unchanged += importer.unchanged
            current[0] = None
        canceled = canceled or importer.canceled and importer.fault is None
        fault = fault or importer.fault
    lost = shard.finish(store_for(cfg, cfg.report_path), cfg.report_path, setup.task_id)
    fault = fault or shard.fault
    ends = world.allgather((tally, canceled, fault, lost))
    code = None
    if world.rank == 0:
        monitor.done.set()
        monitor.join()
        code = _finish(cfg, state, monitor.rec, ends)
    return world.bcast(code)


def _run_leg(world, leg: ImportLeg, store: S3Store, importer: Importer,
             manifest: ImportManifest | None) -> StateError | None:
    """Collective: one leg listed through the shared queue, its files fetched, then (all ranks
    drained) its directories' metadata; its manifest closed and, by rank 0, compacted."""
    fault = None
    try:
        share_queue(world, _items(leg) if world.rank == 0 else [], _handler(world, store, importer))
        importer.drain()
    except StateError as e:
        fault = e
    world.barrier()  # every rank's files are written: the directories' metadata can be set
    try:
        importer.settle_dirs()
    except StateError as e:
        fault = fault or e
    importer.shutdown()
    if manifest is not None:
        manifest.close()
    faults = world.allgather(fault or importer.fault)
    importer.target.sweep(importer.touched)  # every rank is done writing
    importer.close()
    if world.rank == 0 and manifest is not None and not any(faults):
        try:
            manifest.compact()
        except StateError as e:
            log.error("the import manifest could not be compacted (the next run reads its parts): %s", e)
    return fault


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
    end_record(rec, final, message)
    lost = next((x for _, _, _, x in ends if x), "")
    try:
        paths = _write_names(combine(state.task_dir(rec.task_id), rec.ranks, task_attrs(rec)))
        lost = upload_report(store_for(cfg, cfg.report_path), cfg.report_path, rec.task_id, paths) or lost
    except (StateError, OSError) as e:
        log.error("the completion report of task %s could not be written: %s", rec.task_id, e)
    code = exit_code_of(final)
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
