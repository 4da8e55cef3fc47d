"""Planner scale benchmark: a synthetic namespace of N entries (default 10,000,000) planned in bounded memory.

Usage (with the project's virtualenv):

    python bench/planner.py [--entries 10000000] [--per-dir 10000] [--ranks 2] [--mode both|rss|trace]
                            [--json FILE]

    python bench/planner.py --entries 1000000            # about half a minute per measurement
    python bench/planner.py                                # the issue's figure: 10 million entries

No file is created and nothing is sent anywhere. What runs is the export's own planning path, fed by a
synthetic file system:

* `pfsxport.export.Transfer.scan` (the real one) lists each directory; only its `scan_dir` (the lstat of
  every child) is replaced by a generator of stat results, deterministic per directory. The root holds
  N / per_dir directories; each holds per_dir - 1 entries (so N entries in all, directories included): 1%
  symlinks, the rest files of a realistic size mix (80% under 64 KiB, 18% up to 8 MiB, 1.9% up to the 64 MiB
  multipart threshold, 0.09% from 64 MiB to 1 GiB, 0.01% from 1 to 16 GiB). `Transfer.route` turns them into
  BatchUnits (64 entries) and LargeFileUnits, plus a DirUnit per subdirectory, exactly as in an export.
* A real `pfsxport.schedule.Scheduler` holds and hands out the units to R simulated ranks through
  `serve()`, the call the MPI service and the local channel make. Each simulated rank asks like
  `pfsxport.worker.Worker` does (up to 8 light and 2 x parts_in_flight heavy units), executes what it got and
  brings the outcomes to its next call, so the scheduler's queues (directory stack, batches, large files,
  parts, open uploads, in-flight units) behave as in an export where every unit takes one round.
* A LargeFileUnit is planned as `Transfer.start_large` does after its stat: `plan_parts(size, layout,
  part_size)` with the default part size, then an UploadStarted. The layout is the one the scan's `route`
  attached to the unit (one batched look-up per directory), else `layouts.layout(path)`; either way it comes
  from a real `pfsxport.lustre.LayoutSource` whose lfs process is replaced by text in the YAML of `lfs
  getstripe -y` (a three-component PFL layout with objects), so the real section splitting, parser and LRU
  cache run.
  The scheduler turns the parts into PartUnits; each comes back as a PartDone; the FinishUnit ends as a row.
* Batches end as one ReportRow per entry, as `Transfer.export_entry` makes them. The sink drops the rows:
  the export's ReportWriter writes them to disk as they come (report.py), so it holds none.

Not modelled: the S3 requests and file reads (no memory held beyond a unit), the manifest reader (an
SQLite page cache of 8 MiB, one directory's rows at a time), hard links (Scheduler.inodes keeps one record per
multiply-linked inode for the whole leg; this namespace has none). All simulated ranks live in this one
process, so the figure is rank 0's (which holds the scheduler) plus every other rank's in-flight units: an
upper bound for rank 0.

Measurements. Each figure comes from a fresh child process (ru_maxrss is a high-water mark and tracemalloc
slows the run and adds its own memory):
* rss: bytes per entry = (ru_maxrss at the end - VmRSS just before the run) / N, and entries/s = N / wall
  time of the run (scan, route, schedule, plan, drain);
* trace: tracemalloc's peak of Python allocations during the run / N (the run is 2-3x slower traced).
The result line also gives the peak lengths of the scheduler's queues. The issue's target is <= 200 bytes per
entry; what a bounded planner shows is a per-entry figure that falls as N grows (the peak is one directory's
worth of units, not the tree).
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import random
import resource
import stat as _stat
import subprocess
import sys
import time
import tracemalloc

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from pfsxport.config import TransferSettings
from pfsxport.export import Transfer, TransferOptions
from pfsxport.export import scan as transfer_mod
from pfsxport.lustre import LayoutSource
from pfsxport.model import (
    BatchUnit,
    DirUnit,
    FinishUnit,
    LargeFileUnit,
    PartDone,
    PartUnit,
    ReportRow,
    RowStatus,
    UnitOutcome,
    UploadStarted,
)
from pfsxport.plan import S3_MAX_OBJECT, GiB, KiB, MiB, plan_parts
from pfsxport.schedule import STOP, WAIT, Request, Scheduler
from pfsxport.walk import ScanResult

FS_ROOT = "/synthetic/fs"
DIR_MODE = _stat.S_IFDIR | 0o755
FILE_MODE = _stat.S_IFREG | 0o644
LINK_MODE = _stat.S_IFLNK | 0o777
T0 = 1_700_000_000_000_000_000  # ns


class _Stat:
    """What Transfer.scan and Entry.from_stat read of an os.stat_result."""

    __slots__ = (
        "st_atime_ns",
        "st_ctime_ns",
        "st_gid",
        "st_ino",
        "st_mode",
        "st_mtime_ns",
        "st_nlink",
        "st_size",
        "st_uid",
    )

    def __init__(self, mode: int, size: int, ino: int):
        self.st_mode = mode
        self.st_size = size
        self.st_uid = self.st_gid = 1000
        self.st_atime_ns = self.st_mtime_ns = self.st_ctime_ns = T0 + ino
        self.st_ino = ino
        self.st_nlink = 2 if mode == DIR_MODE else 1


def _size(rng: random.Random) -> int:
    x = rng.random()
    if x < 0.80:
        return rng.randrange(0, 64 * KiB)
    if x < 0.98:
        return rng.randrange(64 * KiB, 8 * MiB)
    if x < 0.999:
        return rng.randrange(8 * MiB, 64 * MiB)
    if x < 0.9999:
        return rng.randrange(64 * MiB, 1 * GiB)
    return rng.randrange(1 * GiB, 16 * GiB)


class Namespace:
    """N entries: the root holds `dirs` directories, each holding per_dir - 1 entries (the last directory
    fewer, so that the total is exactly N)."""

    def __init__(self, entries: int, per_dir: int):
        if entries < 2 or per_dir < 2:
            raise ValueError("need at least 2 entries and 2 per directory")
        self.entries = entries
        self.dirs = max(1, -(-entries // per_dir))
        self.per_dir = per_dir
        self.last = entries - self.dirs - (self.dirs - 1) * (per_dir - 1)  # children of the last directory (>= 0)

    def children(self, rel: str) -> list[tuple[bytes, _Stat]]:
        if rel == "":
            return [(b"d%06d" % d, _Stat(DIR_MODE, 4096, 1 + d)) for d in range(self.dirs)]
        d = int(rel[1:])
        n = self.last if d == self.dirs - 1 else self.per_dir - 1
        rng = random.Random(d)
        base = (d + 1) * 1_000_000_000
        out = []
        for i in range(n):
            if rng.random() < 0.01:
                out.append((b"l%07d" % i, _Stat(LINK_MODE, 24, base + i)))
            else:
                out.append((b"f%07d" % i, _Stat(FILE_MODE, _size(rng), base + i)))
        return out

    def scan_dir(self, fs_root: str, rel: str, skip=frozenset()) -> ScanResult:
        return ScanResult(self.children(rel))


def pfl_yaml(path: str) -> str:
    """`lfs getstripe -y` (2.15+) of a three-component PFL file: 1 MiB on one OST, up to 1 GiB on four,
    then eight OSTs of 16 MiB stripes, all instantiated (the file is large)."""
    h = hash(path) & 0xFFFF
    comps = [(1, 0, 1 * MiB, 1 * MiB, [h % 64]),
             (2, 1 * MiB, 1 * GiB, 4 * MiB, [(h + k) % 64 for k in range(4)]),
             (3, 1 * GiB, "EOF", 16 * MiB, [(h + 7 * k) % 64 for k in range(8)])]
    out = ["lcm_layout_gen:    3", "lcm_mirror_count:  1", f"lcm_entry_count:   {len(comps)}", "components:"]
    for cid, start, end, stripe, osts in comps:
        out += [f"  - lcme_id:             {cid}", "    lcme_mirror_id:      0", "    lcme_flags:          init",
                f"    lcme_extent.e_start: {start}", f"    lcme_extent.e_end:   {end}", "    sub_layout:",
                f"      lmm_stripe_count:  {len(osts)}", f"      lmm_stripe_size:   {stripe}",
                "      lmm_pattern:       raid0", "      lmm_layout_gen:    0", f"      lmm_stripe_offset: {osts[0]}",
                "      lmm_objects:"]
        for o in osts:
            out += [f"      - l_ost_idx: {o}", f"        l_fid:     0x{o + 1:x}00000000:0x{h:x}:0x0"]
    return "\n".join(out)


class SyntheticLayouts(LayoutSource):
    """The real LayoutSource (batching, section splitting, parser, LRU cache); only the lfs process is text."""

    def __init__(self, default_stripe: int):
        super().__init__("synthetic-lfs", default_stripe)
        self.processes = 0

    def _run(self, args):
        self.processes += 1
        return "\n".join(pfl_yaml(a) for a in args) + "\n", "", True, "", False


class _Sink:
    def __init__(self):
        self.rows = 0
        self.succeeded = 0

    def __call__(self, rows: list[ReportRow]) -> None:  # ReportWriter.add writes them out; here they go
        self.rows += len(rows)
        self.succeeded += sum(1 for r in rows if r.status is RowStatus.SUCCEEDED)


class Ranks:
    """Executes units the way a rank would, minus the I/O."""

    def __init__(self, transfer: Transfer, part_size: int):
        self.transfer = transfer
        self.part_size = part_size
        self.uploads = 0
        self.parts = 0
        self.large = 0

    def execute(self, unit, rank: int) -> UnitOutcome:
        t = self.transfer
        if isinstance(unit, DirUnit):  # the real scan: Entry.from_stat, route, subdirectory scans
            out = t.scan(dataclasses.replace(unit, entry=None))
            if unit.entry is not None:  # the directory's own object first, as Transfer.export_entry reports it
                e = unit.entry
                out.rows.insert(0, ReportRow(e.path, e.kind.value, 0, RowStatus.SUCCEEDED, checksum="AAAAAA==",
                                             rank=rank, seconds=0.001))
            return out
        if isinstance(unit, BatchUnit):  # Transfer.export_entry per entry: one row each
            return UnitOutcome(unit.uid, rows=[
                ReportRow(e.path, e.kind.value, e.size, RowStatus.SUCCEEDED, bytes=e.size, parts=1,
                          checksum="AAAAAA==", rank=rank, seconds=0.001) for e in unit.entries],
                bytes_sent=sum(e.size for e in unit.entries))
        if isinstance(unit, LargeFileUnit):  # Transfer.start_large after its fstat (the file did not change)
            e = unit.entry
            layout = getattr(unit, "layout", None)  # found by the scan's batched look-up, when there is one
            if layout is None:
                layout = t.layouts.layout(t.abspath(e.path))
            parts = plan_parts(e.size, layout, self.part_size)
            self.uploads += 1
            self.large += 1
            return UnitOutcome(unit.uid, started=[UploadStarted(f"upload-{self.uploads:012d}", e.path, e, parts,
                                                                unit.attempt, time.time())])
        if isinstance(unit, PartUnit):
            self.parts += 1
            p = unit.part
            return UnitOutcome(unit.uid, parts=[PartDone(unit.upload_id, p.number, f'"{p.number:032x}"', "AAAAAA==",
                                                         p.number, p.length)], bytes_sent=p.length)
        if isinstance(unit, FinishUnit):
            e = unit.entry
            return UnitOutcome(unit.uid, rows=[ReportRow(
                e.path, e.kind.value, e.size, RowStatus.SUCCEEDED, bytes=sum(n for _, n in unit.crcs),
                parts=len(unit.parts), checksum=f"AAAAAA==-{len(unit.parts)}", rank=rank,
                osts=",".join(map(str, unit.osts)), seconds=1.0)])
        raise TypeError(f"unexpected unit {unit!r}")


def _vm_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def plan(entries: int = 10_000_000, per_dir: int = 10_000, ranks: int = 2, trace: bool = False) -> dict:
    """Plan a synthetic namespace of `entries` entries through the export's planning path; figures as a dict."""
    ts = TransferSettings()
    ns = Namespace(entries, per_dir)
    real_scan_dir = transfer_mod.scan_dir
    transfer_mod.scan_dir = ns.scan_dir  # the only stand-in: the lstat of a directory's children
    try:
        return _plan(ns, ts, ranks, trace)
    finally:
        transfer_mod.scan_dir = real_scan_dir


