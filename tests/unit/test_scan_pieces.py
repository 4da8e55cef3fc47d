"""Transfer.scan of a directory larger than one scan piece: compared a piece at a time
against the manifest, it must find exactly what the one-piece comparison finds: the new and
changed entries, the subdirectories, and (when deletions are wanted) the entries gone."""
from __future__ import annotations

import os

import pytest

from pfsxport import walk
from pfsxport.export import TASK_EVENTS, Transfer, TransferOptions
from pfsxport.export import scan as transfer
from pfsxport.lustre import LayoutSource
from pfsxport.manifest import Manifest
from pfsxport.metadata import S3Url
from pfsxport.model import BatchUnit, DeleteTreeUnit, DeleteUnit, DirUnit, Entry

N = 1000


@pytest.fixture
def tree(tmp_path):
    """fs/big: N files and 3 subdirectories, all in the manifest; then 3 files changed,
    2 files and a subdirectory removed, 2 files and a subdirectory added."""
    root = tmp_path / "fs"
    big = root / "big"
    big.mkdir(parents=True)
    for i in range(N):
        (big / f"f{i:04d}").write_bytes(b"x")
    for d in ("d0", "d1", "d2"):
        (big / d).mkdir()
    m = Manifest(str(tmp_path / "m"))
    log = m.delta_log("t", 0)
    for name in os.listdir(big):
        log.put(f"big/{name}", Entry.from_stat(f"big/{name}", os.lstat(big / name)).rec())
    log.close()
    m.merge()
    for i in (5, 500, 999):
        (big / f"f{i:04d}").write_bytes(b"changed")
    os.unlink(big / "f0001")
    os.unlink(big / "f0700")
    os.rmdir(big / "d1")
    (big / "new-a").write_bytes(b"a")
    (big / "new-b").write_bytes(b"b")
    (big / "d3").mkdir()
    return str(root), m


def scan(root: str, m: Manifest, events, monkeypatch, piece: int):
    monkeypatch.setattr(walk, "SCAN_PIECE", piece)
    monkeypatch.setattr(transfer, "scan_dir", lambda r, rel, skip: walk.scan_dir(r, rel, skip, piece))
    t = Transfer(root, S3Url("b", "x/"), None, LayoutSource("off", 1 << 20),
                 TransferOptions(16 << 20, 64 << 20, 5 << 40, 64, 3),
                 manifest=m.reader(), events=events)
    out = t.scan(DirUnit("big"))
    exported = sorted([e.path for u in out.units if isinstance(u, BatchUnit) for e in u.entries] +
                      [u.entry.path for u in out.units if isinstance(u, DirUnit) and u.entry])  # dirs: own unit
    scans = sorted(u.path for u in out.units if isinstance(u, DirUnit))
    deleted = sorted([p for u in out.units if isinstance(u, DeleteUnit) for p, _, _ in u.gone] +
                     [u.path for u in out.units if isinstance(u, DeleteTreeUnit)])
    return exported, scans, deleted, (out.discovered.entries, out.discovered.unchanged)


@pytest.mark.parametrize("events", [TASK_EVENTS, TASK_EVENTS | {"DELETED"}])
def test_pieces_find_what_one_piece_finds(tree, monkeypatch, events):
    root, m = tree
    whole = scan(root, m, events, monkeypatch, piece=100_000)
    pieces = scan(root, m, events, monkeypatch, piece=64)
    assert pieces == whole
    exported, scans, deleted, (entries, unchanged) = pieces
    assert exported == ["big/d3", "big/f0005", "big/f0500", "big/f0999", "big/new-a", "big/new-b"]
    assert scans == ["big/d0", "big/d2", "big/d3"]
    assert deleted == (["big/d1", "big/f0001", "big/f0700"] if "DELETED" in events else [])
    assert entries == N - 2 + 2 + 3 and unchanged == N - 2 - 3 + 2


def test_a_large_directory_comes_in_pieces(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    for i in range(250):
        (d / str(i)).touch()
    res = walk.scan_dir(walk.Root(str(tmp_path)), "d", piece=100)
    pieces = [res.items, *res.more]
    assert [len(p) for p in pieces] == [100, 100, 50]
    assert sorted(int(n) for p in pieces for n, _ in p) == list(range(250))
    small = walk.scan_dir(walk.Root(str(tmp_path)), "d", piece=1000)
    assert small.more is None and len(small.items) == 250
