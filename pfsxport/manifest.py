"""The export manifest: for each entry, the stat it had when it was last exported, and the
journal of open multipart uploads. One manifest per (file system, repository).

Local: no MPI, no S3. Layout under STATE/manifests/ID/:
  manifest.sqlite   entries(dir, name, size, mtime, ctime, mode, uid, gid, ino), uploads, parts
  deltas/TASK/rank-R.log   what rank R made durable during TASK (JSON lines, appended),
                           and the entries it was about to send (intents)

During a task nobody writes the SQLite file: every rank reads it with immutable=1 (no
locks, which shared file systems may not have) one directory at a time, so memory per
rank is bounded by the largest directory. Ranks append to their own delta log right
after each object is durable in S3, and before sending anything, an intent for each entry
they are about to send: a kill between a PUT and its record leaves the intent, so the next
scan sends the entry again, or deletes its object if the entry is gone. Rank 0 merges the logs into the SQLite file when
the task ends, or when the next task starts if the job died. Paths are stored as bytes
(os.fsencode), so names that are not UTF-8 round-trip.

The manifest says what was written, not what the bucket still holds. When a store answers
NoSuchBucket, whatever was written before may be gone with the bucket: `mark_lost` leaves a
file beside the manifest (bucket-lost; no SQLite write, so it is safe while a task reads),
and the next task or batch on that repository first `reconcile`s the manifest with one
listing of its prefix: entries whose object is missing (or has another size) are forgotten,
so the next scan sends exactly those again.

A log that cannot be written (the file system is full) raises StateError at its flush and
keeps raising: intents that are not durable must not be acted on. A manifest that is not
a database raises StateError naming it (set it aside, export with --full).
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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from .errors import StateError, corrupt, unusable

log = logging.getLogger("pfsxport")

# The stat fields whose change means "export again" (E-4): data (size, mtime), metadata
# (mode, uid, gid; and ctime, which chmod, chown, utime, rename and writes all move) and
# identity (ino: a file replaced by another one). atime is not among them.
Rec = tuple[int, int, int, int, int, int, int]  # size, mtime_ns, ctime_ns, mode, uid, gid, ino
_CHILDREN = "SELECT name, size, mtime, ctime, mode, uid, gid, ino FROM entries "  # (name, *Rec) rows

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries(dir BLOB NOT NULL, name BLOB NOT NULL, size INTEGER, mtime INTEGER,
  ctime INTEGER, mode INTEGER, uid INTEGER, gid INTEGER, ino INTEGER, PRIMARY KEY(dir, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS uploads(upload_id TEXT PRIMARY KEY, path BLOB, key TEXT, size INTEGER,
  mtime INTEGER, ctime INTEGER, ino INTEGER, part_size INTEGER);
CREATE TABLE IF NOT EXISTS parts(upload_id TEXT NOT NULL, n INTEGER NOT NULL, etag TEXT, crc_b64 TEXT,
  crc INTEGER, length INTEGER, PRIMARY KEY(upload_id, n)) WITHOUT ROWID;
"""


