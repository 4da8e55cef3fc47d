"""One export task from start to end: prepare -> walk and transfer -> report.

`export` is collective (every rank calls it). Rank 0 creates the task record, checks the
paths and the store, runs the scheduler and writes the report; every rank walks and
transfers. The world, the store class and the layout source come in from outside.
A signal (halt.SignalWatch) is a cancel, as `task cancel` is; a second one, or the grace
running out, aborts the open uploads and ends the job (Monitor).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field

from .config import ExportConfig
from .dra import Association, AssociationLifecycle
from .errors import ConfigError, ExitCode, InputError, StateError, StoreError, TaskError
from .eventlog import NOT_IN_DRA, EventLog, export_message, log_path
from .export import TASK_EVENTS, NoDelta, Transfer, TransferOptions
from .halt import ABORT_WAIT, Halt, SignalWatch
from .lifecycle import TaskLifecycle, end_state
from .lustre import LayoutSource
from .manifest import Manifest, manifest_dir
from .metadata import S3Url, parse_s3_url, printable
from .model import DirUnit, Entry, EntryKind, ReportRow, RowStatus
from .report import FAILURES, REPORT_H5, ReportWriter, combine
from .report import preload as report_preload
from .schedule import STOP, Scheduler
from .share import Tally
from .state import FileLock, StateDir, TaskRecord, new_task_id
from .store import Capabilities, S3Store
from .store import preload as store_preload
from .walk import lstat_entry, refuse_symlinks
from .worker import Worker

log = logging.getLogger("pfsxport")


@dataclass
class Leg:
    """One repository a task exports to: the tree under `fs_root` to `repository`. A task
    given --repository has one leg; a task mapped through associations, one per association."""

    fs_root: str
    repository: S3Url
    roots: list[Entry]
    prefix: str = ""  # fs_root relative to the task's fs_root: report rows are relative to the latter
    caps: Capabilities | None = None
    resumable: dict = field(default_factory=dict)  # path -> manifest.OpenUpload a dead job left open
    failed: list[ReportRow] = field(default_factory=list)  # its roots, when its repository cannot be written


@dataclass
class Setup:
    task_id: str
    legs: list[Leg]
    outside: list[ReportRow]  # entries under no association (S3ExportLocalObjectNotMatchDra)


@dataclass
class Stop:
    exit_code: ExitCode


def task_paths(fs_root: str, paths: list[str]) -> list[str]:
    """Normalize task paths to '/'-joined paths relative to the root ("" = the root itself);
    absolute paths must lie inside the root. Paths inside another requested path are dropped."""
    out: list[str] = []
    for p in paths or [""]:
        if os.path.isabs(p):
            rel = os.path.relpath(os.path.normpath(p), fs_root)
            if rel == ".." or rel.startswith("../"):  # given through the root's real path
                rel = os.path.relpath(os.path.normpath(p), os.path.realpath(fs_root))
        else:
            rel = os.path.normpath(p) if p else "."
        if rel == ".":
            rel = ""
        if rel == ".." or rel.startswith("../"):
            raise InputError(f"path {p!r} is outside the file system root {fs_root}")
        out.append(rel)
    out = sorted(set(out))
    return [p for p in out if not any(q == "" or p.startswith(q + "/") for q in out if q != p)]


def skip_set(cfg: ExportConfig, fs_root: str) -> frozenset[str]:
    """The state directory is never exported (nor verified) when it lies inside the tree."""
    rel = os.path.relpath(os.path.realpath(cfg.state_dir), os.path.realpath(fs_root))
    return frozenset() if rel.startswith("..") or rel == "." else frozenset({rel})


def linked(state: StateDir, cfg: ExportConfig) -> list[Association]:
    """The associations a task without --repository exports through."""
    usable = (AssociationLifecycle.AVAILABLE, AssociationLifecycle.UPDATING, AssociationLifecycle.MISCONFIGURED)
    return [a for a in state.associations(cfg.file_system_id) if a.lifecycle in usable]


def check_repository(cfg: ExportConfig) -> None:
    """Before a task is recorded: it needs --repository or associations to map through;
    the report goes to the first association's bucket unless --report-path says otherwise."""
    if cfg.repository is not None:
        return
    state = StateDir(cfg.state_dir)
    state.declare_associations(cfg.file_system_id, cfg.associations)
    assocs = linked(state, cfg)
    if not assocs:
        raise ConfigError("missing required key 'repository' (give --repository or set it in a --config file; "
                          f"or link paths of file system {cfg.file_system_id} with `pfsxport dra create`)")
    if cfg.report_path is None:  # the first association's bucket, one that can be written if there is one
        first = next((a for a in assocs if a.lifecycle is AssociationLifecycle.AVAILABLE), assocs[0])
        cfg.report_path = S3Url(parse_s3_url(first.data_repository_path).bucket, "pfsxport-reports")


