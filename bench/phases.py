"""Phase timer for one pfsxport rank: `python bench/phases.py -- export ARGS...` (under mpiexec: one per rank).

Benchmark-only instrumentation from the outside: wraps pfsxport's own functions (nothing in the package is
changed) with timers that add up, per phase, the calls, the wall seconds and the thread CPU seconds
(time.thread_time of the calling thread), then runs `pfsxport.cli.main(ARGS)` and writes
$BENCH_PHASES_DIR/rank-<PMI_RANK>.json. Phases nest (e.g. `Transfer.scan` contains `scan_dir`,
`Reader.directory` and `Transfer.changed`); phases run by the worker pool's threads (scans) add up over
threads, so their wall sum can exceed the rank's wall time. Functions that a newer pfsxport no longer has
are listed under "missing" and skipped.

Also recorded: seconds from process start (/proc/self/stat) to this wrapper's first line (interpreter
start-up), the import of pfsxport.cli + pfsxport.job, the whole main() call, and the process's CPU and
peak RSS.
"""
from __future__ import annotations

import time

T_WRAPPER = time.time()

import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

_lock = threading.Lock()
PHASES: dict[str, list] = {}  # name -> [calls, wall_s, thread_cpu_s]


def _process_start() -> float:
    """Epoch seconds when this process started (clock-tick resolution)."""
    with open("/proc/self/stat") as f:
        start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    return time.time() - uptime + start_ticks / os.sysconf("SC_CLK_TCK")


def _record(name: str, wall: float, cpu: float) -> None:
    with _lock:
        p = PHASES.setdefault(name, [0, 0.0, 0.0])
        p[0] += 1
        p[1] += wall
        p[2] += cpu


def _wrap(owner, attr: str, name: str, missing: list) -> None:
    orig = getattr(owner, attr, None)
    if orig is None:
        missing.append(name)
        return

    def timed(*a, **k):
        t, c = time.perf_counter(), time.thread_time()
        try:
            return orig(*a, **k)
        finally:
            _record(name, time.perf_counter() - t, time.thread_time() - c)

    timed.__wrapped__ = orig
    setattr(owner, attr, timed)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:
        argv = argv[1:]
    rank = os.environ.get("PMI_RANK", "0")
    out_dir = os.environ.get("BENCH_PHASES_DIR", "")
    t0 = time.perf_counter()
    from pfsxport import cli, job, manifest, parallel, report, state, store, worker  # noqa: F401
    from pfsxport.export import scan as export_scan
    import_s = time.perf_counter() - t0
    missing: list[str] = []
    targets = [
        (parallel.World, "__init__", "World.__init__ (mpi4py import, MPI init)"),
        (store.S3Store, "__init__", "S3Store.__init__ (boto3 import, client)"),
        (job, "_prepare", "_prepare (rank 0: task record, merge, probe)"),
        (store.S3Store, "probe", "S3Store.probe"),
        (manifest.Manifest, "merge", "Manifest.merge"),
        (parallel.World, "bcast", "World.bcast"),
        (parallel.World, "barrier", "World.barrier"),
        (parallel, "run_work", "run_work (the walk)"),
        (export_scan.Scanner, "scan", "Scanner.scan (pool threads)"),
        (export_scan, "scan_dir", "scan_dir (scandir + lstat + Entry)"),
        (manifest.Reader, "directory", "Reader.directory (manifest read)"),
        (export_scan.Scanner, "changed", "Scanner.changed (compare)"),
        (job, "_finish", "_finish (rank 0: report, record)"),
        (report, "write_h5", "write_h5 (h5py import, report.h5)"),
        (job, "upload_report", "upload_report (3 PUTs)"),
        (state.StateDir, "write", "StateDir.write"),
    ]
    for owner, attr, name in targets:
        _wrap(owner, attr, name, missing)
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t1 = time.perf_counter()
    code = cli.main(argv)
    main_s = time.perf_counter() - t1
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    if out_dir:
        rec = {"rank": int(rank), "startup_s": T_WRAPPER - _process_start(), "import_s": import_s,
               "main_s": main_s, "exit": code,
               "cpu_s": ru1.ru_utime + ru1.ru_stime, "main_cpu_s": (ru1.ru_utime + ru1.ru_stime) -
               (ru0.ru_utime + ru0.ru_stime), "maxrss_kib": ru1.ru_maxrss,
               "phases": {k: {"calls": v[0], "wall_s": v[1], "cpu_s": v[2]} for k, v in PHASES.items()},
               "missing": missing}
        with open(os.path.join(out_dir, f"rank-{rank}.json"), "w") as f:
            json.dump(rec, f, indent=1)
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
