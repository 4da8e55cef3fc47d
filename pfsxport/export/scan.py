"""The walk's step: list a directory, compare its children with the manifest, and route what
is new or changed into units (batches of small entries, one unit per large file, a scan per
subdirectory, deletes for what is gone).

Local: no MPI, no S3 (a due directory's own object is written through `upload`).
"""
from __future__ import annotations

import itertools
import logging
import os
import stat as _stat

from ..errors import ErrorCode
from ..metadata import key_error, printable
from ..model import (
    BatchUnit,
    DeleteTreeUnit,
    DeleteUnit,
    DirUnit,
    Discovered,
    Entry,
    EntryKind,
    LargeFileUnit,
    RowStatus,
    UnitOutcome,
)
from ..walk import OutsideRoot, scan_dir
from ..walk import join as join_path
from .context import Context
from .upload import Upload

log = logging.getLogger("pfsxport")


class Scanner:
    def __init__(self, ctx: Context, upload: Upload):
        self.ctx = ctx
        self.upload = upload

    def route(self, entries: list[Entry]) -> list:
        """Group entries into units: batches of small entries, one unit per large file
        (with its layout, looked up for all of them in one batched `lfs` call)."""
        units: list = []
        batch: list[Entry] = []
        large = [self.ctx.abspath(e.path) for e in entries if self.ctx.is_large(e)]
        layouts = self.ctx.layouts.layouts(large) if len(large) > 1 else {}
        for e in entries:
            if self.ctx.is_large(e):
                units.append(LargeFileUnit(e, layout=layouts.get(self.ctx.abspath(e.path))))
                continue
            batch.append(e)
            if len(batch) >= self.ctx.opts.batch_entries:
                units.append(BatchUnit(batch))
                batch = []
        if batch:
            units.append(BatchUnit(batch))
        return units

    def scan(self, unit: DirUnit) -> UnitOutcome:
        """List one directory; new and changed children become units, every subdirectory a
        scan. Unchanged children cost an lstat and a tuple comparison, nothing more.

        A directory larger than one scan piece is compared a piece at a time against just
        that piece's manifest records, so what it holds does not grow with the directory
        beyond its changed entries."""
        res = scan_dir(self.ctx.root, unit.path, self.ctx.skip)
        if res.error is not None:  # one outcome for the directory: failed, its object not written
            out = UnitOutcome(unit.uid)
            if not isinstance(res.error, FileNotFoundError):
                if isinstance(res.error, OutsideRoot):
                    log.warning("not listed: %s leads outside %s", printable(unit.path), self.ctx.fs_root)
                e = unit.entry or Entry(unit.path, EntryKind.DIRECTORY, 0, 0, 0, 0, 0, 0, 0)
                out.rows.append(self.ctx.row(e, RowStatus.FAILED, ErrorCode.LOCAL_READ_ERROR,
                                          message=f"cannot list directory: {res.error.strerror}"))
            return out
        # the directory's own object goes before any child is handed out
        out = self.upload.export_entry(unit.entry) if unit.entry is not None else UnitOutcome(0)
        out.uid = unit.uid
        changed: list[Entry] = []
        dirs: list[DirUnit] = []
        if res.more is None:
            gone = self.ctx.manifest.directory(unit.path) if self.ctx.manifest else {}
            unchanged = self._compare(unit, res.items, gone, changed, dirs)
            count = len(res.items)
        else:
            unchanged = count = matched = 0
            for items in itertools.chain([res.items], res.more):
                names = [name for name, _ in items]
                previous = self.ctx.manifest.entries(unit.path, names) if self.ctx.manifest else {}
                matched += len(previous)
                unchanged += self._compare(unit, items, previous, changed, dirs)
                count += len(items)
            gone = {}
            # records the scan did not match are entries gone since (or, rarely, gone during
            # the scan): found by paging the records, only where a gone entry can mean a delete
            if self.ctx.manifest and (self.ctx.passed is not None or "DELETED" in self.ctx.events) and \
                    self.ctx.manifest.count_children(unit.path) > matched:
                base = os.fsencode(self.ctx.abspath(unit.path))
                for page in self.ctx.manifest.pages(unit.path):
                    gone.update((name, rec) for name, rec in page if not os.path.lexists(os.path.join(base, name)))
        out.units += self.route(changed) + dirs
        if gone:  # what is left of the manifest's records is gone from the directory
            out.units += self.deletions(unit.path, gone)
        out.discovered = Discovered(count, sum(e.size for e in changed if e.kind is EntryKind.FILE), unchanged)
        return out

    def _compare(self, unit: DirUnit, items, previous: dict, changed: list[Entry], dirs: list[DirUnit]) -> int:
        """Sort a directory's children (or a piece of them) into changed entries and
        subdirectory scans; pops each seen name from `previous`; returns how many were
        unchanged."""
        prefix = unit.path + "/" if unit.path else ""
        unchanged = 0
        for name, st in items:
            before = previous.pop(name, None)
            mode = st.st_mode
            walk = _stat.S_ISDIR(mode) and (before is None or not unit.shallow)
            if before is not None and not self.ctx.full and before == (
                    st.st_size, st.st_mtime_ns, st.st_ctime_ns, mode, st.st_uid, st.st_gid, st.st_ino):
                unchanged += 1
                if walk:
                    dirs.append(DirUnit(prefix + os.fsdecode(name)))
                continue
            e = Entry.from_stat(prefix + os.fsdecode(name), st)
            # left alone by the policy before, and unchanged since
            left_alone = self.ctx.passed is not None and self.ctx.passed.get(e.path) == e.rec()
            wanted = not left_alone and self._wanted(e, before is None)
            if walk:  # its own object goes first, then its children (DirUnit.entry)
                dirs.append(DirUnit(e.path, entry=e if wanted else None))
            elif wanted:
                changed.append(e)
        return unchanged

    def _wanted(self, e: Entry, new: bool) -> bool:
        """Whether the policy exports this new or changed entry now."""
        if self.ctx.hold is not None and e.kind is EntryKind.FILE and self.ctx.hold(e.path):
            return False
        if ("NEW" if new and not self.ctx.renamed(e.path) else "CHANGED") in self.ctx.events:
            return True
        if self.ctx.passed is not None:
            self.ctx.passed[e.path] = e.rec()
        return False

    def changed(self, entries: list[Entry], previous: dict) -> tuple[list[Entry], int]:
        """Entries to export (new or changed since their last export, or all with `full`);
        pops every seen name from `previous` (keyed by byte name), leaving those gone."""
        out = []
        for e in entries:
            before = previous.pop(os.fsencode(e.path.rpartition("/")[2]), None)
            if (self.ctx.full or before is None or tuple(before) != e.rec()) and self._wanted(e, before is None):
                out.append(e)
        return out, len(entries) - len(out)

    def deletions(self, parent: str, gone: dict) -> list:
        """Units removing the objects of entries gone from `parent`, as far as the policy
        says (DELETED; or CHANGED for the old name of a rename)."""
        named = []
        for name, rec in gone.items():
            path = join_path(parent, os.fsdecode(name))
            if self.ctx.passed is not None and path in self.ctx.passed and self.ctx.passed[path] is None:
                continue  # left in S3 by the policy before
            if key_error(self.ctx.key_of(path, rec[3])) is not None:
                self.ctx.delta.add("D", path)  # an intent whose key no store takes: no object to delete
                continue
            if ("CHANGED" if self.ctx.renamed(path) else "DELETED") in self.ctx.events:
                named.append((path, rec[3], rec[0]))
            elif self.ctx.passed is not None:
                self.ctx.passed[path] = None
        units: list = [DeleteTreeUnit(path) for path, mode, _ in named if _stat.S_ISDIR(mode)]
        files = [g for g in named if not _stat.S_ISDIR(g[1])]
        units += [DeleteUnit(files[i:i + 1000]) for i in range(0, len(files), 1000)]
        return units

