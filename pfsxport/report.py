"""Completion reports: failures.csv (FSx REPORT_CSV_20191124), report.csv and report.h5.

Owns h5py (the only module that imports it, lazily). The rows are written where they are:
each rank appends its own to a shard (shards/rank-NNNNN.*: CSV lines as they come, and a
pickled spill that becomes the shard's HDF5 file at the end, built in chunks). Rank 0 then
`combine`s the shards: failures.csv and report.csv by concatenating bytes, report.h5 as an
HDF5 virtual dataset over the shards' (a reader sees one table; the work is per shard, not
per row), so no rank ever holds or handles every row.
"""
from __future__ import annotations

import os
import pickle
import re
import shutil
import time
from collections.abc import Iterator

from .errors import StateError, unusable
from .metadata import printable
from .model import ReportRow, RowStatus

FORMULA_CHARS = ("@", "+", "-", "=")
COLUMNS = ("path", "type", "size", "status", "error_code", "bytes", "parts", "checksum", "retries", "rank",
           "osts", "seconds", "start", "end", "message")
FAILURES = "failures.csv"
REPORT_CSV = "report.csv"
REPORT_H5 = "report.h5"
SHARDS = "shards"
_CHUNK = 4096
_REOPEN = 32 * _CHUNK  # rows between two reopens of a shard being written (write_h5)
_QUOTE = re.compile(r'[,"\r\n]')


def csv_field(value: str) -> str:
    """RFC-4180 quoting plus FSx's formula guard (R-7): a value starting with @ + - = is
    first wrapped in double quotes, so `@x` becomes `\"\"\"@x\"\"\"`."""
    if value.startswith(FORMULA_CHARS):
        value = f'"{value}"'
    if _QUOTE.search(value):
        value = '"' + value.replace('"', '""') + '"'
    return value


def failure_line(row: ReportRow) -> str:
    """One failures.csv line: FilePath,FileStatus,ErrorCode with LF, no header (R-4, R-5)."""
    return ",".join((csv_field(printable(row.path)), csv_field(row.status.value), csv_field(row.error_code))) + "\n"


def report_line(row: ReportRow) -> str:
    """One report.csv line. Only the text columns can need quoting: the kind and the status
    are plain words, the numbers never negative."""
    return (f"{csv_field(printable(row.path))},{row.kind},{row.size},{row.status.value},{csv_field(row.error_code)},"
            f"{row.bytes},{row.parts},{csv_field(row.checksum)},{row.retries},{row.rank},{csv_field(row.osts)},"
            f"{row.seconds:.6f},{row.end - row.seconds:.6f},{row.end:.6f},{csv_field(row.message)}\n")


def shard_paths(directory: str, rank: int) -> dict[str, str]:
    base = os.path.join(directory, SHARDS, f"rank-{rank:05d}")
    return {FAILURES: base + ".failures.csv", REPORT_CSV: base + ".csv", REPORT_H5: base + ".h5"}


