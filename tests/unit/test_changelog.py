"""pfsxport.changelog: `lfs changelog` lines (`INDEX TYPE TIMESTAMP DATESTAMP FLAGS t=[FID] p=[FID] NAME`,
with `s=`/`sp=` for renames, as Lustre 2.x prints them), their
coalescing into path changes, and ChangelogSource run against the stand-in `lfs`
(tests/standin/lfs) put first on PATH."""
from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass

import pytest

from pfsxport.changelog import (
    TYPE_NAMES,
    Change,
    ChangeKind,
    ChangelogError,
    ChangelogRecord,
    ChangelogSource,
    parse_line,
)

STANDIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "standin")
MOUNT = "/mnt/testfs"
MDT = "testfs-MDT0000"
USER = "cl1"
K = ChangeKind

ROOT = "0x200000007:0x1:0x0"
D = "0x200000401:0x2:0x0"  # a directory
E = "0x200000401:0x5:0x0"  # another directory
F = "0x200000401:0x3:0x0"  # a file
G = "0x200000401:0x4:0x0"  # a file gone by the time of the poll
X = "0x200000401:0x6:0x0"
Y = "0x200000401:0x7:0x0"
ZERO = "0:0x0:0x0"

# ---- parse_line -------------------------------------------------------------------------

# LUSTRE.md "Sample lines", verbatim.
SAMPLES = b"""\
16 01CREAT 10:28:46.968438800 2018.03.09 0x0 t=[0x200000401:0x10:0x0] j=touch.501 ef=0xf u=501:501 nid=0@lo p=[0x200000007:0x1:0x0] blob
9 02MKDIR 02:52:19.794688065 2026.03.16 0x0 t=[0x200000401:0x2:0x0] ef=0xf u=1000:1000 nid=172.31.39.56@tcp p=[0x200000007:0x1:0x0] test_plan_explore
3 10OPEN  02:52:19.797000000 2026.03.16 0x24a t=[0x200000401:0x3:0x0] ef=0xf u=1000:1000 nid=172.31.39.56@tcp m=-w- p=[0x200000401:0x2:0x0]
4 11CLOSE 02:52:19.798000000 2026.03.16 0x242 t=[0x200000401:0x3:0x0] ef=0xf u=1000:1000 nid=172.31.39.56@tcp
16 08RENME 02:52:19.805772855 2026.03.16 0x0 t=[0:0x0:0x0] ef=0xf u=1000:1000 nid=172.31.39.56@tcp p=[0x200000401:0x2:0x0] file1_renamed.txt s=[0x200000401:0x3:0x0] sp=[0x200000401:0x2:0x0] file1.txt
17 06UNLNK 02:52:19.807645282 2026.03.16 0x1 t=[0x200000401:0x4:0x0] ef=0xf u=1000:1000 nid=172.31.39.56@tcp p=[0x200000401:0x2:0x0] file2.txt
12958 12LYOUT 05:55:20.000000000 2026.10.09 0x0 t=[0x200000403:0x1929:0x0] ef=0xf u=0:0 nid=172.31.39.207@tcp
12959 13TRUNC 05:55:20.100000000 2026.10.09 0x0 t=[0x200000403:0x1929:0x0] ef=0xf u=0:0 nid=172.31.39.207@tcp
""".splitlines()

SAMPLE_RECORDS = [
    ChangelogRecord(16, "CREAT", 1, 0, "0x200000401:0x10:0x0", pfid=ROOT, name=b"blob", uid=501, gid=501,
                    jobid="touch.501"),
    ChangelogRecord(9, "MKDIR", 2, 0, D, pfid=ROOT, name=b"test_plan_explore", uid=1000, gid=1000),
    ChangelogRecord(3, "OPEN", 10, 0x24a, F, pfid=D, uid=1000, gid=1000),
    ChangelogRecord(4, "CLOSE", 11, 0x242, F, uid=1000, gid=1000),
    ChangelogRecord(16, "RENME", 8, 0, ZERO, pfid=D, name=b"file1_renamed.txt", sfid=F, spfid=D,
                    sname=b"file1.txt", uid=1000, gid=1000),
    ChangelogRecord(17, "UNLNK", 6, 1, G, pfid=D, name=b"file2.txt", uid=1000, gid=1000),
    ChangelogRecord(12958, "LYOUT", 12, 0, "0x200000403:0x1929:0x0", uid=0, gid=0),
    ChangelogRecord(12959, "TRUNC", 13, 0, "0x200000403:0x1929:0x0", uid=0, gid=0),
]


@pytest.mark.parametrize("line,expected", list(zip(SAMPLES, SAMPLE_RECORDS, strict=True)),
                         ids=[r.type for r in SAMPLE_RECORDS])
def test_parse_lustre_md_samples(line, expected):
    got = parse_line(line)
    assert got == expected
    assert parse_line(line + b"\n") == expected


