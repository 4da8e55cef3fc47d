"""verify's pure pieces: reading the FSx headers, the metadata comparison, stored CRC32s
and S3's composite CRC32, and the split of directories over ranks."""
from __future__ import annotations

import base64
import zlib

from pfsxport.checksum import combine_all
from pfsxport.metadata import read_posix_headers
from pfsxport.model import Entry, EntryKind
from pfsxport.verify import Difference, Row, composite, crc_of_b64, metadata_reasons, owner


def _entry(mode=0o100644, uid=1000, gid=100, mtime_ns=1_700_000_000_123_456_789) -> Entry:
    return Entry("a/b", EntryKind.of_mode(mode), 3, mode, uid, gid, 0, mtime_ns, 0)


def _headers(e: Entry, **over) -> dict[str, str]:
    h = {"file-permissions": format(e.mode & ~0o6000, "07o"), "file-owner": str(e.uid), "file-group": str(e.gid),
         "file-atime": "1ns", "file-mtime": f"{e.mtime_ns}ns", "user-agent": "aws-fsx-lustre"}
    h.update(over)
    return h


def test_headers_are_read_as_fsx_reads_them():
    h = read_posix_headers({"file-permissions": "100755", "file-owner": "7", "file-mtime": "1700000000123"})
    assert (h.mode, h.uid, h.gid, h.mtime_ns, h.mtime_unit) == (0o100755, 7, None, 1_700_000_000_123_000_000,
                                                                1_000_000)
    assert read_posix_headers({"file-mtime": "12ns"}).mtime_ns == 12
    assert read_posix_headers({"file-mtime": "soon"}).mtime_ns is None
    assert read_posix_headers({"user-agent": "aws-fsx-lustre"}) is None
    assert read_posix_headers({}) is None


def test_metadata_matches_and_each_difference_is_named():
    e = _entry()
    assert metadata_reasons(e, _headers(e)) == []
    setuid = _entry(mode=0o104755)  # setuid is never exported: not a difference
    assert metadata_reasons(setuid, _headers(setuid)) == []
    assert metadata_reasons(e, {}) is None
    ms = _headers(e, **{"file-mtime": str(e.mtime_ns // 1_000_000)})  # another tool's milliseconds
    assert metadata_reasons(e, ms) == []
    got = metadata_reasons(e, _headers(e, **{"file-permissions": "0100600", "file-owner": "0", "file-group": "x",
                                             "file-mtime": "5ns"}))
    assert [g.split(":")[0] for g in got] == ["file-permissions", "file-owner", "file-group", "file-mtime"]
    assert "tree 0100644, bucket 0100600" in got[0]


def test_stored_crc32_and_composite():
    data = [b"a" * (5 << 20), b"b" * 100]
    crcs = [(zlib.crc32(d), len(d)) for d in data]
    assert combine_all(crcs) == zlib.crc32(b"".join(data))
    assert base64.b64encode(composite(crcs).to_bytes(4, "big")).decode() == "pKNgKw=="  # as SeaweedFS and moto say
    assert crc_of_b64("pKNgKw==-2") == (composite(crcs), 2)
    assert crc_of_b64("DUoRhQ==") == (zlib.crc32(b"hello world"), 0)
    assert crc_of_b64("not base64!") is None and crc_of_b64("AAAA") is None


def test_owner_is_the_same_everywhere_and_spreads():
    dirs = [f"d{i}" for i in range(200)]
    assert [owner(d, 4) for d in dirs] == [owner(d, 4) for d in dirs]
    assert {owner(d, 4) for d in dirs} == {0, 1, 2, 3}
    assert owner("x\udcff", 3) in (0, 1, 2)  # an undecodable name has an owner too


def test_row_line_quotes_names():
    line = Row("a,b\nc", "file", Difference.MISSING, "in the tree, not in the bucket", "p/a,b\nc").line()
    assert line == '"a,b\nc",file,missing,"in the tree, not in the bucket","p/a,b\nc"\n'
    assert Difference.SKIPPED.differs is False and Difference.EXTRA.differs


class _FakeStore:
    """One object, as a store would describe it (unit test only: the e2e tests use real servers)."""

    def __init__(self, body: bytes, part: int, etag: str, crc: str = "", kind: str = ""):
        self.body, self.part, self.etag, self.crc, self.kind = body, part, etag, crc, kind

    def head_checked(self, key, part=None):
        from pfsxport.store import ObjectHead

        size = min(self.part, len(self.body)) if part else len(self.body)
        return ObjectHead(size, self.etag, self.crc, self.kind, {}, "")

    def get_range(self, key, offset, length):
        return self.body[offset:offset + length]


def _check(tmp_path, store, local: bytes) -> tuple[list[str], int]:
    import os

    from pfsxport.verify import Content, Sink

    (tmp_path / "f").write_bytes(local)
    sink = Sink(str(tmp_path / "shard.csv"))
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        e = Entry.from_stat("f", os.fstat(fd))
        return Content(store, sink, False).reasons(fd, e, "p/f", store.head_checked("p/f")), sink.counts.size_only
    finally:
        os.close(fd)
        sink.close()


def test_digests_by_md5_etags_single_and_multipart(tmp_path):
    import hashlib

    body = bytes(range(256)) * 100
    parts = [body[i:i + 10000] for i in range(0, len(body), 10000)]
    multipart = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + f"-{len(parts)}"
    assert _check(tmp_path, _FakeStore(body, 10000, f'"{multipart}"'), body) == ([], 0)
    assert _check(tmp_path, _FakeStore(body, len(body), f'"{hashlib.md5(body).hexdigest()}"'), body) == ([], 0)
    changed = body[:5] + b"X" + body[6:]
    got, _ = _check(tmp_path, _FakeStore(body, 10000, f'"{multipart}"'), changed)
    assert got and got[0].startswith("MD5 (ETag)")


def test_digests_by_composite_or_full_crc_and_size_only(tmp_path):
    body = b"z" * 25000
    parts = [body[i:i + 10000] for i in range(0, len(body), 10000)]
    crcs = [(zlib.crc32(p), len(p)) for p in parts]
    b64 = lambda n: base64.b64encode(n.to_bytes(4, "big")).decode()  # noqa: E731
    comp = _FakeStore(body, 10000, '"x-3"', b64(composite(crcs)) + "-3", "COMPOSITE")
    full = _FakeStore(body, 10000, '"x-3"', b64(zlib.crc32(body)), "FULL_OBJECT")
    assert _check(tmp_path, comp, body) == ([], 0)
    assert _check(tmp_path, full, body) == ([], 0)
    got, _ = _check(tmp_path, comp, b"y" + body[1:])
    assert got and got[0].startswith("CRC32: tree crc32:") and got[0].endswith("-3")
    assert _check(tmp_path, _FakeStore(body, len(body), '"opaque-kms-etag"'), b"y" + body[1:]) == ([], 1)