def _outside(fs_root: str, top: str, linked_roots: list[str]) -> list[str]:
    """Entries under task path `top` that lie under no association root: whole subtrees,
    named by their topmost path (the walk goes down only toward association roots)."""
    below = [r for r in linked_roots if not top or r.startswith(top + "/")]
    if not below:
        return [top] if top else []
    out = []
    try:
        names = sorted(os.listdir(os.path.join(fs_root, top) if top else fs_root))
    except OSError:
        return []
    for name in names:
        child = f"{top}/{name}" if top else name
        if child in below:
            continue
        if any(r.startswith(child + "/") for r in below):
            out += _outside(fs_root, child, below)
        else:
            out.append(child)
    return out


def _plan_legs(cfg: ExportConfig, state: StateDir, rels: list[str]) -> tuple[list[tuple[str, S3Url, list[str], str]],
                                                                               list[str]]:
    """[(fs_root, repository, task paths under it, prefix)] and the entries outside every
    association (FSx: "local file does not belong to a data repository linked path")."""
    if cfg.repository is not None:
        return [(cfg.fs_root, cfg.repository, rels, "")], []
    legs: list[tuple[str, S3Url, list[str], str]] = []
    roots = {a.file_system_path.strip("/"): a for a in linked(state, cfg)}
    for r, a in sorted(roots.items()):
        paths = []
        for p in rels:
            if not r or p == r or p.startswith(r + "/"):
                paths.append(p[len(r):].lstrip("/") if r else p)
            elif not p or r.startswith(p + "/"):
                paths.append("")
        if paths:
            leg_root = os.path.join(cfg.fs_root, r) if r else cfg.fs_root
            refuse_symlinks(cfg.fs_root, r, f"FileSystemPath of {a.association_id}:", last=True)
            if not os.path.isdir(leg_root):
                raise InputError(f"FileSystemPath {a.file_system_path} of {a.association_id} is not a directory")
            legs.append((leg_root, parse_s3_url(a.data_repository_path), task_paths(leg_root, paths), r))
    outside = []
    for p in rels:
        if not any(not r or p == r or p.startswith(r + "/") for r in roots):
            outside += _outside(cfg.fs_root, p, list(roots))
    return legs, outside


def plan_task(cfg: ExportConfig, state: StateDir) -> tuple[list[tuple[str, S3Url, list[str], str]], list[str]]:
    """The task's paths checked (inside the root, through no symlink, there) and split over
    its repositories: _plan_legs of them. Raises InputError."""
    rels = task_paths(cfg.fs_root, cfg.paths)
    for rel in rels:
        refuse_symlinks(cfg.fs_root, rel, "path")
        try:
            lstat_entry(cfg.fs_root, rel)
        except FileNotFoundError:
            raise InputError(f"path {rel!r} does not exist under {cfg.fs_root}") from None
        except OSError as e:
            raise InputError(f"path {rel!r} cannot be read: {e.strerror}") from None
    return _plan_legs(cfg, state, rels)


def _outside_rows(cfg: ExportConfig, task_id: str, paths: list[str]) -> list[ReportRow]:
    events = EventLog(log_path(cfg.state_dir, cfg.file_system_id), cfg.event_log_level, cfg.file_system_id)
    rows = []
    for p in paths:
        try:
            e = lstat_entry(cfg.fs_root, p)
        except OSError:
            continue
        rows.append(ReportRow(p, e.kind.value, e.size, RowStatus.SKIPPED,
                              message="not under the FileSystemPath of any data repository association"))
        events.event("WARN", NOT_IN_DRA, export_message(NOT_IN_DRA, "", ""), taskId=task_id, path=p)
    if rows:
        log.warning("%s: %d entr%s under no data repository association skipped (e.g. %s)", NOT_IN_DRA, len(rows),
                    "y" if len(rows) == 1 else "ies", printable(rows[0].path))
    return rows


def _prepare(cfg: ExportConfig, state: StateDir, nranks: int, fs_lock: FileLock) -> Setup | Stop:
    """Rank 0: record the task, take the file system from auto-export, check the paths and
    each repository. Nothing is uploaded here except the probe objects, which are removed."""
    try:
        if cfg.task_id:
            rec = state.adopt(cfg.task_id, nranks)
        else:
            rec = new_record(cfg, nranks)
            state.create(rec, own=True)
    except (TaskError, StateError) as e:
        log.error("%s", e)
        return Stop(e.exit_code)
    print(rec.task_id, flush=True)
    try:
        return _start(cfg, state, rec, nranks, fs_lock)
    except StateError as e:  # e.g. a corrupt manifest, or no space left for the record
        return fail_early(state, rec, str(e), ExitCode.STATE_UNUSABLE)


