"""restore.Importer against an in-memory store: objects that change while they come down, torn
downloads, symlinks already in the target, --no-overwrite and --metadata-only."""
from __future__ import annotations

import os
import stat
import threading

from pfsxport.errors import StoreError
from pfsxport.metadata import S3Url
from pfsxport.model import RowStatus
from pfsxport.restore import TMP_PREFIX, FetchOptions, Importer
from pfsxport.store import Fetched, Listed

MODE = {"file-permissions": "0100640", "file-mtime": "1600000000123456789ns", "file-atime": "1600000000000000000ns"}


class FakeStore:
    """Objects as {key: (body, metadata, etag)}; `on_first` runs after each GET from offset 0."""

    def __init__(self):
        self.objects: dict[str, tuple[bytes, dict, str]] = {}
        self.on_first = None
        self.fail_range = False
        self.lock = threading.Lock()

    def put(self, key: str, body: bytes, meta: dict | None = None, etag: str = '"1"') -> Listed:
        self.objects[key] = (body, dict(meta or {}), etag)
        return Listed(key, len(body), etag, 1_500_000_000 * 10 ** 9)

    def get_object(self, key, sink, start=0, end=None, if_match="", chunk=1 << 20):
        with self.lock:
            body, meta, etag = self.objects[key]
        if if_match and if_match != etag:
            raise StoreError("get_object: 412 PreconditionFailed", s3_code="PreconditionFailed", status=412)
        if start and self.fail_range:
            sink(start, body[start:start + 3])
            raise StoreError("get_object: connection reset", status=0)
        stop = len(body) if end is None else min(end + 1, len(body))
        for at in range(start, stop, chunk):
            sink(at, body[at:min(at + chunk, stop)])
        if start == 0 and self.on_first is not None:
            self.on_first()
        return Fetched(etag, len(body), stop - start, meta, 1_500_000_000 * 10 ** 9)

    def head_object(self, key):
        body, meta, etag = self.objects[key]
        return {"ContentLength": len(body), "ETag": etag, "Metadata": meta}

    def take_retries(self) -> int:
        return 0


def _importer(root, store, **opts):
    rows = []
    opts = {"concurrency": 4, "ranges_in_flight": 2, "range_size": 16, **opts}
    imp = Importer(str(root), S3Url("b", ""), store, FetchOptions(**opts), 0, rows.extend)
    return imp, rows


def _run(imp, *listed):
    for obj in listed:
        imp.take(obj)
    imp.finish()
    imp.close()


def test_a_large_object_in_ranges_with_its_metadata(tmp_path):
    store = FakeStore()
    body = bytes(range(256)) * 3
    imp, rows = _importer(tmp_path, store)
    _run(imp, store.put("d/big", body, MODE))
    st = os.lstat(tmp_path / "d" / "big")
    assert (tmp_path / "d" / "big").read_bytes() == body
    assert (stat.S_IMODE(st.st_mode), st.st_mtime_ns, st.st_atime_ns) == (0o640, 1600000000123456789,
                                                                          1600000000000000000)
    assert [(r.path, r.status, r.bytes) for r in rows] == [("d/big", RowStatus.SUCCEEDED, len(body))]


def test_zero_ranges_stay_holes(tmp_path):
    store = FakeStore()
    body = b"x" * 16 + bytes(4 << 20) + b"y"
    imp, _ = _importer(tmp_path, store, range_size=1 << 20)
    _run(imp, store.put("sparse", body))
    assert (tmp_path / "sparse").read_bytes() == body
    assert os.lstat(tmp_path / "sparse").st_blocks * 512 <= 2 << 20  # the chunks with data only


def test_an_object_that_changes_once_is_fetched_again(tmp_path):
    store = FakeStore()
    listed = store.put("f", b"a" * 40, etag='"1"')
    changes = iter(['"2"'])

    def change():
        nxt = next(changes, None)
        if nxt:
            store.objects["f"] = (b"b" * 40, {}, nxt)
    store.on_first = change
    imp, rows = _importer(tmp_path, store)
    _run(imp, listed)
    assert (tmp_path / "f").read_bytes() == b"b" * 40
    assert rows[0].status is RowStatus.SUCCEEDED and rows[0].retries == 1


