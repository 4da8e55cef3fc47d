"""FSx's import rules (FSX-FACTS I-1..I-5, §9): keys to paths, metadata headers to entries."""
from __future__ import annotations

import pytest

from pfsxport.errors import ErrorCode
from pfsxport.importrules import (
    DEFAULT_MODE,
    KeyPath,
    KeyRefused,
    key_path,
    owner_applies,
    parse_metadata,
    parse_mode,
    parse_time,
)
from pfsxport.model import EntryKind

NOT_POSIX = ErrorCode.S3_OBJECT_PATH_NOT_POSIX_COMPLIANT


@pytest.mark.parametrize("key, path, directory", [
    ("a", "a", False),
    ("a/b/c.txt", "a/b/c.txt", False),
    ("dir/", "dir", True),
    ("dir/sub/", "dir/sub", True),
    ("file..txt", "file..txt", False),
    ("..hidden", "..hidden", False),
    ("a/...", "a/...", False),
    (".profile", ".profile", False),
    ("", "", True),
    ("with space/é,\"q\"\n", "with space/é,\"q\"\n", False),
])
def test_keys_that_become_paths(key, path, directory):
    assert key_path(key) == KeyPath(path, directory)


@pytest.mark.parametrize("key", [
    ".", "..", "./", "../", "test/.", "test/..", "test/./", "a/./b", "a/../b", "a//b", "a//", "//",
    "./x", "../escape", "a/../../b", "/abs", "/", "/a/", "a/b/../../../c", "data//../secret", "a\x00b",
])
def test_keys_refused_as_not_posix_compliant(key):
    with pytest.raises(KeyRefused) as e:
        key_path(key)
    assert e.value.code is NOT_POSIX


@pytest.mark.parametrize("key", ["../escape", "a/../../b", "/abs", "data//../../x"])
def test_keys_that_would_leave_the_target_say_so(key):
    with pytest.raises(KeyRefused) as e:
        key_path(key)
    assert "outside the target" in str(e.value)


@pytest.mark.parametrize("text, mode", [
    ("0100644", 0o100644), ("100755", 0o100755), ("040755", 0o40755), ("0040755", 0o40755),
    ("0755", 0o755), ("755", 0o755), ("0120777", 0o120777), (" 0100600 ", 0o100600),
])
def test_mode_is_octal_whatever_its_padding(text, mode):
    assert parse_mode(text) == mode


@pytest.mark.parametrize("text", ["", "rwxr-xr-x", "0x1ed", "0100648", "-755", "7777777"])
def test_mode_that_is_not_octal(text):
    assert parse_mode(text) is None


@pytest.mark.parametrize("text, ns", [
    ("1595002920000000000ns", 1595002920000000000),
    ("1595002920123456789ns", 1595002920123456789),
    ("1595002920000", 1595002920000 * 1_000_000),
    ("1595002920123.5", 1595002920123500000),
    ("0", 0),
])
def test_times_in_ns_or_milliseconds(text, ns):
    assert parse_time(text) == ns


@pytest.mark.parametrize("text", ["", "ns", "12.5ns", "-5", "yesterday", "NaN", "inf"])
def test_times_that_are_not_times(text):
    assert parse_time(text) is None


FULL = {"file-permissions": "0100640", "file-owner": "1234", "file-group": "5678",
        "file-atime": "1595002920000000001ns", "file-mtime": "1595002920000000002ns", "user-agent": "aws-fsx-lustre"}


def test_full_metadata_of_a_file():
    m = parse_metadata(False, FULL)
    assert (m.kind, m.mode, m.uid, m.gid, m.atime_ns, m.mtime_ns) == \
        (EntryKind.FILE, 0o640, 1234, 5678, 1595002920000000001, 1595002920000000002)
    assert not m.defaults and not m.notes


def test_header_names_in_any_case():
    m = parse_metadata(False, {k.upper(): v for k, v in FULL.items()})
    assert (m.mode, m.uid) == (0o640, 1234)


def test_no_metadata_gets_the_fsx_defaults():
    for directory in (False, True):
        m = parse_metadata(directory, {})
        assert (m.mode, m.uid, m.gid, m.atime_ns, m.mtime_ns) == (DEFAULT_MODE, 0, 0, None, None) == \
            (0o755, 0, 0, None, None)
        assert m.defaults
        assert m.kind is (EntryKind.DIRECTORY if directory else EntryKind.FILE)


def test_user_agent_alone_is_no_metadata():
    assert parse_metadata(False, {"user-agent": "aws-fsx-lustre"}).defaults


def test_partial_metadata_defaults_the_rest():
    m = parse_metadata(False, {"file-mtime": "1000"})
    assert (m.mode, m.uid, m.gid, m.mtime_ns, m.atime_ns, m.defaults) == (0o755, 0, 0, 10 ** 9, None, False)


@pytest.mark.parametrize("mode, bits", [("0104755", 0o755), ("0102750", 0o750), ("0106711", 0o711),
                                        ("0041777", 0o1777), ("0042775", 0o775), ("6755", 0o755)])
def test_setuid_and_setgid_are_never_set(mode, bits):
    directory = mode.startswith("004")
    assert parse_metadata(directory, {"file-permissions": mode}).mode == bits


def test_a_directory_takes_its_type_from_the_trailing_slash():
    m = parse_metadata(True, {"file-permissions": "0100664"})  # AWS's walkthrough: drw-rw-r--
    assert (m.kind, m.mode) == (EntryKind.DIRECTORY, 0o664)
    assert parse_metadata(True, {"file-permissions": "0120777"}).kind is EntryKind.DIRECTORY


def test_a_symlink_by_its_type_bits():
    m = parse_metadata(False, {"file-permissions": "0120777"})
    assert (m.kind, m.mode) == (EntryKind.SYMLINK, 0o777)
    assert parse_metadata(False, {"file-permissions": "120777"}).kind is EntryKind.SYMLINK


def test_a_directory_type_on_a_key_without_slash_is_a_type_mismatch():
    with pytest.raises(KeyRefused) as e:
        parse_metadata(False, {"file-permissions": "0040755"})
    assert e.value.code is ErrorCode.S3_OBJECT_TYPE_MISMATCH


def test_other_type_bits_on_a_file_key_make_a_regular_file():
    assert parse_metadata(False, {"file-permissions": "0010644"}).kind is EntryKind.FILE  # a FIFO's
    assert parse_metadata(False, {"file-permissions": "644"}).kind is EntryKind.FILE


def test_headers_that_cannot_be_parsed_are_ignored_and_named():
    m = parse_metadata(False, {"file-permissions": "rw-r--r--", "file-owner": "alice", "file-group": "-1",
                               "file-mtime": "soon", "file-atime": "12ns"})
    assert (m.mode, m.uid, m.gid, m.mtime_ns, m.atime_ns) == (0o755, 0, 0, None, 12)
    assert len(m.notes) == 4 and not m.defaults


def test_owner_only_as_root():
    assert owner_applies(0)
    assert not owner_applies(1000)