def _start(cfg: ExportConfig, state: StateDir, rec: TaskRecord, nranks: int, fs_lock: FileLock) -> Setup | Stop:
    """Rank 0, the task recorded: the rest of _prepare."""
    if not fs_lock.acquire(wait=False):  # auto-export is in the middle of a batch (E-18)
        log.info("waiting for auto-export to finish its current batch on %s", cfg.file_system_id)
        fs_lock.acquire(wait=True)
    log.info("task %s on %s: %s -> %s with %d rank(s)", rec.task_id, cfg.file_system_id, cfg.fs_root,
             cfg.repository or "its data repository associations", nranks)
    other = state.claim_tree(cfg.fs_root)
    if other:
        log.warning("another state directory, %s, has also run tasks on %s: tasks recorded there are not seen "
                    "here, so the one-task-per-file-system rule does not hold between the two; use one state "
                    "directory per file system", other, cfg.fs_root)
    try:
        planned, outside = plan_task(cfg, state)
        legs = [Leg(root, repo, [lstat_entry(root, p) for p in paths], prefix) for root, repo, paths, prefix in planned]
    except InputError as e:
        return fail_early(state, rec, str(e), ExitCode.BAD_INPUT)
    rec.move(TaskLifecycle.EXECUTING)
    rec.start_time = time.time()
    state.write(rec)
    for leg in legs:
        if cfg.repository is None:
            log.info("%s -> %s", leg.fs_root, leg.repository)
        manifest = manifest_for(cfg, leg.repository)
        store = store_for(cfg, leg.repository)
        try:
            _ready(cfg, leg, manifest, store)
        except StoreError as e:
            if store.bucket_lost:
                manifest.mark_lost(store.bucket_lost)
            if len(legs) == 1:
                return fail_early(state, rec, f"cannot write to {leg.repository}: {e}", ExitCode.STORE_UNREACHABLE)
            log.error("cannot write to %s: %s; the entries under %s fail, the other associations go ahead",
                      leg.repository, e, leg.prefix or "/")
            leg.failed = [ReportRow(_joined(leg.prefix, r.path), r.kind.value, r.size, RowStatus.FAILED, e.code.value,
                                    message=f"cannot write to {leg.repository}: {e}"[:500]) for r in leg.roots]
            continue
        if cfg.s3.sign_payload == "never" and not leg.caps.crc32_verified and \
                (store.endpoint_url() or "").startswith("http:"):
            log.warning("s3.sign_payload is 'never' over http and the store does not verify CRC32: "
                        "nothing but TCP checks the bodies on their way")
        if not leg.caps.dir_metadata:
            log.warning("this store keeps no user metadata on keys ending in '/': directory objects will "
                        "lose their file-permissions, owner and times (known for SeaweedFS)")
        log.info("store: checksum %s", "crc32 (verified by the store)" if leg.caps.crc32_verified else
                 "crc32 (sent, not verified by the store)" if leg.caps.crc32 else "none accepted")
    if all(leg.failed for leg in legs):
        return fail_early(state, rec, f"no data repository can be written: {legs[0].failed[0].message}",
                           ExitCode.STORE_UNREACHABLE)
    report = cfg.report_path
    # a bucket that took the probe takes the report too; a dry run writes its report only here
    if not cfg.dry_run and report.bucket not in {leg.repository.bucket for leg in legs if not leg.failed}:
        try:
            store_for(cfg, report).check_writable(f"{report.prefix}/" if report.prefix else "")
        except StoreError as e:
            return fail_early(state, rec, f"cannot write the report to {report}: {e}", ExitCode.STORE_UNREACHABLE)
    return Setup(rec.task_id, legs, _outside_rows(cfg, rec.task_id, outside))


def _ready(cfg: ExportConfig, leg: Leg, manifest: Manifest, store: S3Store) -> None:
    """Rank 0: the manifest up to date (what a job that died made durable goes in before
    anything is decided) and the repository probed (raises StoreError). A dry run changes
    neither: it reads the manifest as it is and only asks whether the bucket is there."""
    if cfg.dry_run:
        store.head_bucket()
        leg.caps = Capabilities(False, False, True)
        return
    open_uploads = manifest.merge()
    if open_uploads:
        log.info("found %d multipart upload(s) left open by an earlier job: their parts are reused where "
                 "the file is unchanged, else they are aborted", len(open_uploads))
    leg.resumable = {u.path: u for u in open_uploads}
    leg.caps = store.probe(leg.repository.prefix, cfg.s3.checksum)
    if cfg.reconcile or manifest.lost() is not None:  # --reconcile, or the bucket was found gone
        done = manifest.reconcile(store.list_objects(leg.repository.prefix), leg.repository.prefix)
        log.info("reconciled with %s: %d object(s) listed, %d entr%s missing there to export again",
                 leg.repository, done.listed, done.forgotten, "y" if done.forgotten == 1 else "ies")


