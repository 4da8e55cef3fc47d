"""pfsxport.metadata: S3 URLs, keys, the six FSx headers, Content-Type (SPEC §2, FSX-FACTS L-1..L-9, E-14)."""
from __future__ import annotations

import pytest

from pfsxport.errors import ConfigError, ErrorCode
from pfsxport.metadata import (
    DIRECTORY_CONTENT_TYPE,
    OBJECT_CONTENT_TYPE,
    USER_AGENT,
    S3Url,
    content_type,
    fsx_headers,
    key_error,
    object_key,
    parse_s3_url,
    permissions,
    printable,
)
from pfsxport.model import Entry, EntryKind


def entry(path="a/b", kind=EntryKind.FILE, mode=0o100644, uid=1000, gid=100, atime_ns=1, mtime_ns=2, size=0):
    return Entry(path, kind, size, mode, uid, gid, atime_ns, mtime_ns, 3)


# ---- file-permissions (SPEC §2: format(st_mode & ~0o6000, "07o")) -------------------------

@pytest.mark.parametrize("mode, expected", [
    (0o100644, "0100644"),  # regular file (FSx's documented example shape)
    (0o100664, "0100664"),  # UG example
    (0o100777, "0100777"),  # PC: chmod 777 on real FSx
    (0o040755, "0040755"),  # directory, zero-padded to 7 digits
    (0o120777, "0120777"),  # symlink
    (0o104755, "0100755"),  # setuid cleared (L-7)
    (0o102755, "0100755"),  # setgid on a file cleared
    (0o106755, "0100755"),  # both cleared
    # setgid directory: SPEC §2 fixes the formula `st_mode & ~0o6000`, so setgid is cleared on
    # directories too (the brief suggested "0042775"; SPEC wins, see the report).
    (0o042775, "0040775"),
    (0o041777, "0041777"),  # sticky directory: sticky kept
    (0o101644, "0101644"),  # sticky on a file: kept too
    (0o100000, "0100000"),  # no permission bits at all
])
def test_permissions(mode, expected):
    assert permissions(mode) == expected
    assert len(permissions(mode)) == 7


# ---- headers -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, mode, perm", [
    (EntryKind.FILE, 0o100644, "0100644"),
    (EntryKind.DIRECTORY, 0o040755, "0040755"),
    (EntryKind.SYMLINK, 0o120777, "0120777"),
    (EntryKind.FILE, 0o104755, "0100755"),
])
def test_fsx_headers_exactly_six(kind, mode, perm):
    e = entry(kind=kind, mode=mode, uid=6666, gid=42, atime_ns=1595002920000000000, mtime_ns=1595002920123456789)
    h = fsx_headers(e)
    assert h == {
        "file-permissions": perm,
        "file-owner": "6666",
        "file-group": "42",
        "file-atime": "1595002920000000000ns",
        "file-mtime": "1595002920123456789ns",
        "user-agent": "aws-fsx-lustre",
    }
    assert len(h) == 6
    # L-8: no ctime, size or checksum header; every value is a str (S3 metadata)
    assert not any("ctime" in k or "size" in k for k in h)
    assert all(isinstance(v, str) for v in h.values())


@pytest.mark.parametrize("ns, text", [
    (0, "0ns"),
    (1, "1ns"),
    (1595002920000000000, "1595002920000000000ns"),
    (1700000000123456789, "1700000000123456789ns"),
])
def test_times_are_nanoseconds_with_suffix(ns, text):
    h = fsx_headers(entry(atime_ns=ns, mtime_ns=ns))
    assert h["file-atime"] == text
    assert h["file-mtime"] == text


@pytest.mark.parametrize("uid, gid", [(0, 0), (1000, 1000), (4294967294, 65534)])
def test_owner_group_decimal(uid, gid):
    h = fsx_headers(entry(uid=uid, gid=gid))
    assert h["file-owner"] == str(uid)
    assert h["file-group"] == str(gid)


def test_user_agent_constant():
    assert USER_AGENT == "aws-fsx-lustre"


@pytest.mark.parametrize("kind, expected", [
    (EntryKind.DIRECTORY, "application/x-directory"),
    (EntryKind.FILE, "application/octet-stream"),
    (EntryKind.SYMLINK, "application/octet-stream"),
])
def test_content_type(kind, expected):
    assert content_type(kind) == expected
    assert expected in (DIRECTORY_CONTENT_TYPE, OBJECT_CONTENT_TYPE)


# ---- keys ------------------------------------------------------------------------------------

@pytest.mark.parametrize("prefix, path, kind, expected", [
    ("", "a", EntryKind.FILE, "a"),
    ("", "a/b", EntryKind.DIRECTORY, "a/b/"),
    ("data/", "a/b", EntryKind.FILE, "data/a/b"),
    ("data/", "a/b", EntryKind.DIRECTORY, "data/a/b/"),
    ("data/", "link", EntryKind.SYMLINK, "data/link"),
    ("x/y/", "dir", EntryKind.DIRECTORY, "x/y/dir/"),
])
def test_object_key(prefix, path, kind, expected):
    assert object_key(S3Url("bucket", prefix), entry(path=path, kind=kind)) == expected


