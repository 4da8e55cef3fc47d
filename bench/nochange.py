"""No-change re-export benchmark: pfsxport against `rclone sync --size-only --checkers 32`, same server,
same tree, same run (bench/README.md: re-running an export of 200,000 small files that have
not changed must be >= 5x faster than rclone --size-only; also reported for dataset A, 20,000 files).

Usage (with the project's virtualenv; needs rclone on PATH, e.g. Debian's `apt-get install rclone`, and
optionally py-spy in the virtualenv for the profile):

    python bench/nochange.py [--files 20000,200000] [--ranks 1,2] [--repeat 3] [--workdir DIR]
                             [--out bench/results] [--timeout 1800] [--no-profile] [--no-startup]

    python bench/nochange.py --files 2000 --ranks 1,2 --repeat 1          # smoke run, about a minute
    python bench/nochange.py --files 20000,200000 --workdir /tmp/nc-data   # the issue's figures

What it does, on ONE SeaweedFS (pfsxport.localstore.SeaweedFS, started in a temporary directory):
1. Builds each tree (or reuses it from --workdir): N x 4 KiB random files, in 200 leaf directories for
   N <= 20,000 (exactly dataset A of bench/run.py: 10 groups x 20 leaves, so the two benchmarks can share
   a --workdir) and in N/500 leaf directories above (400 for 200,000: 20 groups x 20 leaves).
2. Initial upload with pfsxport into a fresh bucket `nochange-N`:
       mpiexec -n 2 python -m pfsxport export --fs-root TREE --repository s3://nochange-N/
               --state-dir STATE --progress off
   with the server's AWS_* variables, then checks the bucket (every file with its size, nothing else but
   directory objects `dir/` and reports under pfsxport-reports/, a sample read back byte for byte) and
   measures the manifest: STATE/manifests/*/*.sqlite (the shards) size on disk / entries.
3. rclone is configured for the same server by an environment-variable remote (RCLONE_CONFIG_S3_TYPE=s3,
   PROVIDER=Other, ENDPOINT, ACCESS_KEY_ID, SECRET_ACCESS_KEY, REGION, FORCE_PATH_STYLE=true,
   ENV_AUTH=false), with AWS_CA_BUNDLE and the other CA variables removed from its environment. It syncs
   into the SAME bucket, which already holds the same files with the same sizes:
       rclone sync --size-only --checkers 32 TREE/ s3:nochange-N/ --exclude /pfsxport-reports/** -v
               --use-json-log
   (the exclude keeps pfsxport's reports; rclone ignores the `dir/` marker objects). Each rclone run's
   final JSON stats must show 0 transfers, 0 deletes, 0 errors and N checks, i.e. a real no-change run.
4. One untimed warm-up run of each tool, then --repeat times (tool order alternating from repeat to
   repeat): (a) pfsxport no-change re-export under `mpiexec -n R` for each R in --ranks, every rank
   wrapped by bench/rss.py (peak RSS and CPU per rank), same STATE; it must exit 0 and its task must be
   SUCCEEDED with Status.TotalCount 0 (`pfsxport task describe --state-dir STATE TASK_ID`); (b) the
   rclone sync. Before each run: a stat walk of the tree (dentry/inode cache warm), sync, and the server
   left to go idle. Measured: wall time, client CPU (user+sys of the whole child tree), server CPU
   (weed process), peak RSS (per rank for pfsxport, the process for rclone).
5. Start-up (unless --no-startup): the same for a tree of ONE file (bucket nochange-one): pfsxport
   no-change re-export per R, rclone, and what part of it is the launcher and the imports
   (`mpiexec -n R python -c pass`, and `... -c "from mpi4py import MPI; import pfsxport.job, boto3, h5py"`);
   plus (unless --no-profile) one py-spy --gil profile of it at 500 Hz.
6. Where the time goes (unless --no-profile), for the largest tree:
   - phases: --repeat no-change re-exports per R under bench/phases.py, which times pfsxport's own
     functions from the outside (MPI init, S3Store.__init__, _prepare/probe, the walk, Transfer.scan,
     scan_dir, Reader.directory, Transfer.changed, _finish/write_h5/upload_report, ...): median wall and
     thread-CPU seconds per rank;
   - per-entry costs: the pieces of a no-change scan run in one thread in this process (find's C lstat
     walk, Python scandir + lstat, pfsxport's scan_dir, Reader.directory, Transfer.scan, and a lean
     bytes/stat-tuple variant), in microseconds per entry;
   - profiles of one no-change re-export each (sampling slows imports a lot, so the phases above are
     the figures to quote; the profiles tell which functions):
     * py-spy (if installed), twice: `py-spy record --subprocesses --threads -r 100 [--gil] --format raw
       -- mpiexec -n max(R) python -m pfsxport export ...`, each summarized as the top functions by
       inclusive ("cumulative") and self seconds over all ranks and threads, and seconds per rank and
       thread kind. With --gil only the thread holding the GIL in each process is sampled; without,
       every non-idle thread (threads waiting for the GIL count too);
     * cProfile of a single-process run (`python -m cProfile -o prof.out -m pfsxport export ...`, no
       mpiexec): top functions by cumulative seconds. cProfile only sees the main thread; the directory
       scans run in the worker's thread pool, which py-spy and the phases see.
   The machine is shared (other sessions' tests and benchmarks may run): before each run the script also
   waits up to 15 s for the whole machine to go quiet (< 0.5 core busy), and it records the CPU that
   everything else used during each run ("others' CPU s", from /proc/stat), so a disturbed run shows.
7. Prints a Markdown table (files, tool, ranks, median wall s (min-max), files checked/s, client CPU s,
   server CPU s, others' CPU s, peak RSS per rank, ratio rclone/pfsxport of medians with the range of
   same-repeat pairs) plus the start-up, manifest, phase, per-entry and profile sections; writes
   table.md, raw.json, profiles and every run's logs to --out/nochange-<timestamp>/. Never asserts a speed; exits 1 if any run failed or was not a
   no-change run, or a bucket check failed.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import pstats
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import run as benchrun  # noqa: E402  (bench/run.py: datasets, measuring, SeaweedFS helpers)
from run import (  # noqa: E402
    CA_VARS,
    KiB,
    build_dataset,
    delete_bucket,
    list_bucket,
    machine,
    mpiexec_binary,
    prepare_bucket,
    run_measured,
    wait_idle,
)

from pfsxport.localstore import ACCESS_KEY, SECRET_KEY, SeaweedFS  # noqa: E402

REPORTS = "pfsxport-reports/"
TARGET = 5.0


# ---------------------------------------------------------------------------------------------- trees

def tree_spec(n: int) -> dict:
    """n x 4 KiB; 200 leaf dirs up to 20,000 files (dataset A's layout), n/500 above (400 for 200k)."""
    if n <= 20_000:
        leaves = min(200, n)
    else:
        leaves = max(200, round(n / 500))
    groups = max(1, leaves // 20) if leaves >= 20 else 1
    name = "A" if (n, leaves, groups) == (20_000, 200, 10) else f"nochange-{n}"
    return {"name": name, "files": n, "size": 4 * KiB, "leaf_dirs": leaves, "groups": groups}


def stat_walk(path: str) -> tuple[int, int, float]:
    """lstat everything (dentry and inode caches warm, as for a re-export); (files, dirs, seconds)."""
    t0 = time.monotonic()
    files = dirs = 0
    stack = [path]
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                e.stat(follow_symlinks=False)
                if e.is_dir(follow_symlinks=False):
                    dirs += 1
                    stack.append(e.path)
                else:
                    files += 1
    return files, dirs, time.monotonic() - t0


def check_bucket(s3: SeaweedFS, bucket: str, root: str, expected: dict[str, int], rng: random.Random) -> dict:
    """Every file present with its size; nothing else but directory objects and reports; a sample
    read back byte for byte."""
    t0 = time.monotonic()
    got = list_bucket(s3, bucket)
    missing = [k for k in expected if k not in got]
    wrong = [k for k in expected if k in got and got[k] != expected[k]]
    extra = [k for k in got if k not in expected]
    dir_objs = [k for k in extra if k.endswith("/") and not k.startswith(REPORTS)]
    reports = [k for k in extra if k.startswith(REPORTS)]
    stray = [k for k in extra if not (k.endswith("/") or k.startswith(REPORTS))]
    c = s3.client()
    mismatched = []
    present = [k for k in expected if got.get(k) == expected[k]]
    for key in rng.sample(present, min(8, len(present))):
        body = c.get_object(Bucket=bucket, Key=key)["Body"].read()
        with open(os.path.join(root, key), "rb") as f:
            if f.read() != body:
                mismatched.append(key)
    ok = not (missing or wrong or stray or mismatched)
    return {"ok": ok, "objects": len(got), "files_ok": len(present), "files_expected": len(expected),
            "missing": len(missing), "missing_sample": missing[:5], "wrong_size": len(wrong),
            "stray": len(stray), "stray_sample": stray[:10], "dir_objects": len(dir_objs),
            "report_objects": len(reports), "content_mismatch": mismatched,
            "seconds": round(time.monotonic() - t0, 1)}


# ---------------------------------------------------------------------------------------------- machine load

def sys_busy() -> float:
    """CPU seconds the whole machine has been busy (all cores; /proc/stat, idle and iowait excluded)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / benchrun.CLK_TCK


def wait_machine_quiet(max_wait: float = 15.0, window: float = 1.0, threshold: float = 0.5) -> float:
    """Others share this machine (tests, other benchmarks): wait up to max_wait for the whole machine
    to use < threshold cores over `window`; returns the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < max_wait:
        b0 = sys_busy()
        time.sleep(window)
        if (sys_busy() - b0) / window < threshold:
            break
    return time.monotonic() - t0


def measured(cmd: list[str], env: dict, base: str, timeout: float, server_pid: int) -> dict:
    """run_measured plus the CPU that everything else on the machine used meanwhile (others_cpu_s)."""
    b0 = sys_busy()
    res = run_measured(cmd, env, base + ".stdout", base + ".stderr", timeout, server_pid)
    res["machine_busy_s"] = sys_busy() - b0
    res["others_cpu_s"] = max(0.0, res["machine_busy_s"] - res["client_cpu_s"] - res["server_cpu_s"])
    return res


# ---------------------------------------------------------------------------------------------- tools

def pfsxport_cmd(root: str, bucket: str, state: str, rssdir: str | None) -> list[str]:
    wrap = [sys.executable, "-S", os.path.join(HERE, "rss.py"), "--"] if rssdir else []
    return wrap + [sys.executable, "-m", "pfsxport", "export", "--fs-root", root, "--repository",
                   f"s3://{bucket}/", "--state-dir", state, "--progress", "off"]


def describe(state: str, task_id: str, env: dict) -> dict:
    p = subprocess.run([sys.executable, "-m", "pfsxport", "task", "describe", "--state-dir", state, task_id],
                       capture_output=True, text=True, env=env, timeout=120)
    try:
        return json.loads(p.stdout)["DataRepositoryTasks"][0]
    except (ValueError, KeyError, IndexError):
        return {"error": (p.stdout + p.stderr)[-500:]}


def summary_line(stderr_path: str) -> tuple[str, list[str]]:
    """pfsxport's final 'task ... N unchanged ...' line and its non-INFO lines."""
    final, notes = "", []
    with open(stderr_path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if " unchanged, " in line and " INFO task " in line:
                final = line.split(" INFO ", 1)[1]
            elif " INFO " not in line and line.strip():
                notes.append(line[:300])
    return final, notes[:20]


def run_pfsxport(ctx, n_ranks: int, root: str, bucket: str, state: str, tag: str,
                 expect_nochange: bool = True) -> dict:
    rssdir = tempfile.mkdtemp(prefix="rss-", dir=ctx.tmp)
    cmd = [mpiexec_binary(), "-n", str(n_ranks)] + pfsxport_cmd(root, bucket, state, rssdir)
    env = dict(os.environ, **ctx.s3.env(), BENCH_RSS_DIR=rssdir)
    base = os.path.join(ctx.logdir, tag)
    res = measured(cmd, env, base, ctx.args.timeout, ctx.s3.proc.pid)
    per_rank = benchrun.read_rank_files(rssdir, n_ranks)
    shutil.rmtree(rssdir, ignore_errors=True)
    res["ranks_detail"] = per_rank
    res["ranks_cpu_s"] = sum(r["utime"] + r["stime"] for r in per_rank) if len(per_rank) == n_ranks else None
    res["rss_per_rank_mib"] = [round(r["maxrss_kib"] / KiB, 1) for r in per_rank]
    res["peak_rss_mib"] = max(res["rss_per_rank_mib"], default=None)
    with open(base + ".stdout", errors="replace") as f:
        res["task_id"] = (f.read().split() or [""])[0]
    res["final"], res["notes"] = summary_line(base + ".stderr")
    task = describe(state, res["task_id"], env) if res["task_id"].startswith("task-") else {"error": "no task id"}
    res["task"] = {k: task.get(k) for k in ("TaskId", "Lifecycle", "Status", "error") if k in task}
    status = task.get("Status", {})
    res["total_count"] = status.get("TotalCount")
    m = re.search(r"(\d+) unchanged", res["final"])
    res["unchanged"] = int(m.group(1)) if m else None
    ok = res["rc"] == 0 and task.get("Lifecycle") == "SUCCEEDED"
    if expect_nochange:
        ok = ok and res["total_count"] == 0
    res["ok"] = ok
    res["cmd"] = cmd
    return res


def rclone_env(ctx) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in CA_VARS and not k.startswith("RCLONE_")}
    env.update({
        "RCLONE_CONFIG": os.path.join(ctx.tmp, "rclone-none.conf"),  # no config file: the env remote only
        "RCLONE_CONFIG_S3_TYPE": "s3", "RCLONE_CONFIG_S3_PROVIDER": "Other",
        "RCLONE_CONFIG_S3_ENV_AUTH": "false", "RCLONE_CONFIG_S3_ENDPOINT": ctx.s3.endpoint,
        "RCLONE_CONFIG_S3_ACCESS_KEY_ID": ACCESS_KEY, "RCLONE_CONFIG_S3_SECRET_ACCESS_KEY": SECRET_KEY,
        "RCLONE_CONFIG_S3_REGION": "us-east-1", "RCLONE_CONFIG_S3_FORCE_PATH_STYLE": "true",
    })
    return env


def rclone_stats(stderr_path: str) -> dict:
    """The last JSON stats record rclone logged (-v --use-json-log), and its non-INFO messages."""
    stats, notes = None, []
    with open(stderr_path, errors="replace") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                notes.append(line.strip()[:300])
                continue
            if isinstance(rec, dict) and isinstance(rec.get("stats"), dict):
                stats = rec["stats"]
            elif isinstance(rec, dict) and rec.get("level") not in ("info", "debug"):
                notes.append(f"{rec.get('level')}: {rec.get('msg', '')}"[:300])
    return {"stats": stats, "notes": notes[:20]}


def run_rclone(ctx, root: str, bucket: str, n_files: int | None, tag: str) -> dict:
    cmd = [ctx.rclone, "sync", "--size-only", "--checkers", "32", root + "/", f"s3:{bucket}/",
           "--exclude", f"/{REPORTS}**", "-v", "--use-json-log"]
    base = os.path.join(ctx.logdir, tag)
    res = measured(cmd, rclone_env(ctx), base, ctx.args.timeout, ctx.s3.proc.pid)
    res.update(rclone_stats(base + ".stderr"))
    st = res["stats"] or {}
    res["transfers"] = st.get("transfers")
    res["deletes"] = st.get("deletes")
    res["checks"] = st.get("checks")
    res["errors"] = st.get("errors")
    res["ranks_cpu_s"] = res["client_cpu_s"]
    res["peak_rss_mib"] = round(res["tree_maxrss_mib"], 1)
    res["rss_per_rank_mib"] = [res["peak_rss_mib"]]
    res["ok"] = (res["rc"] == 0 and st.get("transfers") == 0 and st.get("deletes", 0) == 0
                 and st.get("errors", 0) == 0 and (n_files is None or st.get("checks") == n_files))
    res["cmd"] = cmd
    return res


def settle(ctx, root: str) -> float:
    stat_walk(root)
    os.sync()
    return wait_idle(ctx.s3.proc.pid) + wait_machine_quiet()


# ---------------------------------------------------------------------------------------------- manifest

def manifest_size(state: str) -> dict:
    """Size on disk of the manifest's shards (entries-NN.sqlite, uploads.sqlite), summed."""
    out: dict = {}
    for mdir in glob.glob(os.path.join(state, "manifests", "*")):
        dbs = sorted(glob.glob(os.path.join(mdir, "*.sqlite")))
        entries = pages = free = key_bytes = size = alloc = extra = page = 0
        for db in dbs:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                if db.endswith("uploads.sqlite"):
                    n = kb = 0
                else:
                    n = con.execute("SELECT count(*) FROM entries").fetchone()[0]
                    kb = con.execute("SELECT sum(length(dir) + length(name)) FROM entries").fetchone()[0] or 0
                page = con.execute("PRAGMA page_size").fetchone()[0]
                pages += con.execute("PRAGMA page_count").fetchone()[0]
                free += con.execute("PRAGMA freelist_count").fetchone()[0]
            finally:
                con.close()
            entries, key_bytes = entries + n, key_bytes + kb
            size += os.path.getsize(db)
            alloc += os.stat(db).st_blocks * 512
            extra += sum(os.path.getsize(p) for p in glob.glob(db + "-*"))
        out = {"path": mdir, "files": len(dbs), "bytes": size, "allocated_bytes": alloc, "side_files_bytes": extra,
               "entries": entries, "bytes_per_entry": size / entries if entries else None,
               "page_size": page, "pages": pages, "free_pages": free,
               "path_bytes_per_entry": key_bytes / entries if entries else None}
    return out


# ---------------------------------------------------------------------------------------------- profiles

def _short_path(path: str) -> str:
    for marker in ("/pfsxport/", "/site-packages/", "/lib/python3.11/", "/lib/python3"):
        if marker in path:
            rest = path.rsplit(marker, 1)[1]
            return "pfsxport/" + rest if marker == "/pfsxport/" else rest
    return path


def _frame_name(frame: str) -> str:
    """'func (path/to/file.py:123)' -> 'func (file.py)'; other labels unchanged."""
    m = re.match(r"^(.*) \((.*?):(\d+)\)$", frame)
    if not m:
        return frame
    return f"{m.group(1)} ({_short_path(m.group(2))})"


def summarize_pyspy(raw_path: str, rate: int, top: int = 25) -> dict:
    """Inclusive (cumulative) and self seconds per function from py-spy's collapsed stacks (--threads
    --subprocesses), summed over processes and threads; plus seconds per rank process and thread kind
    (MainThread, the worker pool `pfsxport`, `pfsxport-scheduler`, `pfsxport-monitor`)."""
    incl: dict[str, int] = {}
    selfc: dict[str, int] = {}
    per_proc: dict[str, int] = {}
    per_thread: dict[tuple[str, str], int] = {}
    rank0_pids: set[str] = set()
    total = 0
    with open(raw_path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            c = int(count)
            frames = stack.split(";")
            procs = [fr for fr in frames if fr.startswith("process ")]
            pid = procs[-1].split(":", 1)[0].split()[-1] if procs else "?"
            thread = next((fr for fr in frames if fr.startswith("thread ")), "")
            name = thread.split(": ", 1)[1] if ": " in thread else (thread or "?")
            kind = re.sub(r"_\d+$", "", name)
            if kind in ("pfsxport-scheduler", "pfsxport-monitor"):
                rank0_pids.add(pid)
            funcs = [_frame_name(fr) for fr in frames if not (fr.startswith("process ") or fr.startswith("thread "))]
            total += c
            per_proc[pid] = per_proc.get(pid, 0) + c
            per_thread[(pid, kind)] = per_thread.get((pid, kind), 0) + c
            for fn in set(funcs):
                incl[fn] = incl.get(fn, 0) + c
            if funcs:
                selfc[funcs[-1]] = selfc.get(funcs[-1], 0) + c
    sec = 1.0 / rate
    pids = sorted(per_proc, key=lambda p: (p not in rank0_pids, int(p) if p.isdigit() else 0))
    label = {p: (f"rank 0 (pid {p})" if p in rank0_pids else f"rank {i} (pid {p})") for i, p in enumerate(pids)}
    return {
        "samples": total, "seconds": total * sec, "rate_hz": rate,
        "per_process_s": {label[p]: round(per_proc[p] * sec, 2) for p in pids},
        "per_thread_s": {f"{label[p]} {k}": round(v * sec, 2)
                         for (p, k), v in sorted(per_thread.items(), key=lambda x: (pids.index(x[0][0]), -x[1]))},
        "top_inclusive": [(k, round(v * sec, 2), round(100 * v / total, 1)) for k, v in
                          sorted(incl.items(), key=lambda x: -x[1])[:top]] if total else [],
        "top_self": [(k, round(v * sec, 2), round(100 * v / total, 1)) for k, v in
                     sorted(selfc.items(), key=lambda x: -x[1])[:top]] if total else [],
    }


def summarize_cprofile(path: str, top: int = 25) -> list:
    st = pstats.Stats(path)
    rows = []
    for (fname, line, func), (_cc, nc, tt, ct, _callers) in st.stats.items():
        rows.append((f"{func} ({_short_path(fname)}:{line})", nc, round(tt, 3), round(ct, 3)))
    rows.sort(key=lambda r: -r[3])
    return rows[:top]


def pyspy_binary() -> str | None:
    here = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return here if os.path.exists(here) else shutil.which("py-spy")


def pyspy_run(ctx, root: str, bucket: str, state: str, ranks: int, tag: str, mode: str, rate: int = 100) -> dict:
    """One no-change re-export under `py-spy record --subprocesses --threads [--gil] --format raw`."""
    spy = pyspy_binary()
    env = dict(os.environ, **ctx.s3.env())
    raw = os.path.join(ctx.outdir, f"pyspy-{tag}-n{ranks}-{mode}.txt")
    cmd = [spy, "record", "--subprocesses", "--threads", "-r", str(rate), *(["--gil"] if mode == "gil" else []),
           "--format", "raw", "-o", raw, "--", mpiexec_binary(), "-n", str(ranks)] + \
        pfsxport_cmd(root, bucket, state, None)
    settle(ctx, root)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=ctx.args.timeout)
    wall = time.perf_counter() - t0
    with open(os.path.join(ctx.logdir, f"pyspy-{tag}-{mode}.log"), "w") as f:
        f.write(p.stdout + "\n----\n" + p.stderr)
    m = re.search(r"\btask-[0-9a-f]+\b", p.stdout)
    task = describe(state, m.group(0), env) if m else {}
    return {"cmd": cmd, "rc": p.returncode, "wall_s": wall, "ranks": ranks,
            "total_count": task.get("Status", {}).get("TotalCount"),
            "raw": raw, **(summarize_pyspy(raw, rate) if os.path.exists(raw) else {})}


def profile(ctx, root: str, bucket: str, state: str, ranks: int, tag: str) -> dict:
    out: dict = {}
    env = dict(os.environ, **ctx.s3.env())
    if pyspy_binary():
        for mode in ("gil", "active"):
            out[f"pyspy_{mode}"] = pyspy_run(ctx, root, bucket, state, ranks, tag, mode)
    # cProfile: one process, no mpiexec (a world of one); main thread only
    prof = os.path.join(ctx.outdir, f"cprofile-{tag}.out")
    cmd = [sys.executable, "-m", "cProfile", "-o", prof, "-m", "pfsxport", "export", "--fs-root", root,
           "--repository", f"s3://{bucket}/", "--state-dir", state, "--progress", "off"]
    settle(ctx, root)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=ctx.args.timeout)
    wall = time.perf_counter() - t0
    with open(os.path.join(ctx.logdir, f"cprofile-{tag}.log"), "w") as f:
        f.write(p.stdout + "\n----\n" + p.stderr)
    task_id = (p.stdout.split() or [""])[0]
    task = describe(state, task_id, env) if task_id.startswith("task-") else {}
    out["cprofile"] = {"cmd": cmd, "rc": p.returncode, "wall_s": wall, "path": prof,
                       "total_count": task.get("Status", {}).get("TotalCount"),
                       "top_cumulative": summarize_cprofile(prof) if os.path.exists(prof) else []}
    return out


# ---------------------------------------------------------------------------------------------- phases

def phases(ctx, root: str, bucket: str, state: str, ranks_list: list[int], tag: str) -> dict:
    """No-change re-exports under bench/phases.py (pfsxport's functions timed from outside), --repeat times
    per R; per rank and phase the median calls, wall and thread-CPU seconds."""
    out: dict = {}
    for r in ranks_list:
        recs: list[list[dict]] = []
        for rep in range(ctx.args.repeat):
            pdir = tempfile.mkdtemp(prefix="phases-", dir=ctx.tmp)
            cmd = [mpiexec_binary(), "-n", str(r), sys.executable, os.path.join(HERE, "phases.py"), "--", "export",
                   "--fs-root", root, "--repository", f"s3://{bucket}/", "--state-dir", state, "--progress", "off"]
            env = dict(os.environ, **ctx.s3.env(), BENCH_PHASES_DIR=pdir)
            settle(ctx, root)
            res = measured(cmd, env, os.path.join(ctx.logdir, f"phases-{tag}-n{r}-r{rep}"), ctx.args.timeout,
                           ctx.s3.proc.pid)
            ranks = benchrun.read_rank_files(pdir, r)
            shutil.rmtree(pdir, ignore_errors=True)
            if res["rc"] == 0 and len(ranks) == r:
                for x in ranks:
                    x["run_wall_s"] = res["wall_s"]
                recs.append(ranks)
        if not recs:
            continue
        per_rank = []
        for i in range(r):
            rs = [run[i] for run in recs]
            names = sorted({k for x in rs for k in x["phases"]})
            med = lambda vals: statistics.median(vals)  # noqa: E731
            per_rank.append({
                "rank": i, "runs": len(rs), "run_wall_s": med([x["run_wall_s"] for x in rs]),
                "startup_s": med([x["startup_s"] for x in rs]), "import_s": med([x["import_s"] for x in rs]),
                "main_s": med([x["main_s"] for x in rs]), "cpu_s": med([x["cpu_s"] for x in rs]),
                "maxrss_mib": max(x["maxrss_kib"] for x in rs) / KiB, "missing": rs[0].get("missing", []),
                "phases": {n: {"calls": med([x["phases"].get(n, {}).get("calls", 0) for x in rs]),
                               "wall_s": med([x["phases"].get(n, {}).get("wall_s", 0.0) for x in rs]),
                               "cpu_s": med([x["phases"].get(n, {}).get("cpu_s", 0.0) for x in rs])}
                           for n in names}})
        out[str(r)] = per_rank
    return out


def entry_costs(root: str, state: str, repeat: int = 3) -> dict:
    """Single-thread cost per entry of the pieces of a no-change scan, best of `repeat`, warm caches:
    the C floor (find's lstat walk), Python's scandir + lstat, pfsxport's scan_dir (adds sorting and an
    Entry per child), Reader.directory (manifest read per directory), Transfer.scan (both and the compare), and a
    lean variant of the whole per-directory check (bytes names, stat tuples compared to the manifest's
    rows directly, no Entry objects) that shows what the Python per-entry floor is."""
    from pfsxport.export import Transfer
    from pfsxport.manifest import Reader
    from pfsxport.model import DirUnit
    from pfsxport.walk import Root, scan_dir

    dbs = glob.glob(os.path.join(state, "manifests", "*", "entries-*.sqlite"))
    if not dbs:
        return {}
    db = os.path.dirname(dbs[0])
    rels = [""]
    for dirpath, dirnames, _ in os.walk(root):
        for d in dirnames:
            rels.append(os.path.relpath(os.path.join(dirpath, d), root))
    entries = sum(len(os.listdir(os.path.join(root, r))) for r in rels)

    def best(fn) -> float:
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    res: dict = {"entries": entries, "dirs": len(rels)}
    t = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(["find", root, "-printf", "%s %T@ %C@ %i %m %U %G\n"], stdout=subprocess.DEVNULL, check=True)
        t.append(time.perf_counter() - t0)
    res["find (C lstat walk, a process)"] = min(t)

    def py_lstat():
        for r in rels:
            with os.scandir(os.path.join(root, r)) as it:
                for d in it:
                    d.stat(follow_symlinks=False)
    res["python scandir + lstat"] = best(py_lstat)
    def pf_scan():
        tree = Root(root)
        for r in rels:
            scan_dir(tree, r)
    res["pfsxport scan_dir"] = best(pf_scan)
    reader = Reader(db)

    def pf_dir():
        for r in rels:
            reader.directory(r)
    res["pfsxport Reader.directory"] = best(pf_dir)
    transfer = Transfer(root, None, None, None, None, manifest=reader)
    changed_n = [0]

    def pf_whole():
        n = 0
        for r in rels:
            n += len(transfer.scan(DirUnit(r)).units)
        changed_n[0] = n - len(rels) + 1  # every subdirectory comes back as a scan unit
    res["pfsxport Transfer.scan (scan_dir + Reader.directory + compare)"] = best(pf_whole)
    res["pfsxport changed entries (must be 0)"] = changed_n[0]
    reader.close()
    con = sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True)
    q = "SELECT name, size, mtime, ctime, mode, uid, gid, ino FROM entries WHERE dir = ?"
    broot = os.fsencode(root)
    lean_changed = [0]

    def lean():
        n = 0
        for r in rels:
            brel = os.fsencode(r)
            prev = {row[0]: row[1:] for row in con.execute(q, (brel,))}
            with os.scandir(os.path.join(broot, brel) if brel else broot) as it:
                for d in it:
                    st = d.stat(follow_symlinks=False)
                    if prev.get(d.name) != (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode, st.st_uid,
                                            st.st_gid, st.st_ino):
                        n += 1
        lean_changed[0] = n
    res["lean: bytes names, stat tuple == manifest row"] = best(lean)
    res["lean changed entries (must be 0)"] = lean_changed[0]
    con.close()
    return res


