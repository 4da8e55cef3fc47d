"""Deletes (--delete, auto-export's DELETED): the objects of entries gone from the tree, and
of every descendant of a directory gone or renamed, as the manifest knows them.

Local: no MPI. Only keys pfsxport wrote (the manifest's) are ever deleted.
"""
from __future__ import annotations

import stat as _stat

from ..errors import ErrorCode, StoreError
from ..model import DeleteTreeUnit, DeleteUnit, EntryKind, ReportRow, RowStatus, UnitOutcome
from .context import Context


class Removal:
    def __init__(self, ctx: Context):
        self.ctx = ctx


    def _delete(self, gone: list[tuple[str, int, int]]) -> tuple[list[ReportRow], bool]:
        """Delete the objects of (path, mode, size as last exported); each row's size is its
        object's (0 for a directory, or where only an intent was recorded)."""
        keys = {self.ctx.key_of(p, m): (p, m, size) for p, m, size in gone}
        if self.ctx.dry_run:  # what would go; the delta log of a dry run records nothing
            return [ReportRow(p, EntryKind.of_mode(m).value, 0 if _stat.S_ISDIR(m) else max(size, 0),
                              RowStatus.WOULD_DELETE, rank=self.ctx.rank, message=f"{key} would be deleted")
                    for key, (p, m, size) in keys.items()], True
        try:
            errors = self.ctx.store.delete_objects(list(keys))
        except StoreError as err:
            errors = {k: str(err)[:500] for k in keys}
            code = err.code.value
        else:
            code = ErrorCode.S3_ERROR.value
        rows = []
        for key, (path, mode, size) in keys.items():
            kind = EntryKind.of_mode(mode).value
            size = 0 if _stat.S_ISDIR(mode) else max(size, 0)
            if key in errors:
                rows.append(ReportRow(path, kind, size, RowStatus.FAILED, code, rank=self.ctx.rank,
                                      message=f"could not delete {key}: {errors[key]}"))
            else:
                rows.append(ReportRow(path, kind, size, RowStatus.DELETED, rank=self.ctx.rank,
                                      message="gone from the file system; object deleted"))
        return rows, not errors

    def delete_gone(self, unit: DeleteUnit) -> UnitOutcome:
        rows, _ = self._delete(unit.gone)
        for r in rows:
            if r.status is RowStatus.DELETED:
                self.ctx.delta.add("D", r.path)
        return UnitOutcome(unit.uid, rows=rows)

    def delete_tree(self, unit: DeleteTreeUnit) -> UnitOutcome:
        """Delete the objects of a vanished (or renamed) directory and all its descendants,
        as the manifest knows them; the manifest forgets the subtree only if all went."""
        out = UnitOutcome(unit.uid)
        ok = True
        for batch in (self.ctx.manifest.subtree(unit.path) if self.ctx.manifest else ()):
            rows, batch_ok = self._delete(batch)
            out.rows += rows
            ok = ok and batch_ok
        if ok:
            self.ctx.delta.add("T", unit.path)
        else:
            for r in out.rows:
                if r.status is RowStatus.DELETED:
                    self.ctx.delta.add("D", r.path)
        return out