def test_parse_informative_fields():
    create, _, open_, *_ = (parse_line(ln) for ln in SAMPLES)
    assert (create.extra_flags, create.nid, create.mode) == (0xF, "0@lo", None)
    assert (open_.nid, open_.mode) == ("172.31.39.56@tcp", "-w-")
    assert create.kind_name == "CREAT"


PARSE_CASES = [
    ("name with spaces, trailing space kept",
     (b"21 01CREAT 10:00:00.1 2026.03.16 0x0 t=[0x200000401:0x9:0x0] ef=0xf u=0:0 nid=0@lo p=[0x200000401:0x2:0x0]"
      b" my  file .txt "),
     {"type": "CREAT", "tfid": "0x200000401:0x9:0x0", "pfid": D, "name": b"my  file .txt ", "sfid": None}),
    ("rename, spaces in both names",
     (b"22 08RENME 10:00:00.1 2026.03.16 0x1 t=[0x200000401:0x8:0x0] ef=0xf u=0:0 nid=0@lo p=[0x200000401:0x2:0x0]"
      b" new name s=[0x200000401:0x3:0x0] sp=[0x200000007:0x1:0x0] old  name"),
     {"flags": 1, "tfid": "0x200000401:0x8:0x0", "pfid": D, "name": b"new name", "sfid": F, "spfid": ROOT,
      "sname": b"old  name"}),
    ("old format: no j/ef/u/nid",
     b"2 02MKDIR 19:10:21.509659173 2010.03.24 0x0 t=[0x200000420:0x3:0x0] p=[0x61b4:0xca2c7dde:0x0] mydir",
     {"type": "MKDIR", "type_no": 2, "pfid": "0x61b4:0xca2c7dde:0x0", "name": b"mydir", "uid": None, "gid": None,
      "jobid": None}),
    ("old format SATTR: nothing after t=",
     b"3 14SATTR 19:10:27.329356533 2010.03.24 0x0 t=[0x200000420:0x3:0x0]",
     {"type": "SATTR", "index": 3, "tfid": "0x200000420:0x3:0x0", "pfid": None, "name": None}),
    ("old MARK with a zero parent",
     b"1 00MARK  19:08:20.890432813 2010.03.24 0x0 t=[0x10001:0x0:0x0] p=[0:0x0:0x0] mdd_obd-lustre-MDT0000-0",
     {"type": "MARK", "type_no": 0, "pfid": "0:0x0:0x0", "name": b"mdd_obd-lustre-MDT0000-0"}),
    ("old-format RENME without s=",
     b"5 08RENME 20:15:37.1 2010.03.24 0x0 t=[0x200000420:0x4:0x0] p=[0x200000420:0x3:0x0] hosts",
     {"type": "RENME", "name": b"hosts", "sfid": None, "spfid": None, "sname": None}),
    ("name that is not UTF-8",
     (b"7 06UNLNK 10:00:00.1 2026.03.16 0x1 t=[0x200000401:0x4:0x0] ef=0xf u=0:0 nid=0@lo p=[0x200000401:0x2:0x0]"
      b" caf\xe9"),
     {"name": b"caf\xe9"}),
    ("xattr name and HSM padding",
     b"8 15XATTR 10:00:00.1 2026.03.16 0x0 t=[0x200000401:0x3:0x0] ef=0xf u=0:0 nid=0@lo x=trusted.foo",
     {"type": "XATTR", "type_no": 15, "pfid": None, "name": None}),
    ("HSM type name padded with two spaces",
     b"9 16HSM   10:00:00.1 2026.03.16 0x80 t=[0x200000401:0x3:0x0] ef=0xf u=0:0 nid=0@lo",
     {"type": "HSM", "type_no": 16, "flags": 0x80}),
    ("job id, no extra flags",
     b"10 17MTIME 10:00:00.1 2026.03.16 0x0 t=[0x200000401:0x3:0x0] j=dd.0",
     {"type": "MTIME", "jobid": "dd.0", "uid": None}),
    ("unknown field before p= is skipped",
     b"11 01CREAT 10:00:00.1 2026.03.16 0x0 t=[0x200000401:0x9:0x0] ef=0xf zz=1 p=[0x200000401:0x2:0x0] f",
     {"pfid": D, "name": b"f"}),
    ("name without a parent (zero pfid is not printed)",
     b"12 01CREAT 10:00:00.1 2026.03.16 0x0 t=[0x200000401:0x9:0x0] ef=0xf u=0:0 orphan",
     {"pfid": None, "name": b"orphan"}),
]


@pytest.mark.parametrize("line,fields", [c[1:] for c in PARSE_CASES], ids=[c[0] for c in PARSE_CASES])
def test_parse_variants(line, fields):
    rec = parse_line(line)
    assert rec is not None
    for key, value in fields.items():
        assert getattr(rec, key) == value, key