# ---------------------------------------------------------------------------------------------- start-up

def startup(ctx, ranks_list: list[int], rng: random.Random) -> dict:
    root = os.path.join(ctx.data_root, "nochange-one")
    os.makedirs(root, exist_ok=True)
    f1 = os.path.join(root, "f000000.dat")
    if not os.path.exists(f1) or os.path.getsize(f1) != 4 * KiB:
        with open(f1, "wb") as f:
            f.write(os.urandom(4 * KiB))
    bucket, state = "nochange-one", os.path.join(ctx.tmp, "state-one")
    prepare_bucket(ctx.s3, bucket)
    first = run_pfsxport(ctx, max(ranks_list), root, bucket, state, "one-initial", expect_nochange=False)
    print(f"   1-file tree: initial export rc {first['rc']}, {first['wall_s']:.2f}s, TotalCount "
          f"{first['total_count']}", flush=True)
    out: dict = {"initial": first, "runs": []}
    env = dict(os.environ, **ctx.s3.env())
    imports = "from mpi4py import MPI; import pfsxport.cli, pfsxport.job, boto3, h5py, numpy"
    for rep in range(max(3, ctx.args.repeat)):
        for r in ranks_list:
            for what, cmd in (("launcher: mpiexec + python -c pass", [mpiexec_binary(), "-n", str(r),
                                                                        sys.executable, "-c", "pass"]),
                              ("launcher + imports (mpi4py, pfsxport, boto3, h5py)",
                               [mpiexec_binary(), "-n", str(r), sys.executable, "-c", imports])):
                base = os.path.join(ctx.logdir, f"one-{what.split(':')[0].split(' ')[0]}-{len(what)}-n{r}-r{rep}")
                wait_machine_quiet(5.0)
                res = measured(cmd, env, base, 300, ctx.s3.proc.pid)
                res.update({"tool": what, "ranks": r, "repeat": rep, "ok": res["rc"] == 0})
                out["runs"].append(res)
            settle(ctx, root)
            res = run_pfsxport(ctx, r, root, bucket, state, f"one-pfsxport-n{r}-r{rep}")
            res.update({"tool": "pfsxport no-change, 1 file", "ranks": r, "repeat": rep})
            out["runs"].append(res)
        settle(ctx, root)
        res = run_rclone(ctx, root, bucket, 1, f"one-rclone-r{rep}")
        res.update({"tool": "rclone sync --size-only, 1 file", "ranks": None, "repeat": rep})
        out["runs"].append(res)
    if pyspy_binary() and not ctx.args.no_profile:
        out["pyspy_gil"] = pyspy_run(ctx, root, bucket, state, max(ranks_list), "one", "gil", rate=500)
    rows = {}
    for res in out["runs"]:
        rows.setdefault((res["tool"], res["ranks"]), []).append(res)
    out["summary"] = [{"tool": t, "ranks": r, "wall_median_s": statistics.median(x["wall_s"] for x in rs),
                       "wall_min_s": min(x["wall_s"] for x in rs), "wall_max_s": max(x["wall_s"] for x in rs),
                       "client_cpu_s": statistics.median(x["client_cpu_s"] for x in rs),
                       "server_cpu_s": statistics.median(x["server_cpu_s"] for x in rs),
                       "others_cpu_s": statistics.median(x.get("others_cpu_s", 0) for x in rs),
                       "ok": sum(1 for x in rs if x.get("ok")), "runs": len(rs)}
                      for (t, r), rs in rows.items()]
    delete_bucket(ctx.s3, bucket)
    return out