def store_for(cfg: ExportConfig, url: S3Url) -> S3Store:
    """The store of a repository, its connection pool sized for the transfer settings."""
    t = cfg.transfer
    return S3Store(url.bucket, cfg.s3, pool=t.concurrency + t.parts_in_flight + 4)


def manifest_for(cfg: ExportConfig, repository: S3Url) -> Manifest:
    """The manifest of what export recorded for one repository of this file system."""
    return Manifest(manifest_dir(cfg.state_dir, cfg.file_system_id, str(repository)))


def new_record(cfg: ExportConfig, nranks: int = 1) -> TaskRecord:
    return TaskRecord(new_task_id(), cfg.file_system_id, list(cfg.paths), f"{cfg.report_path}",
                      str(cfg.repository) if cfg.repository else "", ranks=nranks, dry_run=cfg.dry_run)


def fail_early(state: StateDir, rec: TaskRecord, message: str, code: ExitCode, named=lambda paths: paths) -> Stop:
    """Rank 0, before any rank started: the task FAILED with `message`, and its (empty) local
    report, whose files `named` may give other names (an import's)."""
    log.error("task %s FAILED: %s", rec.task_id, message)
    rec.fail(message)
    state.write_last(rec)
    try:
        ReportWriter(state.task_dir(rec.task_id), 0).finish()
        named(combine(state.task_dir(rec.task_id), 1, task_attrs(rec)))
    except (StateError, OSError) as e:
        log.error("no local report for task %s: %s", rec.task_id, e)
    return Stop(code)


