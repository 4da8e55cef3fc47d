"""The export manifest: for each entry, the stat it had when it was last exported, and the
journal of open multipart uploads. One manifest per (file system, repository).

Local: no MPI, no S3. Layout under STATE/manifests/ID/:
  entries-NN.sqlite   entries(dir, name, size, mtime, ctime, mode, uid, gid, ino) of the
                      directories whose path hashes to shard NN (crc32 of the path, 64 shards)
  uploads.sqlite      uploads, parts: the multipart uploads not yet ended
  deltas/TASK/rank-R/NN.log, uploads.log
                      what rank R made durable during TASK (JSON lines, appended), and the
                      entries it was about to send (intents), one file per shard

During a task nobody writes the SQLite files: every rank reads them with immutable=1 (no
locks, which shared file systems may not have) one directory at a time, so memory per
rank is bounded by the largest directory. Ranks append to their own delta log right
after each object is durable in S3, and before sending anything, an intent for each entry
they are about to send: a kill between a PUT and its record leaves the intent, so the next
scan sends the entry again, or deletes its object if the entry is gone.

When a task ends, every rank merges the logs of its share of the shards (`merge_part`,
shards NN with NN % ranks == rank; rank 0 also the uploads), so the merge's cost per rank
falls with the rank count instead of landing on rank 0; the logs go once every share is
in. A job that died leaves its logs, and the next task's rank 0 merges them all before
anything is decided (`merge`). A shard's records apply in task, then rank order, and
applying the same logs twice gives the same manifest, so a kill during a merge loses
nothing. A tree delete (T) is written to every shard. Paths are stored as bytes
(os.fsencode), so names that are not UTF-8 round-trip. A manifest of the single-file
layout (manifest.sqlite, rank-R.log) is read as it is and split into shards by the next
merge.

The manifest says what was written, not what the bucket still holds. When a store answers
NoSuchBucket, whatever was written before may be gone with the bucket: `mark_lost` leaves a
file beside the manifest (bucket-lost; no SQLite write, so it is safe while a task reads),
and the next task or batch on that repository first `reconcile`s the manifest with one
listing of its prefix: entries whose object is missing (or has another size) are forgotten,
so the next scan sends exactly those again.

A log that cannot be written (the file system is full) raises StateError at its flush and
keeps raising: intents that are not durable must not be acted on. A manifest shard that is
not a database raises StateError naming it (set it aside, export with --full).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sqlite3
import threading
import uuid
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO

from .errors import StateError, corrupt, unusable

log = logging.getLogger("pfsxport")

SHARDS = 64  # fixed: a manifest outlives the rank count of any one job
UPLOADS = "uploads"

# The stat fields whose change means "export again" (E-4): data (size, mtime), metadata
# (mode, uid, gid; and ctime, which chmod, chown, utime, rename and writes all move) and
# identity (ino: a file replaced by another one). atime is not among them.
Rec = tuple[int, int, int, int, int, int, int]  # size, mtime_ns, ctime_ns, mode, uid, gid, ino
_CHILDREN = "SELECT name, size, mtime, ctime, mode, uid, gid, ino FROM entries "  # (name, *Rec) rows

_ENTRIES = """CREATE TABLE IF NOT EXISTS entries(dir BLOB NOT NULL, name BLOB NOT NULL, size INTEGER,
  mtime INTEGER, ctime INTEGER, mode INTEGER, uid INTEGER, gid INTEGER, ino INTEGER, PRIMARY KEY(dir, name))
  WITHOUT ROWID;"""
_UPLOADS = """
CREATE TABLE IF NOT EXISTS uploads(upload_id TEXT PRIMARY KEY, path BLOB, key TEXT, size INTEGER,
  mtime INTEGER, ctime INTEGER, ino INTEGER, part_size INTEGER);
CREATE TABLE IF NOT EXISTS parts(upload_id TEXT NOT NULL, n INTEGER NOT NULL, etag TEXT, crc_b64 TEXT,
  crc INTEGER, length INTEGER, PRIMARY KEY(upload_id, n)) WITHOUT ROWID;