# ---------------------------------------------------------------------------------------------- report

def summarize(runs: list[dict], specs: dict) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        if r["repeat"] >= 0:
            groups.setdefault((r["files"], r["tool"], r["ranks"]), []).append(r)
    rows = []
    for (n, tool, ranks), rs in groups.items():
        good = [r for r in rs if r["ok"]] or rs
        walls = [r["wall_s"] for r in good]
        med = statistics.median(walls)
        rows.append({"files": n, "tool": tool, "ranks": ranks, "runs": len(rs), "ok_runs": sum(r["ok"] for r in rs),
                     "wall_median_s": med, "wall_min_s": min(walls), "wall_max_s": max(walls),
                     "files_per_s": n / med, "walls": walls,
                     "client_cpu_s": statistics.median(r["client_cpu_s"] for r in good),
                     "ranks_cpu_s": statistics.median(r["ranks_cpu_s"] for r in good if r.get("ranks_cpu_s") is not None)
                     if any(r.get("ranks_cpu_s") is not None for r in good) else None,
                     "server_cpu_s": statistics.median(r["server_cpu_s"] for r in good),
                     "others_cpu_s": statistics.median(r.get("others_cpu_s", 0) for r in good),
                     "rss_per_rank_mib": [max(r["rss_per_rank_mib"][i] for r in good if len(r["rss_per_rank_mib"]) > i)
                                          for i in range(max(len(r["rss_per_rank_mib"]) for r in good))]})
    for row in rows:
        if row["tool"] != "pfsxport":
            row["ratio"] = None
            continue
        peer = next((x for x in rows if x["files"] == row["files"] and x["tool"] == "rclone"), None)
        row["ratio"] = peer["wall_median_s"] / row["wall_median_s"] if peer else None
        pairs = []
        for a in runs:
            if a["files"] == row["files"] and a["tool"] == "pfsxport" and a["ranks"] == row["ranks"] and a["repeat"] >= 0:
                b = next((b for b in runs if b["files"] == row["files"] and b["tool"] == "rclone"
                          and b["repeat"] == a["repeat"]), None)
                if b:
                    pairs.append(b["wall_s"] / a["wall_s"])
        row["pair_ratios"] = pairs
    rows.sort(key=lambda x: (x["files"], {"pfsxport": 0, "rclone": 1}[x["tool"]], x["ranks"] or 0))
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| files | tool | ranks | wall s, median (min–max) | files checked/s | client CPU s (ranks) "
             "| server CPU s | others' CPU s | peak RSS/rank MiB | rclone/pfsxport (same-repeat pairs) | ok runs |",
             "|" + "|".join(["---"] * 11) + "|"]
    for r in rows:
        ratio = "–"
        if r["tool"] == "pfsxport" and r.get("ratio"):
            pr = r.get("pair_ratios") or []
            ratio = f"**{r['ratio']:.2f}×**" + (f" ({min(pr):.2f}–{max(pr):.2f})" if pr else "")
        cpu = f"{r['client_cpu_s']:.2f}" + (f" ({r['ranks_cpu_s']:.2f})" if r["tool"] == "pfsxport" and
                                             r.get("ranks_cpu_s") is not None else "")
        rss = " / ".join(f"{x:.0f}" for x in r["rss_per_rank_mib"])
        tool = "pfsxport" if r["tool"] == "pfsxport" else "rclone sync --size-only --checkers 32"
        lines.append(f"| {r['files']:,} | {tool} | {r['ranks'] or '–'} | {r['wall_median_s']:.2f} "
                     f"({r['wall_min_s']:.2f}–{r['wall_max_s']:.2f}) | {r['files_per_s']:,.0f} | {cpu} | "
                     f"{r['server_cpu_s']:.2f} | {r['others_cpu_s']:.2f} | {rss} | {ratio} | {r['ok_runs']}/{r['runs']} |")
    return "\n".join(lines)


