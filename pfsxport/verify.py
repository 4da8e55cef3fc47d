"""`pfsxport verify`: compare a tree with its data repository, entry by entry, in parallel.

`verify` is collective (every rank calls it). The split is deterministic, not dynamic: the
tree is walked level by level (one allgather of the next level's directories per depth),
and directory D belongs to rank crc32(D) % size. That rank scans D (lstat of its
children, through walk.Root: nothing outside the root is opened, no symlink is followed),
lists D's prefix in the bucket with the delimiter '/', and compares each child found on
either side, many HEADs in flight on a thread pool. A directory's own object (`key/`) is
compared by the owner of that directory (it is in that directory's listing). A directory
of more than SHARE_OVER entries that need a HEAD is scanned and listed by its owner alone,
but its entries' checks go to every rank (dealt round robin in the next allgather), so one
huge directory is not one rank's work; its scan and listing still are.

What is compared, per entry (ExportConfig's repository or the associations, as `export`):
  - present on both sides, or `missing` (in the tree, not in the bucket) and `extra` (in
    the bucket under the prefix, not in the tree);
  - `content-differs`: the size, then the CRC32 the store kept from the export's
    x-amz-checksum-crc32 (a multipart object's composite or full-object CRC32, computed
    here from the local file with the part size the store reports for part 1), else the
    ETag where it is an MD5 (single PUT, or MD5 of the parts' MD5s), else the size only
    (counted as `size_only`). With `contents`, every byte is downloaded and compared;
  - `metadata-differs`: file-permissions, file-owner, file-group, file-mtime (ns, or ms
    from other tools) and a symlink's target. A directory object with no file-* header
    at all is not compared (SeaweedFS keeps no metadata on keys ending in '/'): counted
    as `dir_metadata_not_kept`.
With `quick`, an entry whose lstat is the one the manifest recorded at its export (size,
mtime, ctime, mode, owner, group, inode) and whose object is listed with its size is a
match without a HEAD or a local read (counted as `trusted`): export wrote that object's
headers and bytes from that very state. It trusts that nobody rewrote the object in the
bucket since with the same size; any other entry is compared as above.
Entries export never writes (special files, keys that are not UTF-8 or too long) are
`skipped`, and entries that could not be compared are `error`; neither is a difference.
SIGTERM or SIGINT (halt.SignalWatch) stops it: nothing more is started, the report holds
what was compared, and the exit code is CANCELED.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import re
import threading
import time
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum

from . import checksum
from .config import ExportConfig
from .errors import (
    AccessDenied,
    ExitCode,
    FileChanged,
    InputError,
    NoSuchBucket,
    StateError,
    StoreError,
    StoreUnreachable,
    TaskError,
    unusable,
)
from .halt import Halt, SignalWatch
from .job import check_repository, manifest_for, plan_task, skip_set, store_for
from .metadata import SETID_BITS, S3Url, key_error, object_key, printable, read_posix_headers
from .model import Entry, EntryKind
from .report import csv_field, write_text_table_h5
from .walk import Root, join, lstat_entry, read_range, scan_dir, snapshot_of

log = logging.getLogger("pfsxport")

TEST_DELAY = float(os.environ.get("PFSXPORT_TEST_ENTRY_DELAY", "0") or 0)  # seconds per entry, for the tests
CHUNK = 1 << 20  # bytes read (and, with --contents, downloaded) at a time per entry
REPORT_CSV = "verify.csv"
REPORT_H5 = "verify.h5"
SUMMARY_JSON = "summary.json"
HEADER = "path,type,difference,reason,key\n"
SHARE_OVER = 2048  # a directory with more checks than this deals them over every rank
LOGGED = 20  # differences each rank also logs, the rest are in the report only
_MD5_ETAG = re.compile(r'"?([0-9a-f]{32})(?:-(\d+))?"?')
_FATAL = (StoreUnreachable, AccessDenied, NoSuchBucket)  # the store cannot be used at all: stop
_ABSENT = -1  # listed size of a key the listing does not have
_UNLISTED = -2  # no listing covers it (a task path that is a file): the HEAD decides


class Difference(str, Enum):
    MISSING = "missing"
    EXTRA = "extra"
    CONTENT = "content-differs"
    METADATA = "metadata-differs"
    SKIPPED = "skipped"  # export never writes this entry: not a difference
    ERROR = "error"  # could not be compared: not a difference, but the verification is incomplete

    @property
    def differs(self) -> bool:
        return self not in (Difference.SKIPPED, Difference.ERROR)


@dataclass(slots=True)
class Row:
    path: str  # relative to the task's fs_root
    kind: str  # the entry's type in the tree, or "object" for an extra key
    difference: Difference
    reason: str
    key: str = ""

    def line(self) -> str:
        return ",".join((csv_field(printable(self.path)), self.kind, self.difference.value,
                         csv_field(printable(self.reason)), csv_field(printable(self.key)))) + "\n"


@dataclass(slots=True)
class Counts:
    compared: int = 0  # tree entries and extra keys looked at
    matched: int = 0
    by: dict[str, int] = field(default_factory=dict)  # Difference value -> rows
    size_only: int = 0  # the store returned neither a CRC32 nor an MD5 ETag
    dir_metadata_not_kept: int = 0
    bytes_read: int = 0
    trusted: int = 0  # quick: matched by the manifest's record and the listing alone
    fatal: str = ""  # the store cannot be used at all (unreachable, denied, no bucket)
    canceled: str = ""  # the signal that stopped it

    def add(self, other: Counts) -> None:
        for name in ("compared", "matched", "size_only", "dir_metadata_not_kept", "bytes_read", "trusted"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for k, v in other.by.items():
            self.by[k] = self.by.get(k, 0) + v
        self.fatal = self.fatal or other.fatal
        self.canceled = self.canceled or other.canceled

    @property
    def differences(self) -> int:
        return sum(v for k, v in self.by.items() if Difference(k).differs)


@dataclass(frozen=True, slots=True)
class Plan:
    """What rank 0 decided: the legs (fs_root, repository, paths under it, prefix in the
    task's tree), keys to leave out (the report prefix), and where the report goes."""

    legs: list[tuple[str, S3Url, list[str], str]]
    ignore: str  # keys under this prefix are never extra ("" none)
    report_dir: str


class Sink:
    """This rank's rows: its CSV shard, its counts, and the first few differences logged."""

    def __init__(self, path: str):
        self.lock = threading.Lock()
        self.counts = Counts()
        self.logged = 0
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self.file = open(path, "w", encoding="utf-8", newline="")
        except OSError as e:
            raise unusable(e.filename or path, e) from None

    def row(self, row: Row) -> None:
        with self.lock:
            self.counts.compared += 1
            self.counts.by[row.difference.value] = self.counts.by.get(row.difference.value, 0) + 1
            self.file.write(row.line())
            if row.difference is not Difference.SKIPPED and self.logged < LOGGED:
                self.logged += 1
                log.warning("%s: %s (%s)", row.difference.value, printable(row.path) or "/", row.reason)

    def matched(self, trusted: bool = False) -> None:
        with self.lock:
            self.counts.compared += 1
            self.counts.matched += 1
            self.counts.trusted += trusted

    def note(self, name: str, n: int = 1) -> None:
        with self.lock:
            setattr(self.counts, name, getattr(self.counts, name) + n)

    def close(self) -> None:
        self.file.close()


def owner(path: str, size: int) -> int:
    """The rank that scans and lists directory `path` (the same on every rank)."""
    return zlib.crc32(os.fsencode(path)) % size


def mode_text(mode: int) -> str:
    return format(mode, "07o")


def metadata_reasons(e: Entry, meta: dict[str, str]) -> list[str] | None:
    """Why the object's POSIX headers do not describe entry `e` ([] when they do; None when
    the object carries none of them)."""
    h = read_posix_headers(meta)
    if h is None:
        return None
    out = []
    want = e.mode & ~SETID_BITS
    if h.mode != want:
        out.append(f"file-permissions: tree {mode_text(want)}, bucket {meta.get('file-permissions', 'none')}")
    if h.uid != e.uid:
        out.append(f"file-owner: tree {e.uid}, bucket {meta.get('file-owner', 'none')}")
    if h.gid != e.gid:
        out.append(f"file-group: tree {e.gid}, bucket {meta.get('file-group', 'none')}")
    if h.mtime_ns is None or e.mtime_ns // h.mtime_unit * h.mtime_unit != h.mtime_ns:
        out.append(f"file-mtime: tree {e.mtime_ns}ns, bucket {meta.get('file-mtime', 'none')}")
    return out


def crc_of_b64(text: str) -> tuple[int, int] | None:
    """A stored x-amz-checksum-crc32 as (crc, parts): parts 0 for a plain one, N for `X-N`."""
    value, _, parts = text.partition("-")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != 4:
        return None
    return int.from_bytes(raw, "big"), int(parts) if parts.isdigit() else 0


def composite(crcs: list[tuple[int, int]]) -> int:
    """S3's COMPOSITE CRC32 of a multipart object: the CRC32 of its parts' CRC32s."""
    return zlib.crc32(b"".join(c.to_bytes(4, "big") for c, _ in crcs))


class Content:
    """How a file's bytes are compared with its object's: by digest (the stored CRC32, else
    an MD5 ETag, else the size only, counted) or, with `contents`, byte for byte. Local."""

    def __init__(self, store, sink: Sink, contents: bool):
        self.store = store
        self.sink = sink
        self.contents = contents

    def reasons(self, fd: int, e: Entry, key: str, head) -> list[str]:
        """Why the open file `fd` (entry `e`, its size already the object's) is not the object."""
        return self._bytes(fd, e, key) if self.contents else self._digests(fd, e, key, head)

    def _bytes(self, fd: int, e: Entry, key: str) -> list[str]:
        """--contents: every byte of the object against the file."""
        pos = 0
        while pos < e.size:
            n = min(CHUNK, e.size - pos)
            local = self._read(fd, pos, n)
            remote = self.store.get_range(key, pos, n)
            if local != remote:
                at = next((i for i, (a, b) in enumerate(zip(local, remote, strict=False)) if a != b),
                          min(len(local), len(remote)))
                return [f"bytes differ from offset {pos + at}"]
            pos += n
        return []

    def _read(self, fd: int, offset: int, n: int) -> bytes:
        data = read_range(fd, offset, n)
        if len(data) != n:
            raise FileChanged("the file shrank while it was verified; verify it again")
        self.sink.note("bytes_read", n)
        return data

    def _digests(self, fd: int, e: Entry, key: str, head) -> list[str]:
        """The stored CRC32 (or MD5 ETag) against the same digest of the file."""
        stored = crc_of_b64(head.crc32) if head.crc32 else None
        etag = _MD5_ETAG.fullmatch(head.etag or "")
        multipart = bool((stored and stored[1]) or (etag and etag.group(2)) or head.checksum_type == "COMPOSITE")
        if stored is None and etag is None:
            self.sink.note("size_only")
            return []
        part = e.size or 1
        if multipart:
            try:
                part = self.store.head_checked(key, part=1).size or part
            except _FATAL:
                raise
            except StoreError:  # no part numbers on this store: the size is what is left
                self.sink.note("size_only")
                return []
        crcs, md5s = self._local(fd, e.size, part, want_md5=stored is None)
        if stored is not None:
            full = checksum.combine_all(crcs)
            if stored[0] in (full, composite(crcs)) if multipart else stored[0] == full:
                return []
            theirs = checksum.fmt(stored[0]) + (f"-{stored[1]}" if stored[1] else "")
            return [f"CRC32: tree {checksum.fmt(full)}, bucket {theirs}"]
        digest = hashlib.md5(b"".join(md5s)).hexdigest() + f"-{len(md5s)}" if multipart else md5s[0].hex()
        want = etag.group(1) + (f"-{etag.group(2)}" if etag.group(2) else "")
        return [] if digest == want else [f"MD5 (ETag): tree {digest}, bucket {want}"]

    def _local(self, fd: int, size: int, part: int, want_md5: bool) -> tuple[list[tuple[int, int]], list[bytes]]:
        """(crc32, length) and MD5 digest of each `part`-byte part of the file."""
        crcs: list[tuple[int, int]] = []
        md5s: list[bytes] = []
        off = 0
        while True:
            n = min(part, size - off)
            crc, h, pos = 0, hashlib.md5() if want_md5 else None, off
            while pos < off + n:
                chunk = self._read(fd, pos, min(CHUNK, off + n - pos))
                crc = zlib.crc32(chunk, crc)
                if h is not None:
                    h.update(chunk)
                pos += len(chunk)
            crcs.append((crc, n))
            md5s.append(h.digest() if h is not None else b"")
            off += n
            if off >= size:
                return crcs, md5s


class Checker:
    """One leg on one rank: directory jobs (scan + listing) and entry checks (HEAD, local
    read) on thread pools. Every outcome goes to the sink as a Row or a match."""

    def __init__(self, fs_root: str, repo: S3Url, prefix: str, store, sink: Sink, *, contents: bool,
                 concurrency: int, skip: frozenset[str], ignore: str, watch: SignalWatch | None = None,
                 manifest=None, share_over: int = 0):
        self.watch = watch or SignalWatch()
        self.share_over = share_over  # 0: every check stays on this rank
        self.manifest = manifest  # quick: a manifest.Reader
        self.root = Root(fs_root)
        self.repo = repo
        self.prefix = prefix
        self.store = store
        self.sink = sink
        self.skip = skip
        self.ignore = ignore
        self.content = Content(store, sink, contents)
        self.pool = ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="pfsxport-verify")
        self.slots = threading.BoundedSemaphore(max(1, concurrency) * 4)  # entry checks queued at a time

    # ---- rows ---------------------------------------------------------------------------

    def _path(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix and rel else self.prefix or rel

    def _row(self, rel: str, kind: str, diff: Difference, reason: str, key: str = "") -> None:
        self.sink.row(Row(self._path(rel), kind, diff, reason, key))

    def stopped(self) -> bool:
        """A signal came (nothing more is started), or the store cannot be used."""
        if self.watch.level() is not Halt.NONE:
            self.sink.counts.canceled = self.sink.counts.canceled or self.watch.reason or "a signal"
        return bool(self.sink.counts.canceled or self.sink.counts.fatal)

    def _fatal(self, err: StoreError) -> bool:
        if isinstance(err, _FATAL):
            with self.sink.lock:
                self.sink.counts.fatal = self.sink.counts.fatal or str(err)
            return True
        return False

    # ---- directories --------------------------------------------------------------------

    def listing_prefix(self, rel: str) -> str:
        return self.repo.key(rel) + "/" if rel else self.repo.prefix

    def directory(self, rel: str, entry: Entry | None, trusted: bool = False) -> tuple[list, list]:
        """Compare directory `rel` (its own object when `entry` is given, and every child
        on either side). Returns its subdirectories in the tree [(path, entry, trusted)],
        and the checks of a large directory left to share over the ranks [(entry, listed)].
        `trusted`: its lstat is the manifest's record (quick)."""
        if self.stopped():
            return [], []
        scan = scan_dir(self.root, rel, self.skip)
        if scan.error is not None:
            self._row(rel, "directory", Difference.ERROR, f"cannot list the directory: {scan.error.strerror}")
            return [], []
        children: list[Entry] = []
        for piece in [scan.items, *(scan.more or [])]:
            children += [Entry.from_stat(join(rel, os.fsdecode(name)), st) for name, st in piece]
        listed: dict[str, int] = {}
        below: set[str] = set()
        prefix = self.listing_prefix(rel)
        if key_error(prefix) is None:  # else no key under it can exist: its entries are all skipped
            try:
                got, prefixes = self.store.list_dir(prefix)
            except StoreError as err:
                self._fatal(err)
                self._row(rel, "directory", Difference.ERROR, f"cannot list {self.repo.bucket}/{prefix}: {err}; "
                          "its entries were not compared")
                return [(e.path, e, False) for e in children if e.kind is EntryKind.DIRECTORY], []
            listed, below = got, set(prefixes)
        own = listed.pop(prefix, _ABSENT)
        if entry is not None:
            if trusted and own == 0:
                self.sink.matched(trusted=True)
            else:
                self.submit(entry, own)
        recs = self.manifest.directory(rel) if self.manifest is not None and children else {}
        subdirs: list[tuple[str, Entry, bool]] = []
        checks: list[tuple[Entry, int]] = []
        for e in children:
            known = recs.get(os.fsencode(e.path.rpartition("/")[2]))
            same = known is not None and tuple(known) == e.rec()
            if e.kind is EntryKind.DIRECTORY:
                subdirs.append((e.path, e, same))
                below.discard(prefix + e.path.rpartition("/")[2] + "/")
                continue
            size = listed.pop(object_key(self.repo, e), _ABSENT)
            if same and size == e.size and e.kind is not EntryKind.SPECIAL:
                self.sink.matched(trusted=True)
            else:
                checks.append((e, size))
        shared = bool(self.share_over) and len(checks) > self.share_over
        if not shared:
            for e, size in checks:
                self.submit(e, size)
        for key in listed:
            self.extra(key)
        for sub in sorted(below):
            self._extra_tree(sub)
        return subdirs, checks if shared else []

    def extra(self, key: str) -> None:
        if self.ignore and key.startswith(self.ignore):
            return
        self._row(key[len(self.repo.prefix):], "object", Difference.EXTRA, "in the bucket, not in the tree", key)

    def _extra_tree(self, sub: str) -> None:
        """A common prefix with no directory of the tree behind it: every key under it is extra."""
        if self.ignore and sub.startswith(self.ignore):
            return
        try:
            for page in self.store.list_objects(sub):
                for key, _ in page:
                    self.extra(key)
        except StoreError as err:
            self._fatal(err)
            self._row(sub[len(self.repo.prefix):], "object", Difference.ERROR, f"cannot list {sub}: {err}", sub)

    # ---- entries ------------------------------------------------------------------------

    def submit(self, e: Entry, listed: int) -> None:
        self.slots.acquire()

        def run() -> None:
            try:
                if TEST_DELAY:
                    time.sleep(TEST_DELAY)
                if not self.stopped():
                    self.entry(e, listed)
            except Exception as err:  # a bug must fail one entry, not the verification
                log.exception("internal error verifying %s", printable(e.path))
                self._row(e.path, e.kind.value, Difference.ERROR, f"internal error: {type(err).__name__}: {err}")
            finally:
                self.slots.release()

        self.pool.submit(run)

    def entry(self, e: Entry, listed: int) -> None:
        """Compare one tree entry with its object (`listed`: the size the listing gave)."""
        key = object_key(self.repo, e)
        if e.kind is EntryKind.SPECIAL:
            self._row(e.path, e.kind.value, Difference.SKIPPED, "special file: export does not write it")
            return
        bad = key_error(key)
        if bad is not None:
            self._row(e.path, e.kind.value, Difference.SKIPPED, f"{bad.value}: export cannot write its key")
            return
        if listed == _ABSENT:
            self._row(e.path, e.kind.value, Difference.MISSING, "in the tree, not in the bucket", key)
            return
        try:
            head = self.store.head_checked(key)
        except StoreError as err:
            if err.status == 404:
                self._row(e.path, e.kind.value, Difference.MISSING, "in the tree, not in the bucket", key)
            else:
                self._fatal(err)
                self._row(e.path, e.kind.value, Difference.ERROR, f"HEAD failed: {err}", key)
            return
        try:
            content, meta = self._compare(e, key, head)
        except FileChanged as err:
            self._row(e.path, e.kind.value, Difference.ERROR, str(err), key)
            return
        except OSError as err:
            self._row(e.path, e.kind.value, Difference.ERROR, f"cannot read it: {err.strerror or err}", key)
            return
        except StoreError as err:
            self._fatal(err)
            self._row(e.path, e.kind.value, Difference.ERROR, f"cannot read the object: {err}", key)
            return
        if content:
            self._row(e.path, e.kind.value, Difference.CONTENT, "; ".join(content + meta), key)
        elif meta:
            self._row(e.path, e.kind.value, Difference.METADATA, "; ".join(meta), key)
        else:
            self.sink.matched()

    def _compare(self, e: Entry, key: str, head) -> tuple[list[str], list[str]]:
        """(content reasons, metadata reasons) for entry `e` and its object."""
        if e.kind is EntryKind.DIRECTORY:
            meta = metadata_reasons(e, head.metadata)
            if meta is None:
                self.sink.note("dir_metadata_not_kept")
                return [], []
            return [], meta
        if e.kind is EntryKind.SYMLINK:
            target = self.root.readlink(e.path)
            body = self.store.get_range(key, 0, head.size) if head.size else b""
            meta = metadata_reasons(e, head.metadata)
            meta = ["no POSIX metadata (x-amz-meta-file-*)"] if meta is None else meta
            if body != target:
                meta.append(f"symlink target: tree {os.fsdecode(target)!r}, bucket {os.fsdecode(body)!r}")
            return [], meta
        fd = self.root.open(e.path)
        try:
            st = os.fstat(fd)
            fresh = Entry.from_stat(e.path, st)
            meta = metadata_reasons(fresh, head.metadata)
            meta = ["no POSIX metadata (x-amz-meta-file-*)"] if meta is None else meta
            if fresh.kind is not EntryKind.FILE:
                return [f"type changed while it was verified ({fresh.kind.value})"], meta
            if head.size != fresh.size:
                return [f"size: tree {fresh.size}, bucket {head.size}"], meta
            content = self.content.reasons(fd, fresh, key, head)
            if snapshot_of(os.fstat(fd)) != fresh.snapshot():
                raise FileChanged("the file changed while it was verified; verify it again")
            return content, meta
        finally:
            os.close(fd)

    def close(self) -> None:
        self.pool.shutdown(wait=True)


# ---- the collective ---------------------------------------------------------------------


def _plan(cfg: ExportConfig, report_dir: str | None) -> Plan:
    """Rank 0: the legs, each repository reachable, the report directory made."""
    from .state import StateDir

    check_repository(cfg)
    planned, outside = plan_task(cfg, StateDir(cfg.state_dir))
    if outside:
        log.warning("%d path(s) under no data repository association are not verified (e.g. %s)", len(outside),
                    printable(outside[0]))
    for _, repo, _, _ in planned:
        store_for(cfg, repo).head_bucket()
    report = cfg.report_path
    ignore = f"{report.prefix}/" if report and report.prefix and any(
        repo.bucket == report.bucket and report.prefix.startswith(repo.prefix) for _, repo, _, _ in planned) else ""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = report_dir or os.path.join(cfg.state_dir, "verify", f"verify-{stamp}-{uuid.uuid4().hex[:6]}")
    try:
        os.makedirs(os.path.join(out, "shards"), exist_ok=True)
    except OSError as e:
        raise unusable(e.filename or out, e) from None
    return Plan(planned, ignore, out)


def verify(world, cfg: ExportConfig, contents: bool = False, report_dir: str | None = None,
           watch: SignalWatch | None = None, quick: bool = False) -> ExitCode:
    """Collective: compare the task's tree with its repository on every rank of `world`;
    rank 0 prints the summary (JSON) and writes the report. Returns the exit code: 0 when
    everything matches, DIFFERENCES (8) when something differs, FILES_FAILED (3) when
    some entries could not be compared (and none differ), STORE_UNREACHABLE (5) when the
    store could not be used at all, CANCELED (4) after SIGTERM or SIGINT."""
    t0 = time.monotonic()
    plan: Plan | ExitCode
    if world.rank == 0:
        try:
            plan = _plan(cfg, report_dir)
        except (InputError, TaskError, StateError, StoreError) as e:
            log.error("%s", e)
            plan = e.exit_code
        except Exception:  # noqa: BLE001 - every rank must leave the bcast below
            log.exception("verify could not start")
            plan = ExitCode.INTERNAL
    else:
        plan = None
    plan = world.bcast(plan)
    if not isinstance(plan, Plan):
        return ExitCode(plan)
    shard = os.path.join(plan.report_dir, "shards", f"rank-{world.rank:05d}.csv")
    fault = ""
    try:
        sink = Sink(shard)
    except StateError as e:
        sink, fault = None, str(e)
    if sink is not None:
        for fs_root, repo, paths, prefix in plan.legs:
            skip = skip_set(cfg, fs_root) | _inside(plan.report_dir, fs_root)
            _verify_leg(world, cfg, sink, fs_root, repo, paths, prefix, contents, plan.ignore, watch, quick, skip)
        sink.close()
    ends = world.allgather((sink.counts if sink else Counts(), fault))
    code = ExitCode.SUCCEEDED
    if world.rank == 0:
        code = _finish(plan, ends, world.size, time.monotonic() - t0)
    return ExitCode(world.bcast(code))


def _inside(path: str, fs_root: str) -> frozenset[str]:
    """`path` relative to the tree when it lies inside it (the report directory is never compared)."""
    rel = os.path.relpath(os.path.realpath(path), os.path.realpath(fs_root))
    return frozenset() if rel == "." or rel.startswith("..") else frozenset({rel})


def _verify_leg(world, cfg: ExportConfig, sink: Sink, fs_root: str, repo: S3Url, paths: list[str], prefix: str,
                contents: bool, ignore: str, watch: SignalWatch | None, quick: bool = False,
                skip: frozenset[str] = frozenset()) -> None:
    """Collective: one repository's share of the verification, level by level; a rank that
    stops (a signal, a store that cannot be used) stops every rank at the next level."""
    reader = manifest_for(cfg, repo).reader() if quick and not contents else None
    checker = Checker(fs_root, repo, prefix, store_for(cfg, repo), sink, contents=contents,
                      concurrency=cfg.transfer.concurrency, skip=skip, ignore=ignore, watch=watch,
                      manifest=reader, share_over=SHARE_OVER if world.size > 1 else 0)
    level: list[tuple[str, Entry | None, bool]] = []
    if world.rank == 0:
        for p in paths:
            e = lstat_entry(fs_root, p) if p else None
            if e is None or e.kind is EntryKind.DIRECTORY:
                level.append((p, e, False))
            else:
                checker.submit(e, _UNLISTED)
    level = world.bcast(level)
    walkers = ThreadPoolExecutor(8, thread_name_prefix="pfsxport-verify-dir")
    try:
        while level:
            mine = [item for item in level if owner(item[0], world.size) == world.rank]
            done = list(walkers.map(lambda item: checker.directory(*item), mine))
            found = [d for subdirs, _ in done for d in subdirs]
            shared = [c for _, checks in done for c in checks]
            ends = world.allgather((found, shared, checker.stopped()))
            if any(stop for _, _, stop in ends):
                break
            for i, (e, listed) in enumerate(c for _, part, _ in ends for c in part):  # the same order everywhere
                if i % world.size == world.rank:
                    checker.submit(e, listed)
            level = sorted(d for part, _, _ in ends for d in part)
    finally:
        walkers.shutdown(wait=True)
        checker.close()
        if reader is not None:
            reader.close()


def _write_h5(report_dir: str, csv_path: str) -> None:
    """verify.h5: the rows of verify.csv as HDF5 columns (path, type, difference, reason, key)."""
    import csv

    def chunks():
        with open(csv_path, encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            next(reader, None)
            rows: list[list[str]] = []
            for row in reader:
                rows.append(row)
                if len(rows) >= 4096:
                    yield rows
                    rows = []
            if rows:
                yield rows

    write_text_table_h5(os.path.join(report_dir, REPORT_H5), tuple(HEADER.strip().split(",")), chunks(), {})


def _finish(plan: Plan, ends: list[tuple[Counts, str]], nranks: int, seconds: float) -> ExitCode:
    """Rank 0: the shards joined into verify.csv, the summary written and printed."""
    total = Counts()
    for c, _ in ends:
        total.add(c)
    faults = [f for _, f in ends if f]
    path = os.path.join(plan.report_dir, REPORT_CSV)
    try:
        with open(path, "w", encoding="utf-8", newline="") as out:
            out.write(HEADER)
            for rank in range(nranks):
                shard = os.path.join(plan.report_dir, "shards", f"rank-{rank:05d}.csv")
                if os.path.exists(shard):
                    with open(shard, encoding="utf-8", newline="") as f:
                        while block := f.read(1 << 20):
                            out.write(block)
                    os.unlink(shard)
    except OSError as e:
        faults.append(str(unusable(e.filename or path, e)))
    if not faults:
        try:
            _write_h5(plan.report_dir, path)
        except (OSError, ValueError) as e:
            log.warning("no %s: %s (%s has every row)", REPORT_H5, e, REPORT_CSV)
    by = {d.value: total.by.get(d.value, 0) for d in Difference}
    if total.canceled:
        result, code = "CANCELED", ExitCode.CANCELED
    elif total.fatal:
        result, code = "INCOMPLETE", ExitCode.STORE_UNREACHABLE
    elif faults:
        result, code = "INCOMPLETE", ExitCode.STATE_UNUSABLE
    elif total.differences:
        result, code = "DIFFERENT", ExitCode.DIFFERENCES
    elif by[Difference.ERROR.value]:
        result, code = "INCOMPLETE", ExitCode.FILES_FAILED
    else:
        result, code = "MATCH", ExitCode.SUCCEEDED
    summary = {"Result": result, "Compared": total.compared, "Matched": total.matched,
               "Missing": by["missing"], "Extra": by["extra"], "ContentDiffers": by["content-differs"],
               "MetadataDiffers": by["metadata-differs"], "Skipped": by["skipped"], "Errors": by["error"],
               "SizeOnly": total.size_only, "DirectoryMetadataNotKept": total.dir_metadata_not_kept,
               "BytesRead": total.bytes_read, "Trusted": total.trusted, "Ranks": nranks,
               "Seconds": round(seconds, 3), "Report": path}
    if total.canceled:
        summary["FailureMessage"] = f"canceled by {total.canceled}: the report holds what was compared"
        log.error("verify canceled by %s: not every entry was compared", total.canceled)
    elif total.fatal:
        summary["FailureMessage"] = total.fatal[:500]
        log.error("the store could not be used: %s", total.fatal)
    for f in faults:
        log.error("%s", f)
    try:
        with open(os.path.join(plan.report_dir, SUMMARY_JSON), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=4)
    except OSError:
        pass
    log.info("verify %s: %d compared, %d matched, %d missing, %d extra, %d content-differs, %d metadata-differs, "
             "%d skipped, %d errors in %.1f s", result, total.compared, total.matched, by["missing"], by["extra"],
             by["content-differs"], by["metadata-differs"], by["skipped"], by["error"], seconds)
    if total.size_only:
        log.warning("%d file(s) compared by size only: the store returned neither a CRC32 nor an MD5 ETag "
                    "(use --contents to compare their bytes)", total.size_only)
    print(json.dumps({"Verify": summary}, indent=4, ensure_ascii=True), flush=True)
    return code