"""


def split(path: str) -> tuple[bytes, bytes]:
    d, _, n = path.rpartition("/")
    return os.fsencode(d), os.fsencode(n)


def shard_of(directory: bytes) -> int:
    """The shard that holds the children of `directory` (its path as bytes)."""
    return zlib.crc32(directory) % SHARDS


def shard_name(n: int) -> str:
    return f"{n:02d}"


def manifest_dir(state_dir: str, file_system_id: str, repository: str) -> str:
    digest = hashlib.sha256(repository.encode()).hexdigest()[:12]
    return os.path.join(state_dir, "manifests", f"{file_system_id}-{digest}")


@dataclass
class OpenUpload:
    """A multipart upload a dead job left open, with the parts it saw through."""

    upload_id: str
    path: str
    key: str
    snapshot: tuple[int, int, int, int]
    part_size: int
    parts: dict[int, tuple[str, str, int, int]] = field(default_factory=dict)  # n -> etag, crc_b64, crc, len


class Reader:
    """Read-only lookups during a task: one SQLite connection per shard the rank touches
    (memory bounded by their page caches, 256 KiB each), shared by the rank's threads under a
    lock; queries are short. A manifest of the single-file layout is read as it is."""

    def __init__(self, directory: str):
        self.home = directory
        legacy = os.path.join(directory, "manifest.sqlite")
        self._legacy = legacy if os.path.exists(legacy) else None
        self._lock = threading.Lock()
        self._cons: dict[int, sqlite3.Connection | None] = {}

    def _rows(self, shard: int, sql: str, args: tuple) -> list:
        with self._lock:
            if shard not in self._cons:
                path = self._legacy or os.path.join(self.home, f"entries-{shard_name(shard)}.sqlite")
                con = None
                if os.path.exists(path):
                    con = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, check_same_thread=False)
                    con.execute("PRAGMA cache_size=-256")
                self._cons[shard] = con
            con = self._cons[shard]
            return con.execute(sql, args).fetchall() if con is not None else []

    def _dir(self, path: str) -> tuple[int, bytes]:
        d = os.fsencode(path)
        return shard_of(d), d

    def directory(self, path: str) -> dict[bytes, Rec]:
        """{child byte name: rec} of what was exported under directory `path` ("" = the root)."""
        s, d = self._dir(path)
        return {r[0]: r[1:] for r in self._rows(s, _CHILDREN + "WHERE dir = ?", (d,))}

    def entries(self, path: str, names: list[bytes]) -> dict[bytes, Rec]:
        """{child byte name: rec} of those of `names` exported under directory `path`."""
        s, d = self._dir(path)
        out: dict[bytes, Rec] = {}
        for i in range(0, len(names), 500):  # within any SQLite's limit on parameters
            chunk = names[i:i + 500]
            rows = self._rows(s, _CHILDREN + "WHERE dir = ? AND "
                              f"name IN ({','.join('?' * len(chunk))})", (d, *chunk))
            out.update((r[0], r[1:]) for r in rows)
        return out

    def count_children(self, path: str) -> int:
        """How many entries were exported under directory `path`."""
        s, d = self._dir(path)
        rows = self._rows(s, "SELECT COUNT(*) FROM entries WHERE dir = ?", (d,))
        return rows[0][0] if rows else 0

    def pages(self, path: str, batch: int = 10000) -> Iterator[list[tuple[bytes, Rec]]]:
        """(child byte name, rec) of everything exported under directory `path`, a page at
        a time (a directory may hold millions)."""
        s, d = self._dir(path)
        last = b""
        while True:
            rows = self._rows(s, _CHILDREN + "WHERE dir = ? AND name > ? ORDER BY name LIMIT ?", (d, last, batch))
            if not rows:
                return
            last = rows[-1][0]
            yield [(r[0], r[1:]) for r in rows]

    def subtree(self, path: str, batch: int = 1000) -> Iterator[list[tuple[str, int, int]]]:
        """(path, mode, size) of everything exported at or below `path`, a page at a time (a
        renamed directory may hold millions of entries), shard after shard."""
        d, n = split(path)
        base = os.fsencode(path)
        for shard in ([0] if self._legacy else range(SHARDS)):
            last = (b"", b"")
            while True:
                rows = self._rows(
                    shard, "SELECT dir, name, mode, size FROM entries WHERE ((dir = ? AND name = ?) OR dir = ? "
                    "OR (dir >= ? AND dir < ?)) AND (dir, name) > (?, ?) ORDER BY dir, name LIMIT ?",
                    (d, n, base, base + b"/", base + b"0", *last, batch))
                if not rows:
                    break
                last = (rows[-1][0], rows[-1][1])
                yield [(os.fsdecode(r[0] + b"/" + r[1] if r[0] else r[1]), r[2], r[3]) for r in rows]

    def close(self) -> None:
        with self._lock:
            for con in self._cons.values():
                if con is not None:
                    con.close()
            self._cons.clear()


_encode = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode  # json.dumps makes one per call
_EVERY_SHARD = tuple(shard_name(n) for n in range(SHARDS))


def _files_of(record: tuple) -> tuple[str, ...]:
    """The log files of the shards a record applies to."""
    op = record[0]
    if op in ("U", "p", "E"):
        return (UPLOADS,)
    if op == "T":  # a tree's descendants are in every shard
        return _EVERY_SHARD
    return (shard_name(shard_of(os.fsencode(record[1].rpartition("/")[0]))),)


class DeltaLog:
    """One rank's append-only record of what it made durable during one task: a file per
    shard it touched, in one directory."""

    def __init__(self, directory: str):
        self.path = directory
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as e:
            raise unusable(directory, e, "create the directory") from None
        self._lock = threading.Lock()
        self._pending: dict[str, list[str]] = {}
        self._files: dict[str, IO[str]] = {}
        self.fault: StateError | None = None  # set by the first write that failed

    def add(self, *record) -> None:
        line = _encode(record)
        names = _files_of(record)
        with self._lock:
            for name in names:
                self._pending.setdefault(name, []).append(line)

    def put(self, path: str, rec: Rec) -> None:
        self.add("P", path, *rec)

    def flush(self) -> None:
        """Write what was added; a process killed after this loses none of it (page cache).
        Raises StateError when the log cannot be written, now or at an earlier flush."""
        with self._lock:  # held while writing: threads flush too, and lines must not interleave
            if self.fault is None and self._pending:
                path = self.path
                try:
                    for name, lines in self._pending.items():
                        path = os.path.join(self.path, f"{name}.log")
                        f = self._files.get(name)
                        if f is None:
                            f = self._files[name] = open(path, "a", encoding="ascii")
                        f.write("\n".join(lines) + "\n")
                        f.flush()
                except OSError as e:
                    self.fault = unusable(path, e)
                self._pending = {}
            if self.fault is not None:
                raise StateError(self.fault.name, self.fault.detail)

    def close(self) -> StateError | None:
        """Flush, fsync and close. Never raises (the task is ending): returns the fault that
        kept some of the log from being written, if any."""
        try:
            self.flush()
        except StateError:
            pass
        for name, f in self._files.items():
            try:
                os.fsync(f.fileno())
                f.close()
            except OSError as e:  # what a failed write left in the buffer
                self.fault = self.fault or unusable(os.path.join(self.path, f"{name}.log"), e)
        self._files = {}
        return self.fault


@dataclass(frozen=True)
class Reconciled:
    listed: int  # keys under the prefix
    forgotten: int  # manifest entries whose object was missing (or another size)


class Manifest:
    def __init__(self, directory: str):
        self.directory = directory
        self.deltas = os.path.join(directory, "deltas")
        self.lost_path = os.path.join(directory, "bucket-lost")
        self.legacy_path = os.path.join(directory, "manifest.sqlite")

    def shard_path(self, name: str) -> str:
        return os.path.join(self.directory, f"{UPLOADS}.sqlite" if name == UPLOADS else f"entries-{name}.sqlite")

    def reader(self) -> Reader:
        return Reader(self.directory)

    def delta_log(self, task_id: str, rank: int) -> DeltaLog:
        return DeltaLog(os.path.join(self.deltas, task_id, f"rank-{rank}"))

    def merge(self) -> list[OpenUpload]:
        """With no task running on the file system (rank 0, or the service): split a
        single-file manifest into shards, apply every delta log, remove the logs, and return
        the uploads still open. Raises StateError when the manifest is corrupt or cannot be
        written; the logs then stay for the next merge."""
        if os.path.exists(self.legacy_path) or self._legacy_logs():
            self._migrate()
        open_uploads = self.merge_part(0, 1)
        self.drop_logs()
        return open_uploads

    def merge_part(self, part: int, parts: int) -> list[OpenUpload]:
        """One rank's share of a collective merge: apply the logs of shards NN with
        NN % parts == part (part 0: the uploads too), each shard in its own transaction, and
        return the uploads still open (part 0 only). The logs stay: `drop_logs` removes
        them once every part is in. Raises StateError as `merge` does."""
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as e:
            raise unusable(self.directory, e, "create the directory") from None
        logs = self._logs()
        names = [shard_name(n) for n in range(part, SHARDS, parts)] + ([UPLOADS] if part == 0 else [])
        names = [n for n in names if n in logs or n == UPLOADS or os.path.exists(self.shard_path(n))]
        # a commit waits for its fsyncs (the GIL is released meanwhile): shards go side by side
        with ThreadPoolExecutor(max_workers=8, thread_name_prefix="pfsxport-merge") as pool:
            done = list(pool.map(lambda name: self._merge_shard(name, logs.get(name, [])), names))
        return next((ups for name, ups in zip(names, done, strict=True) if name == UPLOADS), [])

    def _merge_shard(self, name: str, paths: list[str]) -> list[OpenUpload]:
        con = self._apply_logs(name, paths)
        try:
            return _open_uploads(con) if name == UPLOADS else []
        except sqlite3.Error as e:
            raise self._fault(e, self.shard_path(name)) from None
        finally:
            con.close()

    def drop_logs(self) -> None:
        """Remove the merged delta logs (once every shard has taken them)."""
        for task in os.listdir(self.deltas) if os.path.isdir(self.deltas) else []:
            shutil.rmtree(os.path.join(self.deltas, task), ignore_errors=True)

    def _logs(self) -> dict[str, list[str]]:
        """{shard name: its log files in task, then rank order}."""
        out: dict[str, list[str]] = {}
        try:
            for task in sorted(os.listdir(self.deltas)) if os.path.isdir(self.deltas) else []:
                tdir = os.path.join(self.deltas, task)
                for rank in sorted(os.listdir(tdir)):
                    rdir = os.path.join(tdir, rank)
                    for f in sorted(os.listdir(rdir)) if os.path.isdir(rdir) else []:
                        out.setdefault(f.removesuffix(".log"), []).append(os.path.join(rdir, f))
        except OSError as e:
            raise unusable(self.deltas, e, "read") from None
        return out

    def _apply_logs(self, name: str, paths: list[str]) -> sqlite3.Connection:
        db = self.shard_path(name)
        path = ""
        try:
            con = sqlite3.connect(db)
        except sqlite3.Error as e:
            raise self._fault(e, db) from None
        try:
            con.executescript(_UPLOADS if name == UPLOADS else _ENTRIES)
            with con:
                for path in paths:
                    with open(path, encoding="ascii", errors="replace") as f:
                        bad = _apply(con, f)
                    if bad:
                        log.warning("%d record(s) of %s cannot be read (overwritten?): the entries they "
                                    "recorded are exported again by the next task", bad, path)
            return con
        except sqlite3.Error as e:
            con.close()
            raise self._fault(e, db) from None
        except OSError as e:
            con.close()
            raise unusable(path or self.deltas, e, "read") from None
        except (IndexError, TypeError, ValueError, AttributeError) as e:  # records that parse but make no sense
            con.close()
            raise corrupt(path, e, "delta log", "it was overwritten: move it out of the manifest's directory; the "
                          "entries it recorded are exported again by the next task") from None

    def _legacy_logs(self) -> list[str]:
        if not os.path.isdir(self.deltas):
            return []
        return [os.path.join(self.deltas, t, n) for t in sorted(os.listdir(self.deltas))
                if os.path.isdir(os.path.join(self.deltas, t))
                for n in sorted(os.listdir(os.path.join(self.deltas, t))) if n.endswith(".log")]

    def _migrate(self) -> None:
        """Split the single-file layout into shards. Each step can be cut off and done again:
        a log is replayed into its shard files before it goes, and manifest.sqlite goes only
        after every shard has its rows."""
        for path in self._legacy_logs():
            rdir = path.removesuffix(".log")
            shutil.rmtree(rdir, ignore_errors=True)  # what an earlier, cut-off split wrote
            out = DeltaLog(rdir)
            with open(path, encoding="ascii", errors="replace") as f:
                for line in f:
                    try:
                        out.add(*json.loads(line))
                    except (ValueError, TypeError):
                        pass
            fault = out.close()
            if fault is not None:
                raise fault
            os.unlink(path)
        if not os.path.exists(self.legacy_path):
            return
        try:
            old = sqlite3.connect(f"file:{self.legacy_path}?mode=ro", uri=True)
            try:
                self._split_into_shards(old)
            finally:
                old.close()
        except sqlite3.Error as e:
            raise self._fault(e, self.legacy_path) from None
        os.unlink(self.legacy_path)
        log.info("manifest %s split into %d shards", self.directory, SHARDS)

    def _split_into_shards(self, old: sqlite3.Connection) -> None:
        cons = {}
        for name in (*_EVERY_SHARD, UPLOADS):
            if os.path.exists(self.shard_path(name)):
                os.unlink(self.shard_path(name))
            cons[name] = sqlite3.connect(self.shard_path(name))
            cons[name].executescript(_UPLOADS if name == UPLOADS else _ENTRIES)
        try:
            rows: dict[str, list] = {}
            for row in old.execute("SELECT * FROM entries"):
                name = shard_name(shard_of(row[0]))
                rows.setdefault(name, []).append(row)
                if len(rows[name]) >= 10000:
                    cons[name].executemany(_PUT, rows.pop(name))
            for name, batch in rows.items():
                cons[name].executemany(_PUT, batch)
            up = cons[UPLOADS]
            up.executemany("INSERT INTO uploads VALUES (?,?,?,?,?,?,?,?)", old.execute("SELECT * FROM uploads"))
            up.executemany("INSERT INTO parts VALUES (?,?,?,?,?,?)", old.execute("SELECT * FROM parts"))
            for con in cons.values():
                con.commit()
        finally:
            for con in cons.values():
                con.close()

    def mark_lost(self, reason: str) -> None:
        """The repository's bucket was found missing: what the manifest holds may be gone
        with it. Any process may call this at any time (it writes a file beside the
        manifest, atomically); the mark stays until a reconcile that began after it."""
        os.makedirs(self.directory, exist_ok=True)
        tmp = f"{self.lost_path}.{os.getpid()}.{threading.get_ident()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(f"{uuid.uuid4().hex} {reason}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.lost_path)

    def lost(self) -> str | None:
        """The lost-bucket mark (a token, then the reason), or None."""
        try:
            with open(self.lost_path, encoding="utf-8") as f:
                return f.read().strip() or None
        except FileNotFoundError:
            return None

    def reconcile(self, listing: Iterable[list[tuple[str, int]]], prefix: str) -> Reconciled:
        """Rank 0 or the service, with no task on the file system: forget the entries whose
        object is not among `listing` (pages of (key, size) of everything under `prefix`),
        or whose file or symlink object has another size, and clear the lost-bucket mark
        seen before the listing began. An intent stays while its key is there (it is sent
        again anyway). Delta logs left by a dead job are merged first."""
        mark = self.lost()
        self.merge()
        con = sqlite3.connect("")  # a private database on disk: the listing may be large
        try:
            con.execute("CREATE TABLE listed(dir BLOB NOT NULL, name BLOB NOT NULL, isdir INTEGER NOT NULL, "
                        "size INTEGER, PRIMARY KEY(dir, name, isdir)) WITHOUT ROWID")
            listed = 0
            for page in listing:
                rows = []
                for key, size in page:
                    listed += 1
                    if not key.startswith(prefix) or len(key) == len(prefix):
                        continue
                    rel = key[len(prefix):]
                    rows.append((*split(rel.rstrip("/")), int(rel.endswith("/")), size))
                con.executemany("INSERT OR REPLACE INTO listed VALUES (?,?,?,?)", rows)
            con.commit()
            forgotten = 0
            for name in _EVERY_SHARD:
                if not os.path.exists(self.shard_path(name)):
                    continue
                con.execute("ATTACH DATABASE ? AS s", (self.shard_path(name),))
                with con:
                    forgotten += con.execute(
                        "DELETE FROM s.entries WHERE NOT EXISTS (SELECT 1 FROM listed l WHERE l.dir = entries.dir "
                        "AND l.name = entries.name AND l.isdir = ((entries.mode & 61440) = 16384) "
                        "AND (entries.size < 0 OR (entries.mode & 61440) NOT IN (32768, 40960) "
                        "OR l.size = entries.size))").rowcount
                con.execute("DETACH DATABASE s")
        finally:
            con.close()
        if mark is not None and self.lost() == mark:  # a mark made during the listing stays
            try:
                os.unlink(self.lost_path)
            except FileNotFoundError:
                pass
        return Reconciled(listed, forgotten)

    def _fault(self, e: sqlite3.Error, path: str) -> StateError:
        if getattr(e, "sqlite_errorname", "") in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
            return corrupt(path, e, "manifest", "set it aside and run the export with --full to build "
                           f"it again (mv {path} {path}.bad)")
        return StateError("StateDirectoryUnusable", f"{e}: cannot write the manifest {path} (free space "
                          "there or make it writable; then re-run the same command)")

    def count(self) -> int:
        """Entries in the manifest (every shard)."""
        total = 0
        for name in _EVERY_SHARD:
            if os.path.exists(self.shard_path(name)):
                con = sqlite3.connect(self.shard_path(name))
                try:
                    total += con.execute("SELECT count(*) FROM entries").fetchone()[0]
                finally:
                    con.close()
        return total


_PUT = "INSERT OR REPLACE INTO entries VALUES (?,?,?,?,?,?,?,?,?)"
# An intent: the entry's object may exist. Its size of -1 matches no stat, so the entry is
# sent again, or its object deleted once the entry is gone; what is known already stays.
_INTENT = "INSERT OR IGNORE INTO entries VALUES (?,?,-1,0,0,?,0,0,0)"


def _apply(con: sqlite3.Connection, lines) -> int:
    """Apply a delta log's records in order. Runs of puts and intents (most of any log) go
    in one executemany each; an intent its put followed is dropped, and within a run a put
    wins over an intent whatever their order. Returns how many lines could not be read,
    not counting a last line that a kill cut off."""
    puts: list[tuple] = []
    intents: dict[str, int] = {}

    def run_out() -> None:
        if intents:
            con.executemany(_INTENT, [(*split(p), mode) for p, mode in intents.items()])
            intents.clear()
        if puts:
            con.executemany(_PUT, puts)
            puts.clear()

    bad = 0
    for line in lines:
        try:
            r = json.loads(line)
            op = r[0]
        except (ValueError, IndexError, KeyError, TypeError):  # a line cut off by a kill: the object
            bad += line.endswith("\n")                        # it described is simply re-sent
            continue
        if op == "P":
            intents.pop(r[1], None)
            puts.append((*split(r[1]), *r[2:9]))
            continue
        if op == "I":
            intents[r[1]] = r[2]
            continue
        run_out()
        if op == "D":
            con.execute("DELETE FROM entries WHERE dir = ? AND name = ?", split(r[1]))
        elif op == "T":
            d, n = split(r[1])
            base = os.fsencode(r[1])
            con.execute("DELETE FROM entries WHERE (dir = ? AND name = ?) OR dir = ? OR (dir >= ? AND dir < ?)",
                        (d, n, base, base + b"/", base + b"0"))
        elif op == "U":
            con.execute("INSERT OR REPLACE INTO uploads VALUES (?,?,?,?,?,?,?,?)",
                        (r[1], os.fsencode(r[2]), r[3], *r[4:8], r[8]))
        elif op == "p":
            con.execute("INSERT OR REPLACE INTO parts VALUES (?,?,?,?,?,?)", tuple(r[1:7]))
        elif op == "E":
            con.execute("DELETE FROM uploads WHERE upload_id = ?", (r[1],))
            con.execute("DELETE FROM parts WHERE upload_id = ?", (r[1],))
    run_out()
    return bad


def _open_uploads(con: sqlite3.Connection) -> list[OpenUpload]:
    out = []
    for uid, path, key, size, mtime, ctime, ino, psize in con.execute("SELECT * FROM uploads"):
        up = OpenUpload(uid, os.fsdecode(path), key, (size, mtime, ctime, ino), psize)
        for n, etag, b64, crc, length in con.execute(
                "SELECT n, etag, crc_b64, crc, length FROM parts WHERE upload_id = ?", (uid,)):
            up.parts[n] = (etag, b64, crc, length)
        out.append(up)
    return out
