"""walk.Root: nothing outside the root is opened, even when a directory on the way is
swapped for a symlink after the scan that found an entry (a race a hostile user can win)."""
from __future__ import annotations

import os

import pytest
from test_body_budget import HoldingStore

from pfsxport.export import Transfer, TransferOptions
from pfsxport.metadata import S3Url
from pfsxport.model import DirUnit, Entry, RowStatus
from pfsxport.walk import OutsideRoot, Root, scan_dir


@pytest.fixture
def swapped(tmp_path):
    """root/d/f scanned, then root/d replaced by a link to a directory outside with its own f."""
    (tmp_path / "root" / "d").mkdir(parents=True)
    (tmp_path / "root" / "d" / "f").write_text("inside\n")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "f").write_text("outside secret\n")
    root = str(tmp_path / "root")
    entry = Entry.from_stat("d/f", os.lstat(os.path.join(root, "d", "f")))
    os.rename(tmp_path / "root" / "d", tmp_path / "moved")
    os.symlink(tmp_path / "outside", tmp_path / "root" / "d")
    return root, entry


def test_an_open_through_a_swapped_directory_is_refused(swapped):
    root, _ = swapped
    with pytest.raises(OutsideRoot):
        os.close(Root(root).open("d/f"))
    res = scan_dir(Root(root), "d")  # the link itself is not followed either
    assert res.error is not None and res.items == []


def test_the_export_of_an_entry_behind_a_swapped_directory_fails_without_reading_it(swapped):
    root, entry = swapped
    store = HoldingStore()
    t = Transfer(root, S3Url("b", "x/"), store, None, TransferOptions(1 << 20, 8 << 20, 1 << 40, 64, 3))
    out = t.export_entry(entry)
    assert [(r.path, r.status, r.error_code) for r in out.rows] == [("d/f", RowStatus.FAILED, "LocalReadError")]
    assert store.keys == []
    listed = t.scan(DirUnit("d"))
    assert [(r.path, r.status) for r in listed.rows] == [("d", RowStatus.FAILED)] and not listed.units


def test_a_root_given_through_a_symlink_opens_as_usual(tmp_path):
    (tmp_path / "real" / "d").mkdir(parents=True)
    (tmp_path / "real" / "d" / "f").write_text("x")
    os.symlink(tmp_path / "real", tmp_path / "mount")
    fd = Root(str(tmp_path / "mount")).open("d/f")
    assert os.read(fd, 1) == b"x"
    os.close(fd)
    assert [n for n, _ in scan_dir(Root(str(tmp_path / "mount")), "d").items] == [b"f"]
