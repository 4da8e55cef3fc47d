"""The Lustre event source of auto-export: one MDT's changelog, read for one registered
changelog user.

Owns: parsing `lfs changelog` text records (`parse_line`), turning a batch of records into
path-level changes (`ChangelogSource.poll`: coalesced per FID, paths through `lfs fid2path`)
and clearing consumed records (`ChangelogSource.clear`, which the caller runs only once the
changes are durable in S3). Local: no MPI, no S3, standard library only.

Paths are resolved when the batch is polled, so they name where things are now, not where
they were when the record was written: a change says which paths to look at again, the
consumer decides what to send by looking at the file system (a RENAMED is "the old key goes,
the new path is exported", not a server-side move).
"""
from __future__ import annotations

import logging
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

log = logging.getLogger("pfsxport")

# Changelog record types by number (include/uapi/linux/lustre/lustre_user.h, enum changelog_rec_type).
TYPE_NAMES = ("MARK", "CREAT", "MKDIR", "HLINK", "SLINK", "MKNOD", "UNLNK", "RMDIR", "RENME", "RNMTO",
              "OPEN", "CLOSE", "LYOUT", "TRUNC", "SATTR", "XATTR", "HSM", "MTIME", "CTIME", "ATIME",
              "MIGRT", "FLRW", "RESYNC", "GXATR", "NOPEN")

_CREATES = frozenset({"CREAT", "MKDIR", "SLINK", "HLINK", "MKNOD"})
_DELETES = frozenset({"UNLNK", "RMDIR"})
_METADATA = frozenset({"SATTR", "MTIME", "CTIME", "XATTR", "LYOUT"})
# What a record type says about its target (t=): a directory or not.
_IS_DIR = {"MKDIR": True, "RMDIR": True, "CREAT": False, "MKNOD": False, "SLINK": False, "HLINK": False,
           "UNLNK": False, "CLOSE": False, "TRUNC": False}
# Open flags a CLOSE record carries in its flags (low 12 bits of the open flags, lustre_user.h):
# MDS_FMODE_WRITE, MDS_OPEN_CREAT, MDS_OPEN_TRUNC, MDS_OPEN_APPEND.
_WRITE_OPEN = 0o2 | 0o100 | 0o1000 | 0o2000
_RENAME_OVERWROTE = 0x1  # RENME flags: a target was overwritten (nothing extra to do: the new object replaces it)

_FID = rb"\[((?:0x)?[0-9a-fA-F]+:(?:0x)?[0-9a-fA-F]+:(?:0x)?[0-9a-fA-F]+)\]"
_HEAD = re.compile(rb"[ \t]*(\d+) +(\d{1,2})([A-Z][A-Z0-9_]*) +(\d{1,2}:\d{1,2}:\d{1,2}(?:\.\d+)?) +"
                   rb"(\d{4}\.\d{1,2}\.\d{1,2}) +(0x[0-9a-fA-F]+|\d+) +t=" + _FID)
_FIELD = re.compile(rb" ([a-z]+)=(\S*)")
_PARENT = re.compile(rb" p=" + _FID)
_SOURCE = re.compile(rb" s=" + _FID + rb" sp=" + _FID + rb"(?: |\Z)")
_ENOENT = ("No such file or directory", "Stale file handle")
_BAD_OPTION = ("unrecognized option", "invalid option", "unknown option")


class ChangeKind(str, Enum):
    """What happened to a path."""

    CREATED = "CREATED"  # CREAT, MKDIR, SLINK, HLINK, MKNOD (the new name)
    CLOSED = "CLOSED"  # CLOSE after a write (content changed, the writer is done); TRUNC
    METADATA = "METADATA"  # SATTR (chmod/chown/utime), MTIME, CTIME, XATTR, LYOUT
    DELETED = "DELETED"  # UNLNK, RMDIR
    RENAMED = "RENAMED"  # RENME (+ RNMTO for old formats): old path -> new path