def test_an_object_that_keeps_changing_fails_and_leaves_nothing(tmp_path):
    store = FakeStore()
    listed = store.put("f", b"a" * 40)
    n = [0]

    def change():
        n[0] += 1
        store.objects["f"] = (bytes([n[0]]) * 40, {}, f'"{n[0] + 1}"')
    store.on_first = change
    imp, rows = _importer(tmp_path, store)
    _run(imp, listed)
    assert [(r.status, r.error_code) for r in rows] == [(RowStatus.FAILED, "S3ObjectChanged")]
    assert os.listdir(tmp_path) == []


def test_a_torn_download_never_appears_under_its_name(tmp_path):
    store = FakeStore()
    (tmp_path / "f").write_bytes(b"the previous version")
    store.fail_range = True
    imp, rows = _importer(tmp_path, store)
    _run(imp, store.put("f", b"z" * 40))
    assert rows[0].status is RowStatus.FAILED and rows[0].error_code == "S3Error"
    assert (tmp_path / "f").read_bytes() == b"the previous version"
    assert os.listdir(tmp_path) == ["f"]


def test_a_symlink_in_the_target_is_never_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(str(outside), root / "link")
    os.symlink(str(outside), root / "dirlink")
    store = FakeStore()
    imp, rows = _importer(root, store)
    _run(imp, store.put("link/a/b", b"x"), store.put("dirlink/", b""), store.put("link", b"replaced"))
    got = sorted((r.path, r.status, r.error_code) for r in rows)
    assert got == [("dirlink", RowStatus.FAILED, "S3ObjectPathThroughSymlink"),
                   ("link", RowStatus.SUCCEEDED, ""),
                   ("link/a/b", RowStatus.FAILED, "S3ObjectPathThroughSymlink")] or \
        got == [("dirlink", RowStatus.FAILED, "S3ObjectPathThroughSymlink"),
                ("link", RowStatus.SUCCEEDED, ""),
                ("link/a/b", RowStatus.FAILED, "S3ObjectTypeMismatch")]  # `link` replaced by then
    assert os.listdir(outside) == []
    assert (root / "link").read_bytes() == b"replaced"  # the symlink itself replaced, not followed


