"""The work queue of one export task: what to hand to which rank next, and when it is over.

Pure: no MPI, no S3. Lives on rank 0; `parallel` feeds it every rank's outcomes and asks
it for units. It owns the bookkeeping of multipart uploads: every upload it learns of
ends in exactly one FinishUnit (complete or abort), so none is left open when it stops.
A cancel drops queued entries and lets open uploads finish; an abort (a second signal, the
end of the grace) ends every open upload with an abort at once (see halt).

Order of work: finishing uploads first, then their parts (few open uploads at a time),
then small-entry batches, then directory scans (a stack: depth first keeps it small);
scans go first while batches are scarce, so the walk keeps every rank fed. Parts are handed
out by the OSTs they read from: the least busy OSTs first, and never more than
`reads_per_ost` part reads in flight on one OST across the job.

It never sees a report row, nor the light units a rank finds: each rank keeps and shares those
itself (worker, share), writes its rows to its report shard, and sends its counts
(share.Tally) and the state of its own work (share.Status) with its requests. The scheduler
hears of entries only as the units it queues (the task's roots, large files, hard links,
which it pairs across ranks, as (path, status, checksum) of their rows), and the walk is over
when its queues are empty and share.Termination says the ranks' own work is too.

A fault of the state directory (a rank's delta log or report shard cannot be written)
halts the task: it stops as a cancel does, and `fault` says why.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .halt import Halt
from .lifecycle import Counts
from .model import (
    BatchUnit,
    CopyUnit,
    DeleteTreeUnit,
    DeleteUnit,
    DirUnit,
    Entry,
    FinishUnit,
    LargeFileUnit,
    PartDone,
    PartUnit,
    RowStatus,
    UnitOutcome,
    UploadStarted,
)
from .share import Status, Tally, Termination


class _Signal:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name

    def __reduce__(self):  # keep identity across pickling between ranks
        return (_signal, (self.name,))


def _signal(name: str) -> _Signal:
    return {"STOP": STOP, "WAIT": WAIT}[name]


STOP = _Signal("STOP")  # nothing left anywhere: leave the work loop
WAIT = _Signal("WAIT")  # nothing to hand out now, but others may still produce work


@dataclass(slots=True)
class Request:
    """What a rank sends the scheduler: the outcomes it has for it, how many units it wants,
    how far its own signals say to stop, its counts and the state of its own work."""

    outcomes: list[UnitOutcome]
    want_light: int
    want_heavy: int
    halt: Halt = Halt.NONE
    tally: Tally | None = None
    status: Status | None = None


@dataclass(slots=True)
class Reply:
    """The scheduler's answer: units, STOP or WAIT; how far the task stops; and how many light
    and heavy units it still has queued (a busy rank asks again soon only when it has some)."""

    units: object
    halt: Halt = Halt.NONE
    light: int = 0
    heavy: int = 0


@dataclass(slots=True)
class _Upload:
    started: UploadStarted
    pending: int  # parts not yet reported (queued or running)
    done: dict[int, PartDone] = field(default_factory=dict)
    changed: bool = False
    error: PartDone | None = None

    @property
    def broken(self) -> bool:
        return self.changed or self.error is not None


class _PartQueue:
    """Queued parts grouped by the OSTs they read from, and the part reads in flight per OST.

    take() gives the part whose busiest OST has the fewest reads in flight, oldest first among
    equals (so uploads finish in the order they started), and never one that would put an OST
    over `cap` (0: no cap). Parts of files with no known layout are never held back."""

    def __init__(self, cap: int):
        self.cap = cap
        self.queues: dict[tuple[int, ...], deque[PartUnit]] = {}
        self.reads: dict[int, int] = {}  # OST -> part reads in flight
        self.inflight: dict[int, tuple[int, ...]] = {}  # uid of a part handed out -> its OSTs
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def append(self, p: PartUnit) -> None:
        self.queues.setdefault(p.part.osts, deque()).append(p)
        self._len += 1

    def _load(self, osts: tuple[int, ...]) -> int:
        return max((self.reads.get(o, 0) for o in osts), default=-1)

    def take(self, dropped: Callable[[PartUnit], bool]) -> PartUnit | None:
        """The next part to read (now counted in flight), or None; queued parts for which
        `dropped(part)` is true are removed on the way."""
        best: deque[PartUnit] | None = None
        best_key = (0, 0)
        for osts, q in list(self.queues.items()):
            while q and dropped(q[0]):
                q.popleft()
                self._len -= 1
            if not q:
                del self.queues[osts]
                continue
            load = self._load(osts)
            if osts and self.cap and load >= self.cap:
                continue
            if best is None or (load, q[0].uid) < best_key:
                best, best_key = q, (load, q[0].uid)
        if best is None:
            return None
        p = best.popleft()
        self._len -= 1
        if not best:
            del self.queues[p.part.osts]
        if p.part.osts:
            self.inflight[p.uid] = p.part.osts
            for o in p.part.osts:
                self.reads[o] = self.reads.get(o, 0) + 1
        return p

    def returned(self, uid: int) -> None:
        """A unit came back: if it was a part read, its OSTs have one read less in flight."""
        for o in self.inflight.pop(uid, ()):
            self.reads[o] -= 1
            if not self.reads[o]:
                del self.reads[o]


@dataclass(slots=True)
class _Inode:
    """A multiply-linked file: its data goes up once under `primary`; the other link paths
    wait for it and are then made by server-side copy."""

    primary: str
    done: bool = False
    checksum: str = ""
    waiting: list[Entry] = field(default_factory=list)


@dataclass(slots=True)
class Progress:
    counts: Counts
    skipped: int
    unchanged: int
    deleted: int
    discovered: int
    discovered_bytes: int
    bytes_sent: int
    retries: int
    open_uploads: int
    canceled: bool


class Scheduler:
    def __init__(self, roots: list, nranks: int, max_open_uploads: int | None = None, resumable: dict | None = None,
                 reads_per_ost: int = 0):
        self.resumable = dict(resumable or {})  # path -> manifest.OpenUpload left by a dead job
        self.nranks = nranks
        self.max_open_uploads = max_open_uploads or max(4, 2 * nranks)
        self.finish: deque[FinishUnit] = deque()
        self.parts = _PartQueue(reads_per_ost)
        self.opening: set[int] = set()  # uids of LargeFileUnits handed out, upload not yet known
        self.large: deque[LargeFileUnit] = deque()
        self.batches: deque[BatchUnit] = deque()
        self.dirs: list[DirUnit] = []
        self.outstanding: dict[int, int] = {}  # uid -> rank
        self.uploads: dict[str, _Upload] = {}
        self.inodes: dict[tuple[int, int, int, int], _Inode] = {}  # by (size, mtime, ctime, ino)
        self.primaries: dict[str, tuple[int, int, int, int]] = {}  # primary path -> its inode key
        self.tallies: dict[int, Tally] = {}  # each rank's latest counts, as it reported them
        self.reused_bytes = 0  # parts of uploads a dead job left open, completed without re-sending
        self.canceled = False
        self.fault: Exception | None = None  # why the task was halted (a StateError)
        self.aborted = False
        self.aborted_uploads = 0  # open uploads that the abort ended
        self.told = Halt.NONE  # the furthest stop any rank asked for (a signal it got)
        self.walk = Termination()  # the ranks' own light work
        self.requests = 0  # served, for the traffic figures
        self._uid = 0
        for u in roots:
            self._push(u)

    def start_leg(self, roots: list, resumable: dict) -> None:
        """Queue the next repository's root units once the previous one is finished (a task
        mapped through several associations runs one leg per association). Hard links are
        paired within a leg only: their objects live in that leg's repository."""
        self.resumable = dict(resumable)
        self.walk = Termination()  # each leg's workers start their counts afresh
        self.inodes.clear()
        self.primaries.clear()
        if not self.canceled:
            for u in roots:
                self._push(u)

    # ---- intake ----------------------------------------------------------------------

    def _linked(self, e: Entry) -> bool:
        """True when this hard link waits for (or can copy) another link's upload; False
        when it is to be uploaded itself (a plain file, or the first link seen)."""
        if e.nlink < 2 or e.kind.value != "file":
            return False
        ident = e.snapshot()
        ino = self.inodes.get(ident)
        if ino is None:
            self.inodes[ident] = _Inode(e.path)
            self.primaries[e.path] = ident
            return False
        if ino.primary == e.path:
            return False
        if ino.done:
            self._push(CopyUnit(e, ino.primary, ino.checksum))
        else:
            ino.waiting.append(e)
        return True

    def _primary_done(self, path: str, status: RowStatus, checksum: str) -> None:
        ident = self.primaries.pop(path, None)
        if ident is None:
            return
        ino = self.inodes[ident]
        waiting, ino.waiting = ino.waiting, []
        if status is RowStatus.SUCCEEDED:
            ino.done, ino.checksum = True, checksum
            for e in waiting:
                self._push(CopyUnit(e, ino.primary, ino.checksum))
        else:  # the data did not get there: the next link path uploads it instead
            del self.inodes[ident]
            for e in waiting:
                self._push(BatchUnit([e]))

    def _release_stranded(self) -> None:
        """Called when nothing else is left: no primary can report any more (it changed into
        another version on the way), so its waiting link paths start over as uploads."""
        for ident, ino in list(self.inodes.items()):
            if ino.waiting:
                del self.inodes[ident]
                if self.primaries.get(ino.primary) == ident:
                    del self.primaries[ino.primary]
                for e in ino.waiting:
                    self._push(BatchUnit([e]))

    def _push(self, unit) -> None:
        if self.canceled and not isinstance(unit, (PartUnit, FinishUnit)):
            return  # a canceled task starts no more entries
        if isinstance(unit, BatchUnit):
            unit.entries = [e for e in unit.entries if not self._linked(e)]
            if not unit.entries:
                return
        elif isinstance(unit, LargeFileUnit) and not unit.plain and self._linked(unit.entry):
            return
        self._uid += 1
        unit.uid = self._uid
        if isinstance(unit, FinishUnit):
            self.finish.append(unit)
        elif isinstance(unit, PartUnit):
            self.parts.append(unit)
        elif isinstance(unit, LargeFileUnit):
            if unit.resume is None:
                unit.resume = self.resumable.pop(unit.entry.path, None)
            self.large.append(unit)
        elif isinstance(unit, (BatchUnit, CopyUnit, DeleteUnit, DeleteTreeUnit)):
            self.batches.append(unit)
        elif isinstance(unit, DirUnit):
            self.dirs.append(unit)
        else:
            raise TypeError(f"cannot schedule {unit!r}")

    def _absorb(self, o: UnitOutcome) -> None:
        self.outstanding.pop(o.uid, None)
        self.opening.discard(o.uid)
        self.parts.returned(o.uid)
        for path, status, checksum in o.linked:
            if path in self.primaries:
                self._primary_done(path, status, checksum)
        if o.fault is not None:
            self.halt(o.fault)
        if self.aborted:  # an upload started now is aborted by the rank that started it
            return
        for u in o.units:
            self._push(u)
        for s in o.started:
            self._start_upload(s)
        for p in o.parts:
            self._part_done(p)

    def _start_upload(self, s: UploadStarted) -> None:
        up = _Upload(s, len(s.parts) - len(s.reused), {d.number: d for d in s.reused})
        self.reused_bytes += sum(d.length for d in s.reused)
        self.uploads[s.upload_id] = up
        snap = s.entry.snapshot()
        for p in s.parts:
            if p.number not in up.done:
                self._push(PartUnit(s.upload_id, s.key, s.entry.path, p, snap))
        if up.pending == 0:  # every part was already uploaded by a job that died
            self._settle(s.upload_id)

    def _part_done(self, p: PartDone) -> None:
        up = self.uploads.get(p.upload_id)
        if up is None:
            return
        up.pending -= 1
        up.done[p.number] = p
        if p.changed:
            up.changed = True
        elif p.error_code and up.error is None:
            up.error = p
        if up.pending == 0:
            self._settle(p.upload_id)

    def _settle(self, upload_id: str) -> None:
        """Every part is in (or dropped): queue the upload's one FinishUnit."""
        up = self.uploads.pop(upload_id)
        s = up.started
        ordered = [up.done[n] for n in sorted(up.done)]
        osts: dict[int, None] = {}
        for part in s.parts:
            for o in part.osts:
                osts.setdefault(o)
        self._push(FinishUnit(
            upload_id, s.key, s.entry, s.entry.snapshot(),
            parts=[(d.number, d.etag, d.crc_b64) for d in ordered if not (d.changed or d.error_code)],
            crcs=[(d.crc, d.length) for d in ordered],
            retries=s.retries + sum(d.retries for d in ordered), attempt=s.attempt, osts=tuple(osts),
            error_code=up.error.error_code if up.error else "",
            error_message=up.error.error_message if up.error else "",
            retry_file=up.changed and up.error is None, started=s.started))

    # ---- hand-out --------------------------------------------------------------------

    def _dropped(self, p: PartUnit) -> bool:
        """Parts of a broken upload are not read: they count as done, dropped."""
        up = self.uploads.get(p.upload_id)
        if up is None or not up.broken:
            return False
        self._part_done(PartDone(p.upload_id, p.part.number, length=p.part.length, changed=up.changed,
                                 error_code="dropped" if not up.changed else ""))
        return True

    def _take_heavy(self):
        p = self.parts.take(self._dropped)
        if p is not None:
            return p
        # an upload counts as open from the moment its LargeFileUnit is handed out
        if self.large and len(self.uploads) + len(self.opening) < self.max_open_uploads:
            u = self.large.popleft()
            self.opening.add(u.uid)
            return u
        return None

    def _take_light(self):
        if self.finish:
            return self.finish.popleft()
        scarce = len(self.batches) < 2 * self.nranks
        if self.dirs and (scarce or not self.batches):
            return self.dirs.pop()
        if self.batches:
            return self.batches.popleft()
        return None

    def exchange(self, rank: int, outcomes: list[UnitOutcome], want_light: int, want_heavy: int):
        """Take a rank's outcomes, then give it up to the wanted units, or WAIT, or STOP."""
        for o in outcomes:
            self._absorb(o)
        # at most a fair share of what is queued, so scarce work (a small tree, the parts of
        # one big file, the tail of a task) spreads over the ranks instead of going to the first
        light = len(self.finish) + len(self.batches) + len(self.dirs)
        heavy = len(self.parts) + len(self.large)
        want_light = min(want_light, max(1, -(-light // self.nranks)))
        want_heavy = min(want_heavy, max(1, -(-heavy // self.nranks)))
        given: list = []
        for take, want in ((self._take_light, want_light), (self._take_heavy, want_heavy)):
            while len(given) < want_light + want_heavy and want > 0:
                u = take()
                if u is None:
                    break
                self.outstanding[u.uid] = rank
                given.append(u)
                want -= 1
        if given:
            return given
        if self.finished and self.walk.over() and any(ino.waiting for ino in self.inodes.values()):
            self._release_stranded()
            return self.exchange(rank, [], want_light, want_heavy)
        return STOP if (self.finished and self.walk.over()) or (self.aborted and not self.finish) else WAIT

    def serve(self, rank: int, req: Request) -> Reply:
        """exchange() plus how far the task stops (Halt), so ranks drop what they hold queued,
        and how much the scheduler has queued. The request says how far the asking rank was
        told to stop by a signal, its counts so far (its rows stay with it) and its own work."""
        self.requests += 1
        if req.tally is not None:
            self.tallies[rank] = req.tally
        if req.status is not None:
            self.walk.report(rank, req.status)
        if req.halt > self.told:
            self.told = Halt(req.halt)
            if req.halt >= Halt.ABORT:
                self.abort()
            else:
                self.cancel()
        units = self.exchange(rank, req.outcomes, req.want_light, req.want_heavy)
        return Reply(units, self.level, len(self.finish) + len(self.batches) + len(self.dirs),
                     len(self.parts) + len(self.large))

    @property
    def level(self) -> Halt:
        """How far the task stops: not, as a cancel, or aborted."""
        return Halt.ABORT if self.aborted else Halt.CANCEL if self.canceled else Halt.NONE

    @property
    def finished(self) -> bool:
        return not (self.outstanding or self.finish or self.parts or self.large or self.batches
                    or self.dirs or self.uploads)

    def cancel(self) -> None:
        """Queued entries are not started; uploads already open finish (T-7)."""
        self.canceled = True
        self.large.clear()
        self.batches.clear()
        self.dirs.clear()

    def halt(self, fault: Exception) -> None:
        """Stop as a cancel does, because of `fault` (the first one is kept)."""
        if self.fault is None:
            self.fault = fault
        self.cancel()

    def abort(self) -> None:
        """Stop now: queued parts are dropped and every open upload gets its FinishUnit at once,
        an abort; finishes are all that is handed out any more, then STOP. Parts and entries in
        flight are not waited for; their outcomes are taken if they come."""
        if self.aborted:
            return
        self.cancel()
        self.aborted = True
        self.parts = _PartQueue(self.parts.cap)
        self.aborted_uploads = len(self.uploads)
        for upload_id, up in self.uploads.items():
            s = up.started
            self._push(FinishUnit(upload_id, s.key, s.entry, s.entry.snapshot(), [], [], 0, s.attempt, (),
                                  started=s.started, canceled=True))
        self.uploads.clear()

    def progress(self, tally: Tally | None = None) -> Progress:
        """The task's progress from the ranks' latest counts (or from `tally`, the final sum)."""
        t = tally if tally is not None else Tally.summed(self.tallies.values())
        return Progress(Counts(t.total, t.succeeded, t.failed), t.skipped, t.unchanged, t.deleted, t.discovered,
                        t.discovered_bytes, t.bytes_sent, t.retries, len(self.uploads), self.canceled)