@dataclass(frozen=True)
class ChangelogRecord:
    """One `lfs changelog` line. FIDs are unbracketed as printed; names are raw bytes.
    The trailing fields are informative and left out of comparisons."""

    index: int
    type: str
    type_no: int
    flags: int
    tfid: str
    pfid: str | None = None
    name: bytes | None = None
    sfid: str | None = None
    spfid: str | None = None
    sname: bytes | None = None
    uid: int | None = None
    gid: int | None = None
    jobid: str | None = None
    extra_flags: int | None = field(default=None, compare=False)
    nid: str | None = field(default=None, compare=False)
    mode: str | None = field(default=None, compare=False)  # m=: open mode, "rw-" style
    xattr: str | None = field(default=None, compare=False)
    time: float | None = field(default=None, compare=False)  # when it was recorded (Unix time)

    @property
    def kind_name(self) -> str:
        """The type name, from the number when the printed name is not one we know."""
        if self.type in TYPE_NAMES or not 0 <= self.type_no < len(TYPE_NAMES):
            return self.type
        return TYPE_NAMES[self.type_no]


@dataclass(frozen=True)
class Change:
    """A path-level change, relative to the mount ('/'-joined, no leading '/')."""

    kind: ChangeKind
    path: str
    old_path: str | None = None  # RENAMED only
    is_dir: bool | None = None  # when known from the record type
    time: float | None = field(default=None, compare=False)  # Unix time of the change, when the source knows it


class ChangelogError(Exception):
    """`lfs` failed (non-zero exit, timeout, not runnable); the message carries its stderr."""


def _text(data) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace").strip()
    return str(data).strip()


def is_zero_fid(fid: str | None) -> bool:
    if not fid:
        return True
    try:
        return all(int(p, 16) == 0 for p in fid.split(":"))
    except ValueError:
        return False


def _record_time(clock: bytes, date: bytes) -> float | None:
    """`10:28:46.968438800 2026.11.23` as lfs prints a record's time (local time) -> Unix time."""
    try:
        h, mi, sec = clock.split(b":")
        y, mo, d = date.split(b".")
        whole, _, frac = sec.partition(b".")
        t = datetime(int(y), int(mo), int(d), int(h), int(mi), int(whole)).timestamp()  # naive: local time
    except (ValueError, OverflowError, OSError):
        return None
    return t + (int(frac) / 10 ** len(frac) if frac else 0.0)


def parse_line(line: bytes) -> ChangelogRecord | None:
    """Parse one `lfs changelog` line; None when it is not a record (blank, garbled).

    NAME is the rest of the line after `p=[PFID] `, up to ` s=[SFID] sp=[SPFID] ` when
    present (rename), so it may hold spaces. Optional fields (j, ef, u, nid, m, x) may be
    missing, as in older formats."""
    if isinstance(line, str):
        line = os.fsencode(line)
    if line.endswith(b"\n"):
        line = line[:-1]
    m = _HEAD.match(line)
    if not m:
        return None
    try:
        index, type_no = int(m.group(1)), int(m.group(2))
        flags = int(m.group(6), 16) if m.group(6).startswith(b"0x") else int(m.group(6))
    except ValueError:
        return None
    rest = line[m.end():]
    if rest and not rest.startswith(b" "):
        return None  # "t=[...]garbage"
    fields: dict[bytes, bytes] = {}
    pos = 0
    while True:
        fm = _FIELD.match(rest, pos)
        if not fm or fm.group(1) in (b"p", b"s"):
            break
        fields.setdefault(fm.group(1), fm.group(2))
        pos = fm.end()
    rest = rest[pos:]
    pfid = name = sfid = spfid = sname = None
    pm = _PARENT.match(rest)
    if not pm and rest and not _SOURCE.match(rest):
        pm = _PARENT.search(rest)  # words we do not know before p= (a job id with spaces)
    if pm:
        pfid = pm.group(1).decode()
        rest = rest[pm.end():]
    if rest.startswith(b" "):
        sm = _SOURCE.search(rest)
        if sm:
            sfid, spfid = sm.group(1).decode(), sm.group(2).decode()
            sname = rest[sm.end():] or None
            rest = rest[:sm.start()]
        if rest.startswith(b" ") and len(rest) > 1:
            name = rest[1:]
    uid = gid = None
    if b"u" in fields:
        u, _, g = fields[b"u"].partition(b":")
        try:
            uid, gid = int(u), int(g)
        except ValueError:
            uid = gid = None
    extra = None
    if b"ef" in fields:
        try:
            extra = int(fields[b"ef"], 16)
        except ValueError:
            extra = None

    def text(key: bytes) -> str | None:
        return fields[key].decode("utf-8", "surrogateescape") if key in fields else None

    return ChangelogRecord(index=index, type=m.group(3).decode(), type_no=type_no, flags=flags,
                           tfid=m.group(7).decode(), pfid=pfid, name=name, sfid=sfid, spfid=spfid, sname=sname,
                           uid=uid, gid=gid, jobid=text(b"j"), extra_flags=extra, nid=text(b"nid"),
                           mode=text(b"m"), xattr=text(b"x"), time=_record_time(m.group(4), m.group(5)))