def test_a_file_where_a_directory_is_is_a_type_mismatch(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_bytes(b"file")
    store = FakeStore()
    imp, rows = _importer(tmp_path, store)
    _run(imp, store.put("d", b"x"), store.put("f/", b""), store.put("g", b"x"), store.put("g/h", b"y"))
    codes = {r.path: r.error_code for r in rows if r.status is RowStatus.FAILED}
    assert codes["d"] == codes["f"] == "S3ObjectTypeMismatch"
    assert (tmp_path / "f").read_bytes() == b"file" and (tmp_path / "d").is_dir()


def test_no_overwrite_keeps_what_is_there(tmp_path):
    (tmp_path / "f").write_bytes(b"mine")
    store = FakeStore()
    imp, rows = _importer(tmp_path, store, no_overwrite=True)
    _run(imp, store.put("f", b"theirs"), store.put("new", b"new"))
    assert (tmp_path / "f").read_bytes() == b"mine" and (tmp_path / "new").read_bytes() == b"new"
    assert {r.path: r.status for r in rows} == {"f": RowStatus.SKIPPED, "new": RowStatus.SUCCEEDED}


def test_metadata_only_makes_empty_files_with_their_metadata(tmp_path):
    store = FakeStore()
    imp, rows = _importer(tmp_path, store, metadata_only=True)
    _run(imp, store.put("f", b"data" * 10, MODE), store.put("l", b"f", {"file-permissions": "0120777"}))
    st = os.lstat(tmp_path / "f")
    assert (st.st_size, stat.S_IMODE(st.st_mode), st.st_mtime_ns) == (0, 0o640, 1600000000123456789)
    assert os.readlink(tmp_path / "l") == "f"
    assert {r.path: (r.size, r.bytes) for r in rows} == {"f": (40, 0), "l": (1, 1)}


def test_directories_get_their_times_after_their_children(tmp_path):
    store = FakeStore()
    imp, _ = _importer(tmp_path, store)
    _run(imp, store.put("d/", b"", {"file-permissions": "0040500", "file-mtime": "1000ns"}),
         store.put("d/e/", b"", {"file-permissions": "0040700", "file-mtime": "2000ns"}),
         store.put("d/e/f", b"x"))
    d, e = os.lstat(tmp_path / "d"), os.lstat(tmp_path / "d" / "e")
    assert (stat.S_IMODE(d.st_mode), d.st_mtime_ns, stat.S_IMODE(e.st_mode), e.st_mtime_ns) == \
        (0o500, 1000, 0o700, 2000)
    assert not any(n.startswith(TMP_PREFIX) for n in os.listdir(tmp_path / "d" / "e"))


def test_sweep_removes_what_a_killed_job_left(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / f"{TMP_PREFIX}0-7-deadbeef").write_bytes(b"half")
    (tmp_path / f"{TMP_PREFIX}1-3-cafecafe").write_bytes(b"half")
    store = FakeStore()
    imp, _ = _importer(tmp_path, store)
    imp.take(store.put("d/f", b"x"))
    imp.finish()
    assert imp.touched == {"d"}
    assert imp.target.sweep(imp.touched) == 1 and imp.target.sweep([""]) == 1
    imp.close()
    assert sorted(os.listdir(tmp_path)) == ["d"] and os.listdir(tmp_path / "d") == ["f"]


def test_the_state_directory_is_never_written(tmp_path):
    (tmp_path / "state").mkdir()
    store = FakeStore()
    rows = []
    imp = Importer(str(tmp_path), S3Url("b", ""), store, FetchOptions(concurrency=2), 0, rows.extend,
                   skip=frozenset({"state"}))
    _run(imp, store.put("state/tasks/x.json", b"forged"), store.put("statefile", b"ok"))
    assert os.listdir(tmp_path / "state") == [] and (tmp_path / "statefile").read_bytes() == b"ok"
    assert {r.path: r.status for r in rows} == {"state/tasks/x.json": RowStatus.SKIPPED,
                                                "statefile": RowStatus.SUCCEEDED}


def test_a_report_that_cannot_be_written_stops_the_rank(tmp_path):
    from pfsxport.errors import StateError

    def rows(batch):
        raise StateError("StateDirectoryUnusable", "No space left on device: cannot write shard")
    store = FakeStore()
    imp = Importer(str(tmp_path), S3Url("b", ""), store, FetchOptions(concurrency=1), 0, rows)
    imp.take(store.put("a", b"1"))
    imp.drain()
    imp.take(store.put("b", b"2"))
    imp.finish()
    imp.close()
    assert imp.fault is not None and imp.fault.name == "StateDirectoryUnusable" and imp.canceled
    assert sorted(os.listdir(tmp_path)) == ["a"]


def test_stripe_options():
    from pfsxport.restore.write import GiB, stripe_options

    assert stripe_options(GiB - 1, "auto", 64 << 20) is None
    assert stripe_options(GiB, "auto", 64 << 20) == ["-c", "1"]
    assert stripe_options(5 * GiB + 1, "auto", 64 << 20) == ["-c", "6"]
    assert stripe_options(1000 * GiB, "auto", 64 << 20) == ["-c", "32"]
    assert stripe_options(10 * GiB, "off", 0) is None
    assert stripe_options(100, "-c 4 -S 4M", 64) == ["-c", "4", "-S", "4M"]
    assert stripe_options(63, "-c 4 -S 4M", 64) is None


def test_the_target_itself_may_be_a_symlink(tmp_path):
    (tmp_path / "real").mkdir()
    os.symlink("real", tmp_path / "scratch")
    store = FakeStore()
    imp, rows = _importer(tmp_path / "scratch", store)
    _run(imp, store.put("f", b"x"))
    assert (tmp_path / "real" / "f").read_bytes() == b"x" and rows[0].status is RowStatus.SUCCEEDED