class ReportWriter:
    """One rank's shard of a task's report: rows appended as they arrive, `finish` builds
    the shard's HDF5 file. A file that cannot be written raises StateError, at once and at
    every later call."""

    def __init__(self, directory: str, rank: int = 0):
        self.directory = directory
        self.rank = rank
        self.paths = shard_paths(directory, rank)
        self._spill_path = self.paths[REPORT_H5] + ".rows.pickle"
        self.fault: StateError | None = None
        self.finished = False
        try:
            os.makedirs(os.path.dirname(self._spill_path), exist_ok=True)
            self._failures = open(self.paths[FAILURES], "w", encoding="utf-8", newline="")
            self._csv = open(self.paths[REPORT_CSV], "w", encoding="utf-8", newline="")
            self._spill = open(self._spill_path, "wb")
        except OSError as e:
            raise unusable(e.filename or directory, e) from None
        self.rows = 0

    def add(self, rows: list[ReportRow]) -> None:
        if self.fault is None:
            now = time.time()
            try:
                for r in rows:
                    if not r.end:
                        r.end = now
                    if r.status is RowStatus.FAILED:
                        self._failures.write(failure_line(r))
                    self._csv.write(report_line(r))
                pickle.dump(rows, self._spill, protocol=pickle.HIGHEST_PROTOCOL)
            except OSError as e:
                self.fault = unusable(self.directory, e)
        self.rows += len(rows)
        if self.fault is not None:
            raise StateError(self.fault.name, self.fault.detail)

    def _spilled(self) -> Iterator[list[ReportRow]]:
        with open(self._spill_path, "rb") as f:
            pending: list[ReportRow] = []
            while True:
                try:
                    pending += pickle.load(f)
                except EOFError:
                    break
                if len(pending) >= _CHUNK:
                    yield pending
                    pending = []
            if pending:
                yield pending

    def finish(self) -> str:
        """Close the shard's CSVs and write its HDF5 file; returns that file's path. Raises
        StateError if the shard could not be written whole; the spill goes anyway."""
        self.finished = True
        try:
            for f in (self._failures, self._csv, self._spill):
                try:
                    f.close()
                except OSError as e:
                    self.fault = self.fault or unusable(self.directory, e)
            if self.fault is None:
                try:
                    write_h5(self.paths[REPORT_H5], self._spilled(), {"rank": self.rank})
                except OSError as e:
                    self.fault = unusable(self.paths[REPORT_H5], e)
        finally:
            try:
                os.unlink(self._spill_path)
            except OSError:
                pass
        if self.fault is not None:
            raise StateError(self.fault.name, self.fault.detail)
        return self.paths[REPORT_H5]


def combine(directory: str, nranks: int, attrs: dict, partial: bool = False) -> dict[str, str]:
    """Rank 0, once every rank's shard is finished: failures.csv and report.csv from the
    shards' bytes (in rank order), report.h5 as one virtual table over the shards' HDF5
    files (referred to by relative name, so the report directory can be moved or copied
    whole), with the task's fields as attributes. Returns {name: path}; raises StateError.
    `partial`: the shards of ranks that never finished theirs are left out (a job ended by
    force)."""
    paths = {name: os.path.join(directory, name) for name in (FAILURES, REPORT_CSV, REPORT_H5)}
    shards = [shard_paths(directory, r) for r in range(nranks)]
    if partial:
        shards = [sh for sh in shards if os.path.exists(sh[REPORT_H5])]
    try:
        for name, header in ((FAILURES, ""), (REPORT_CSV, ",".join(COLUMNS) + "\n")):
            tmp = paths[name] + ".tmp"
            try:
                with open(tmp, "wb") as out:
                    out.write(header.encode())
                    for sh in shards:
                        with open(sh[name], "rb") as part:
                            shutil.copyfileobj(part, out, 1 << 20)
                os.replace(tmp, paths[name])
            except BaseException:
                _remove(tmp)
                raise
        write_virtual_h5(paths[REPORT_H5], [os.path.relpath(sh[REPORT_H5], directory) for sh in shards], attrs)
    except OSError as e:
        raise unusable(e.filename or directory, e) from None
    return paths


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def read_columns(path: str, columns: tuple[str, ...]) -> dict:
    """Columns of a report.h5 (one table, whether it is virtual or not) as numpy arrays, text
    columns decoded; and its attributes under "attrs"."""
    import h5py

    with h5py.File(path, "r") as f:
        e = f["entries"]
        out = {c: (e[c].asstr()[:] if h5py.check_string_dtype(e[c].dtype) else e[c][:]) for c in columns}
        out["attrs"] = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    return out


def preload() -> None:
    """Import h5py (~0.1 s of CPU) ahead of write_h5, e.g. in a thread while the walk runs."""
    import h5py  # noqa: F401


def _dtypes(h5py, np) -> dict:
    text = h5py.string_dtype("utf-8")
    return {"path": text, "type": text, "size": np.int64, "status": text, "error_code": text,
            "bytes": np.int64, "parts": np.int32, "checksum": text, "retries": np.int32, "rank": np.int32,
            "osts": text, "seconds": np.float64, "start": np.float64, "end": np.float64, "message": text}