def _plan(ns: Namespace, ts: TransferSettings, ranks: int, trace: bool) -> dict:
    entries, per_dir = ns.entries, ns.per_dir
    layouts = SyntheticLayouts(ts.stripe_size)
    opts = TransferOptions(part_size=ts.part_size, multipart_threshold=ts.multipart_threshold,
                           max_object_size=S3_MAX_OBJECT, batch_entries=ts.batch_entries,
                           busy_retries=ts.busy_retries)
    transfer = Transfer(FS_ROOT, None, None, layouts, opts)
    exe = Ranks(transfer, ts.part_size)
    sink = _Sink()
    want_light, want_heavy = 8, 2 * ts.parts_in_flight  # pfsxport.worker.Worker's asks with empty queues
    gc.collect()
    baseline = _vm_rss()
    tracing_before = tracemalloc.is_tracing()
    if trace:
        if tracing_before:
            tracemalloc.reset_peak()
        else:
            tracemalloc.start()
    t0 = time.perf_counter()
    sched = Scheduler([DirUnit("")], ranks)
    held: list[list] = [[] for _ in range(ranks)]
    stopped = [False] * ranks
    peak = {"dirs": 0, "batches": 0, "large": 0, "parts": 0, "uploads": 0, "outstanding": 0, "held": 0}
    exchanges = 0
    while not all(stopped):
        for r in range(ranks):
            if stopped[r]:
                continue
            outcomes = [exe.execute(u, r) for u in held[r]]
            for o in outcomes:  # as each rank's worker does: its rows go to its own shard
                sink(o.rows)
                o.rows = []
            reply = sched.serve(r, Request(outcomes, want_light, want_heavy)).units
            exchanges += 1
            if reply is STOP:
                stopped[r], held[r] = True, []
                continue
            held[r] = [] if reply is WAIT else reply
            for k, v in (("dirs", len(sched.dirs)), ("batches", len(sched.batches)), ("large", len(sched.large)),
                         ("parts", len(sched.parts)), ("uploads", len(sched.uploads)),
                         ("outstanding", len(sched.outstanding)), ("held", sum(map(len, held)))):
                peak[k] = max(peak[k], v)
    wall = time.perf_counter() - t0
    traced_peak = None
    if trace:
        traced_peak = tracemalloc.get_traced_memory()[1]
        if not tracing_before:
            tracemalloc.stop()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    grown = max(0, maxrss - baseline)
    out = {"entries": entries, "directories": ns.dirs, "per_dir": per_dir, "ranks": ranks, "rows": sink.rows,
           "succeeded": sink.succeeded, "large_files": exe.large, "parts": exe.parts,
           "lfs_processes": layouts.processes, "exchanges": exchanges, "wall_s": round(wall, 3),
           "entries_per_s": round(entries / wall, 1), "baseline_rss": baseline, "peak_rss": maxrss,
           "rss_bytes_per_entry": round(grown / entries, 2), "traced": trace, "peak_queues": peak}
    if trace:
        out["tracemalloc_peak"] = traced_peak
        out["tracemalloc_bytes_per_entry"] = round(traced_peak / entries, 2)
    return out


