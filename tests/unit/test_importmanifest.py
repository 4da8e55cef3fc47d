"""The import manifest: deltas per rank and task, a killed job's last line cut off, compaction."""
from __future__ import annotations

import os

import pytest

from pfsxport.errors import StateError
from pfsxport.importmanifest import ENTRIES, ImportManifest, Written


def _w(path: str, etag: str = '"1"') -> Written:
    return Written(path, etag, 3, "file", 0o644, 0, 0, 10, 10)


def test_deltas_of_any_rank_count_are_read_and_compacted(tmp_path):
    d = str(tmp_path / "m")
    for rank in range(3):
        m = ImportManifest(d)
        m.open("task-1", rank)
        m.add(_w(f"f{rank}"))
        m.add(_w("shared", f'"{rank}"'))
        m.close()
    with open(os.path.join(d, "delta-task-2-00000.jsonl"), "a") as f:
        f.write('["cut", "\\"1\\"", 3, "fi')  # the last line of a job killed mid-write
    m = ImportManifest(d).load()
    assert set(m.entries) == {"f0", "f1", "f2", "shared"} and m.entries["shared"].etag == '"2"'
    m.compact()
    assert os.listdir(d) == [ENTRIES]
    assert ImportManifest(d).load().entries == m.entries


def test_a_corrupt_manifest_says_so(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / ENTRIES).write_text("not json\n")
    with pytest.raises(StateError) as e:
        ImportManifest(str(d)).load()
    assert e.value.name == "StateFileCorrupt"
