"""pfsxport.report: failures.csv (FSX-FACTS R-4..R-8, SPEC §5), report.csv and report.h5."""
from __future__ import annotations

import csv
import io
import os

import pytest

from pfsxport.model import ReportRow, RowStatus
from pfsxport.report import (
    COLUMNS,
    FAILURES,
    REPORT_CSV,
    REPORT_H5,
    SHARDS,
    ReportWriter,
    combine,
    csv_field,
    failure_line,
    report_line,
    write_h5,
)


def row(path="dir1/myLargeFile", status=RowStatus.FAILED, error_code="S3AccessDenied", **kw) -> ReportRow:
    return ReportRow(path, kw.pop("kind", "file"), kw.pop("size", 10), status, error_code, **kw)


def _read_csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


# ---- csv_field: R-7, exactly as FSx's examples ------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("@filename.txt", '"""@filename.txt"""'),   # R-7 examples
    ("+filename.txt", '"""+filename.txt"""'),
    ("file,name.txt", '"file,name.txt"'),
    ('file"name.txt', '"file""name.txt"'),
    ("filename.txt", "filename.txt"),            # plain: unchanged
    ("dir1/myLargeFile", "dir1/myLargeFile"),
    ("myRestrictedFile", "myRestrictedFile"),    # R-5 sample
    ("-x", '"""-x"""'),                          # the other two formula characters
    ("=x", '"""=x"""'),
    ("=SUM(A1)", '"""=SUM(A1)"""'),
    ("a\nb", '"a\nb"'),                          # newline quoted
    ("a\rb", '"a\rb"'),
    ("a b", "a b"),
    ("x@y", "x@y"),                              # formula chars only matter at the start
    ("x-y=z+", "x-y=z+"),
    ("@a,b", '"""@a,b"""'),
    ('@"q"', '"""@""q"""""'),
    ("", ""),
    ("succeeded with warning", "succeeded with warning"),
])
def test_csv_field(value, expected):
    assert csv_field(value) == expected


# ---- failures.csv lines --------------------------------------------------------------------

@pytest.mark.parametrize("path, expected_line", [
    ("myRestrictedFile", "myRestrictedFile,failed,S3AccessDenied\n"),  # R-5's published first line
    ("dir1/myLargeFile", "dir1/myLargeFile,failed,S3AccessDenied\n"),
    ("@filename.txt", '"""@filename.txt""",failed,S3AccessDenied\n'),
    ("file,name.txt", '"file,name.txt",failed,S3AccessDenied\n'),
    ('file"name.txt', '"file""name.txt",failed,S3AccessDenied\n'),
])
def test_failure_line_exact(path, expected_line):
    assert failure_line(row(path)) == expected_line


@pytest.mark.parametrize("path, error_code", [
    ("plain.txt", "PathSizeTooLong"),
    ("dir/with space/f", "FileSizeTooLarge"),
    ("file,name.txt", "S3Error"),
    ('file"name.txt', "ResourceBusy"),
    ("caf\u00e9/\u00fcber", "InternalError"),
    ("a\nb", "S3Error"),
])
def test_failure_line_round_trips(path, error_code):
    line = failure_line(row(path, error_code=error_code))
    assert line.endswith("\n") and not line.endswith("\r\n")
    if "\r" not in path:
        assert "\r" not in line
    rows = _read_csv(line)
    assert rows == [[path, "failed", error_code]]  # exactly 3 columns: FilePath,FileStatus,ErrorCode


@pytest.mark.parametrize("path", ["@filename.txt", "+filename.txt", "-x", "=x"])
def test_failure_line_formula_guard_survives_parsing(path):
    # after RFC-4180 parsing the value is still wrapped in one pair of quotes, so a
    # spreadsheet shows it as text instead of evaluating it
    rows = _read_csv(failure_line(row(path)))
    assert rows == [['"' + path + '"', "failed", "S3AccessDenied"]]


def test_failure_line_undecodable_path_is_escaped():
    line = failure_line(row("bad\udcffname", error_code="PathNotUtf8"))
    assert line == "bad\\xffname,failed,PathNotUtf8\n"
    line.encode("utf-8")  # always writable as UTF-8


def test_report_line_columns_round_trip():
    r = ReportRow("d/file,1", "file", 123, RowStatus.SUCCEEDED, "", bytes=123, parts=2, checksum="crc32:deadbeef",
                  retries=1, rank=3, osts="0;1", seconds=1.5, message='said "hi"', end=1000.25)
    line = report_line(r)
    assert line.endswith("\n")
    [fields] = _read_csv(line)
    assert len(fields) == len(COLUMNS) == 15
    assert dict(zip(COLUMNS, fields, strict=True)) == {
        "path": "d/file,1", "type": "file", "size": "123", "status": "succeeded", "error_code": "",
        "bytes": "123", "parts": "2", "checksum": "crc32:deadbeef", "retries": "1", "rank": "3",
        "osts": "0;1", "seconds": "1.500000", "start": "998.750000", "end": "1000.250000",
        "message": 'said "hi"'}