def test_parse_xattr_field():
    case = next(c for c in PARSE_CASES if c[0] == "xattr name and HSM padding")
    assert parse_line(case[1]).xattr == "trusted.foo"


GARBLED = [
    b"",
    b"   ",
    b"garbage",
    b"lfs changelog: cannot access changelog: Input/output error",
    b"16 01CREAT",
    b"16 01CREAT 10:28:46.968438800 2018.03.09 0x0",  # no t=
    b"x16 01CREAT 10:28:46.968438800 2018.03.09 0x0 t=[0x200000401:0x10:0x0]",
    b"16 CREAT 10:28:46.968438800 2018.03.09 0x0 t=[0x200000401:0x10:0x0]",  # no type number
    b"16 01CREAT 10:28:46.968438800 2018.03.09 0x0 t=[nonsense]",
    b"16 01CREAT 10:28:46.968438800 2018.03.09 0x0 t=[0x200000401:0x10:0x0]junk",
    b"16 01CREAT 2018.03.09 10:28:46.968438800 0x0 t=[0x200000401:0x10:0x0]",  # date and time swapped
]


@pytest.mark.parametrize("line", GARBLED)
def test_parse_garbled_is_none(line):
    assert parse_line(line) is None


# ---- the stand-in lfs ---------------------------------------------------------------------

EXTRA = b" ef=0xf u=0:0 nid=0@lo"


def line(index: int, type_: str, tfid: str, p: str | None = None, name: bytes | str | None = None,
         flags: int = 0, s: str | None = None, sp: str | None = None, sname: bytes | str | None = None,
         extra: bytes = EXTRA) -> bytes:
    """One record as `lfs changelog` prints it (liblustreapi/lfs.c field order)."""
    def enc(v: bytes | str) -> bytes:
        return v if isinstance(v, bytes) else v.encode()

    out = b"%d %02d%-5s 10:00:00.000000000 2026.03.16 0x%x t=[%s]" % (
        index, TYPE_NAMES.index(type_), type_.encode(), flags, tfid.encode())
    out += extra
    if p:
        out += b" p=[%s]" % p.encode()
    if name is not None:
        out += b" " + enc(name)
    if s:
        out += b" s=[%s] sp=[%s] %s" % (s.encode(), sp.encode(), enc(sname))
    return out


def R(type_: str, tfid: str, p: str | None = None, name=None, **kw) -> dict:
    return dict(type_=type_, tfid=tfid, p=p, name=name, **kw)


@dataclass
class Standin:
    dir: str

    def changelog(self, *recs: dict, first: int = 1) -> int:
        """Append records numbered from `first`; returns the last index."""
        with open(os.path.join(self.dir, "changelog"), "ab") as f:
            f.writelines(line(i, **r) + b"\n" for i, r in enumerate(recs, first))
        return first + len(recs) - 1

    def raw(self, *lines: bytes) -> None:
        with open(os.path.join(self.dir, "changelog"), "ab") as f:
            f.writelines(ln + b"\n" for ln in lines)

    def paths(self, table: list[tuple[str, str | bytes]]) -> None:
        with open(os.path.join(self.dir, "fids"), "wb") as f:
            f.writelines(fid.encode() + b"\t" + (rel if isinstance(rel, bytes) else rel.encode()) + b"\n"
                         for fid, rel in table)

    def flag(self, name: str, text: str = "") -> None:
        with open(os.path.join(self.dir, name), "w") as f:
            f.write(text)

    def unflag(self, name: str) -> None:
        os.unlink(os.path.join(self.dir, name))

    def cleared(self) -> list[str]:
        try:
            with open(os.path.join(self.dir, "cleared")) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def calls(self, sub: str | None = None) -> list[list[str]]:
        try:
            with open(os.path.join(self.dir, "calls")) as f:
                calls = [json.loads(ln) for ln in f]
        except FileNotFoundError:
            return []
        return [c for c in calls if sub is None or (c and c[0] == sub)]

    def source(self, **kw) -> ChangelogSource:
        return ChangelogSource(MOUNT, MDT, USER, **kw)


@pytest.fixture
def lfs(tmp_path, monkeypatch) -> Standin:
    d = tmp_path / "lfs"
    d.mkdir()
    monkeypatch.setenv("PFSXPORT_STANDIN_LFS", str(d))
    monkeypatch.setenv("PATH", STANDIN + os.pathsep + os.environ.get("PATH", ""))
    return Standin(str(d))


