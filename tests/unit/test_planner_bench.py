"""bench/planner.py's core function at a small size: every entry goes through scan, route, the real Scheduler
and part planning, and comes out as exactly one row; the memory figures are reported. No timing assertion."""
from __future__ import annotations

import importlib.util
import os

from pfsxport.export import scan as transfer

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.join(HERE, "..", "..", "bench", "planner.py")


def load():
    spec = importlib.util.spec_from_file_location("planner_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_plan_50000_entries():
    bench = load()
    real_scan_dir = transfer.scan_dir
    r = bench.plan(50_000, per_dir=10_000, ranks=2, trace=True)
    assert transfer.scan_dir is real_scan_dir  # the stand-in is removed again
    assert r["entries"] == 50_000 and r["directories"] == 5
    assert r["rows"] == r["succeeded"] == 50_000  # every entry planned, drained, and reported once
    assert r["large_files"] > 0 and r["parts"] > r["large_files"]  # multipart files were planned into parts
    assert r["lfs_processes"] >= 1
    for key in ("rss_bytes_per_entry", "tracemalloc_bytes_per_entry", "entries_per_s"):
        assert isinstance(r[key], float) and r[key] >= 0, key
    assert r["tracemalloc_peak"] > 0


def test_namespace_counts_exactly_n_entries():
    bench = load()
    for n, per in ((2, 2), (7, 3), (10_000, 10_000), (10_001, 10_000), (123_457, 1_000)):
        ns = bench.Namespace(n, per)
        total = len(ns.children("")) + sum(len(ns.children(f"d{d:06d}")) for d in range(ns.dirs))
        assert total == n, (n, per)