# ---- ReportWriter / write_h5 -----------------------------------------------------------------

ROWS = [
    ReportRow("a", "directory", 0, RowStatus.SUCCEEDED, rank=0, seconds=0.01),
    ReportRow("a/f1", "file", 100, RowStatus.SUCCEEDED, bytes=100, parts=1, checksum="crc32:00000001", rank=1),
    ReportRow("@bad", "file", 5, RowStatus.FAILED, "S3AccessDenied", rank=1, message="denied"),
    ReportRow("a/link", "symlink", 4, RowStatus.SUCCEEDED_WITH_WARNING, rank=0, message="warn"),
    ReportRow("a/fifo", "special", 0, RowStatus.SKIPPED, rank=0, message="special file"),
    ReportRow("a/big", "file", 1 << 33, RowStatus.FAILED, "FileSizeTooLarge", rank=2, osts="1;2"),
    ReportRow("a/b\udcffd", "file", 1, RowStatus.FAILED, "PathNotUtf8", rank=0),
]


def test_report_writer(tmp_path):
    h5py = pytest.importorskip("h5py")
    d = tmp_path / "task-0123456789abcdef0"
    w = ReportWriter(str(d), 0)
    w.add(ROWS[:3])
    w.add([])
    w.add(ROWS[3:])
    assert w.rows == len(ROWS)
    w.finish()
    paths = combine(str(d), 1, {"TaskId": "task-0123456789abcdef0", "Lifecycle": "FAILED", "FailedCount": 3})
    assert paths == {FAILURES: str(d / FAILURES), REPORT_CSV: str(d / REPORT_CSV), REPORT_H5: str(d / REPORT_H5)}
    assert sorted(os.listdir(d)) == sorted([FAILURES, REPORT_CSV, REPORT_H5, SHARDS]), "no spill or temporary left"
    assert sorted(os.listdir(d / SHARDS)) == ["rank-00000.csv", "rank-00000.failures.csv", "rank-00000.h5"]

    # failures.csv: failed rows only, no header, LF line ends (R-4, R-5, SPEC §5)
    raw = (d / FAILURES).read_bytes()
    assert b"\r" not in raw
    text = raw.decode("utf-8")
    assert text == ('"""@bad""",failed,S3AccessDenied\n'
                    "a/big,failed,FileSizeTooLarge\n"
                    "a/b\\xffd,failed,PathNotUtf8\n")

    # report.csv: a header, then every row
    rows = _read_csv((d / REPORT_CSV).read_text(encoding="utf-8"))
    assert rows[0] == list(COLUMNS)
    assert len(rows) == 1 + len(ROWS)
    assert [r[3] for r in rows[1:]] == [r.status.value for r in ROWS]

    # report.h5: one row per entry, task fields as attributes, readable with plain h5py
    with h5py.File(d / REPORT_H5, "r") as f:
        g = f["entries"]
        assert set(g.keys()) == set(COLUMNS)
        assert all(g[c].shape == (len(ROWS),) for c in COLUMNS)
        assert list(g["path"].asstr()[:]) == ["a", "a/f1", "@bad", "a/link", "a/fifo", "a/big", "a/b\\xffd"]
        assert list(g["status"].asstr()[:]) == [r.status.value for r in ROWS]
        assert list(g["error_code"].asstr()[:]) == [r.error_code for r in ROWS]
        assert list(g["size"][:]) == [r.size for r in ROWS]
        assert list(g["rank"][:]) == [r.rank for r in ROWS]
        assert g["seconds"][0] == pytest.approx(0.01)
        assert list(g["osts"].asstr()[:])[5] == "1;2"
        assert f.attrs["TaskId"] == "task-0123456789abcdef0"
        assert f.attrs["Lifecycle"] == "FAILED"
        assert int(f.attrs["FailedCount"]) == 3
        assert int(f.attrs["entries"]) == len(ROWS)


def test_report_writer_empty(tmp_path):
    h5py = pytest.importorskip("h5py")
    ReportWriter(str(tmp_path / "r"), 0).finish()
    combine(str(tmp_path / "r"), 1, {"TaskId": "task-00000000000000000"})
    # SPEC §5: failures.csv is written also when nothing failed
    assert (tmp_path / "r" / FAILURES).read_text() == ""
    assert _read_csv((tmp_path / "r" / REPORT_CSV).read_text()) == [list(COLUMNS)]
    with h5py.File(tmp_path / "r" / REPORT_H5, "r") as f:
        assert f["entries"]["path"].shape == (0,)
        assert int(f.attrs["entries"]) == 0