def _child(args, mode: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", mode, "--entries", str(args.entries),
           "--per-dir", str(args.per_dir), "--ranks", str(args.ranks)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _mib(n: int) -> str:
    return f"{n / MiB:,.1f} MiB"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=10_000_000)
    ap.add_argument("--per-dir", type=int, default=10_000)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--mode", choices=("both", "rss", "trace"), default="both",
                    help="rss: peak RSS and entries/s; trace: tracemalloc peak; both: one child process each")
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--child", choices=("rss", "trace"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(plan(args.entries, args.per_dir, args.ranks, trace=args.child == "trace")))
        return 0
    results = {m: _child(args, m) for m in (("rss", "trace") if args.mode == "both" else (args.mode,))}
    for m, r in results.items():
        if r["succeeded"] != r["entries"]:
            print(f"ERROR ({m}): {r['succeeded']} of {r['entries']} entries planned and drained", file=sys.stderr)
            return 1
    r = results.get("rss") or results["trace"]
    print(f"planner: {r['entries']:,} entries in {r['directories']:,} directories, {r['ranks']} simulated ranks, "
          f"{r['large_files']:,} multipart files ({r['parts']:,} parts, {r['lfs_processes']:,} layout look-ups)")
    if "rss" in results:
        x = results["rss"]
        print(f"  rss:   {x['wall_s']:.1f} s, {x['entries_per_s']:,.0f} entries/s; peak RSS {_mib(x['peak_rss'])} "
              f"(baseline {_mib(x['baseline_rss'])}): {x['rss_bytes_per_entry']:.1f} bytes/entry")
    if "trace" in results:
        x = results["trace"]
        print(f"  trace: {x['wall_s']:.1f} s (traced); tracemalloc peak {_mib(x['tracemalloc_peak'])}: "
              f"{x['tracemalloc_bytes_per_entry']:.1f} bytes/entry")
    print("  peak scheduler queues: " + ", ".join(f"{k} {v:,}" for k, v in r["peak_queues"].items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
