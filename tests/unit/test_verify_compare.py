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