def test_shards_of_every_rank_read_as_one_report(tmp_path):
    """Each rank writes its own rows; the report is one table (a virtual dataset over the
    shards), failures.csv and report.csv their concatenation in rank order."""
    h5py = pytest.importorskip("h5py")
    d = tmp_path / "task"
    for rank, rows in enumerate((ROWS[:2], [], ROWS[2:])):
        w = ReportWriter(str(d), rank)
        w.add([ReportRow(r.path, r.kind, r.size, r.status, r.error_code, rank=rank, seconds=r.seconds)
               for r in rows])
        w.finish()
    paths = combine(str(d), 3, {"Lifecycle": "FAILED"})
    assert (d / FAILURES).read_text() == ('"""@bad""",failed,S3AccessDenied\n'
                                          "a/big,failed,FileSizeTooLarge\n"
                                          "a/b\\xffd,failed,PathNotUtf8\n")
    csv_rows = _read_csv((d / REPORT_CSV).read_text(encoding="utf-8"))
    assert csv_rows[0] == list(COLUMNS) and [r[0] for r in csv_rows[1:]] == [
        "a", "a/f1", '"@bad"', "a/link", "a/fifo", "a/big", "a/b\\xffd"]  # the formula guard
    moved = tmp_path / "copied"  # the report directory moves whole: the table's parts go with it
    os.rename(d, moved)
    with h5py.File(moved / REPORT_H5, "r") as f:
        e = f["entries"]
        assert e["path"].is_virtual and int(f.attrs["entries"]) == len(ROWS) and int(f.attrs["shards"]) == 3
        assert list(e["path"].asstr()[:]) == ["a", "a/f1", "@bad", "a/link", "a/fifo", "a/big", "a/b\\xffd"]
        assert list(e["rank"][:]) == [0, 0, 2, 2, 2, 2, 2]
        assert all(e["end"][:] >= e["start"][:]) and e["end"][0] > 1.6e9  # stamped when the shard took them
    assert set(paths) == {FAILURES, REPORT_CSV, REPORT_H5}


@pytest.mark.parametrize("reopen", [10**9, 2000])
def test_write_h5_many_chunks(tmp_path, monkeypatch, reopen):
    """Also when the file is closed and opened again between chunks (which bounds the
    memory HDF5 keeps for the text columns of a large shard)."""
    import pfsxport.report

    h5py = pytest.importorskip("h5py")
    monkeypatch.setattr(pfsxport.report, "_REOPEN", reopen)
    rows = [ReportRow(f"f{i}", "file", i, RowStatus.SUCCEEDED, bytes=i) for i in range(10_000)]
    chunks = [rows[i:i + 3000] for i in range(0, len(rows), 3000)]
    out = tmp_path / "x.h5"
    write_h5(str(out), iter(chunks), {"k": "v"})
    assert not (tmp_path / "x.h5.tmp").exists()
    with h5py.File(out, "r") as f:
        assert f["entries"]["size"].shape == (10_000,)
        assert list(f["entries"]["size"][:]) == list(range(10_000))
        assert f["entries"]["path"].asstr()[9999] == "f9999"
        assert list(f["entries"]["path"].asstr()[:]) == [f"f{i}" for i in range(10_000)]
        assert int(f.attrs["entries"]) == 10_000 and f.attrs["k"] == "v"


def test_report_writer_on_a_full_file_system_raises_and_leaves_no_spill(tmp_path):
    from pfsxport.errors import StateError

    d = tmp_path / "r"
    d.mkdir()
    (d / SHARDS).mkdir()
    os.symlink("/dev/full", d / SHARDS / "rank-00000.csv")  # every write answers ENOSPC
    w = ReportWriter(str(d), 0)
    with pytest.raises(StateError) as ei:
        for _ in range(2000):  # until the buffer goes to the file
            w.add(ROWS)
    assert "No space left on device" in str(ei.value)
    with pytest.raises(StateError):
        w.add(ROWS)
    with pytest.raises(StateError):
        w.finish()
    assert sorted(os.listdir(d / SHARDS)) == ["rank-00000.csv", "rank-00000.failures.csv"]  # no spill, no .tmp


@pytest.mark.parametrize("reopen", [10**9, 2000])
def test_a_text_table_reads_back_whole(tmp_path, monkeypatch, reopen):
    import pfsxport.report
    from pfsxport.report import read_columns, write_text_table_h5

    monkeypatch.setattr(pfsxport.report, "_REOPEN", reopen)
    rows = [[f"p{i}\n", "missing" if i % 2 else "extra"] for i in range(9000)]
    out = str(tmp_path / "t.h5")
    write_text_table_h5(out, ("path", "difference"), iter([rows[i:i + 2500] for i in range(0, 9000, 2500)]), {})
    got = read_columns(out, ("path", "difference"))
    assert list(got["path"]) == [r[0] for r in rows] and list(got["difference"]) == [r[1] for r in rows]
    assert got["attrs"]["entries"] == 9000
