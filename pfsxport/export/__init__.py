"""The export data path of one rank, one module per step: `scan` (list, compare with the
manifest, route), `upload` (one request per entry, and hard-link copies), `multipart` (start,
parts, finish of one upload), `remove` (deletes), behind the one entry point `Transfer.run`.

Local: no MPI. Every step returns a UnitOutcome and never raises for a per-entry problem:
those become report rows. Nothing is ever written to a final key unless its bytes were read
from one unchanged version of the file (stat before and after each read, and before completing).
"""
from __future__ import annotations

from ..model import (
    BatchUnit,
    CopyUnit,
    DeleteTreeUnit,
    DeleteUnit,
    DirUnit,
    Entry,
    FinishUnit,
    LargeFileUnit,
    PartUnit,
    UnitOutcome,
)
from .context import TASK_EVENTS, Context, NoDelta, TransferOptions
from .multipart import Multipart
from .remove import Removal
from .scan import Scanner
from .upload import Upload

__all__ = ["TASK_EVENTS", "NoDelta", "Transfer", "TransferOptions"]


class Transfer:
    """One rank's executor of work units: `run` dispatches a unit to its step. Arguments
    after `opts` are those of export.context.Context."""

    def __init__(self, fs_root: str, repo, store, layouts, opts: TransferOptions, **kw):
        self.ctx = Context(fs_root, repo, store, layouts, opts, **kw)
        self.upload = Upload(self.ctx)
        self.scanner = Scanner(self.ctx, self.upload)
        self.multipart = Multipart(self.ctx, self.upload)
        self.removal = Removal(self.ctx)

    @property
    def manifest(self):
        return self.ctx.manifest

    def intend(self, units: list) -> None:
        """Record the entries these units may write to S3 before any of them is sent. A
        process killed between a PUT and its put record then still leaves the manifest
        knowing that the key may exist: the next scan sends it again, or deletes it if the
        entry is gone by then (an `I` record never replaces what the manifest knew)."""
        delta = self.ctx.delta
        added = False
        for unit in units:
            if isinstance(unit, BatchUnit):
                entries = unit.entries
            elif isinstance(unit, (LargeFileUnit, CopyUnit, DirUnit)):
                entries = [unit.entry] if unit.entry else []
            else:
                continue
            for e in entries:
                delta.add("I", e.path, e.mode)
                added = True
        if added:
            delta.flush()

    def run(self, unit) -> UnitOutcome:
        """Execute one unit other than a BatchUnit (whose entries run one by one)."""
        if isinstance(unit, DirUnit):
            return self.scanner.scan(unit)
        if isinstance(unit, LargeFileUnit):
            return self.multipart.start_large(unit)
        if isinstance(unit, PartUnit):
            done = self.multipart.part(unit)
            return UnitOutcome(unit.uid, parts=[done], bytes_sent=done.length if done.etag else 0)
        if isinstance(unit, FinishUnit):
            return self.multipart.finish(unit)
        if isinstance(unit, CopyUnit):
            return self.upload.copy(unit)
        if isinstance(unit, DeleteUnit):
            return self.removal.delete_gone(unit)
        if isinstance(unit, DeleteTreeUnit):
            return self.removal.delete_tree(unit)
        raise TypeError(f"unknown unit {unit!r}")

    def export_entry(self, e: Entry) -> UnitOutcome:
        return self.upload.export_entry(e)

    def scan(self, unit: DirUnit) -> UnitOutcome:
        return self.scanner.scan(unit)

    def route(self, entries: list[Entry]) -> list:
        return self.scanner.route(entries)

    def changed(self, entries: list[Entry], previous: dict) -> tuple[list[Entry], int]:
        return self.scanner.changed(entries, previous)

    def abort_open(self, resume) -> None:
        self.multipart.abort_open(resume)
