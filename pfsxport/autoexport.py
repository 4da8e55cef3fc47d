"""The auto-export service (FSx A-1..A-7, D-2, E-18): keeps each association's S3 prefix in
step with its file-system path, as its AutoExportPolicy says (NEW, CHANGED, DELETED).

Local: no MPI. One process per file system; each batch runs the export's own scheduler and
worker in-process, so a burst of files goes out as parallel batches and large files as
multipart uploads. The event source (inotify or the Lustre changelog) only says which
directories to look at again; what to send is decided, as in an export task, by comparing
a scan with the manifest, which records only what is durable in S3. That makes the service
at-least-once: after a crash, the rescan at start finds every change the events did not
get to, and Lustre changelog records are cleared only once their changes are in S3.

Lifecycle (D-2): a repository that cannot be written (bucket gone, access denied, endpoint
down past the retries) makes the association MISCONFIGURED with the reason; its backlog is
kept and the repository re-checked every `recheck_interval` until it is AVAILABLE again.
A bucket found missing (NoSuchBucket) may have taken the objects written before with it:
every association on that bucket has its manifest marked (on disk, so a restart keeps it),
and before it is AVAILABLE again its prefix is listed once and the entries whose object is
missing are forgotten, so the next scan sends exactly those.
An association whose file-system path is gone becomes FAILED. Export tasks and the
service never run at once on a file system (E-18): a batch runs only under the file
system's activity lock, which an export task holds from start to end.

Metrics (`metrics.listen`): pfsxport.metrics, loaded only then. The backlog keeps, per
directory, the time of its oldest pending change; each object a batch makes durable (or
deletes) is observed as the lag from that time.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import stat as _stat
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from .changelog import Change, ChangeKind
from .config import ExportConfig
from .dra import Association, AssociationLifecycle
from .errors import ErrorCode, StoreError
from .eventlog import INTERNAL_AUTO_EXPORT, EventLog, export_code, export_message, log_path
from .export import Transfer, TransferOptions
from .lustre import LayoutSource
from .manifest import Manifest, manifest_dir
from .metadata import one_line, parse_s3_url, printable
from .model import DirUnit, ReportRow, RowStatus
from .parallel import SOLO, run_work
from .schedule import STOP, Scheduler
from .state import StateDir, write_json_atomic
from .store import S3Store
from .walk import symlink_on_path
from .worker import Worker

log = logging.getLogger("pfsxport")

# Entries the policy left alone that are remembered per association, so that a later scan
# does not export them as new (e.g. the new name of a rename when CHANGED is not in the policy).
MAX_PASSED = 1_000_000

# Failures that may mean the repository as a whole cannot be written: the probe decides.
_REPOSITORY_CODES = {ErrorCode.S3_ACCESS_DENIED.value, ErrorCode.S3_ERROR.value}


# Between two reads of inotify longer than this, the loop was busy (a batch): the events read
# next may have waited in the queue since the read before.
_BUSY = 0.05
_EXPORTED = (RowStatus.SUCCEEDED, RowStatus.SUCCEEDED_WITH_WARNING)


@dataclass
class Stats:
    exported: int = 0
    deleted: int = 0
    failed: int = 0
    batches: int = 0
    last_batch_seconds: float = 0.0


@dataclass
class BatchResult:
    """What one batch did, for the metrics."""

    exported: int = 0
    exported_bytes: int = 0
    deleted: int = 0
    deleted_bytes: int = 0
    failures: Counter = field(default_factory=Counter)  # FSx error code -> objects
    lags: list[float] = field(default_factory=list)  # seconds from change to durable, per object
    rescan_seconds: float | None = None  # a full rescan: how long it took
    rescan_end: float = 0.0  # and when it ended (Unix time)

    @classmethod
    def of(cls, stamped: list[tuple[ReportRow, float]], dirty: dict[str, float], rescan: bool) -> BatchResult:
        """From the rows of a batch, each with the time it arrived (durable by then), and the
        backlog it ran for (directory -> oldest pending change)."""
        out = cls()
        for row, at in stamped:
            if row.status is RowStatus.FAILED:
                out.failures[row.error_code] += 1
                continue
            size = 0 if row.kind == "directory" else max(row.size, 0)
            if row.status in _EXPORTED:
                out.exported += 1
                out.exported_bytes += size
            elif row.status is RowStatus.DELETED:
                out.deleted += 1
                out.deleted_bytes += size
            else:
                continue
            since = _changed_at(dirty, row.path, rescan)
            if since is not None:
                out.lags.append(max(0.0, at - since))
        return out


def _parent(path: str) -> str:
    return path.rpartition("/")[0]


def _changed_at(dirty: dict[str, float], path: str, rescan: bool) -> float | None:
    """When the change that made `path` due was seen: its directory's oldest pending change,
    else (a directory new to the manifest, walked whole) its nearest ancestor's. None for an
    entry that only a full rescan found."""
    d = _parent(path)
    if d in dirty:
        return dirty[d]
    if rescan:
        return None
    while d:
        d = _parent(d)
        if d in dirty:
            return dirty[d]
    return None


def _under(path: str, roots: set[str]) -> bool:
    """True when `path` or one of its ancestors is in `roots`."""
    while True:
        if path in roots:
            return True
        if not path:
            return False
        path = _parent(path)


@dataclass
class Runner:
    """One association: its backlog (directories to look at again), the files a writer
    still has open, and its lifecycle as this service sees it."""

    assoc: Association
    mount: str
    dirty: dict[str, float] = field(default_factory=dict)  # association-relative directory -> oldest change
    renamed: set[str] = field(default_factory=set)  # paths that arrived or left by a rename
    writing: dict[str, float] = field(default_factory=dict)  # path -> last write seen
    passed: dict[str, tuple] = field(default_factory=dict)  # path -> rec the policy left alone (bounded)
    rescan: bool = True  # the whole tree is due (start, overflow, recovery)
    since: float = 0.0  # when the oldest pending change arrived
    next_check: float = 0.0
    stats: Stats = field(default_factory=Stats)
    metrics: object | None = None  # its pfsxport.metrics.AssociationMetrics, when metrics are on

    @property
    def rel_root(self) -> str:
        return self.assoc.file_system_path.strip("/")

    @property
    def root(self) -> str:
        return os.path.join(self.mount, self.rel_root) if self.rel_root else self.mount

    def local(self, path: str) -> str | None:
        """Mount-relative path -> association-relative ("" = its root), None when outside."""
        r = self.rel_root
        if not r:
            return path
        if path == r:
            return ""
        return path[len(r) + 1:] if path.startswith(r + "/") else None

    def root_problem(self) -> str | None:
        """Why the association's path cannot be exported from (gone, or a symlink that could
        lead out of the file system), or None."""
        link = symlink_on_path(self.mount, self.rel_root, last=True)
        if link is not None:
            return f"FileSystemPath {self.assoc.file_system_path} goes through the symlink /{one_line(link)}"
        return None if os.path.isdir(self.root) else f"FileSystemPath {self.assoc.file_system_path} no longer exists"

    def backlog(self) -> bool:
        return bool(self.dirty) or self.rescan

    def touch(self, directory: str, now: float, at: float | None = None) -> bool:
        """Put `directory` in the backlog for a change seen at `at` (default `now`); False
        when it was there already (the change coalesces with one pending)."""
        if not self.backlog():
            self.since = now
        at = now if at is None else at
        old = self.dirty.get(directory)
        self.dirty[directory] = at if old is None else min(old, at)
        return old is None


class AutoExport:
    """The service for one file system. `run()` loops until SIGTERM/SIGINT or `stop()`."""

    def __init__(self, cfg: ExportConfig):
        self.cfg = cfg
        self.ae = cfg.auto_export
        self.state = StateDir(cfg.state_dir)
        self.fsid = cfg.file_system_id
        self.mount = cfg.fs_root
        self.events = EventLog(log_path(cfg.state_dir, self.fsid), cfg.event_log_level, self.fsid)
        self.runners: dict[str, Runner] = {}
        self.stores: dict[str, S3Store] = {}
        self.crc32: dict[str, bool] = {}
        self.stopping = threading.Event()
        self.service_id = f"autoexport-{socket.gethostname()}-{os.getpid()}"
        self.source = None
        self.watcher = None
        self.changelog_index: int | None = None  # last changelog record dispatched, not yet cleared
        self.started = time.time()
        self.last_rescan = time.monotonic()
        self.read_end = time.monotonic()  # when the last read of events returned
        self.metrics = None  # pfsxport.metrics.ServiceMetrics when metrics.listen is set
        self.metrics_url = ""
        self.status_path = os.path.join(cfg.state_dir, "autoexport", f"{self.fsid}.json")
        t = cfg.transfer
        self.layouts = LayoutSource(t.lfs, t.stripe_size)
        self.opts = TransferOptions.of(t, cfg.s3.max_object_size)

    # ---- associations ------------------------------------------------------------------

    def _manifest(self, assoc: Association) -> Manifest:
        return Manifest(manifest_dir(self.cfg.state_dir, self.fsid, assoc.data_repository_path))

    def _store(self, assoc: Association) -> S3Store:
        bucket = parse_s3_url(assoc.data_repository_path).bucket
        if bucket not in self.stores:
            t = self.cfg.transfer
            self.stores[bucket] = S3Store(bucket, self.cfg.s3, pool=t.concurrency + t.parts_in_flight + 4)
        return self.stores[bucket]

    def _set_lifecycle(self, runner: Runner, lifecycle: AssociationLifecycle, message: str | None = None) -> None:
        a = runner.assoc
        if a.lifecycle is lifecycle and a.failure_message == message:
            return
        log.log(logging.WARNING if lifecycle is not AssociationLifecycle.AVAILABLE else logging.INFO,
                "association %s (%s -> %s) is %s%s", a.association_id, a.file_system_path,
                a.data_repository_path, lifecycle.value, f": {message}" if message else "")
        a.lifecycle, a.failure_message = lifecycle, message
        if runner.metrics is not None:
            runner.metrics.lifecycle(lifecycle)
        with self.state.editing_associations(self.fsid) as assocs:
            for other in assocs:
                if other.association_id == a.association_id:
                    other.lifecycle, other.failure_message = lifecycle, message

    def reload(self) -> None:
        """Follow `dra create|update|delete`: new associations start with a full rescan,
        removed ones stop, a changed policy applies from the next batch."""
        seen = set()
        for a in self.state.associations(self.fsid):
            if a.lifecycle in (AssociationLifecycle.CREATING, AssociationLifecycle.DELETING):
                continue  # the CLI is still validating it, or it is on its way out
            seen.add(a.association_id)
            runner = self.runners.get(a.association_id)
            if runner is None:
                runner = self.runners[a.association_id] = Runner(a, self.mount)
                if self.metrics is not None:
                    runner.metrics = self.metrics.association(a)
                if a.lifecycle is AssociationLifecycle.FAILED:
                    continue
                problem = runner.root_problem()
                if problem:
                    self._set_lifecycle(runner, AssociationLifecycle.FAILED, problem)
                    continue
                runner.rescan = self.ae.rescan_on_start or self._manifest(a).lost() is not None
                if self.watcher is not None:
                    self.watcher.add_root(runner.rel_root)
                log.info("auto-export of %s -> %s, events %s", a.file_system_path, a.data_repository_path,
                         ",".join(a.events) or "none (auto-export off)")
            elif a.events != runner.assoc.events:
                log.info("association %s: auto-export events now %s", a.association_id, ",".join(a.events) or "none")
                runner.assoc.events = a.events
                runner.passed.clear()  # what the old policy left alone is judged by the new one
            if a.lifecycle is AssociationLifecycle.UPDATING:
                self._set_lifecycle(runner, AssociationLifecycle.AVAILABLE)
        for aid in set(self.runners) - seen:
            runner = self.runners.pop(aid)
            if self.metrics is not None:
                self.metrics.forget(aid)
            if self.watcher is not None:
                self.watcher.remove_root(runner.rel_root)
            log.info("association %s removed: auto-export of %s stops", aid, runner.assoc.file_system_path)

    # ---- events ------------------------------------------------------------------------

    def _runner_of(self, path: str) -> tuple[Runner | None, str | None]:
        for r in self.runners.values():
            rel = r.local(path)
            if rel is not None:
                return r, rel
        return None, None

    def dispatch(self, changes: list[Change], writing: set[str] = frozenset(), seen: float | None = None) -> None:
        """Turn changes (mount-relative paths) into each association's backlog. `seen`: when
        they were seen (monotonic, default now); a change that carries its own time (a
        changelog record's) is taken at that time."""
        now, wall = time.monotonic(), time.time()
        for c in changes:
            at = seen if seen is not None else now
            if c.time is not None:
                at = min(now, now - (wall - c.time))
            added: dict[str, list] = {}  # association id -> [runner, whether the change added a directory]
            for r, new in self._apply(c, now, at):
                entry = added.setdefault(r.assoc.association_id, [r, False])
                entry[1] = entry[1] or new
            for r, new in added.values():
                if r.metrics is not None:  # one event for each association it touched
                    r.metrics.events(1, 0 if new else 1)
        for path in writing:
            r, rel = self._runner_of(path)
            if r is not None and rel:
                r.writing[rel] = now

    def _apply(self, c: Change, now: float, at: float) -> list[tuple[Runner, bool]]:
        """One change into the backlog of the association(s) it touches; each touch says
        whether it added a directory (False: it coalesced with a pending change)."""
        touched = []
        r, rel = self._runner_of(c.path)
        ro = None
        if c.kind is ChangeKind.RENAMED and c.old_path is not None:
            ro, old = self._runner_of(c.old_path)
            if ro is not None and old:
                ro.writing.pop(old, None)
                if r is not None:  # a rename inside the linked paths: CHANGED (old key goes, new one comes)
                    ro.renamed.add(old)
                touched.append((ro, ro.touch(_parent(old), now, at)))  # else it left them: DELETED
        if r is None or not rel:
            return touched
        if c.kind is ChangeKind.RENAMED and ro is not None:
            r.renamed.add(rel)
        elif c.kind is ChangeKind.CREATED and not c.is_dir:
            self._maybe_writing(r, rel, now)
        elif c.kind is ChangeKind.CLOSED:
            r.writing.pop(rel, None)
        elif c.kind is ChangeKind.DELETED:
            r.writing.pop(rel, None)
        touched.append((r, r.touch(_parent(rel), now, at)))
        return touched

    def _maybe_writing(self, r: Runner, rel: str, now: float) -> None:
        """A file just created with open(O_CREAT) is held until its writer closes it; a
        new hard link or special file gets no close, so it is not held."""
        try:
            st = os.lstat(os.path.join(r.root, rel))
        except OSError:
            return
        if _stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
            r.writing[rel] = now

    def _held(self, r: Runner):
        timeout = self.ae.hold_timeout

        def hold(path: str) -> bool:
            seen = r.writing.get(path)
            return seen is not None and time.monotonic() - seen < timeout
        return hold

    # ---- batches -----------------------------------------------------------------------

    def _units(self, r: Runner, reader) -> list:
        """The directories to scan: each dirty one shallowly, except that a directory new to
        the manifest is found (and walked whole) through its nearest known ancestor."""
        if r.rescan:
            return [DirUnit("")]
        known: dict[str, set] = {}

        def in_manifest(path: str) -> bool:
            parent, _, name = path.rpartition("/")
            if parent not in known:
                known[parent] = set(reader.directory(parent))
            return os.fsencode(name) in known[parent]

        scans: dict[str, None] = {}
        for d in r.dirty:
            top = d
            probe = ""
            for part in d.split("/") if d else ():
                probe = f"{probe}/{part}" if probe else part
                if not in_manifest(probe):
                    top = _parent(probe)  # its parent's scan finds it new and walks it whole
                    break
            scans[top] = None
        return [DirUnit(d, shallow=True) for d in scans]

    def process(self, r: Runner) -> bool:
        """Run one batch for an association; False when it could not run now (a task holds
        the file system, or the repository is misconfigured)."""
        a = r.assoc
        now = time.monotonic()
        if a.lifecycle is AssociationLifecycle.FAILED:
            r.dirty.clear()
            r.rescan = False
            return False
        problem = r.root_problem()
        if problem:
            self._set_lifecycle(r, AssociationLifecycle.FAILED, problem)
            self.events.event("ERROR", INTERNAL_AUTO_EXPORT, f"Auto-export stopped: {problem}.",
                              associationId=a.association_id)
            if self.watcher is not None:
                self.watcher.remove_root(r.rel_root)
            return False
        store = self._store(a)
        url = parse_s3_url(a.data_repository_path)
        if a.lifecycle is AssociationLifecycle.MISCONFIGURED and now < r.next_check:
            return False
        if not self.lock.acquire(wait=False):
            return False  # an export task is running on this file system (E-18)
        try:
            if (a.lifecycle is AssociationLifecycle.MISCONFIGURED or self._manifest(a).lost() is not None) \
                    and not self._check(r, store):
                return False
            return self._batch(r, store, url)
        finally:
            self.lock.release()

    def _bucket_lost(self, store: S3Store) -> None:
        """After a NoSuchBucket: mark the manifest of every association on that bucket, whose
        objects may be gone with it, and have each reconciled and rescanned."""
        if store.bucket_lost is None:
            return
        reason, store.bucket_lost = store.bucket_lost, None
        for other in self.runners.values():
            if parse_s3_url(other.assoc.data_repository_path).bucket == store.bucket:
                self._manifest(other.assoc).mark_lost(reason)
                if not other.backlog():
                    other.since = time.monotonic()
                other.rescan = True

    def _check(self, r: Runner, store: S3Store) -> bool:
        """Under the file system lock: probe the repository (a marker object written and
        removed) and, when its bucket was found missing since, reconcile its manifest with
        one listing of the prefix. AVAILABLE again, or still MISCONFIGURED with the current
        reason."""
        url = parse_s3_url(r.assoc.data_repository_path)
        manifest = self._manifest(r.assoc)
        self._bucket_lost(store)  # a batch that just failed may have met the bucket missing
        try:
            what = "write to"
            store.probe(url.prefix, self.cfg.s3.checksum)
            if manifest.lost() is not None:
                what = "list"
                done = manifest.reconcile(store.list_objects(url.prefix), url.prefix)
                log.info("association %s: %s was found missing; reconciled with %s: %d object(s) listed, "
                         "%d entr%s missing there to export again", r.assoc.association_id, url.bucket,
                         r.assoc.data_repository_path, done.listed, done.forgotten,
                         "y" if done.forgotten == 1 else "ies")
                r.rescan = True
        except StoreError as e:
            self._bucket_lost(store)
            r.next_check = time.monotonic() + self.ae.recheck_interval
            message = f"cannot {what} {r.assoc.data_repository_path}: {e}"[:256]
            if r.assoc.lifecycle is not AssociationLifecycle.MISCONFIGURED or r.assoc.failure_message != message:
                code = "S3ExportAccessDenied" if e.code is ErrorCode.S3_ACCESS_DENIED else INTERNAL_AUTO_EXPORT
                self.events.event("ERROR", code, f"Auto-export paused: {message}. Changes are kept and "
                                  f"exported when the repository can be written again.",
                                  associationId=r.assoc.association_id, bucket=url.bucket, prefix=url.prefix)
            self._set_lifecycle(r, AssociationLifecycle.MISCONFIGURED, message)
            return False
        if r.assoc.lifecycle is AssociationLifecycle.MISCONFIGURED:
            self._set_lifecycle(r, AssociationLifecycle.AVAILABLE)
            r.rescan = True  # changes made while paused that no event recorded are found too
        return True

    def _batch(self, r: Runner, store: S3Store, url) -> bool:
        t0 = time.monotonic()
        a = r.assoc
        manifest = self._manifest(a)
        manifest.merge()
        reader = manifest.reader()
        units = self._units(r, reader)
        dirty, renamed, rescan = r.dirty, r.renamed, r.rescan
        r.dirty, r.renamed, r.rescan = {}, set(), False
        delta = manifest.delta_log(self.service_id, 0)
        store.checksum = self._checksum(store, url)
        transfer = Transfer(r.root, url, store, self.layouts, self.opts, skip=self._skip(r), manifest=reader,
                            delta=delta, events=frozenset(a.events), hold=self._held(r),
                            renamed=lambda p: _under(p, renamed), passed=r.passed)
        stamped: list[tuple[ReportRow, float]] = []  # each row with when it came: its object durable by then

        def collect(rows: list[ReportRow]) -> None:
            at = time.monotonic()
            stamped.extend((row, at) for row in rows)
        t = self.cfg.transfer
        scheduler = Scheduler(units, 1, reads_per_ost=t.reads_per_ost)
        run_work(SOLO, scheduler, threading.Lock(),
                 lambda ch, _: Worker(transfer, ch, t.concurrency, t.parts_in_flight, delta.flush, rows=collect), STOP)
        rows = [row for row, _ in stamped]
        delta.close()
        reader.close()
        if scheduler.fault is not None:  # the state directory failed: the service stops and says why
            raise scheduler.fault
        manifest.merge()
        self._bucket_lost(store)
        if len(r.passed) > MAX_PASSED:  # forgotten: a later scan judges those entries afresh
            r.passed.clear()
        result = BatchResult.of(stamped, dirty, rescan)
        if rescan:
            result.rescan_seconds, result.rescan_end = time.monotonic() - t0, time.time()
        failed = [row for row in rows if row.status is RowStatus.FAILED]
        if failed and any(row.error_code in _REPOSITORY_CODES for row in failed) and not self._check(r, store):
            # the repository cannot be written: keep the whole batch as backlog
            for d, at in dirty.items():
                r.touch(d, t0, at)
            r.renamed |= renamed
            r.rescan = r.rescan or rescan
            if r.metrics is not None:  # what it did make durable counts (the rescan is not done)
                result.rescan_seconds = None
                r.metrics.batch(result)
            return False
        for row in failed:
            key = url.key(row.path) + ("/" if row.kind == "directory" else "")
            code = export_code(row.error_code, auto=True)
            self.events.event("ERROR", code, export_message(code, key, url.bucket, row.message),
                              associationId=a.association_id, path=row.path, key=key, bucket=url.bucket)
        r.stats.failed += len(failed)
        r.stats.exported += sum(1 for row in rows if row.status is RowStatus.SUCCEEDED)
        r.stats.deleted += sum(1 for row in rows if row.status is RowStatus.DELETED)
        r.stats.batches += 1
        r.stats.last_batch_seconds = round(time.monotonic() - t0, 3)
        if r.metrics is not None:
            r.metrics.batch(result)
        if rows:
            log.info("%s: %d exported, %d deleted, %d failed in %.2f s (%d director%s scanned)",
                     a.association_id, sum(1 for row in rows if row.status is RowStatus.SUCCEEDED),
                     sum(1 for row in rows if row.status is RowStatus.DELETED), len(failed),
                     time.monotonic() - t0, len(units), "y" if len(units) == 1 else "ies")
        for row in rows:
            log.debug("%s %s %s", row.status.value, printable(row.path), row.error_code)
        return True

    def _checksum(self, store: S3Store, url) -> bool:
        """Whether to send CRC32s to this bucket (probed once per bucket)."""
        if self.cfg.s3.checksum == "none":
            return False
        if store.bucket not in self.crc32:
            try:
                self.crc32[store.bucket] = store.probe(url.prefix, self.cfg.s3.checksum).crc32
            except StoreError:
                return False
        return self.crc32[store.bucket]

    def _skip(self, r: Runner) -> frozenset[str]:
        rel = os.path.relpath(os.path.realpath(self.cfg.state_dir), os.path.realpath(r.root))
        return frozenset() if rel.startswith("..") or rel == "." else frozenset({rel})

    # ---- the loop ----------------------------------------------------------------------

    def _open_source(self) -> None:
        ae = self.ae
        source = ae.source
        if source == "auto":
            source = "changelog" if ae.changelog_mdt else "inotify"
        if source == "changelog":
            from .changelog import ChangelogSource

            if not (ae.changelog_mdt and ae.changelog_user):
                raise ValueError("auto_export.source changelog needs auto_export.changelog_mdt and "
                                 "auto_export.changelog_user")
            self.source = ChangelogSource(self.mount, ae.changelog_mdt, ae.changelog_user,
                                          lfs=self.cfg.transfer.lfs if self.cfg.transfer.lfs not in ("auto", "off")
                                          else "lfs")
        elif source == "inotify":
            from .watch import TreeWatcher

            self.watcher = TreeWatcher(self.mount)
        self.source_name = source
        log.info("auto-export for %s (%s): event source %s, rescan every %.0f s", self.fsid, self.mount, source,
                 ae.rescan_interval)

    def _read_events(self, timeout: float) -> None:
        if self.watcher is not None:
            began = time.monotonic()
            batch = self.watcher.read(int(timeout * 1000))
            ended = time.monotonic()
            # Events read at once after the loop was busy (a batch) waited in the queue for up
            # to that long: they are taken as seen when the read before returned (an upper
            # bound of their lag); others were seen as they came.
            seen = self.read_end if began - self.read_end > _BUSY and ended - began < _BUSY else None
            self.read_end = ended
            for root in batch.roots_gone:
                r, _ = self._runner_of(root)
                if r is not None:
                    r.touch("", time.monotonic())  # process() finds the path gone: FAILED
            if batch.overflowed:
                log.warning("inotify queue overflowed: rescanning every association")
                for r in self.runners.values():
                    r.rescan = True
            self.dispatch(batch.changes, batch.writing, seen)
        elif self.source is not None:
            changes, last = self.source.poll(self.ae.changelog_batch)
            if last is not None:
                self.changelog_index = last
                self.dispatch(changes)
            else:
                self.stopping.wait(timeout)
        else:
            self.stopping.wait(timeout)

    def _clear_changelog(self) -> None:
        """Changelog records go only when every change they carry is durable in S3."""
        if self.changelog_index is None or any(r.backlog() for r in self.runners.values()):
            return
        self.source.clear(self.changelog_index)
        self.changelog_index = None
        self._publish_changelog()

    def _publish_changelog(self) -> None:
        if self.metrics is not None and self.source is not None:
            records, self.source.records_read = self.source.records_read, 0
            self.metrics.changelog(self.ae.changelog_mdt, records, self.source.cursor_lag)

    def stop(self, *_args) -> None:
        self.stopping.set()

    def run(self) -> int:
        self.lock = self.state.fs_lock(self.fsid)
        service_lock = self.state.service_lock(self.fsid)
        if not service_lock.acquire(wait=False):
            log.error("auto-export is already running for file system %s (%s)", self.fsid,
                      service_lock.holder() or "another process")
            return 6
        try:
            service_lock.announce(f"{socket.gethostname()} pid {os.getpid()}")
            self._serve_metrics()
            self.state.declare_associations(self.fsid, self.cfg.associations)
            self._open_source()
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self.stop)
            self._loop()
        finally:
            if self.watcher is not None:
                self.watcher.close()
            if self.metrics is not None:
                self.metrics.close()
            service_lock.release()
        log.info("auto-export for %s stopped", self.fsid)
        return 0

    def _serve_metrics(self) -> None:
        """/metrics on metrics.listen, when set (prometheus_client is loaded only then)."""
        m = self.cfg.metrics
        if not m.listen:
            return
        from .metrics import ServiceMetrics

        self.metrics = ServiceMetrics(self.fsid)
        self.metrics_url = self.metrics.serve(m.host, m.port)
        log.info("metrics of auto-export for %s at %s", self.fsid, self.metrics_url)

    def _loop(self) -> None:
        ae = self.ae
        last_reload = last_status = 0.0
        while not self.stopping.is_set():
            now = time.monotonic()
            if now - last_reload >= ae.reload_interval:
                self.reload()
                last_reload = now
            if ae.rescan_interval and now - self.last_rescan >= ae.rescan_interval:
                self.last_rescan = now
                for r in self.runners.values():
                    r.rescan = True
            waiting = [r for r in self.runners.values() if r.backlog()]
            timeout = min([max(0.0, r.since + ae.debounce - now) for r in waiting] + [0.2])
            self._read_events(timeout)
            now = time.monotonic()
            ran = False
            for r in list(self.runners.values()):
                if r.backlog() and now - r.since >= ae.debounce:
                    self.process(r)
                    ran = True
            if self.source is not None:
                self._clear_changelog()
            if ran or now - last_status >= 1.0:
                self.write_status()
                last_status = now
        self.write_status()

    def write_status(self) -> None:
        """state/autoexport/FSID.json: what the service is doing, for people and tests; the
        gauges of the metrics with it."""
        for r in self.runners.values():
            if r.metrics is not None:
                r.metrics.backlog(len(r.dirty) + int(r.rescan), len(r.writing))
        self._publish_changelog()
        write_json_atomic(self.status_path, {
            "FileSystemId": self.fsid, "Host": socket.gethostname(), "Pid": os.getpid(),
            "Source": getattr(self, "source_name", ""), "StartTime": round(self.started, 3),
            "LastUpdated": round(time.time(), 3),
            **({"Metrics": self.metrics_url} if self.metrics_url else {}),
            "Associations": {aid: {"Lifecycle": r.assoc.lifecycle.value, "Backlog": len(r.dirty) + int(r.rescan),
                                   "Writing": len(r.writing), "Exported": r.stats.exported,
                                   "Deleted": r.stats.deleted, "Failed": r.stats.failed,
                                   "Batches": r.stats.batches}
                             for aid, r in self.runners.items()},
        })


def serve(cfg: ExportConfig) -> int:
    """`pfsxport auto-export`: run the service in this process until it is stopped."""
    return AutoExport(cfg).run()