def split(path: str) -> tuple[bytes, bytes]:
    d, _, n = path.rpartition("/")
    return os.fsencode(d), os.fsencode(n)


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
    """Read-only lookups during a task: one SQLite connection per rank (memory bounded by
    its page cache), shared by the rank's threads under a lock; queries are short."""

    def __init__(self, db_path: str):
        self.db_path = db_path
        self.exists = os.path.exists(db_path)
        self._lock = threading.Lock()
        self._con: sqlite3.Connection | None = None

    def _rows(self, sql: str, args: tuple) -> list:
        with self._lock:
            if self._con is None:
                self._con = sqlite3.connect(f"file:{self.db_path}?mode=ro&immutable=1", uri=True,
                                            check_same_thread=False)
                self._con.execute("PRAGMA cache_size=-8192")  # 8 MiB
            return self._con.execute(sql, args).fetchall()

    def directory(self, path: str) -> dict[bytes, Rec]:
        """{child byte name: rec} of what was exported under directory `path` ("" = the root)."""
        if not self.exists:
            return {}
        return {r[0]: r[1:] for r in self._rows(_CHILDREN + "WHERE dir = ?", (os.fsencode(path),))}

    def entries(self, path: str, names: list[bytes]) -> dict[bytes, Rec]:
        """{child byte name: rec} of those of `names` exported under directory `path`."""
        if not self.exists:
            return {}
        d = os.fsencode(path)
        out: dict[bytes, Rec] = {}
        for i in range(0, len(names), 500):  # within any SQLite's limit on parameters
            chunk = names[i:i + 500]
            rows = self._rows(_CHILDREN + "WHERE dir = ? AND "
                              f"name IN ({','.join('?' * len(chunk))})", (d, *chunk))
            out.update((r[0], r[1:]) for r in rows)
        return out

    def count_children(self, path: str) -> int:
        """How many entries were exported under directory `path`."""
        if not self.exists:
            return 0
        return self._rows("SELECT COUNT(*) FROM entries WHERE dir = ?", (os.fsencode(path),))[0][0]

    def pages(self, path: str, batch: int = 10000) -> Iterator[list[tuple[bytes, Rec]]]:
        """(child byte name, rec) of everything exported under directory `path`, a page at
        a time (a directory may hold millions)."""
        if not self.exists:
            return
        d, last = os.fsencode(path), b""
        while True:
            rows = self._rows(_CHILDREN + "WHERE dir = ? AND name > ? ORDER BY name LIMIT ?", (d, last, batch))
            if not rows:
                return
            last = rows[-1][0]
            yield [(r[0], r[1:]) for r in rows]

    def subtree(self, path: str, batch: int = 1000) -> Iterator[list[tuple[str, int, int]]]:
        """(path, mode, size) of everything exported at or below `path`, a page at a time (a
        renamed directory may hold millions of entries)."""
        if not self.exists:
            return
        d, n = split(path)
        base = os.fsencode(path)
        last = (b"", b"")
        while True:
            rows = self._rows(
                "SELECT dir, name, mode, size FROM entries WHERE ((dir = ? AND name = ?) OR dir = ? "
                "OR (dir >= ? AND dir < ?)) AND (dir, name) > (?, ?) ORDER BY dir, name LIMIT ?",
                (d, n, base, base + b"/", base + b"0", *last, batch))
            if not rows:
                return
            last = (rows[-1][0], rows[-1][1])
            yield [(os.fsdecode(r[0] + b"/" + r[1] if r[0] else r[1]), r[2], r[3]) for r in rows]

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None


_encode = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode  # json.dumps makes one per call


class DeltaLog:
    """One rank's append-only record of what it made durable during one task."""

    def __init__(self, path: str):
        self.path = path
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self._f = open(path, "a", encoding="ascii")
        except OSError as e:
            raise unusable(path, e, "open") from None
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self.fault: StateError | None = None  # set by the first write that failed

    def add(self, *record) -> None:
        line = _encode(record)
        with self._lock:
            self._pending.append(line)

    def put(self, path: str, rec: Rec) -> None:
        self.add("P", path, *rec)

    def flush(self) -> None:
        """Write what was added; a process killed after this loses none of it (page cache).
        Raises StateError when the log cannot be written, now or at an earlier flush."""
        with self._lock:  # held while writing: threads flush too, and lines must not interleave
            if self.fault is None and self._pending:
                try:
                    self._f.write("\n".join(self._pending) + "\n")
                    self._f.flush()
                except OSError as e:
                    self.fault = unusable(self.path, e)
                self._pending = []
            if self.fault is not None:
                raise StateError(self.fault.name, self.fault.detail)

    def close(self) -> StateError | None:
        """Flush, fsync and close. Never raises (the task is ending): returns the fault that
        kept some of the log from being written, if any."""
        try:
            self.flush()
            os.fsync(self._f.fileno())
        except StateError:
            pass
        except OSError as e:
            self.fault = unusable(self.path, e)
        try:
            self._f.close()
        except OSError as e:  # what a failed write left in the buffer
            self.fault = self.fault or unusable(self.path, e)
        return self.fault