def _atomic_h5(path: str, fill) -> None:
    """Write an HDF5 file under a temporary name with `fill(h5py, np, file, reopen)`, then
    rename; `reopen()` closes the file and returns it opened again."""
    import h5py
    import numpy as np

    tmp = path + ".tmp"
    files = []

    def reopen():
        files[-1].close()
        files.append(h5py.File(tmp, "a"))
        return files[-1]
    try:
        files.append(h5py.File(tmp, "w"))
        try:
            fill(h5py, np, files[-1], reopen)
        finally:
            files[-1].close()
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def write_h5(path: str, chunks: Iterator[list[ReportRow]], attrs: dict) -> None:
    """One table of rows (one dataset per column under /entries), built chunk by chunk. The
    file is closed and opened again every _REOPEN rows: until it closes, HDF5 keeps the heap
    of every variable-length string written (about 18 MB per text column per million rows),
    so a shard's memory would grow with its rows (seven text columns: 130 B a row)."""
    def fill(h5py, np, f, reopen) -> None:
        dtypes = _dtypes(h5py, np)
        g = f.create_group("entries")
        for c in COLUMNS:
            g.create_dataset(c, shape=(0,), maxshape=(None,), dtype=dtypes[c], chunks=(_CHUNK,))
        n = since = 0
        for rows in chunks:
            if since >= _REOPEN:
                f, since = reopen(), 0
            ds = f["entries"]
            m = len(rows)
            since += m
            cols = {
                "path": [printable(r.path) for r in rows], "type": [r.kind for r in rows],
                "size": [r.size for r in rows], "status": [r.status.value for r in rows],
                "error_code": [r.error_code for r in rows], "bytes": [r.bytes for r in rows],
                "parts": [r.parts for r in rows], "checksum": [r.checksum for r in rows],
                "retries": [r.retries for r in rows], "rank": [r.rank for r in rows],
                "osts": [r.osts for r in rows], "seconds": [r.seconds for r in rows],
                "start": [r.end - r.seconds for r in rows], "end": [r.end for r in rows],
                "message": [r.message for r in rows],
            }
            for c in COLUMNS:
                ds[c].resize((n + m,))
                ds[c][n:n + m] = np.asarray(cols[c], dtype=object if dtypes[c] is dtypes["path"] else dtypes[c])
            n += m
        f.attrs.update(attrs)
        f.attrs["entries"] = n
    _atomic_h5(path, fill)


def write_virtual_h5(path: str, shards: list[str], attrs: dict) -> None:
    """report.h5: each column a virtual dataset over the same column of every shard file
    (paths relative to report.h5's directory), in shard order."""
    def fill(h5py, np, f, _reopen) -> None:
        base = os.path.dirname(path)
        sizes = []
        for sh in shards:
            with h5py.File(os.path.join(base, sh), "r") as s:
                sizes.append(int(s.attrs["entries"]))
        total = sum(sizes)
        g = f.create_group("entries")
        for c, dtype in _dtypes(h5py, np).items():
            layout = h5py.VirtualLayout(shape=(total,), dtype=dtype)
            at = 0
            for sh, n in zip(shards, sizes, strict=True):
                if n:
                    layout[at:at + n] = h5py.VirtualSource(sh, f"entries/{c}", shape=(n,))
                at += n
            g.create_virtual_dataset(c, layout)
        f.attrs.update(attrs)
        f.attrs["entries"] = total
        f.attrs["shards"] = len(shards)
    _atomic_h5(path, fill)


def write_text_table_h5(path: str, columns: tuple[str, ...], chunks: Iterator[list[list[str]]], attrs: dict) -> None:
    """A table of text columns (one dataset per column under /entries), built chunk by chunk:
    e.g. verify's differences, read back from its CSV; reopened as write_h5 does."""
    def fill(h5py, np, f, reopen) -> None:
        text = h5py.string_dtype("utf-8")
        g = f.create_group("entries")
        for c in columns:
            g.create_dataset(c, shape=(0,), maxshape=(None,), dtype=text, chunks=(_CHUNK,))
        n = since = 0
        for rows in chunks:
            if since >= _REOPEN:
                f, since = reopen(), 0
            ds = f["entries"]
            since += len(rows)
            for i, c in enumerate(columns):
                ds[c].resize((n + len(rows),))
                ds[c][n:n + len(rows)] = np.asarray([r[i] for r in rows], dtype=object)
            n += len(rows)
        f.attrs.update(attrs)
        f.attrs["entries"] = n
    _atomic_h5(path, fill)