def render(d: dict) -> str:
    rows = d["summary"]
    md = [f"## pfsxport no-change re-export vs rclone --size-only, {d['stamp']}", "",
          f"Machine: {d['machine']}.  ",
          f"Versions: {d['versions']}.  ",
          f"Files {d['args']['files']}; ranks {d['args']['ranks']}; {d['args']['repeat']} repeat(s) after one "
          "untimed warm-up of each tool; tool order alternating; same bucket (filled by pfsxport's initial "
          "export), same tree, same SeaweedFS; dentry/inode cache warm.", "",
          table(rows), "",
          f"Target: pfsxport no-change re-export ≥ {TARGET:.0f}× faster than rclone --size-only on 200,000 files "
          "(ratio of medians, this run):", ""]
    for r in rows:
        if r["tool"] == "pfsxport" and r.get("ratio"):
            verdict = "meets" if r["ratio"] >= TARGET else "misses"
            md.append(f"- {r['files']:,} files, -n {r['ranks']}: {r['ratio']:.2f}× ({verdict} the {TARGET:.0f}× "
                      f"target{'' if r['files'] >= 200_000 else '; reported only'})")
    md += ["", "### Initial uploads and manifests", ""]
    for n, info in d["trees"].items():
        ini = info["initial"]
        ck = info["check_initial"]
        mf = info["manifest"]
        md.append(f"- {int(n):,} files in {info['spec']['leaf_dirs']} leaf dirs ({info['dirs']} dirs): initial "
                  f"export -n 2 {ini['wall_s']:.1f} s (TotalCount {ini.get('total_count')}), bucket check "
                  f"{'ok' if ck['ok'] else 'FAILED'} ({ck['files_ok']}/{ck['files_expected']} files, "
                  f"{ck['dir_objects']} dir objects, {ck['stray']} stray); final check "
                  f"{'ok' if info['check_final']['ok'] else 'FAILED'} ({info['check_final']['objects']} objects)")
        if mf:
            md.append(f"  - manifest ({mf['files']} shards): {mf['bytes']:,} B ({mf['allocated_bytes']:,} B allocated) for "
                      f"{mf['entries']:,} entries = **{mf['bytes_per_entry']:.1f} B/entry** (of which dir+name "
                      f"{mf['path_bytes_per_entry']:.1f} B); page {mf['page_size']} B, {mf['free_pages']} free pages")
    if d.get("startup"):
        md += ["", "### Fixed start-up (tree of 1 file, no change)", "",
               "| what | ranks | wall s, median (min–max) | client CPU s | server CPU s | others' CPU s | ok |",
               "|---|---|---|---|---|---|---|"]
        for s in d["startup"]["summary"]:
            md.append(f"| {s['tool']} | {s['ranks'] or '–'} | {s['wall_median_s']:.3f} ({s['wall_min_s']:.3f}–"
                      f"{s['wall_max_s']:.3f}) | {s['client_cpu_s']:.2f} | {s['server_cpu_s']:.2f} | "
                      f"{s['others_cpu_s']:.2f} | "
                      f"{s['ok']}/{s['runs']} |")
        spy = d["startup"].get("pyspy_gil")
        if spy and spy.get("top_inclusive"):
            md += ["", f"py-spy `--gil`, 500 Hz, of one 1-file no-change re-export (mpiexec -n {spy['ranks']}): wall "
                   f"{spy['wall_s']:.2f} s under py-spy, {spy['seconds']:.2f} s of GIL-holding samples ("
                   + ", ".join(f"{k} {v:.2f} s" for k, v in spy["per_process_s"].items()) + ").", "",
                   "| # | function (inclusive) | cumulative s | % of samples |", "|---|---|---|---|"]
            for i, (fn, s, pct) in enumerate(spy["top_inclusive"][:25], 1):
                md.append(f"| {i} | `{fn}` | {s:.3f} | {pct:.1f} |")
    order = ["World.__init__", "S3Store.__init__", "_prepare", "S3Store.probe", "Manifest.merge", "World.bcast",
             "run_work", "Transfer.scan", "scan_dir", "Reader.directory", "Transfer.changed", "World.barrier",
             "_finish", "write_h5", "upload_report", "StateDir.write"]
    for n, info in d["trees"].items():
        ph = info.get("phases")
        if not ph:
            continue
        md += ["", f"### Phases of a no-change re-export of {int(n):,} files (bench/phases.py; medians of "
               f"{d['args']['repeat']} runs; wall / thread-CPU seconds, pool-thread phases summed over threads)", ""]
        cols = [(r, x) for r, per in ph.items() for x in per]
        md.append("| phase | " + " | ".join(f"-n {r} rank {x['rank']}" for r, x in cols) + " |")
        md.append("|---|" + "---|" * len(cols))
        md.append("| run wall (mpiexec, all ranks) | " + " | ".join(f"{x['run_wall_s']:.2f}" for _, x in cols) + " |")
        md.append("| process start → wrapper (interpreter start-up) | " + " | ".join(f"{x['startup_s']:.2f}" for _, x in cols) + " |")
        md.append("| import pfsxport.cli, job, ... | " + " | ".join(f"{x['import_s']:.2f}" for _, x in cols) + " |")
        md.append("| cli.main (everything after the imports) | " + " | ".join(f"{x['main_s']:.2f}" for _, x in cols) + " |")
        names = sorted({k for _, x in cols for k in x["phases"]},
                       key=lambda k: next((i for i, o in enumerate(order) if k.startswith(o)), 99))
        for k in names:
            cells = []
            for _, x in cols:
                v = x["phases"].get(k)
                cells.append(f"{v['wall_s']:.2f} / {v['cpu_s']:.2f} ({v['calls']:g}×)" if v and v["calls"] else "–")
            md.append(f"| {k} | " + " | ".join(cells) + " |")
        md.append("| process CPU total | " + " | ".join(f"{x['cpu_s']:.2f}" for _, x in cols) + " |")
        md.append("| peak RSS MiB | " + " | ".join(f"{x['maxrss_mib']:.0f}" for _, x in cols) + " |")
        ec = info.get("entry_costs")
        if ec:
            md += ["", f"Per-entry cost of the pieces of a no-change scan, one thread, best of "
                   f"{max(3, d['args']['repeat'])}, {ec['entries']:,} entries in {ec['dirs']} directories:", "",
                   "| piece | seconds | µs per entry |", "|---|---|---|"]
            for k, v in ec.items():
                if k in ("entries", "dirs") or "must be 0" in k:
                    continue
                md.append(f"| {k} | {v:.3f} | {v * 1e6 / ec['entries']:.2f} |")
            md.append(f"| (changed entries found: pfsxport {ec.get('pfsxport changed entries (must be 0)')}, "
                      f"lean {ec.get('lean changed entries (must be 0)')}) | | |")
    for n, info in d["trees"].items():
        prof = info.get("profile")
        if not prof:
            continue
        for mode, what in (("gil", "samples of the thread holding the GIL in each rank (`--gil`): where "
                                   "the Python CPU goes"),
                           ("active", "samples of every non-idle thread (threads waiting for the GIL count)")):
            spy = prof.get(f"pyspy_{mode}")
            if not (spy and spy.get("top_inclusive")):
                continue
            md += ["", f"### py-spy ({mode}), one no-change re-export of {int(n):,} files (mpiexec -n "
                   f"{d['profile_ranks']}, 100 Hz; {what})", "",
                   f"Wall {spy['wall_s']:.2f} s under py-spy (TotalCount {spy.get('total_count')}); "
                   f"{spy['seconds']:.1f} sampled thread-seconds. Per rank: "
                   + ", ".join(f"{k} {v:.1f} s" for k, v in spy["per_process_s"].items()) + ". Per thread kind: "
                   + ", ".join(f"{k} {v:.1f} s" for k, v in spy["per_thread_s"].items()) + ".", "",
                   "| # | function (inclusive) | cumulative s | % of samples |", "|---|---|---|---|"]
            for i, (fn, s, pct) in enumerate(spy["top_inclusive"][:25], 1):
                md.append(f"| {i} | `{fn}` | {s:.2f} | {pct:.1f} |")
            md += ["", "| # | function (self) | self s | % of samples |", "|---|---|---|---|"]
            for i, (fn, s, pct) in enumerate(spy["top_self"][:15], 1):
                md.append(f"| {i} | `{fn}` | {s:.2f} | {pct:.1f} |")
        cp = prof.get("cprofile")
        if cp and cp.get("top_cumulative"):
            md += ["", f"### cProfile, one no-change re-export of {int(n):,} files (one process, no mpiexec; "
                   "main thread only)", "",
                   f"Wall {cp['wall_s']:.2f} s under cProfile (TotalCount {cp.get('total_count')}).", "",
                   "| # | function | calls | tottime s | cumtime s |", "|---|---|---|---|---|"]
            for i, (fn, nc, tt, ct) in enumerate(cp["top_cumulative"][:20], 1):
                md.append(f"| {i} | `{fn}` | {nc:,} | {tt:.3f} | {ct:.3f} |")
    bad = [f"{r['files']} {r['tool']} n={r['ranks']} rep {r['repeat']}" for r in d["runs"] if not r["ok"]]
    bad += [f"bucket check {n}" for n, info in d["trees"].items()
            if not (info["check_initial"]["ok"] and info["check_final"]["ok"])]
    md += ["", "Result: " + ("FAILED: " + "; ".join(bad) if bad else
                             "every run succeeded and was a no-change run (pfsxport TotalCount 0; rclone 0 "
                             "transfers, 0 deletes, N checks); buckets checked out") + "."]
    return "\n".join(md)