def task_attrs(rec: TaskRecord) -> dict:
    """The task's fields as report attributes (scalars only)."""
    d = rec.to_fsx()
    out = {k: v for k, v in d.items() if isinstance(v, (str, int, float))}
    out.update({f"Status.{k}": v for k, v in d["Status"].items()})
    out["Paths"] = ",".join(rec.paths)
    if rec.failure_message:
        out["FailureDetails.Message"] = rec.failure_message
    return out


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class Monitor(threading.Thread):
    """Rank 0: refreshes the task record, notices cancel requests and signals, prints progress.
    After an abort, ends the task and the job itself if they have not ended ABORT_WAIT later."""

    def __init__(self, cfg: ExportConfig, state: StateDir, rec: TaskRecord, scheduler: Scheduler,
                 lock: threading.Lock, watch: SignalWatch | None = None, report_so_far=None,
                 end_job=None):
        super().__init__(name="pfsxport-monitor", daemon=True)
        self.cfg, self.state, self.rec, self.scheduler, self.lock = cfg, state, rec, scheduler, lock
        self.watch = watch or SignalWatch(cfg.transfer.cancel_grace)  # one never installed sees no signal
        # report_so_far(attrs): the local report from the shards there are; end_job(code): every rank, now
        self.report_so_far, self.end_job = report_so_far, end_job
        self.settled: TaskRecord | None = None  # the record as the task ends, once its report is written
        self.ending = threading.Lock()  # held while the task's end is written
        self.ended = False  # the record holds the task's end
        self.watchdog: threading.Timer | None = None
        self._watchdog_lock = threading.Lock()
        self.done = threading.Event()  # the task's end is being written: no more refreshes
        self.left = threading.Event()  # ... and the monitor has stopped them
        self.over = threading.Event()  # the task's end is written
        mode = cfg.progress
        self.mode = ("bar" if sys.stderr.isatty() else "log") if mode == "auto" else mode
        self.t0 = time.monotonic()
        self.final = None  # the task's progress from every rank's final counts, once they are summed
        self._metrics_failed = False

    def run(self) -> None:
        last_status = last_print = 0.0
        interval = 0.5 if self.mode == "bar" else self.cfg.progress_interval
        while not self.done.wait(0.25):
            now = time.monotonic()
            self.check_cancel()
            if now - last_status >= self.cfg.status_interval:
                self.refresh()
                last_status = now
            if self.mode != "off" and now - last_print >= interval:
                self.print_progress(final=False)
                last_print = now
        self.left.set()
        while not self.over.wait(0.25):  # a report upload that hangs can still be cut short
            if self.watch.level() is Halt.ABORT:
                self.start_watchdog()

    def check_cancel(self) -> None:
        self.watch.escalate(self.scheduler.told, "a signal to another rank")
        level = self.watch.level()
        if self.rec.lifecycle is TaskLifecycle.EXECUTING and (level or self.state.cancel_requested(self.rec.task_id)):
            with self.lock:
                self.scheduler.cancel()
            self.rec.move(TaskLifecycle.CANCELING)
            self.state.write(self.rec)
            log.warning("task %s: %s; queued files will not be started, files in flight finish%s", self.rec.task_id,
                        f"{self.watch.reason}: canceling" if level else "cancel requested",
                        f" (for at most {self.watch.grace:g} s; a second signal stops at once)" if level else "")
        if level is Halt.ABORT and self.watchdog is None:
            with self.lock:
                self.scheduler.abort()
            log.warning("task %s: %s: aborting %d open multipart upload(s); files in flight are not waited for",
                        self.rec.task_id, self.watch.reason, self.scheduler.aborted_uploads)
            self.start_watchdog()

    def start_watchdog(self) -> None:
        with self._watchdog_lock:
            if self.watchdog is None:
                self.watchdog = threading.Timer(ABORT_WAIT, self.end_now)
                self.watchdog.daemon = True
                self.watchdog.start()

    def end_now(self) -> None:
        """The abort has not ended the job ABORT_WAIT after it began (a rank or the store does
        not answer): the task ends CANCELED with the report so far, and every rank now."""
        if self.ending.acquire(timeout=ABORT_WAIT):  # else the report is being written: a stuck upload
            if not self.ended:
                with self.lock:
                    self.rec.counts = self.scheduler.progress().counts
                    if self.rec.lifecycle is TaskLifecycle.EXECUTING:
                        self.rec.move(TaskLifecycle.CANCELING)
                    if self.rec.lifecycle is TaskLifecycle.CANCELING:
                        self.rec.move(TaskLifecycle.CANCELED)
                        self.rec.end_time = self.rec.last_updated = time.time()
                    if self.report_so_far is not None:
                        try:
                            self.report_so_far(task_attrs(self.rec))
                        except StateError as e:
                            log.error("no local report for task %s: %s", self.rec.task_id, e)
                    self.settled = self.rec
                self.ended = True
        if self.ended:
            self.state.write(self.settled or self.rec)
        log.error("task %s: the job did not stop within %g s of the abort: ending it now (an upload left open "
                  "is aborted by the next export)", self.rec.task_id, ABORT_WAIT)
        if self.end_job is not None:
            self.end_job(exit_code_of(self.rec.lifecycle) if self.ended else ExitCode.CANCELED)

    def refresh(self) -> None:
        with self.lock:
            p = self.scheduler.progress()
        self.rec.counts = p.counts
        self.rec.last_updated = time.time()
        self.check_cancel()
        try:
            self.state.write(self.rec)
        except StateError as e:
            with self.lock:
                first = self.scheduler.fault is None
                self.scheduler.halt(e)
            if first:
                log.error("%s; the task stops", e)
        with self.lock:
            tallies = [self.scheduler.tallies.get(r, Tally()) for r in range(self.rec.ranks)]
        self.write_metrics(self.rec, tallies)

    def write_metrics(self, rec: TaskRecord, tallies: list[Tally]) -> None:
        """The task's metrics in node_exporter's textfile (metrics.textfile), if asked for; a
        textfile that cannot be written is warned about once, never fatal."""
        path = self.cfg.metrics.textfile
        if not path or self._metrics_failed:
            return
        from .metrics import write_task_textfile

        try:
            write_task_textfile(path, rec.to_fsx(), tallies, time.time() - (rec.start_time or time.time()))
        except OSError as e:
            self._metrics_failed = True
            log.warning("cannot write the metrics textfile %s: %s", path, e.strerror or e)

    def print_progress(self, final: bool) -> None:
        with self.lock:
            p = self.final if final and self.final is not None else self.scheduler.progress()
        dt = max(time.monotonic() - self.t0, 1e-9)
        done = p.counts.total + p.skipped + p.unchanged
        rate = done / dt
        mbs = p.bytes_sent / dt / 1e6
        walking = not final and (self.scheduler.dirs or self.scheduler.outstanding)
        if final or not p.discovered:
            eta = ""
        elif walking and done < p.discovered:
            eta = f", ETA {_hms((p.discovered - done) / rate) if rate else '?'}+ (walk continues)"
        else:
            eta = f", ETA {_hms(max(p.discovered - done, 0) / rate) if rate else '?'}"
        line = (f"{done}/{p.discovered or '?'} entries, {p.unchanged} unchanged, {p.counts.failed} failed, "
                f"{p.bytes_sent / 1e6:.1f} MB sent, {rate:.0f} entries/s, {mbs:.1f} MB/s{eta}")
        if self.mode == "bar" and not final:
            sys.stderr.write("\r\x1b[K" + line)
            sys.stderr.flush()
        else:
            if self.mode == "bar":
                sys.stderr.write("\r\x1b[K")
            log.info("%s%s", "done: " if final else "progress: ", line)


