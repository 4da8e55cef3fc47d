"""`pfsxport report plot`: a picture of a real task, of the size asked for; what each panel
shows is checked on the data behind it, computed from the report, not on pixels."""
from __future__ import annotations

import os
import struct

import pytest
from conftest import describe, pfsxport, run_export, task_id_of
from test_export_outcomes import args, small_tree

pytest.importorskip("matplotlib")


def _png_size(path) -> tuple[int, int]:
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def test_report_plot_of_a_real_task(seaweed, tmp_path):
    from pfsxport.plot import COLUMNS, panel_data
    from pfsxport.report import read_columns

    root = small_tree(tmp_path / "fs", n=200)
    (tmp_path / "fs" / "too-big").write_bytes(os.urandom(2 << 20))  # over --max-object-size: fails
    state = tmp_path / "st"
    r = run_export(seaweed, args(root, seaweed.new_bucket(), state, "--max-object-size", "1MiB"), ranks=2)
    assert r.returncode == 3, r.stderr
    task = task_id_of(r)
    out = tmp_path / "task.png"
    p = pfsxport("report", "plot", task, "-o", str(out), "--size", "800x600", "--state-dir", str(state))
    assert p.returncode == 0 and p.stdout.strip() == str(out), p.stderr
    assert _png_size(out) == (800, 600)

    t = describe(task, str(state))["Status"]
    d = panel_data(read_columns(os.path.join(state, "tasks", task, "report.h5"), COLUMNS))
    assert d.failures == {"FileSizeTooLarge": 1}
    assert d.rank_entries.sum() == t["TotalCount"] == 202  # d/, 200 files, too-big
    assert round(d.entries_per_s.sum() * (d.t[1] - d.t[0])) == t["TotalCount"]  # every entry in some time bin
    assert set(d.ranks) <= {0, 1} and d.size_counts.sum() == 200  # the files sent (too-big was not)
    sent = sum(len(f"file {i}\n") * (i + 1) for i in range(200))
    assert abs(d.rank_mb.sum() - sent / 1e6) < 1e-9
    assert f"{task} FAILED" in d.title

    default = pfsxport("report", "plot", task, "--state-dir", str(state))  # beside the report
    assert default.returncode == 0 and default.stdout.strip() == os.path.join(state, "tasks", task, "report.png")
    missing = pfsxport("report", "plot", "task-00000000000000000", "--state-dir", str(state))
    assert missing.returncode == 2 and "DataRepositoryTaskNotFound" in missing.stderr