def versions(rclone: str) -> str:
    def out(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
        except Exception:  # noqa: BLE001
            return "?"
    import pfsxport
    from pfsxport.localstore import find_weed
    spy = pyspy_binary()
    repo = os.path.dirname(HERE)
    head = out(["git", "-C", repo, "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--", "pfsxport"], capture_output=True,
                           text=True).stdout.strip()
    return (f"pfsxport {pfsxport.__version__} (git {head}{', pfsxport/ modified in the work tree' if dirty else ''})"
            f", {out([rclone, 'version'])}, SeaweedFS {out([find_weed(), 'version'])}"
            + (f", {out([spy, '--version'])}" if spy else ""))


# ---------------------------------------------------------------------------------------------- main

class Ctx:
    pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", default="20000,200000", help="comma-separated tree sizes (4 KiB files)")
    ap.add_argument("--ranks", default="1,2", help="comma-separated mpiexec -n values for the re-exports")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", help="keep the trees here and reuse them (default: a temporary directory)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per tool run before it is killed")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--no-startup", action="store_true")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    files = [int(x) for x in args.files.split(",") if x.strip()]
    ranks_list = [int(x) for x in args.ranks.split(",") if x.strip()]
    rng = random.Random(args.seed)

    ctx = Ctx()
    ctx.args = args
    ctx.rclone = shutil.which("rclone")
    if not ctx.rclone:
        print("rclone is not on PATH (Debian: apt-get install rclone)", file=sys.stderr)
        return 2
    stamp = time.strftime("%Y%m%d-%H%M%S")
    ctx.outdir = os.path.join(args.out, f"nochange-{stamp}")
    ctx.logdir = os.path.join(ctx.outdir, "logs")
    os.makedirs(ctx.logdir, exist_ok=True)
    ctx.tmp = tempfile.mkdtemp(prefix="pfsxport-nochange-")
    ctx.data_root = args.workdir or os.path.join(ctx.tmp, "data")
    os.makedirs(ctx.data_root, exist_ok=True)
    ver = versions(ctx.rclone)
    print(f"== machine: {machine()}\n== versions: {ver}\n== files {files}, ranks {ranks_list}, repeat "
          f"{args.repeat}; work in {ctx.tmp}, trees in {ctx.data_root}, results in {ctx.outdir}", flush=True)
    specs = {n: tree_spec(n) for n in files}
    roots, expected, ndirs = {}, {}, {}
    for n in files:
        exp = build_dataset(ctx.data_root, specs[n])
        expected[n] = exp
        roots[n] = os.path.join(ctx.data_root, specs[n]["name"])
        nf, nd, secs = stat_walk(roots[n])
        ndirs[n] = nd
        print(f"   tree {n}: {nf} files, {nd} dirs at {roots[n]} (stat walk {secs:.2f}s)", flush=True)
        if nf != n:
            raise SystemExit(f"tree {roots[n]} has {nf} files, expected {n}")

    ctx.s3 = SeaweedFS(os.path.join(ctx.tmp, "seaweedfs"))
    ctx.s3.start()
    print(f"== SeaweedFS at {ctx.s3.endpoint} (pid {ctx.s3.proc.pid})", flush=True)
    runs: list[dict] = []
    trees: dict = {}
    d = {"stamp": stamp, "machine": machine(), "versions": ver, "args": vars(args), "specs": specs,
         "profile_ranks": max(ranks_list)}

    def save(final: bool = False) -> None:
        d.update({"runs": runs, "trees": trees})
        with open(os.path.join(ctx.outdir, "raw.json"), "w") as f:
            json.dump(d, f, indent=1, default=str)

    try:
        for n in files:
            root, bucket, state = roots[n], f"nochange-{n}", os.path.join(ctx.tmp, f"state-{n}")
            info: dict = {"spec": specs[n], "dirs": ndirs[n], "bucket": bucket}
            trees[str(n)] = info
            prepare_bucket(ctx.s3, bucket)
            settle(ctx, root)
            print(f"== {n:,} files: initial upload (mpiexec -n 2) ...", flush=True)
            ini = run_pfsxport(ctx, 2, root, bucket, state, f"{n}-initial", expect_nochange=False)
            info["initial"] = ini
            print(f"   initial export rc {ini['rc']}, {ini['wall_s']:.1f}s ({n / ini['wall_s']:.0f} files/s), "
                  f"TotalCount {ini['total_count']}, {ini['final']}", flush=True)
            for note in ini["notes"][:5]:
                print(f"     | {note}", flush=True)
            info["check_initial"] = check_bucket(ctx.s3, bucket, root, expected[n], rng)
            print(f"   bucket check: {json.dumps(info['check_initial'])}", flush=True)
            info["manifest"] = manifest_size(state)
            mf = info["manifest"]
            if mf:
                print(f"   manifest {mf['bytes']:,} B for {mf['entries']:,} entries = {mf['bytes_per_entry']:.1f} "
                      f"B/entry ({mf['allocated_bytes']:,} B allocated)", flush=True)
            save()
            if not (ini["ok"] and info["check_initial"]["ok"]):
                print("   initial upload failed: skipping this tree", flush=True)
                info["check_final"] = {"ok": False, "objects": 0}
                continue
            # one untimed warm-up of each, then the measured repeats
            for rep in range(-1, args.repeat):
                plan = [("pfsxport", r) for r in ranks_list] + [("rclone", None)]
                if rep % 2:
                    plan.reverse()
                for tool, r in plan:
                    settle_s = settle(ctx, root)
                    tag = f"{n}-{tool}" + (f"-n{r}" if r else "") + (f"-r{rep}" if rep >= 0 else "-warmup")
                    if tool == "pfsxport":
                        res = run_pfsxport(ctx, r, root, bucket, state, tag)
                        detail = (f"TotalCount {res['total_count']}, unchanged {res['unchanged']}, "
                                  f"rank CPU {res['ranks_cpu_s'] or 0:.2f}s, RSS/rank {res['rss_per_rank_mib']} MiB")
                    else:
                        res = run_rclone(ctx, root, bucket, n, tag)
                        detail = (f"transfers {res['transfers']}, deletes {res['deletes']}, checks {res['checks']}, "
                                  f"errors {res['errors']}, RSS {res['peak_rss_mib']} MiB")
                    res.update({"files": n, "tool": tool, "ranks": r, "repeat": rep, "settle_s": settle_s})
                    runs.append(res)
                    print(f"   {n} {tool:8s} n={r or '-'} {'warm-up' if rep < 0 else f'rep {rep}'}: rc {res['rc']}, "
                          f"{res['wall_s']:.2f}s, client CPU {res['client_cpu_s']:.2f}s, server CPU "
                          f"{res['server_cpu_s']:.2f}s, others {res['others_cpu_s']:.2f}s, {detail} -> {'ok' if res['ok'] else 'NOT OK'}", flush=True)
                    for note in res.get("notes", [])[:5]:
                        print(f"     | {note}", flush=True)
                    save()
            info["check_final"] = check_bucket(ctx.s3, bucket, root, expected[n], rng)
            print(f"   final bucket check: {json.dumps(info['check_final'])}", flush=True)
            if not args.no_profile and n == max(files):
                print(f"== phases of no-change re-exports of {n:,} files (bench/phases.py) ...", flush=True)
                info["phases"] = phases(ctx, root, bucket, state, ranks_list, str(n))
                for r, per_rank in info["phases"].items():
                    for x in per_rank:
                        print(f"   -n {r} rank {x['rank']}: run wall {x['run_wall_s']:.2f}s, start-up {x['startup_s']:.2f}s"
                              f", import {x['import_s']:.2f}s, main {x['main_s']:.2f}s, CPU {x['cpu_s']:.2f}s; "
                              + ", ".join(f"{k.split(' ')[0]} {v['wall_s']:.2f}/{v['cpu_s']:.2f}"
                                          for k, v in x["phases"].items()), flush=True)
                print(f"== per-entry costs of a no-change scan of {n:,} files (one thread) ...", flush=True)
                info["entry_costs"] = entry_costs(root, state, max(3, args.repeat))
                print(f"   {json.dumps(info['entry_costs'])}", flush=True)
                print(f"== profiling one no-change re-export of {n:,} files ...", flush=True)
                info["profile"] = profile(ctx, root, bucket, state, max(ranks_list), str(n))
                for key, val in info["profile"].items():
                    print(f"   {key}: rc {val.get('rc')}, {val.get('wall_s', 0):.2f}s, TotalCount "
                          f"{val.get('total_count')}", flush=True)
            save()
            delete_bucket(ctx.s3, bucket)
        if not args.no_startup:
            print("== start-up: tree of one file ...", flush=True)
            d["startup"] = startup(ctx, ranks_list, rng)
            for s in d["startup"]["summary"]:
                print(f"   {s['tool']:55s} n={s['ranks'] or '-'}: {s['wall_median_s']:.3f}s "
                      f"({s['wall_min_s']:.3f}-{s['wall_max_s']:.3f}), client CPU {s['client_cpu_s']:.2f}s, "
                      f"ok {s['ok']}/{s['runs']}", flush=True)
    finally:
        ctx.s3.stop(timeout=30)
        shutil.rmtree(ctx.tmp, ignore_errors=True)

    d["summary"] = summarize(runs, specs)
    save()
    text = render(d)
    print("\n" + text, flush=True)
    with open(os.path.join(ctx.outdir, "table.md"), "w") as f:
        f.write(text + "\n")
    print(f"\n== wrote {ctx.outdir}/table.md, raw.json, profiles and logs/", flush=True)
    failed = any(not r["ok"] for r in runs) or any(
        not (i["check_initial"]["ok"] and i["check_final"]["ok"]) for i in trees.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