def export(world, cfg: ExportConfig, watch: SignalWatch | None = None) -> ExitCode:
    """Collective: run one export task on every rank of `world`; returns the exit code.
    `watch`: this rank's signals (SIGTERM, SIGINT), which cancel the task."""
    watch = watch or SignalWatch(cfg.transfer.cancel_grace)
    state = StateDir(cfg.state_dir)
    fs_lock = state.fs_lock(cfg.file_system_id)  # held by rank 0 for the whole task
    if world.rank == 0:
        setup = _prepare(cfg, state, world.size, fs_lock)
    else:
        setup = None
        store_preload(cfg.s3)  # while rank 0 prepares the task, not after
    setup = world.bcast(setup)
    if isinstance(setup, Stop):
        fs_lock.release()
        return setup.exit_code
    lock = threading.Lock()
    scheduler = monitor = None
    tally = Tally()  # this rank's counts; its rows go to its own report shard
    shard = ReportShard(state.task_dir(setup.task_id), world.rank)
    # the report's import runs beside the walk, where other ranks take up the slack, not at the end
    threading.Thread(target=report_preload, name="pfsxport-preload", daemon=True).start()
    if world.rank == 0:
        rec = state.read(setup.task_id)
        local = setup.outside + [r for leg in setup.legs for r in leg.failed]
        shard.add(local)
        tally.rows(local)
        tally.discovered = sum(1 for leg in setup.legs for e in leg.roots if e.path) + len(setup.outside)
        scheduler = Scheduler([], world.size, reads_per_ost=cfg.transfer.reads_per_ost)
        monitor = Monitor(cfg, state, rec, scheduler, lock, watch,
                          lambda attrs: shard.report_so_far(state.task_dir(setup.task_id), world.size, attrs),
                          world.abort)
        monitor.check_cancel()  # a signal while the task was prepared: nothing is sent
        monitor.start()
    for leg in setup.legs:
        if not leg.failed:
            _run_leg(world, cfg, setup.task_id, leg, scheduler, lock, watch, shard, tally)
    lost = shard.finish(None if cfg.dry_run else store_for(cfg, cfg.report_path), cfg.report_path, setup.task_id)
    ends = world.allgather((tally, shard.fault, lost))  # every shard is written before rank 0 combines them
    code = None
    if world.rank == 0:
        fs_lock.release()
        fault = next((f for _, f, _ in ends if f), None)
        if fault is not None:
            with lock:
                scheduler.halt(fault)
        code = _finish(cfg, state, store_for(cfg, cfg.report_path), scheduler, monitor,
                       [t for t, _, _ in ends], next((x for _, _, x in ends if x), ""))
    return world.bcast(code)


class ReportShard:
    """This rank's part of the task's report (report.ReportWriter); a shard that cannot be
    written keeps its fault, which reaches the scheduler through the worker (`add` raises)."""

    def __init__(self, directory: str, rank: int):
        self.rank = rank
        self.fault: StateError | None = None
        try:
            self.writer: ReportWriter | None = ReportWriter(directory, rank)
        except StateError as e:
            self.writer, self.fault = None, e

    def add(self, rows: list[ReportRow]) -> None:
        if self.writer is None:
            raise StateError(self.fault.name, self.fault.detail)
        self.writer.add(rows)

    def report_so_far(self, directory: str, nranks: int, attrs: dict) -> None:
        """Rank 0, when the job must end before every rank is done: this shard finished, and
        the local report put together from the shards there are."""
        if self.writer is not None and not self.writer.finished:
            self.writer.finish()
        combine(directory, nranks, attrs, partial=True)

    def finish(self, store: S3Store | None, report: S3Url, task_id: str) -> str:
        """Write the shard's HDF5 file and put it beside the report in the bucket (not with no
        `store`: a dry run); returns the store's error if it could not go there ("" when it went)."""
        if self.writer is None:
            return ""
        try:
            path = self.writer.paths[REPORT_H5] if self.writer.finished else self.writer.finish()
        except StateError as e:
            self.fault = self.fault or e
            return ""
        name = os.path.relpath(path, os.path.dirname(os.path.dirname(path)))  # shards/rank-NNNNN.h5
        return upload_report(store, report, task_id, {name: path}) if store is not None else ""