def test_object_key_from_parsed_url():
    repo = parse_s3_url("s3://bucket/prefix")  # L-1: FSx appends the '/'
    assert object_key(repo, entry(path="d/f")) == "prefix/d/f"
    assert object_key(repo, entry(path="d", kind=EntryKind.DIRECTORY, mode=0o40755)) == "prefix/d/"


@pytest.mark.parametrize("key, expected", [
    ("a" * 1024, None),                      # exactly 1024 bytes: allowed
    ("a" * 1025, ErrorCode.PATH_SIZE_TOO_LONG),
    ("a" * 5000, ErrorCode.PATH_SIZE_TOO_LONG),
    ("é" * 512, None),                       # 512 chars, 1024 bytes
    ("é" * 513, ErrorCode.PATH_SIZE_TOO_LONG),  # 513 chars, 1026 bytes: bytes count, not chars
    ("€" * 341 + "a", None),                 # 3 * 341 + 1 = 1024 bytes
    ("€" * 342, ErrorCode.PATH_SIZE_TOO_LONG),  # 342 chars, 1026 bytes
    ("😀" * 256, None),                      # 4-byte chars: 1024 bytes
    ("😀" * 256 + "a", ErrorCode.PATH_SIZE_TOO_LONG),
    ("x" * 1023 + "/", None),
    ("", None),
    ("ok/name", None),
    ("bad\udcffname", ErrorCode.PATH_NOT_UTF8),  # os.fsdecode of b"\xff"
    ("\udc80", ErrorCode.PATH_NOT_UTF8),
    ("\ud800", ErrorCode.PATH_NOT_UTF8),         # lone high surrogate
])
def test_key_error(key, expected):
    assert key_error(key) == expected


@pytest.mark.parametrize("path, expected", [
    ("plain/path", "plain/path"),
    ("caf\u00e9", "caf\u00e9"),
    ("bad\udcffname", "bad\\xffname"),
])
def test_printable(path, expected):
    assert printable(path) == expected


# ---- S3 URLs ---------------------------------------------------------------------------------

@pytest.mark.parametrize("url, bucket, prefix", [
    ("s3://bucket", "bucket", ""),
    ("s3://bucket/", "bucket", ""),
    ("s3://bucket/prefix", "bucket", "prefix/"),  # L-1: trailing "/" added
    ("s3://bucket/prefix/", "bucket", "prefix/"),
    ("s3://bucket/a/b/c", "bucket", "a/b/c/"),
    ("s3://my.bucket-01/x", "my.bucket-01", "x/"),
    ("s3://abc/x", "abc", "x/"),  # 3 characters: shortest legal
    ("s3://" + "a" * 63 + "/x", "a" * 63, "x/"),  # 63: longest legal
])
def test_parse_s3_url_directory(url, bucket, prefix):
    u = parse_s3_url(url)
    assert (u.bucket, u.prefix) == (bucket, prefix)
    assert u.prefix == "" or u.prefix.endswith("/")
    assert str(u) == f"s3://{bucket}/{prefix}"
    assert u.key("f") == prefix + "f"


@pytest.mark.parametrize("url, bucket, prefix", [
    ("s3://bucket/reports/", "bucket", "reports"),
    ("s3://bucket/reports", "bucket", "reports"),
    ("s3://bucket/a/reports/", "bucket", "a/reports"),
    ("s3://bucket", "bucket", ""),
    ("s3://bucket/", "bucket", ""),
])
def test_parse_s3_url_report_path(url, bucket, prefix):
    u = parse_s3_url(url, what="report_path", directory=False)
    assert (u.bucket, u.prefix) == (bucket, prefix)
    assert not u.prefix.endswith("/")




@pytest.mark.parametrize("url", [
    "bucket/prefix",            # no scheme
    "http://bucket/prefix",     # not s3
    "https://bucket.s3.amazonaws.com/x",
    "S3://bucket/x",            # scheme is lowercase
    "s3:/bucket/x",
    "s3://",                    # no bucket
    "s3:///prefix",             # empty bucket
    "s3://ab/x",                # too short
    "s3://" + "a" * 64 + "/x",  # too long
    "s3://Bucket/x",            # upper case
    "s3://bucket_name/x",       # underscore
    "s3://bu cket/x",           # space
    "s3://bucket/a//b",         # empty path segment
    None,
    123,
    pytest.param("s3://-bucket/x"),
    pytest.param("s3://bucket-/x"),
    pytest.param("s3://.bucket/x"),
    pytest.param("s3://my..bucket/x"),
    pytest.param("s3://b\u00fccket/x"),
    pytest.param("s3://192.168.5.4/x"),
])
def test_parse_s3_url_rejects(url):
    with pytest.raises(ConfigError) as ei:
        parse_s3_url(url, what="repository")
    assert "repository" in str(ei.value)