@dataclass(frozen=True)
class Reconciled:
    listed: int  # keys under the prefix
    forgotten: int  # manifest entries whose object was missing (or another size)


class Manifest:
    def __init__(self, directory: str):
        self.directory = directory
        self.db_path = os.path.join(directory, "manifest.sqlite")
        self.deltas = os.path.join(directory, "deltas")
        self.lost_path = os.path.join(directory, "bucket-lost")

    def reader(self) -> Reader:
        return Reader(self.db_path)

    def delta_log(self, task_id: str, rank: int) -> DeltaLog:
        return DeltaLog(os.path.join(self.deltas, task_id, f"rank-{rank}.log"))

    def merge(self) -> list[OpenUpload]:
        """Rank 0, with no task running on the file system: apply every delta log to the
        SQLite file (in one transaction), remove the logs, and return the uploads still open.
        Raises StateError when the manifest is corrupt or cannot be written; the logs then
        stay for the next merge."""
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as e:
            raise unusable(self.directory, e, "create the directory") from None
        path = ""
        try:
            con = sqlite3.connect(self.db_path)
        except sqlite3.Error as e:
            raise self._fault(e) from None
        try:
            con.executescript(_SCHEMA)
            tasks = sorted(os.listdir(self.deltas)) if os.path.isdir(self.deltas) else []
            with con:
                for task in tasks:
                    tdir = os.path.join(self.deltas, task)
                    for name in sorted(os.listdir(tdir)):
                        path = os.path.join(tdir, name)
                        with open(path, encoding="ascii", errors="replace") as f:
                            bad = _apply(con, f)
                        if bad:
                            log.warning("%d record(s) of %s cannot be read (overwritten?): the entries they "
                                        "recorded are exported again by the next task", bad, path)
            for task in tasks:
                shutil.rmtree(os.path.join(self.deltas, task), ignore_errors=True)
            return _open_uploads(con)
        except sqlite3.Error as e:
            raise self._fault(e) from None
        except OSError as e:
            raise unusable(path or self.deltas, e, "read") from None
        except (IndexError, TypeError, ValueError, AttributeError) as e:  # records that parse but make no sense
            raise corrupt(path, e, "delta log", "it was overwritten: move it out of the manifest's directory; the "
                          "entries it recorded are exported again by the next task") from None
        finally:
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
        con = sqlite3.connect(self.db_path)
        try:
            con.execute("CREATE TEMP TABLE listed(dir BLOB NOT NULL, name BLOB NOT NULL, isdir INTEGER NOT NULL, "
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
            with con:
                forgotten = con.execute(
                    "DELETE FROM entries WHERE NOT EXISTS (SELECT 1 FROM listed l WHERE l.dir = entries.dir "
                    "AND l.name = entries.name AND l.isdir = ((entries.mode & 61440) = 16384) "
                    "AND (entries.size < 0 OR (entries.mode & 61440) NOT IN (32768, 40960) "
                    "OR l.size = entries.size))").rowcount
        finally:
            con.close()
        if mark is not None and self.lost() == mark:  # a mark made during the listing stays
            try:
                os.unlink(self.lost_path)
            except FileNotFoundError:
                pass
        return Reconciled(listed, forgotten)

    def _fault(self, e: sqlite3.Error) -> StateError:
        if getattr(e, "sqlite_errorname", "") in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
            return corrupt(self.db_path, e, "manifest", "set it aside and run the export with --full to build "
                           f"it again (mv {self.db_path} {self.db_path}.bad)")
        return StateError("StateDirectoryUnusable", f"{e}: cannot write the manifest {self.db_path} (free space "
                          "there or make it writable; then re-run the same command)")

    def count(self) -> int:
        if not os.path.exists(self.db_path):
            return 0
        con = sqlite3.connect(self.db_path)
        try:
            return con.execute("SELECT count(*) FROM entries").fetchone()[0]
        finally:
            con.close()


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