def _run_leg(world, cfg: ExportConfig, task_id: str, leg: Leg, scheduler: Scheduler | None,
             lock: threading.Lock, watch: SignalWatch, shard: ReportShard, tally: Tally) -> None:
    """Collective: export one leg's paths to its repository; its manifest is merged at the end.
    Each rank's rows go to its `shard` and its counts to `tally`."""
    from .parallel import run_work

    t = cfg.transfer
    store = store_for(cfg, leg.repository)
    store.checksum = leg.caps.crc32 and cfg.s3.checksum != "none"
    manifest = manifest_for(cfg, leg.repository)
    reader = manifest.reader()
    delta = NoDelta() if cfg.dry_run else manifest.delta_log(task_id, world.rank)  # a dry run records nothing
    transfer = Transfer(leg.fs_root, leg.repository, store, LayoutSource(t.lfs, t.stripe_size),
                        TransferOptions.of(t, cfg.s3.max_object_size),
                        rank=world.rank, skip=skip_set(cfg, leg.fs_root), manifest=reader, delta=delta,
                        full=cfg.full, events=TASK_EVENTS | ({"DELETED"} if cfg.delete else set()),
                        dry_run=cfg.dry_run)
    if world.rank == 0:
        with lock:
            scheduler.start_leg(_root_units(transfer, leg.roots), leg.resumable)
    world.barrier()  # the leg's first units are queued before any rank asks for work
    traffic = run_work(world, scheduler, lock,
                       lambda ch, peers: Worker(transfer, ch, t.concurrency, t.parts_in_flight, delta.flush,
                                                rows=prefixed(shard.add, leg.prefix), tally=tally, watch=watch,
                                                peers=peers), STOP)
    if world.rank == 0:
        if world.size > 1:
            log.info("coordination: %d messages to or from rank 0 (%d requests, %d thefts answered, %d made); "
                     "%d units moved by theft", traffic.messages, traffic.requests, traffic.answers,
                     traffic.thefts, traffic.moved)
        _abort_unclaimed(transfer, scheduler, leg.roots)
    if store.bucket_lost and not cfg.dry_run:  # what this task wrote may be gone with the bucket: reconcile next
        manifest.mark_lost(store.bucket_lost)
    faults = world.allgather(delta.close())  # every rank's delta log is complete before any is merged
    reader.close()
    fault = next((f for f in faults if f), None)
    if world.rank == 0:
        fault = scheduler.fault or fault
    if world.bcast(fault is None and not cfg.dry_run):  # else the logs stay for the next task to merge
        faults = world.allgather(_merge_part(manifest, world.rank, world.size))
        fault = next((f for f in faults if f), None)
        if world.rank == 0 and fault is None:
            manifest.drop_logs()
    if world.rank == 0 and fault is not None:
        with lock:
            scheduler.halt(fault)


def _merge_part(manifest: Manifest, rank: int, size: int) -> StateError | None:
    """This rank's share of the manifest merge at the end of a leg, or the fault that stopped it."""
    try:
        manifest.merge_part(rank, size)
    except StateError as e:
        return e
    return None


def _joined(prefix: str, path: str) -> str:
    return f"{prefix}/{path}" if prefix and path else prefix or path


def prefixed(sink, prefix: str):
    """Report rows of a leg carry paths relative to the task's root, not the leg's."""
    if not prefix:
        return sink

    def add(rows: list[ReportRow]) -> None:
        for r in rows:
            r.path = _joined(prefix, r.path)
        sink(rows)
    return add


def _root_units(transfer: Transfer, roots: list[Entry]) -> list:
    """The task paths' own entries (not the root's) when new or changed, plus a scan of
    each directory among them."""
    own = []
    for e in roots:
        if e.path:
            parent = e.path.rpartition("/")[0]
            previous = transfer.manifest.directory(parent) if transfer.manifest else {}
            own += transfer.changed([e], previous)[0]
    return transfer.route(own) + [DirUnit(e.path) for e in roots if e.kind is EntryKind.DIRECTORY]


def _abort_unclaimed(transfer: Transfer, scheduler: Scheduler, roots: list[Entry]) -> None:
    """Uploads a dead job left open for files this task covered but did not resume (the file
    changed, was deleted, or was exported whole) will never complete: abort them."""
    for path, up in list(scheduler.resumable.items()):
        if any(not r.path or path == r.path or path.startswith(r.path + "/") for r in roots):
            transfer.abort_open(up)
            del scheduler.resumable[path]