def _join(parent: str, name: bytes) -> str:
    n = os.fsdecode(name)
    return f"{parent}/{n}" if parent else n


def _covers(path: str):
    """The path and each of its ancestors ('a/b/c' -> 'a/b/c', 'a/b', 'a')."""
    while path:
        yield path
        path = path.rpartition("/")[0]


@dataclass
class _Content:
    """What one FID's content records in a batch add up to."""

    created: int | None = None  # position of the first create record
    changed: int | None = None  # position of the first CLOSE/TRUNC/metadata record
    closed: bool = False  # a write was closed (or truncated): CLOSED, else METADATA


@dataclass
class _Op:
    """A namespace record (delete or rename), paths still as (parent FID, name)."""

    pos: int
    kind: ChangeKind
    pfid: str | None  # DELETED: the entry's parent; RENAMED: the new parent
    name: bytes | None
    old_pfid: str | None = None  # RENAMED: the old parent and name
    old_name: bytes | None = None
    fid: str | None = None  # the object concerned, for is_dir


class ChangelogSource:
    """Reads new records of one MDT for one registered changelog user."""

    def __init__(self, mount: str, mdt: str, user: str, lfs: str = "lfs",
                 run: Callable[..., subprocess.CompletedProcess] = subprocess.run, *,
                 timeout: float = 300.0, fid_batch: int = 256):
        self.mount = mount
        self.mdt = mdt
        self.user = user
        self.lfs = lfs
        self.run = run
        self.timeout = timeout
        self.fid_batch = max(1, fid_batch)
        self._next: int | None = None  # first index of the next poll; None: after the user's cleared record
        self._print_fid = True  # `lfs fid2path -f`; off after an lfs that does not know it
        self.records_read = 0  # records returned by poll() (the caller may reset it)
        self.read_index: int | None = None  # the last record read
        self.cleared_index: int | None = None  # the last record cleared (or the one before the first read)
        base = os.fsencode(mount).rstrip(b"/")
        real = os.fsencode(os.path.realpath(mount)).rstrip(b"/")
        self._prefixes = [p for p in dict.fromkeys((base, real)) if p]

    # ---- lfs ---------------------------------------------------------------------------

    def _lfs(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess:
        argv = [self.lfs, *args]
        try:
            cp = self.run(argv, capture_output=True, timeout=self.timeout)
        except subprocess.TimeoutExpired as e:
            raise ChangelogError(f"`{' '.join(argv)}` timed out after {self.timeout:g} s"
                                 + (f": {_text(e.stderr)}" if _text(e.stderr) else "")) from e
        except OSError as e:
            raise ChangelogError(f"cannot run `{' '.join(argv)}`: {e}") from e
        if check and cp.returncode != 0:
            raise ChangelogError(f"`{' '.join(argv)}` failed (exit {cp.returncode}): "
                                 f"{_text(cp.stderr) or 'no message'}")
        return cp

    def _read(self, start: int | None, max_records: int) -> list[ChangelogRecord]:
        base = ["changelog", "--user", self.user, self.mdt]
        if start is None:
            # With no start lfs takes no end either: the backlog since the user's last clear is
            # read whole and cut to max_records; the rest is read again, from a start, next time.
            recs = self._records(self._lfs(base).stdout)
        else:
            recs = self._records(self._lfs(base + [str(start), str(start + max_records - 1)]).stdout)
            if not recs:
                # Nothing in the window; records may still lie past it (a user mask leaves
                # gaps in the indexes), so look once without an end.
                recs = self._records(self._lfs(base + [str(start)]).stdout)
            recs = [r for r in recs if r.index >= start]
        return recs[:max_records]

    @staticmethod
    def _records(out) -> list[ChangelogRecord]:
        """Records of `lfs changelog` output. A name holding a newline continues on the next
        line(s): a line that is not a record after a record with a name belongs to it."""
        if isinstance(out, str):
            out = os.fsencode(out)
        raw = (out or b"").split(b"\n")
        if raw and raw[-1] == b"":
            raw.pop()
        lines: list[bytes] = []
        for ln in raw:
            if _HEAD.match(ln):
                lines.append(ln)
                continue
            if lines:
                rec = parse_line(lines[-1])
                if rec is not None and (rec.name is not None or rec.sname is not None):
                    lines[-1] += b"\n" + ln
                    continue
            if ln.strip():
                log.warning("changelog: skipping a line that is not a record: %r", ln[:200])
        recs = []
        for ln in lines:
            rec = parse_line(ln)
            if rec is None:
                log.warning("changelog: skipping a line that is not a record: %r", ln[:200])
            else:
                recs.append(rec)
        return recs

    def _fid2path(self, fids: list[str]) -> dict[str, list[str]]:
        """Current paths (relative to the mount) of each FID; [] for a FID that is gone."""
        out: dict[str, list[str]] = {f: [] for f in fids}
        todo = list(fids)
        while todo and self._print_fid:
            chunk, todo = todo[:self.fid_batch], todo[self.fid_batch:]
            cp = self._lfs(["fid2path", "-f", self.mount, *(f"[{f}]" for f in chunk)], check=False)
            err = _text(cp.stderr)
            if cp.returncode != 0 and any(s in err for s in _BAD_OPTION):
                log.info("changelog: %s does not know `fid2path -f`; resolving one FID per call", self.lfs)
                self._print_fid = False
                todo = chunk + todo
                break
            self._check_fid2path(cp, chunk)
            by_arg = {f"[{f}]": f for f in chunk}
            by_arg.update({f: f for f in chunk})
            current = None
            for ln in self._lines(cp.stdout):
                arg, sep, path = ln.partition(b" ")
                fid = by_arg.get(arg.decode("ascii", "replace")) if sep else None
                if fid is not None:
                    out[fid].append(path)
                    current = fid
                elif current is not None:  # a name with a newline in it
                    out[current][-1] += b"\n" + ln
                else:
                    log.warning("changelog: unexpected `lfs fid2path` line %r", ln[:200])
        for f in todo:  # one FID per call: every line is a path
            cp = self._lfs(["fid2path", self.mount, f"[{f}]"], check=False)
            self._check_fid2path(cp, [f])
            out[f] = list(self._lines(cp.stdout)) if cp.returncode == 0 else []
        return {f: [self._relative(p) for p in paths] for f, paths in out.items()}

    def _check_fid2path(self, cp: subprocess.CompletedProcess, fids: list[str]) -> None:
        """A FID that is gone is expected; any other failure is an error (not a FID gone)."""
        if cp.returncode == 0:
            return
        lines = [ln for ln in _text(cp.stderr).splitlines() if ln.strip()]
        bad = [ln for ln in lines if not (any(s in ln for s in _ENOENT) and any(f in ln for f in fids))]
        if bad or not lines:
            raise ChangelogError(f"`{self.lfs} fid2path {self.mount}` failed (exit {cp.returncode}): "
                                 f"{'; '.join(bad or lines) or 'no message'}")

    @staticmethod
    def _lines(out) -> list[bytes]:
        if isinstance(out, str):
            out = os.fsencode(out)
        raw = (out or b"").split(b"\n")
        if raw and raw[-1] == b"":
            raw.pop()
        return raw

    def _relative(self, path: bytes) -> str:
        """A fid2path answer made relative to the mount: absolute under the mount, or already
        relative (with or without a leading '/'), as lfs versions print it."""
        for prefix in self._prefixes:
            if path == prefix or path.startswith(prefix + b"/"):
                path = path[len(prefix):]
                break
        return os.fsdecode(b"/".join(c for c in path.split(b"/") if c))

    # ---- the interface -------------------------------------------------------------------

    def poll(self, max_records: int = 10000) -> tuple[list[Change], int | None]:
        """Records after the last one returned (on the first poll, after the user's cleared
        record), coalesced into changes; returns them and the index of the last record read
        (None when nothing is new). Does NOT clear. Raises ChangelogError; the position is
        then unchanged, so the next poll reads the same records again."""
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        recs = self._read(self._next, max_records)
        if len(recs) > 1 and recs[-1].kind_name == "RENME" and recs[-1].sfid is None:
            recs.pop()  # old format: its RNMTO (the new name) is in the next batch; read them together
        if not recs:
            return [], None
        changes = self._coalesce(recs)
        last = recs[-1].index
        self._next = last + 1
        if self.cleared_index is None:
            self.cleared_index = recs[0].index - 1
        self.read_index = last
        self.records_read += len(recs)
        return changes, last

    @property
    def cursor_lag(self) -> int:
        """Records (by index) read and not yet cleared."""
        if self.read_index is None or self.cleared_index is None:
            return 0
        return max(0, self.read_index - self.cleared_index)

    def clear(self, index: int) -> None:
        """`lfs changelog_clear MDT USER INDEX`: call only once the changes up to INDEX are
        durable in S3. INDEX 0 would clear every record, read or not, so it is refused."""
        if int(index) < 1:
            raise ValueError(f"changelog index to clear must be at least 1, not {index}")
        self._lfs(["changelog_clear", self.mdt, self.user, str(int(index))])
        self.cleared_index = max(int(index), self.cleared_index or 0)

    # ---- coalescing ----------------------------------------------------------------------

    def _coalesce(self, recs: list[ChangelogRecord]) -> list[Change]:
        content: dict[str, _Content] = {}  # FID -> its content records, in first-appearance order
        ops: list[_Op] = []
        named: list[tuple[int, str, bytes, bool | None]] = []  # CREATED known only by (parent, name)
        is_dir: dict[str, bool] = {}
        where: dict[str, tuple[str, bytes]] = {}  # FID -> (parent, name) last seen in the batch

        def note(fid: str | None, pfid: str | None, name: bytes | None) -> None:
            if fid and pfid and name and not is_zero_fid(fid):
                where[fid] = (pfid, name)

        i = 0
        while i < len(recs):
            r, pos = recs[i], i
            i += 1
            kind = r.kind_name
            if kind in _IS_DIR and not is_zero_fid(r.tfid):
                is_dir.setdefault(r.tfid, _IS_DIR[kind])
            if kind in _CREATES:
                note(r.tfid, r.pfid, r.name)
                c = content.setdefault(r.tfid, _Content())
                if c.created is None:
                    c.created = pos
            elif kind in _DELETES:
                note(r.tfid, r.pfid, r.name)
                ops.append(_Op(pos, ChangeKind.DELETED, r.pfid, r.name, fid=r.tfid))
            elif kind == "RENME" and r.sfid is not None:
                # p=[PFID] NEWNAME s=[SFID] sp=[SPFID] OLDNAME; t= is an overwritten target, if any
                note(r.sfid, r.pfid, r.name)
                ops.append(_Op(pos, ChangeKind.RENAMED, r.pfid, r.name, r.spfid, r.sname, fid=r.sfid))
            elif kind == "RENME":  # old format: RENME names the original, the next RNMTO the final name
                nxt = recs[i] if i < len(recs) else None
                if nxt is not None and nxt.kind_name == "RNMTO":
                    i += 1
                    ops.append(_Op(pos, ChangeKind.RENAMED, nxt.pfid, nxt.name, r.pfid, r.name, fid=r.tfid))
                else:  # no final name: the old name went, the object is wherever it is now
                    ops.append(_Op(pos, ChangeKind.DELETED, r.pfid, r.name, fid=r.tfid))
                    if not is_zero_fid(r.tfid):
                        c = content.setdefault(r.tfid, _Content())
                        c.created = pos if c.created is None else c.created
            elif kind == "RNMTO":  # its RENME was in an earlier batch: the final name is new
                if r.pfid and r.name:
                    named.append((pos, r.pfid, r.name, None))
            elif kind == "CLOSE" or kind == "TRUNC":
                # The MDS stores the open flags in a CLOSE's flags and records a CLOSE only for
                # an open for write unless OPEN is in the mask; a CLOSE whose flags show no
                # write, create, truncate or append closed a read and changes nothing. Flags 0
                # (servers that do not store them) count as a write: an extra export is cheap,
                # a missed one is not. TRUNC changes the content too, with no CLOSE after it.
                if kind == "TRUNC" or r.flags == 0 or r.flags & _WRITE_OPEN:
                    c = content.setdefault(r.tfid, _Content())
                    c.closed = True
                    c.changed = pos if c.changed is None else c.changed
            elif kind in _METADATA:
                c = content.setdefault(r.tfid, _Content())
                c.changed = pos if c.changed is None else c.changed
            # OPEN, NOPEN, ATIME, GXATR, MARK, HSM, MIGRT, FLRW, RESYNC: nothing to export

        # Resolve every FID in one go (batched), then gone parents through the batch's own records.
        content = {f: c for f, c in content.items() if not is_zero_fid(f)}
        parents = [p for o in ops for p in (o.pfid, o.old_pfid) if p and not is_zero_fid(p)]
        parents += [p for _, p, _, _ in named if not is_zero_fid(p)]
        paths = self._fid2path(list(dict.fromkeys([*content, *parents])))
        pending, seen = set(parents), set()
        while pending:  # a parent gone now: place it through where the batch last saw it
            seen |= pending
            up = {where[f][0] for f in pending if not paths.get(f) and f in where}
            up = {f for f in up if not is_zero_fid(f) and f not in seen}
            fetch = sorted(up - paths.keys())
            if fetch:
                paths.update(self._fid2path(fetch))
            pending = up

        def at(pos: int) -> float | None:
            return recs[pos].time

        def dir_path(fid: str | None, depth: int = 0) -> str | None:
            if not fid or is_zero_fid(fid) or depth > 256:
                return None
            found = paths.get(fid)
            if found:
                return found[0]
            if fid in where:  # gone now (removed later): its place in the batch
                up = dir_path(where[fid][0], depth + 1)
                return None if up is None else _join(up, where[fid][1])
            return None

        out: list[tuple[tuple, Change]] = []
        touched: dict[str, int] = {}  # path -> position of the last delete/rename naming it
        for o in ops:
            new = _join(p, o.name) if o.name and (p := dir_path(o.pfid)) is not None else None
            if o.kind is ChangeKind.DELETED:
                if new is None:
                    log.info("changelog: record %d: cannot place the deleted entry; skipped", recs[o.pos].index)
                    continue
                out.append(((o.pos, 0), Change(ChangeKind.DELETED, new, is_dir=is_dir.get(o.fid or ""),
                                               time=at(o.pos))))
                touched[new] = o.pos
                continue
            old = (_join(p, o.old_name) if o.old_name and (p := dir_path(o.old_pfid)) is not None else None)
            d = is_dir.get(o.fid or "")
            if old is not None and new is not None:
                if old != new:
                    out.append(((o.pos, 0), Change(ChangeKind.RENAMED, new, old_path=old, is_dir=d, time=at(o.pos))))
                    touched[old] = touched[new] = o.pos
            elif old is not None:  # the new parent is gone since: the old name went
                out.append(((o.pos, 0), Change(ChangeKind.DELETED, old, is_dir=d, time=at(o.pos))))
                touched[old] = o.pos
            elif new is not None:  # the old parent is gone since: the new name is new
                named.append((o.pos, o.pfid or "", o.name or b"", d))

        def place(base: int, path: str) -> tuple:
            """After any later delete or rename of the path or of a directory above it."""
            after = max((touched.get(p, -1) for p in _covers(path)), default=-1)
            return (max(base, after), 1, base)

        for pos, pfid, name, d in named:
            p = dir_path(pfid)
            if p is not None:
                path = _join(p, name)
                out.append((place(pos, path), Change(ChangeKind.CREATED, path, is_dir=d, time=at(pos))))
        for fid, c in content.items():
            # A FID gone now yields nothing: a later UNLNK/RMDIR (this batch or the next) covers it.
            for path in paths.get(fid, []):
                if not path:
                    continue  # the root of the mount: no object of its own
                d = is_dir.get(fid)
                if c.created is not None:
                    out.append((place(c.created, path), Change(ChangeKind.CREATED, path, is_dir=d,
                                                               time=at(c.created))))
                if c.closed:  # after the create, so a consumer holding a new file sees it released
                    base = c.changed if c.created is None else max(c.created, c.changed)
                    out.append((place(base, path), Change(ChangeKind.CLOSED, path, is_dir=d, time=at(c.changed))))
                elif c.changed is not None and c.created is None:  # a create covers metadata
                    out.append((place(c.changed, path), Change(ChangeKind.METADATA, path, is_dir=d,
                                                               time=at(c.changed))))

        out.sort(key=lambda kc: kc[0])
        changes: list[Change] = []
        seen: set[tuple[ChangeKind, str]] = set()
        for _, ch in out:
            if ch.kind in (ChangeKind.DELETED, ChangeKind.RENAMED):
                if changes and changes[-1] == ch:
                    continue  # the same delete twice in a row
            elif (ch.kind, ch.path) in seen:
                continue
            else:
                seen.add((ch.kind, ch.path))
            changes.append(ch)
        return changes
