"""verify benchmark: `pfsxport verify` of an unchanged tree against `rclone check --size-only` and
`rclone check` (hashes: MD5 against the ETag), same server, same tree, same run.

Usage (the project's virtualenv; rclone on PATH):

    python bench/verify.py [--files 2000] [--ranks 1,2] [--repeat 1] [--workdir DIR] [--out bench/results]
                           [--timeout 1800] [--contents]

    python bench/verify.py --files 2000 --repeat 1               # smoke run, under a minute
    python bench/verify.py --files 200000 --workdir /tmp/nc-data  # the issue's figure (long: not on a shared machine)

What it does, on ONE SeaweedFS (pfsxport.localstore.SeaweedFS in a temporary directory):
With --quick, pfsxport verify trusts the manifest for entries unchanged since their export (a listing and
a local lstat per entry, no HEAD): the like of rclone --size-only, with the POSIX metadata checked too.

1. Builds the tree as bench/nochange.py does (N x 4 KiB random files in N/100 leaf directories, dataset
   A's layout up to 20,000; shared through --workdir) and exports it once with `mpiexec -n 2 pfsxport export`
   into the bucket `verify-N` (untimed).
2. One untimed warm-up of each tool, then --repeat times: `mpiexec -n R pfsxport verify [--quick]` for each R in
   --ranks (it must exit 0 with Result MATCH: a real no-difference run), `rclone check --size-only
   --checkers 32` and `rclone check --checkers 32` (which must report 0 differences), with the remote
   given by environment variables as in bench/nochange.py. Measured: wall, client CPU, server CPU.
3. Prints a Markdown table (tool, ranks, median wall s (min-max), entries/s, client CPU s, server CPU s,
   rclone --size-only / pfsxport) and writes it with raw.json and every run's logs to
   --out/verify-<timestamp>/. Never asserts a speed; exits 1 if a run failed or found a difference.

pfsxport verify does more per entry than `rclone check --size-only` (a HEAD for the POSIX metadata and
the stored CRC32, and a read of the local file to compute it); `rclone check` with hashes also reads
every local file (MD5) but asks for no metadata.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from nochange import measured, rclone_env, tree_spec, wait_machine_quiet  # noqa: E402
from run import build_dataset, mpiexec_binary, prepare_bucket, run_measured  # noqa: E402

from pfsxport.localstore import SeaweedFS  # noqa: E402


class Ctx:
    def __init__(self, args, s3, tmp, logdir):
        self.args, self.s3, self.tmp, self.logdir = args, s3, tmp, logdir
        self.rclone = shutil.which("rclone") or "/usr/bin/rclone"


def _pfsxport_env(s3) -> dict:
    env = {**os.environ, **s3.env()}
    env.pop("PFSXPORT_STATE_DIR", None)
    return env


def run_verify(ctx, root: str, bucket: str, state: str, ranks: int, flags: list[str], tag: str) -> dict:
    cmd = [mpiexec_binary(), "-n", str(ranks), sys.executable, "-m", "pfsxport", "verify", "--fs-root", root,
           "--repository", f"s3://{bucket}/", "--state-dir", state,
           "--report-dir", os.path.join(ctx.logdir, tag + "-report")] + flags
    base = os.path.join(ctx.logdir, tag)
    res = measured(cmd, _pfsxport_env(ctx.s3), base, ctx.args.timeout, ctx.s3.proc.pid)
    try:
        with open(base + ".stdout") as f:
            text = f.read()
        res["summary"] = json.loads(text[text.find("{"):])["Verify"]
    except (OSError, ValueError, KeyError):
        res["summary"] = {}
    s = res["summary"]
    res["ok"] = res.get("rc") == 0 and s.get("Result") == "MATCH"
    res["entries"] = s.get("Compared")
    return res


def run_rclone_check(ctx, root: str, bucket: str, size_only: bool, tag: str) -> dict:
    cmd = [ctx.rclone, "check", "--checkers", "32", root + "/", f"s3:{bucket}/", "--exclude", "/pfsxport-reports/**",
           "--one-way"] + (["--size-only"] if size_only else [])
    base = os.path.join(ctx.logdir, tag)
    res = measured(cmd, rclone_env(ctx), base, ctx.args.timeout, ctx.s3.proc.pid)
    with open(base + ".stderr", errors="replace") as f:
        err = f.read()
    res["ok"] = res.get("rc") == 0 and " 0 differences found" in err
    res["entries"] = None
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--files", type=int, default=2000)
    p.add_argument("--ranks", default="1,2")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--workdir")
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--contents", action="store_true", help="pfsxport verify --contents (downloads every byte)")
    args = p.parse_args()
    ranks = [int(r) for r in args.ranks.split(",") if r]
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    logdir = os.path.join(args.out, f"verify-{stamp}")
    os.makedirs(logdir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="pfsxport-verify-bench-")
    data = args.workdir or os.path.join(tmp, "data")
    os.makedirs(data, exist_ok=True)
    spec = tree_spec(args.files)
    build_dataset(data, spec)
    root = os.path.join(data, spec["name"])
    s3 = SeaweedFS(os.path.join(tmp, "seaweedfs")).start()
    runs: list[dict] = []
    try:
        ctx = Ctx(args, s3, tmp, logdir)
        bucket = f"verify-{args.files}"
        prepare_bucket(s3, bucket)
        state = os.path.join(tmp, "state")
        cmd = [mpiexec_binary(), "-n", "2", sys.executable, "-m", "pfsxport", "export", "--fs-root", root,
               "--repository", f"s3://{bucket}/", "--state-dir", state, "--progress", "off"]
        up = run_measured(cmd, _pfsxport_env(s3), os.path.join(logdir, "export.stdout"),
                          os.path.join(logdir, "export.stderr"), args.timeout, s3.proc.pid)
        if up.get("rc") != 0:
            print("the initial export failed; see", logdir)
            return 1
        flags = ["--contents"] if args.contents else []
        tools = [(" ".join(["pfsxport verify", *flags]), r) for r in ranks] + \
                [("pfsxport verify --quick", r) for r in ranks] + \
                [("rclone check --size-only", None), ("rclone check", None)]
        for rep in range(-1, args.repeat):  # -1: the warm-up
            order = tools if rep % 2 == 0 else list(reversed(tools))
            for tool, r in order:
                wait_machine_quiet()
                tag = f"{tool.split()[0]}-{'-'.join(w.strip('-') for w in tool.split()[2:]) or 'default'}-r{r or 0}-{rep}"
                res = run_verify(ctx, root, bucket, state, r, tool.split()[2:], tag) if r else \
                    run_rclone_check(ctx, root, bucket, "size-only" in tool, tag)
                res.update({"tool": tool, "ranks": r, "repeat": rep})
                if rep >= 0:
                    runs.append(res)
                print(f"   {tool} ranks={r} rep={rep}: {res.get('wall_s', 0):.2f}s ok={res['ok']}", flush=True)
    finally:
        s3.stop()
        shutil.rmtree(tmp, ignore_errors=True)  # the server, the state (and the tree unless --workdir)
    lines = [f"verify of an unchanged tree of {args.files} files ({spec['leaf_dirs']} leaf directories), "
             f"median of {args.repeat}", "",
             "| tool | ranks | wall s (min-max) | entries/s | client CPU s | server CPU s |", "|---|---|---|---|---|---|"]
    medians = {}
    for tool, r in tools:
        mine = [x for x in runs if x["tool"] == tool and x["ranks"] == r]
        if not mine:
            continue
        walls = [x["wall_s"] for x in mine]
        med = statistics.median(walls)
        medians[(tool, r)] = med
        lines.append(f"| {tool} | {r or '-'} | {med:.2f} ({min(walls):.2f}-{max(walls):.2f}) | "
                     f"{args.files / med:,.0f} | {statistics.median(x['client_cpu_s'] for x in mine):.2f} | "
                     f"{statistics.median(x['server_cpu_s'] for x in mine):.2f} |")
    size_only = medians.get(("rclone check --size-only", None))
    for (tool, r), med in medians.items():
        if r and size_only:
            lines.append(f"\nrclone check --size-only / {tool} at {r} rank(s): {size_only / med:.2f}x")
    text = "\n".join(lines) + "\n"
    print(text)
    with open(os.path.join(logdir, "table.md"), "w") as f:
        f.write(text)
    with open(os.path.join(logdir, "raw.json"), "w") as f:
        json.dump(runs, f, indent=1, default=str)
    return 0 if all(x["ok"] for x in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
