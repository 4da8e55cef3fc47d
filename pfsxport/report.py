"""Completion reports: failures.csv (FSx REPORT_CSV_20191124), report.csv and report.h5.

Owns h5py (the only module that imports it, lazily). Rows arrive in batches on rank 0
and go straight to disk (CSV files and a pickled spill); the HDF5 file is then built
from the spill in chunks, so no rank ever holds every row in memory.
"""
from __future__ import annotations

import os
import pickle
import re
from collections.abc import Iterator

from .errors import StateError, unusable
from .metadata import printable
from .model import ReportRow, RowStatus

FORMULA_CHARS = ("@", "+", "-", "=")
COLUMNS = ("path", "type", "size", "status", "error_code", "bytes", "parts", "checksum", "retries", "rank",
           "osts", "seconds", "message")
FAILURES = "failures.csv"
REPORT_CSV = "report.csv"
REPORT_H5 = "report.h5"
_CHUNK = 4096
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
            f"{row.seconds:.6f},{csv_field(row.message)}\n")


class ReportWriter:
    """Appends rows as they arrive (rank 0); `finish` builds the HDF5 file. A file that
    cannot be written raises StateError, at once and at every later call."""

    def __init__(self, directory: str):
        self.directory = directory
        self.paths = {name: os.path.join(directory, name) for name in (FAILURES, REPORT_CSV, REPORT_H5)}
        self._spill_path = os.path.join(directory, ".rows.pickle")
        self.fault: StateError | None = None
        try:
            os.makedirs(directory, exist_ok=True)
            self._failures = open(self.paths[FAILURES], "w", encoding="utf-8", newline="")
            self._csv = open(self.paths[REPORT_CSV], "w", encoding="utf-8", newline="")
            self._csv.write(",".join(COLUMNS) + "\n")
            self._spill = open(self._spill_path, "wb")
        except OSError as e:
            raise unusable(e.filename or directory, e) from None
        self.rows = 0

    def add(self, rows: list[ReportRow]) -> None:
        if self.fault is None:
            try:
                for r in rows:
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

    def finish(self, attrs: dict) -> dict[str, str]:
        """Close the CSVs, write report.h5 (one row per entry, task fields as attributes).
        Raises StateError if the report could not be written whole; the spill goes anyway."""
        try:
            for f in (self._failures, self._csv, self._spill):
                try:
                    f.close()
                except OSError as e:
                    self.fault = self.fault or unusable(self.directory, e)
            if self.fault is None:
                try:
                    write_h5(self.paths[REPORT_H5], self._spilled(), attrs)
                except OSError as e:
                    self.fault = unusable(self.paths[REPORT_H5], e)
        finally:
            try:
                os.unlink(self._spill_path)
            except OSError:
                pass
        if self.fault is not None:
            raise StateError(self.fault.name, self.fault.detail)
        return self.paths


def preload() -> None:
    """Import h5py (~0.1 s of CPU) ahead of write_h5, e.g. in a thread while the walk runs."""
    import h5py  # noqa: F401


def write_h5(path: str, chunks: Iterator[list[ReportRow]], attrs: dict) -> None:
    import h5py
    import numpy as np

    tmp = path + ".tmp"
    try:
        _write_h5(h5py, np, tmp, chunks, attrs)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _write_h5(h5py, np, tmp: str, chunks: Iterator[list[ReportRow]], attrs: dict) -> None:
    text = h5py.string_dtype("utf-8")
    dtypes = {"path": text, "type": text, "size": np.int64, "status": text, "error_code": text,
              "bytes": np.int64, "parts": np.int32, "checksum": text, "retries": np.int32, "rank": np.int32,
              "osts": text, "seconds": np.float64, "message": text}
    with h5py.File(tmp, "w") as f:
        g = f.create_group("entries")
        ds = {c: g.create_dataset(c, shape=(0,), maxshape=(None,), dtype=dtypes[c], chunks=(_CHUNK,))
              for c in COLUMNS}
        n = 0
        for rows in chunks:
            m = len(rows)
            cols = {
                "path": [printable(r.path) for r in rows], "type": [r.kind for r in rows],
                "size": [r.size for r in rows], "status": [r.status.value for r in rows],
                "error_code": [r.error_code for r in rows], "bytes": [r.bytes for r in rows],
                "parts": [r.parts for r in rows], "checksum": [r.checksum for r in rows],
                "retries": [r.retries for r in rows], "rank": [r.rank for r in rows],
                "osts": [r.osts for r in rows], "seconds": [r.seconds for r in rows],
                "message": [r.message for r in rows],
            }
            for c in COLUMNS:
                ds[c].resize((n + m,))
                ds[c][n:n + m] = np.asarray(cols[c], dtype=object if dtypes[c] is text else dtypes[c])
            n += m
        for k, v in attrs.items():
            f.attrs[k] = v
        f.attrs["entries"] = n