def standin(lfs: Standin, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([os.path.join(STANDIN, "lfs"), *args], capture_output=True, check=False)


def test_standin_is_an_executable_python_script():
    path = os.path.join(STANDIN, "lfs")
    assert os.access(path, os.X_OK)
    with open(path, "rb") as f:
        assert f.readline() == b"#!/usr/bin/env python3\n"


def test_standin_subcommands(lfs):
    lfs.paths([(F, "dir/file"), (X, "a/x"), (X, "b/x")])
    cp = standin(lfs, "fid2path", MOUNT, f"[{F}]")
    assert (cp.returncode, cp.stdout) == (0, b"/mnt/testfs/dir/file\n")
    cp = standin(lfs, "fid2path", "-f", MOUNT, f"[{X}]", F)
    assert cp.stdout == f"[{X}] /mnt/testfs/a/x\n[{X}] /mnt/testfs/b/x\n{F} /mnt/testfs/dir/file\n".encode()
    cp = standin(lfs, "fid2path", MOUNT, f"[{G}]", f"[{F}]")
    assert cp.returncode == 2 and b"No such file or directory" in cp.stderr and cp.stdout == b"/mnt/testfs/dir/file\n"
    cp = standin(lfs, "fid2path", MOUNT, f"[{ROOT}]")
    assert cp.stdout == b"/mnt/testfs/\n"
    cp = standin(lfs, "frobnicate")
    assert cp.returncode == 1 and b"unknown command" in cp.stderr
    assert standin(lfs, "changelog_clear", MDT, USER).returncode == 1
    assert standin(lfs, "changelog_clear", MDT, USER, "3").returncode == 0
    assert lfs.cleared() == [f"{MDT} {USER} 3"]


def test_standin_changelog_starts_after_the_cleared_record(lfs):
    lfs.changelog(*[R("MTIME", F) for _ in range(5)])
    lfs.flag("cleared", f"{MDT} {USER} 3\n{MDT} other 1\n")
    first = [ln.split()[0] for ln in standin(lfs, "changelog", "--user", USER, MDT).stdout.splitlines()]
    assert first == [b"4", b"5"]
    every = [ln.split()[0] for ln in standin(lfs, "changelog", MDT).stdout.splitlines()]
    assert every == [b"1", b"2", b"3", b"4", b"5"]
    window = [ln.split()[0] for ln in standin(lfs, "changelog", "--user", USER, MDT, "2", "3").stdout.splitlines()]
    assert window == [b"2", b"3"]


# ---- coalescing, through the stand-in ----------------------------------------------------------

SCENARIOS = [
    ("create, write, close: created then closed",
     [R("CREAT", F, ROOT, "f"), R("OPEN", F, D, flags=0x24a, extra=EXTRA + b" m=-w-"), R("CLOSE", F, flags=0x242)],
     [(F, "f")],
     [Change(K.CREATED, "f", is_dir=False), Change(K.CLOSED, "f", is_dir=False)]),
    ("several metadata records collapse into one",
     [R("SATTR", F), R("MTIME", F), R("CTIME", F), R("XATTR", F, extra=EXTRA + b" x=user.a")],
     [(F, "d/f")],
     [Change(K.METADATA, "d/f")]),
    ("metadata and a write close collapse into closed",
     [R("SATTR", F), R("CLOSE", F, flags=0x2), R("MTIME", F), R("CLOSE", F, flags=0x402)],
     [(F, "d/f")],
     [Change(K.CLOSED, "d/f", is_dir=False)]),
    ("a close of a read-only open changes nothing",
     [R("OPEN", F, D, flags=0x1, extra=EXTRA + b" m=r--"), R("CLOSE", F, flags=0x1)],
     [(F, "d/f")],
     []),
    ("a close with no flags counts as a write",
     [R("CLOSE", F, flags=0)],
     [(F, "d/f")],
     [Change(K.CLOSED, "d/f", is_dir=False)]),
    ("TRUNC changes the content; LYOUT the metadata",
     [R("TRUNC", F), R("LYOUT", X)],
     [(F, "f"), (X, "x")],
     [Change(K.CLOSED, "f", is_dir=False), Change(K.METADATA, "x")]),
    ("created then deleted in the batch: only the delete",
     [R("CREAT", G, D, "tmp"), R("CLOSE", G, flags=0x242), R("UNLNK", G, D, "tmp", flags=1)],
     [(D, "d")],
     [Change(K.DELETED, "d/tmp", is_dir=False)]),
    ("deleted then made again: delete, then create",
     [R("UNLNK", G, ROOT, "a", flags=1), R("CREAT", F, ROOT, "a")],
     [(F, "a")],
     [Change(K.DELETED, "a", is_dir=False), Change(K.CREATED, "a", is_dir=False)]),
    ("a directory renamed, then a file made in it",
     [R("RENME", ZERO, ROOT, "e", s=D, sp=ROOT, sname="d"), R("CREAT", F, D, "f")],
     [(D, "e"), (F, "e/f")],
     [Change(K.RENAMED, "e", old_path="d"), Change(K.CREATED, "e/f", is_dir=False)]),
    ("a file made in a directory, then the directory renamed: the create follows the rename",
     [R("CREAT", F, D, "f"), R("RENME", ZERO, ROOT, "e", s=D, sp=ROOT, sname="d")],
     [(D, "e"), (F, "e/f")],
     [Change(K.RENAMED, "e", old_path="d"), Change(K.CREATED, "e/f", is_dir=False)]),
    ("mkdir, rename it, create inside",
     [R("MKDIR", D, ROOT, "d"), R("RENME", ZERO, ROOT, "e", s=D, sp=ROOT, sname="d"), R("CREAT", F, D, "f"),
      R("SATTR", D)],
     [(D, "e"), (F, "e/f")],
     [Change(K.RENAMED, "e", old_path="d", is_dir=True), Change(K.CREATED, "e", is_dir=True),
      Change(K.CREATED, "e/f", is_dir=False)]),
    ("deletes and renames keep record order",
     [R("UNLNK", G, D, "x", flags=1), R("RENME", ZERO, D, "z", s=F, sp=D, sname="y"), R("UNLNK", Y, D, "w"),
      R("RENME", ZERO, ROOT, "c", s=E, sp=ROOT, sname="b"), R("RMDIR", X, E, "sub")],
     [(D, "a"), (E, "c"), (F, "a/z")],
     [Change(K.DELETED, "a/x", is_dir=False), Change(K.RENAMED, "a/z", old_path="a/y"),
      Change(K.DELETED, "a/w", is_dir=False), Change(K.RENAMED, "c", old_path="b"),
      Change(K.DELETED, "c/sub", is_dir=True)]),
    ("a rename over an existing target: just the rename",
     [R("RENME", G, ROOT, "y", flags=1, s=X, sp=ROOT, sname="x")],
     [(X, "y")],
     [Change(K.RENAMED, "y", old_path="x")]),
    ("a hard link: the create and the close for every path",
     [R("CREAT", X, ROOT, "x"), R("CLOSE", X, flags=0x242), R("HLINK", X, D, "y")],
     [(X, "x"), (X, "d/y"), (D, "d")],
     [Change(K.CREATED, "x", is_dir=False), Change(K.CREATED, "d/y", is_dir=False),
      Change(K.CLOSED, "x", is_dir=False), Change(K.CLOSED, "d/y", is_dir=False)]),
    ("a hard-linked file changed: every path",
     [R("SATTR", X)],
     [(X, "a/x"), (X, "b/x")],
     [Change(K.METADATA, "a/x"), Change(K.METADATA, "b/x")]),
    ("a link made where a name was deleted follows the delete",
     [R("CREAT", X, ROOT, "x"), R("UNLNK", G, ROOT, "y", flags=1), R("HLINK", X, ROOT, "y")],
     [(X, "x"), (X, "y")],
     [Change(K.CREATED, "x", is_dir=False), Change(K.DELETED, "y", is_dir=False),
      Change(K.CREATED, "y", is_dir=False)]),
    ("a FID gone at resolution yields nothing",
     [R("CLOSE", G, flags=0x2), R("SATTR", G), R("CLOSE", F, flags=0x2)],
     [(F, "f")],
     [Change(K.CLOSED, "f", is_dir=False)]),
    ("rm -r: the parents are gone, placed through the batch",
     [R("UNLNK", G, E, "x", flags=1), R("RMDIR", E, D, "e"), R("UNLNK", Y, D, "y", flags=1), R("RMDIR", D, ROOT, "d")],
     [],
     [Change(K.DELETED, "d/e/x", is_dir=False), Change(K.DELETED, "d/e", is_dir=True),
      Change(K.DELETED, "d/y", is_dir=False), Change(K.DELETED, "d", is_dir=True)]),
    ("the root of the mount has no object",
     [R("SATTR", ROOT), R("MTIME", D)],
     [(D, "d")],
     [Change(K.METADATA, "d")]),
    ("old format: RENME then RNMTO",
     [R("RENME", X, ROOT, "old", extra=b""), R("RNMTO", X, D, "new", extra=b"")],
     [(D, "d"), (X, "d/new")],
     [Change(K.RENAMED, "d/new", old_path="old")]),
    ("names with spaces",
     [R("CREAT", F, D, "my file.txt"), R("RENME", ZERO, D, "c d", s=X, sp=D, sname="a b")],
     [(D, "my dir"), (F, "my dir/my file.txt"), (X, "my dir/c d")],
     [Change(K.CREATED, "my dir/my file.txt", is_dir=False), Change(K.RENAMED, "my dir/c d", old_path="my dir/a b")]),
    ("a name that is not UTF-8",
     [R("UNLNK", G, D, b"caf\xe9", flags=1), R("CREAT", F, D, b"na\xefve")],
     [(D, "d"), (F, b"d/na\xefve")],
     [Change(K.DELETED, os.fsdecode(b"d/caf\xe9"), is_dir=False),
      Change(K.CREATED, os.fsdecode(b"d/na\xefve"), is_dir=False)]),
    ("types that export nothing",
     [R("OPEN", F, D, flags=0x1), R("ATIME", F), R("MARK", ZERO), R("HSM", F, flags=0x80), R("GXATR", F),
      R("NOPEN", F), R("MIGRT", F, D, "f"), R("RESYNC", F)],
     [(F, "d/f")],
     []),
    ("mkdir then chmod: the create covers it",
     [R("MKDIR", D, ROOT, "d"), R("SATTR", D)],
     [(D, "d")],
     [Change(K.CREATED, "d", is_dir=True)]),
    ("a deep path and the order of first appearance",
     [R("SATTR", Y), R("CLOSE", F, flags=0x2), R("MTIME", Y), R("CREAT", X, D, "x")],
     [(Y, "a/b/c/y"), (F, "a/f"), (X, "a/b/x"), (D, "a/b")],
     [Change(K.METADATA, "a/b/c/y"), Change(K.CLOSED, "a/f", is_dir=False), Change(K.CREATED, "a/b/x", is_dir=False)]),
]


@pytest.mark.parametrize("recs,table,expected", [s[1:] for s in SCENARIOS], ids=[s[0] for s in SCENARIOS])
def test_poll_coalesces(lfs, recs, table, expected):
    last = lfs.changelog(*recs, first=101)
    lfs.paths(table)
    changes, got_last = lfs.source().poll()
    assert changes == expected
    assert got_last == last
    assert lfs.cleared() == []  # poll never clears


def test_resolution_is_batched_in_one_fid2path_call(lfs):
    lfs.changelog(R("CLOSE", F, flags=2), R("SATTR", X), R("UNLNK", G, D, "g"), R("CREAT", Y, D, "y"))
    lfs.paths([(F, "f"), (X, "x"), (D, "d"), (Y, "d/y")])
    changes, _ = lfs.source().poll()
    assert changes == [Change(K.CLOSED, "f", is_dir=False), Change(K.METADATA, "x"),
                       Change(K.DELETED, "d/g", is_dir=False), Change(K.CREATED, "d/y", is_dir=False)]
    calls = lfs.calls("fid2path")
    assert len(calls) == 1
    assert calls[0][:3] == ["fid2path", "-f", MOUNT] and sorted(calls[0][3:]) == sorted(f"[{f}]" for f in (F, X, Y, D))


def test_paths_printed_relative_to_the_mount(lfs):
    lfs.flag("relative")
    lfs.changelog(R("CLOSE", F, flags=2), R("UNLNK", G, ROOT, "g"))
    lfs.paths([(F, "d/f")])
    assert standin(lfs, "fid2path", MOUNT, F).stdout == b"d/f\n"
    changes, _ = lfs.source().poll()
    assert changes == [Change(K.CLOSED, "d/f", is_dir=False), Change(K.DELETED, "g", is_dir=False)]


def test_lfs_without_fid2path_f_falls_back_to_one_fid_per_call(lfs):
    lfs.flag("no-print-fid")
    lfs.changelog(R("CLOSE", F, flags=2), R("SATTR", X), R("SATTR", G))
    lfs.paths([(F, "f"), (X, "x1"), (X, "x2")])
    changes, last = lfs.source().poll()
    assert changes == [Change(K.CLOSED, "f", is_dir=False), Change(K.METADATA, "x1"), Change(K.METADATA, "x2")]
    assert last == 3
    assert [c for c in lfs.calls("fid2path") if "-f" not in c] == [
        ["fid2path", MOUNT, f"[{F}]"], ["fid2path", MOUNT, f"[{X}]"], ["fid2path", MOUNT, f"[{G}]"]]


def test_name_with_a_newline_continues_on_the_next_line(lfs):
    lfs.raw(line(1, "UNLNK", G, D, b"two\nlines", flags=1), line(2, "SATTR", F))
    lfs.paths([(D, "d"), (F, "f")])
    changes, last = lfs.source().poll()
    assert changes == [Change(K.DELETED, "d/two\nlines", is_dir=False), Change(K.METADATA, "f")]
    assert last == 2


def test_garbled_lines_in_the_output_are_skipped(lfs):
    lfs.raw(b"this is not a record", line(1, "SATTR", F), b"16 01CREAT half a line", line(2, "SATTR", X))
    lfs.paths([(F, "f"), (X, "x")])
    changes, last = lfs.source().poll()
    assert changes == [Change(K.METADATA, "f"), Change(K.METADATA, "x")]
    assert last == 2


# ---- positions: start, window, clear ------------------------------------------------------------


def test_first_poll_starts_after_the_users_cleared_record_then_follows_on(lfs):
    lfs.changelog(*[R("SATTR", F)] * 3, R("SATTR", X), R("CLOSE", F, flags=2))
    lfs.paths([(F, "f"), (X, "x")])
    lfs.flag("cleared", f"{MDT} {USER} 3\n")
    src = lfs.source()
    changes, last = src.poll(max_records=50)
    assert (changes, last) == ([Change(K.METADATA, "x"), Change(K.CLOSED, "f", is_dir=False)], 5)
    assert lfs.calls("changelog")[0] == ["changelog", "--user", USER, MDT]
    assert src.poll(max_records=50) == ([], None)
    # an empty window is looked past once, for records beyond it
    assert lfs.calls("changelog")[1:] == [["changelog", "--user", USER, MDT, "6", "55"],
                                          ["changelog", "--user", USER, MDT, "6"]]
    lfs.changelog(R("SATTR", X), first=6)
    assert src.poll(max_records=50) == ([Change(K.METADATA, "x")], 6)


def test_max_records_bounds_each_poll(lfs):
    lfs.changelog(R("SATTR", F), R("SATTR", X), R("SATTR", Y), R("SATTR", F), R("SATTR", X))
    lfs.paths([(F, "f"), (X, "x"), (Y, "y")])
    src = lfs.source()
    polls = [src.poll(max_records=2) for _ in range(4)]
    assert polls == [([Change(K.METADATA, "f"), Change(K.METADATA, "x")], 2),
                     ([Change(K.METADATA, "y"), Change(K.METADATA, "f")], 4),
                     ([Change(K.METADATA, "x")], 5),
                     ([], None)]
    assert lfs.calls("changelog")[1] == ["changelog", "--user", USER, MDT, "3", "4"]


def test_a_gap_wider_than_the_window_is_crossed(lfs):
    lfs.changelog(R("SATTR", F))
    lfs.paths([(F, "f"), (X, "x")])
    src = lfs.source()
    assert src.poll(max_records=10) == ([Change(K.METADATA, "f")], 1)
    lfs.changelog(R("SATTR", X), first=50)
    assert src.poll(max_records=10) == ([Change(K.METADATA, "x")], 50)


def test_old_format_rename_pair_is_not_split_between_polls(lfs):
    lfs.changelog(R("SATTR", F), R("RENME", X, ROOT, "old", extra=b""), R("RNMTO", X, ROOT, "new", extra=b""))
    lfs.paths([(F, "f"), (X, "new")])
    src = lfs.source()
    assert src.poll(max_records=2) == ([Change(K.METADATA, "f")], 1)
    assert src.poll(max_records=2) == ([Change(K.RENAMED, "new", old_path="old")], 3)


def test_records_that_coalesce_to_nothing_still_move_the_position(lfs):
    lfs.changelog(R("OPEN", F, D, flags=1), R("CLOSE", F, flags=1))
    assert lfs.source().poll() == ([], 2)


def test_clear_writes_the_index_and_a_new_source_starts_after_it(lfs):
    lfs.changelog(R("SATTR", F), R("SATTR", X), R("SATTR", Y))
    lfs.paths([(F, "f"), (X, "x"), (Y, "y")])
    src = lfs.source()
    src.clear(2)
    assert lfs.cleared() == [f"{MDT} {USER} 2"]
    assert lfs.calls("changelog_clear") == [["changelog_clear", MDT, USER, "2"]]
    assert lfs.source().poll() == ([Change(K.METADATA, "y")], 3)


def test_clear_refuses_zero(lfs):
    with pytest.raises(ValueError):
        lfs.source().clear(0)
    assert lfs.calls() == []


# ---- errors -----------------------------------------------------------------------------------


def test_lfs_changelog_failure_is_a_changelog_error(lfs):
    lfs.changelog(R("SATTR", F))
    lfs.paths([(F, "f")])
    lfs.flag("fail", "changelog\n")
    src = lfs.source()
    with pytest.raises(ChangelogError, match="Input/output error"):
        src.poll()
    lfs.unflag("fail")
    assert src.poll() == ([Change(K.METADATA, "f")], 1)


def test_missing_changelog_is_a_changelog_error(lfs):
    with pytest.raises(ChangelogError, match="No such file or directory"):
        lfs.source().poll()


def test_fid2path_failure_is_an_error_and_the_records_are_read_again(lfs):
    lfs.changelog(R("SATTR", F), R("UNLNK", G, D, "g"))
    lfs.paths([(F, "f"), (D, "d")])
    lfs.flag("fail", "fid2path\n")
    src = lfs.source()
    with pytest.raises(ChangelogError, match="Input/output error"):
        src.poll()
    lfs.unflag("fail")
    assert src.poll() == ([Change(K.METADATA, "f"), Change(K.DELETED, "d/g", is_dir=False)], 2)
    assert [c[1:] for c in lfs.calls("changelog")] == [["--user", USER, MDT]] * 2


def test_clear_failure_is_a_changelog_error(lfs):
    lfs.flag("fail", "changelog_clear\n")
    with pytest.raises(ChangelogError, match="Input/output error"):
        lfs.source().clear(5)
    assert lfs.cleared() == []


def test_lfs_not_found_is_a_changelog_error(lfs):
    with pytest.raises(ChangelogError, match="cannot run"):
        ChangelogSource(MOUNT, MDT, USER, lfs=os.path.join(str(lfs.dir), "no-such-lfs")).poll()


class FakeRun:
    """A `run` answering per subcommand: (returncode, stdout, stderr) or an exception."""

    def __init__(self, **answers):
        self.answers = answers
        self.calls: list[list[str]] = []

    def __call__(self, argv, **kw):
        self.calls.append(argv)
        assert kw.get("capture_output") and kw.get("timeout")
        a = self.answers[argv[1]]
        if isinstance(a, Exception):
            raise a
        rc, out, err = a
        return subprocess.CompletedProcess(argv, rc, out, err)


def test_timeout_is_a_changelog_error():
    run = FakeRun(changelog=subprocess.TimeoutExpired(["lfs"], 5, stderr=b"still reading"))
    with pytest.raises(ChangelogError, match="timed out.*still reading"):
        ChangelogSource(MOUNT, MDT, USER, run=run, timeout=5).poll()


def test_fid2path_failure_not_about_a_fid_is_not_taken_for_a_gone_file():
    run = FakeRun(changelog=(0, line(1, "SATTR", F) + b"\n", b""),
                  fid2path=(2, b"", (b"lfs fid2path: cannot resolve mount point for '/mnt/testfs': "
                                     b"No such file or directory\n")))
    with pytest.raises(ChangelogError, match="cannot resolve mount point"):
        ChangelogSource(MOUNT, MDT, USER, run=run).poll()


def test_fid2path_paths_with_a_leading_slash_not_under_the_mount():
    run = FakeRun(changelog=(0, line(1, "SATTR", F) + b"\n" + line(2, "SATTR", ROOT) + b"\n", b""),
                  fid2path=(0, f"[{F}] /d/f\n[{ROOT}] /\n".encode(), b""))
    assert ChangelogSource(MOUNT, MDT, USER, run=run).poll() == ([Change(K.METADATA, "d/f")], 2)
    assert run.calls[-1] == ["lfs", "fid2path", "-f", MOUNT, f"[{F}]", f"[{ROOT}]"]


def test_fid2path_under_a_mount_given_with_a_trailing_slash():
    run = FakeRun(changelog=(0, line(1, "CLOSE", F, flags=2) + b"\n", b""),
                  fid2path=(0, f"[{F}] /mnt/testfs/d/f\n".encode(), b""))
    assert ChangelogSource(MOUNT + "/", MDT, USER, run=run).poll() == ([Change(K.CLOSED, "d/f", is_dir=False)], 1)


# ---- record times and the cursor ---------------------------------------------------------------

def test_record_time_is_read_as_lfs_prints_it():
    """lfs prints a record's time in local time, nanoseconds after the seconds."""
    import time

    assert parse_line(line(1, "CREAT", F, ROOT, "f")).time == time.mktime((2026, 3, 16, 10, 0, 0, 0, 0, -1))
    rec = parse_line(b"5 01CREAT 23:59:58.500000000 2026.12.31 0x0 t=[%s] p=[%s] f" % (F.encode(), ROOT.encode()))
    assert rec.time == time.mktime((2026, 12, 31, 23, 59, 58, 0, 0, -1)) + 0.5
    assert parse_line(b"5 01CREAT 25:99:99 2026.13.45 0x0 t=[%s]" % F.encode()).time is None


def test_changes_carry_their_first_record_time_and_the_cursor_lag_follows_clears(lfs):
    import time

    lfs.changelog(*[R("MTIME", F) for _ in range(3)])
    lfs.flag("cleared", f"{MDT} {USER} 3\n")
    lfs.raw(b"4 01CREAT 11:00:00.000000000 2026.03.16 0x0 t=[%s] p=[%s] f" % (F.encode(), ROOT.encode()),
            b"5 11CLOSE 11:00:05.000000000 2026.03.16 0x242 t=[%s]" % F.encode())
    lfs.paths([(F, "f")])
    src = lfs.source()
    changes, last = src.poll()
    at = time.mktime((2026, 3, 16, 11, 0, 0, 0, 0, -1))
    assert [(c.kind, c.time) for c in changes] == [(K.CREATED, at), (K.CLOSED, at + 5)]
    assert (last, src.records_read, src.cursor_lag) == (5, 2, 2)  # read 4 and 5, cleared up to 3
    src.clear(last)
    assert src.cursor_lag == 0