def _finish(cfg: ExportConfig, state: StateDir, store: S3Store, scheduler: Scheduler, monitor: Monitor,
            tallies: list[Tally], lost_shard: str) -> ExitCode:
    """Rank 0, every rank done: the record's end state and counts (from `tallies`, each rank's
    final counts), the report combined from the shards and put in the bucket."""
    total = Tally.summed(tallies)
    monitor.done.set()
    monitor.left.wait()
    monitor.check_cancel()
    rec = monitor.rec
    monitor.ending.acquire()  # an abort's watchdog lets this end the task, or cuts a stuck upload short
    p = scheduler.progress(total)
    monitor.final = p
    rec.counts = p.counts
    final = end_state(scheduler.canceled, p.counts.failed)
    message = f"{p.counts.failed} of {p.counts.total} entries failed to export; " \
              f"see {cfg.report_path}/{rec.task_id}/{FAILURES}" if final is TaskLifecycle.FAILED else ""
    if scheduler.fault is not None and rec.lifecycle is TaskLifecycle.EXECUTING:
        final, message = TaskLifecycle.FAILED, str(scheduler.fault)
    planned = dataclasses.replace(rec)
    end_record(planned, final, message)
    try:
        report = combine(state.task_dir(rec.task_id), rec.ranks, task_attrs(planned))
        monitor.settled, monitor.ended = planned, True
        lost = "" if cfg.dry_run else upload_report(store, cfg.report_path, rec.task_id, report) or lost_shard
    except StateError as e:
        log.error("the completion report of task %s could not be written: %s", rec.task_id, e)
        lost = ""
    code = exit_code_of(final)
    where = state.task_dir(rec.task_id) + "/ (a dry run: not in the bucket)" if cfg.dry_run else \
        f"{cfg.report_path}/{rec.task_id}/"
    if lost:  # the record and the exit code say so; the state directory keeps the copy
        where = state.task_dir(rec.task_id) + "/ (not in the bucket)"
        if final is not TaskLifecycle.CANCELED:
            lost = f"the completion report could not be written to {cfg.report_path}/{rec.task_id}/ ({lost})"
            final, message = TaskLifecycle.FAILED, f"{lost}; {message}" if message else lost
            code = ExitCode.STORE_UNREACHABLE
    end_record(rec, final, message)
    state.write_last(rec)
    monitor.write_metrics(rec, tallies)
    monitor.ending.release()
    monitor.over.set()
    if monitor.watchdog is not None:
        monitor.watchdog.cancel()
    monitor.print_progress(final=True)
    log.info("task %s %s: %d succeeded, %d failed, %d skipped, %d unchanged, %d deleted, %d retries, "
             "%d bytes sent, %d bytes of earlier uploads reused; report %s", rec.task_id,
             rec.lifecycle.value, p.counts.succeeded, p.counts.failed, p.skipped, p.unchanged, p.deleted,
             p.retries, p.bytes_sent, scheduler.reused_bytes, where)
    if cfg.dry_run:
        log.info("dry run: would export %d file(s) (%d bytes), %d director%s and %d symlink(s); would delete %d "
                 "object(s); %d entries unchanged, %d failed; nothing was sent or deleted, and the manifest is "
                 "unchanged", total.files, total.file_bytes, total.directories,
                 "y" if total.directories == 1 else "ies", total.symlinks, total.deleted, total.unchanged,
                 total.failed)
    if scheduler.fault is not None:
        log.error("task %s %s: %s", rec.task_id, rec.lifecycle.value, scheduler.fault)
        return ExitCode.STATE_UNUSABLE
    return code


def exit_code_of(lifecycle: TaskLifecycle) -> ExitCode:
    """The exit code of a task that ended in `lifecycle`."""
    return {TaskLifecycle.SUCCEEDED: ExitCode.SUCCEEDED, TaskLifecycle.CANCELED: ExitCode.CANCELED}.get(
        lifecycle, ExitCode.FILES_FAILED)


def end_record(rec: TaskRecord, final: TaskLifecycle, message: str) -> None:
    """Move the record to its end state (FAILED with `message`), with its end time."""
    if final is TaskLifecycle.FAILED:
        rec.fail(message)
    else:
        rec.move(final)
        rec.end_time = time.time()
    rec.last_updated = time.time()


def upload_report(store: S3Store, report: S3Url, task_id: str, paths: dict[str, str]) -> str:
    """failures.csv, report.csv and report.h5 under {ReportPath}/{TaskId}/ (R-2); returns
    the store's error for the first file that could not be written, "" when all went."""
    base = f"{report.prefix}/{task_id}/" if report.prefix else f"{task_id}/"
    lost = ""
    for name, path in paths.items():
        try:
            with open(path, "rb") as f:
                body = f.read() if os.path.getsize(path) <= 64 << 20 else f
                kind = "text/csv" if name.endswith(".csv") else "application/x-hdf5"
                store.put_object(base + name, body, None, kind)
        except StoreError as e:
            log.error("S3CompletionReportUploadFailure: could not write %s to s3://%s/%s: %s "
                      "(a copy is in %s)", name, store.bucket, base + name, e, path)
            lost = lost or f"{name}: {e}"
    return lost


