"""A directory's own object is written before its children are listed (so before any of
them is sent): SeaweedFS loses a directory marker written while its first child's upload
creates the folder. The scan hands a due directory to its own DirUnit instead of a batch."""
from __future__ import annotations

import os

from test_body_budget import HoldingStore

from pfsxport.export import Transfer, TransferOptions
from pfsxport.metadata import S3Url
from pfsxport.model import BatchUnit, DirUnit, RowStatus


def test_a_new_directory_object_goes_before_its_children(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("d/f1", "d/f2", "top"):
        (tmp_path / name).write_bytes(b"x")
    store = HoldingStore()
    t = Transfer(str(tmp_path), S3Url("b", "x/"), store, None, TransferOptions(1 << 20, 8 << 20, 1 << 40, 64, 3))
    root = t.scan(DirUnit(""))
    batched = [e.path for u in root.units if isinstance(u, BatchUnit) for e in u.entries]
    (d,) = [u for u in root.units if isinstance(u, DirUnit)]
    assert batched == ["top"] and d.path == "d" and d.entry.path == "d"
    assert store.keys == []  # the scan of the root sent nothing itself

    out = t.scan(d)
    assert store.keys == ["x/d/"]  # written before the children are even handed out
    assert [(r.path, r.status) for r in out.rows] == [("d", RowStatus.SUCCEEDED)]
    assert sorted(e.path for u in out.units if isinstance(u, BatchUnit) for e in u.entries) == ["d/f1", "d/f2"]
    (sub,) = [u for u in out.units if isinstance(u, DirUnit)]
    assert sub.path == "d/sub" and sub.entry is not None and not os.listdir(tmp_path / "d" / "sub")
