"""Import (restore) benchmark: `pfsxport import` against `s5cmd cp`, and the no-change import against
`rclone sync --size-only`, same server, same data, same run (issue 14's "Measure").

Usage (the project's virtualenv with '.[bench]'; rclone on PATH, e.g. Debian's `apt-get install rclone`):

    python bench/restore.py [--datasets A,B,C] [--ranks 1,2] [--repeat 3] [--scale 1.0] [--workdir DIR]
                            [--out bench/results] [--timeout 1800] [--no-nochange]

    python bench/restore.py --datasets A --scale 0.05 --repeat 1 --ranks 2   # smoke run, about a minute
    python bench/restore.py --datasets A,B,C --ranks 1,2 --repeat 3          # the issue's figures

What it does, on ONE SeaweedFS (pfsxport.localstore.SeaweedFS in a temporary directory):
1. Builds datasets A, B, C exactly as bench/run.py does (its dataset_spec and build_dataset; --scale as
   there, shared through --workdir) and exports each once, untimed, with
       mpiexec -n 2 python -m pfsxport export --fs-root DATASET --repository s3://restore-X/data/
               --report-path s3://restore-X/reports --state-dir STATE
   so the prefix data/ holds the tree (and pfsxport's `dir/` objects) and nothing else.
2. Full import, --repeat times (tool order alternating), each run into a new empty directory:
       mpiexec -n R python -m pfsxport import --fs-root DIR --repository s3://restore-X/data/
               --report-path s3://restore-X/reports --state-dir FRESH_STATE --progress off   (each R in --ranks)
       s5cmd --endpoint-url URL cp 's3://restore-X/data/*' DIR/      (the Go binary, as bench/run.py runs it)
   After each run the directory must hold exactly the dataset's files with their sizes (file count and
   bytes; no other file, e.g. no temporary file), else the run is marked failed and not counted.
3. No-change import (unless --no-nochange): one untimed full import with -n 2 into a directory, then one
   untimed warm-up of each tool and --repeat runs of
       mpiexec -n R python -m pfsxport import ... (same directory, same state: its import manifest)
       rclone sync --size-only --checkers 32 s3:restore-X/data/ DIR/ -v --use-json-log
   (rclone's remote from environment variables, as bench/nochange.py gives it). A pfsxport run counts
   only if it exits 0, reports every file unchanged, none failed and 0 bytes received; an rclone run only
   if its stats show 0 transfers, 0 deletes, 0 errors. The directory is checked again after each run.
4. Prints a Markdown table (dataset, case, tool, ranks, median wall s (min-max), files/s, MB/s for the
   full import, entries/s for the no-change one (the objects under the prefix: files and `dir/` objects),
   client and server CPU s, ok runs, peer wall / pfsxport wall) and writes it with raw.json and every run's logs
   to --out/restore-<timestamp>/. Never asserts a speed; exits 1 if any run failed or a check failed.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from nochange import measured, rclone_env, rclone_stats, settle  # noqa: E402
from run import (  # noqa: E402
    CA_VARS,
    build_dataset,
    dataset_spec,
    human,
    list_bucket,
    machine,
    mpiexec_binary,
    prepare_bucket,
    s5cmd_binary,
    warm,
)

from pfsxport.localstore import SeaweedFS  # noqa: E402

PREFIX = "data/"
FINAL = re.compile(r"task (\S+) (\w+): (\d+) succeeded, (\d+) failed, (\d+) skipped, (\d+) unchanged, "
                   r"(\d+) bytes received")


class Ctx:
    pass


def tree_sizes(path: str) -> dict[str, int]:
    """{relative path: size} of every non-directory entry under path."""
    out = {}
    for dirpath, _, files in os.walk(path):
        for name in files:
            full = os.path.join(dirpath, name)
            out[os.path.relpath(full, path)] = os.lstat(full).st_size
    return out


def check_tree(target: str, expected: dict[str, int]) -> dict:
    got = tree_sizes(target)
    missing = [k for k in expected if k not in got]
    wrong = [k for k in expected if k in got and got[k] != expected[k]]
    extra = [k for k in got if k not in expected]
    return {"ok": not (missing or wrong or extra), "files": len(got), "files_expected": len(expected),
            "bytes": sum(got.values()), "bytes_expected": sum(expected.values()), "missing": len(missing),
            "wrong_size": len(wrong), "extra": len(extra), "sample": (missing + wrong + extra)[:5]}


def pfsxport(ctx, verb: str, root: str, bucket: str, state: str, ranks: int, tag: str) -> dict:
    cmd = [mpiexec_binary(), "-n", str(ranks), sys.executable, "-m", "pfsxport", verb, "--fs-root", root,
           "--repository", f"s3://{bucket}/{PREFIX}", "--report-path", f"s3://{bucket}/reports",
           "--state-dir", state, "--progress", "off"]
    env = {**os.environ, **ctx.s3.env()}
    env.pop("PFSXPORT_STATE_DIR", None)
    base = os.path.join(ctx.logdir, tag)
    res = measured(cmd, env, base, ctx.args.timeout, ctx.s3.proc.pid)
    with open(base + ".stderr", errors="replace") as f:
        text = f.read()
    found = FINAL.findall(text)
    res["final"] = dict(zip(("task", "lifecycle", "succeeded", "failed", "skipped", "unchanged", "bytes"),
                            found[-1], strict=True)) if found else {}
    res["notes"] = [ln[:300] for ln in text.splitlines() if ln.strip() and " INFO " not in ln][:10]
    res["cmd"] = cmd
    return res


def s5cmd(ctx, bucket: str, target: str, tag: str) -> dict:
    cmd = [s5cmd_binary(), "--endpoint-url", ctx.s3.endpoint, "cp", f"s3://{bucket}/{PREFIX}*", target + "/"]
    env = {k: v for k, v in os.environ.items() if k not in CA_VARS}
    env.update(ctx.s3.env())
    base = os.path.join(ctx.logdir, tag)
    res = measured(cmd, env, base, ctx.args.timeout, ctx.s3.proc.pid)
    with open(base + ".stderr", errors="replace") as f:
        res["notes"] = [ln.rstrip()[:300] for ln in f.readlines()[:10]]
    res["cmd"] = cmd
    return res


def rclone(ctx, bucket: str, target: str, tag: str) -> dict:
    cmd = [ctx.rclone, "sync", "--size-only", "--checkers", "32", f"s3:{bucket}/{PREFIX}", target + "/",
           "-v", "--use-json-log"]
    base = os.path.join(ctx.logdir, tag)
    res = measured(cmd, rclone_env(ctx), base, ctx.args.timeout, ctx.s3.proc.pid)
    res.update(rclone_stats(base + ".stderr"))
    st = res["stats"] or {}
    res["nochange"] = (st.get("transfers") == 0 and st.get("deletes", 0) == 0 and st.get("errors", 0) == 0)
    res["cmd"] = cmd
    return res


def full_imports(ctx, ds: str, bucket: str, expected: dict[str, int]) -> list[dict]:
    runs = []
    plan = [("pfsxport import", r) for r in ctx.ranks] + [("s5cmd cp", None)]
    for rep in range(ctx.args.repeat):
        for tool, r in (plan if rep % 2 == 0 else plan[::-1]):
            tag = f"{ds}-full-{tool.split()[0]}" + (f"-n{r}" if r else "") + f"-r{rep}"
            target = os.path.join(ctx.tmp, "target")
            shutil.rmtree(target, ignore_errors=True)
            os.makedirs(target)
            settle(ctx, target)
            if r:
                state = tempfile.mkdtemp(prefix="state-", dir=ctx.tmp)
                res = pfsxport(ctx, "import", target, bucket, state, r, tag)
                shutil.rmtree(state, ignore_errors=True)
                res["ok"] = res["rc"] == 0 and res["final"].get("failed") == "0"
            else:
                res = s5cmd(ctx, bucket, target, tag)
                res["ok"] = res["rc"] == 0
            res["check"] = check_tree(target, expected)
            res["ok"] = res["ok"] and res["check"]["ok"]
            res.update({"dataset": ds, "case": "full", "tool": tool, "ranks": r, "repeat": rep})
            report(res)
            runs.append(res)
    shutil.rmtree(os.path.join(ctx.tmp, "target"), ignore_errors=True)
    return runs


def nochange_imports(ctx, ds: str, bucket: str, expected: dict[str, int]) -> list[dict]:
    target, state = os.path.join(ctx.tmp, "nochange"), os.path.join(ctx.tmp, f"state-nochange-{ds}")
    os.makedirs(target)
    first = pfsxport(ctx, "import", target, bucket, state, 2, f"{ds}-nochange-initial")
    if first["rc"] != 0 or not check_tree(target, expected)["ok"]:
        print(f"   {ds}: the initial import for the no-change case failed; see {ctx.logdir}", flush=True)
        return [{"dataset": ds, "case": "no-change", "tool": "initial import", "ranks": 2, "repeat": 0,
                 "ok": False, "wall_s": first["wall_s"]}]
    runs = []
    plan = [("pfsxport import", r) for r in ctx.ranks] + [("rclone sync --size-only", None)]
    for rep in range(-1, ctx.args.repeat):  # -1: the warm-up
        for tool, r in (plan if rep % 2 == 0 else plan[::-1]):
            tag = f"{ds}-nochange-{tool.split()[0]}" + (f"-n{r}" if r else "") + f"-r{rep}"
            settle(ctx, target)
            if r:
                res = pfsxport(ctx, "import", target, bucket, state, r, tag)
                f = res["final"]
                res["ok"] = (res["rc"] == 0 and f.get("failed") == "0" and f.get("bytes") == "0"
                             and int(f.get("unchanged", -1)) >= len(expected))
            else:
                res = rclone(ctx, bucket, target, tag)
                res["ok"] = res["rc"] == 0 and res["nochange"]
            res["check"] = check_tree(target, expected)
            res["ok"] = res["ok"] and res["check"]["ok"]
            res.update({"dataset": ds, "case": "no-change", "tool": tool, "ranks": r, "repeat": rep})
            report(res)
            if rep >= 0:
                runs.append(res)
    shutil.rmtree(target, ignore_errors=True)
    shutil.rmtree(state, ignore_errors=True)
    return runs


def report(res: dict) -> None:
    extra = res.get("final") or {k: (res.get("stats") or {}).get(k) for k in ("transfers", "checks", "errors")}
    ck = res["check"]
    print(f"   {res['dataset']} {res['case']} {res['tool']} n={res['ranks'] or '-'} "
          f"{'warm-up' if res['repeat'] < 0 else 'rep ' + str(res['repeat'])}: rc {res['rc']}, {res['wall_s']:.2f}s, "
          f"tree {ck['files']}/{ck['files_expected']} files {ck['bytes']}/{ck['bytes_expected']} B, {extra} -> "
          f"{'ok' if res['ok'] else 'NOT OK'}", flush=True)
    for note in res.get("notes", [])[:5]:
        print(f"     | {note}", flush=True)


def table(runs: list[dict], specs: dict, objects: dict) -> str:
    lines = ["| dataset | case | tool | ranks | wall s, median (min–max) | files/s | MB/s | entries/s | "
             "client CPU s | server CPU s | ok runs | peer wall / pfsxport wall |", "|" + "---|" * 12]
    keys = list(dict.fromkeys((r["dataset"], r["case"], r["tool"], r["ranks"]) for r in runs))
    med = {}
    for k in keys:
        good = [r for r in runs if (r["dataset"], r["case"], r["tool"], r["ranks"]) == k and r["ok"]]
        if good:
            med[k] = statistics.median(r["wall_s"] for r in good)
    for k in keys:
        ds, case, tool, ranks = k
        mine = [r for r in runs if (r["dataset"], r["case"], r["tool"], r["ranks"]) == k]
        good = [r for r in mine if r["ok"]]
        sp = specs[ds]
        name = f"{ds} ({sp['files']:,} × {human(sp['size'])})"
        if not good:
            lines.append(f"| {name} | {case} | {tool} | {ranks or '–'} | failed | | | | | | 0/{len(mine)} | |")
            continue
        walls = [r["wall_s"] for r in good]
        m = med[k]
        peer = next((v for (d, c, t, rr), v in med.items() if d == ds and c == case and rr is None), None)
        ratio = f"{peer / m:.2f}×" if ranks and peer else ""
        mbs = f"{sp['files'] * sp['size'] / 1e6 / m:,.1f}" if case == "full" else "–"
        eps = f"{objects[ds] / m:,.0f}" if case == "no-change" and ds in objects else "–"
        lines.append(f"| {name} | {case} | {tool} | {ranks or '–'} | {m:.2f} ({min(walls):.2f}–{max(walls):.2f}) | "
                     f"{sp['files'] / m:,.0f} | {mbs} | {eps} | {statistics.median(r['client_cpu_s'] for r in good):.2f} | "
                     f"{statistics.median(r['server_cpu_s'] for r in good):.2f} | {len(good)}/{len(mine)} | {ratio} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="A,B,C")
    ap.add_argument("--ranks", default="1,2", help="comma-separated mpiexec -n values for pfsxport import")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--workdir", help="keep the datasets here and reuse them (default: a temporary directory)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per tool run before it is killed")
    ap.add_argument("--no-nochange", action="store_true", help="skip the no-change import against rclone")
    args = ap.parse_args()
    ctx = Ctx()
    ctx.args = args
    ctx.ranks = [int(x) for x in args.ranks.split(",") if x.strip()]
    ctx.rclone = shutil.which("rclone") or "/usr/bin/rclone"
    datasets = [d.strip().upper() for d in args.datasets.split(",") if d.strip()]
    specs = {d: dataset_spec(d, args.scale) for d in datasets}
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    outdir = os.path.join(args.out, f"restore-{stamp}")
    ctx.logdir = os.path.join(outdir, "logs")
    os.makedirs(ctx.logdir, exist_ok=True)
    ctx.tmp = tempfile.mkdtemp(prefix="pfsxport-restore-bench-")
    data_root = args.workdir or os.path.join(ctx.tmp, "data")
    os.makedirs(data_root, exist_ok=True)
    print(f"== machine: {machine()}\n== datasets {datasets} at scale {args.scale}, ranks {ctx.ranks}, repeat "
          f"{args.repeat}; work in {ctx.tmp}, results in {outdir}", flush=True)
    ctx.s3 = SeaweedFS(os.path.join(ctx.tmp, "seaweedfs")).start()
    runs: list[dict] = []
    objects: dict[str, int] = {}  # objects under the prefix (files and directory objects): the entries listed
    try:
        for ds in datasets:
            expected = build_dataset(data_root, specs[ds])
            root, bucket = os.path.join(data_root, ds), f"restore-{ds.lower()}"
            prepare_bucket(ctx.s3, bucket)
            warm(root)
            up = pfsxport(ctx, "export", root, bucket, os.path.join(ctx.tmp, f"state-export-{ds}"), 2,
                          f"{ds}-export")
            print(f"   {ds}: initial export rc {up['rc']}, {up['wall_s']:.1f}s", flush=True)
            if up["rc"] != 0:
                runs.append({"dataset": ds, "case": "export", "tool": "initial export", "ranks": 2, "repeat": 0,
                             "ok": False, "wall_s": up["wall_s"]})
                continue
            objects[ds] = sum(1 for k in list_bucket(ctx.s3, bucket) if k.startswith(PREFIX))
            runs += full_imports(ctx, ds, bucket, expected)
            if not args.no_nochange:
                runs += nochange_imports(ctx, ds, bucket, expected)
            with open(os.path.join(outdir, "raw.json"), "w") as f:  # partial results as we go
                json.dump({"runs": runs}, f, indent=1, default=str)
    finally:
        ctx.s3.stop(timeout=30)
        shutil.rmtree(ctx.tmp, ignore_errors=True)  # the server, the states (and the data unless --workdir)
    text = (f"Import of datasets {','.join(datasets)} at scale {args.scale}, median of {args.repeat} "
            f"(failed runs not counted); {machine()}; MB = 10^6 B; entries = the objects under the prefix (files and directory "
            f"objects), all listed by a no-change import.\n\n{table(runs, specs, objects)}\n")
    print("\n" + text, flush=True)
    with open(os.path.join(outdir, "table.md"), "w") as f:
        f.write(text)
    with open(os.path.join(outdir, "raw.json"), "w") as f:
        json.dump({"stamp": stamp, "args": vars(args), "specs": specs, "objects": objects, "runs": runs}, f, indent=1, default=str)
    print(f"== wrote {outdir}/table.md, raw.json and logs/", flush=True)
    return 0 if runs and all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
