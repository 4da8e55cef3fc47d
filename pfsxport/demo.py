"""`pfsxport demo`: the embedded default. Starts SeaweedFS on 127.0.0.1, builds a sample
tree, exports it with `mpiexec -n N`, prints the task description, a few objects with
their FSx metadata and the report, then stops the server.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

from .localstore import SeaweedFS

BUCKET = "pfsxport-demo"


def make_sample_tree(root: str) -> None:
    """A small tree with what an HPC results directory holds, plus the odd cases."""
    os.makedirs(root, exist_ok=True)
    for run in range(1, 4):
        d = os.path.join(root, "results", f"run-{run:03d}")
        os.makedirs(d, exist_ok=True)
        for i in range(40):
            with open(os.path.join(d, f"step-{i:04d}.csv"), "w") as f:
                f.write("step,energy\n" + "".join(f"{j},{(run * i * j) % 97 / 7:.5f}\n" for j in range(50)))
    ck = os.path.join(root, "checkpoints")
    os.makedirs(ck, exist_ok=True)
    with open(os.path.join(ck, "state.bin"), "wb") as f:  # 3 parts of 8 MiB + a tail: multipart
        for i in range(25):
            f.write(bytes([i]) * (1 << 20))
    os.makedirs(os.path.join(root, "empty dir"), exist_ok=True)
    with open(os.path.join(root, "notes, ünïcode & spaces.txt"), "w") as f:
        f.write("names with spaces, commas and unicode keep their bytes\n")
    os.symlink("results/run-003", os.path.join(root, "latest"))
    os.mkfifo(os.path.join(root, "control.fifo"))  # special file: skipped with a warning
    os.chmod(os.path.join(root, "results"), 0o2775)  # setgid is cleared in file-permissions


def _picture(report: str, kept: bool) -> None:
    """The task's picture (`pfsxport report plot`), where matplotlib is installed."""
    try:
        from .plot import plot
    except ImportError:
        print("== a picture of the task: pip install 'pfsxport[plot]', then pfsxport report plot TASK_ID")
        return
    out = os.path.join(os.path.dirname(report), "report.png")
    plot(report, out)
    print(f"== a picture of the task (pfsxport report plot): {out}"
          + ("" if kept else " (it goes with the demo's temporary directory: keep it with --workdir DIR)"))


def demo(ranks: int = 2, workdir: str | None = None) -> int:
    work = workdir or tempfile.mkdtemp(prefix="pfsxport-demo-")
    tree, state = os.path.join(work, "tree"), os.path.join(work, "state")
    if os.path.exists(tree):
        shutil.rmtree(tree)
    print(f"== pfsxport demo in {work}", flush=True)
    make_sample_tree(tree)
    print("== starting SeaweedFS on 127.0.0.1 ...", flush=True)
    with SeaweedFS(os.path.join(work, "seaweedfs")) as s3:
        s3.create_bucket(BUCKET)
        print(f"== S3 endpoint {s3.endpoint}, bucket {BUCKET}", flush=True)
        mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
        if not os.path.exists(mpiexec):
            mpiexec = shutil.which("mpiexec") or "mpiexec"
        cmd = [mpiexec, "-n", str(ranks), sys.executable, "-m", "pfsxport", "export",
               "--fs-root", tree, "--repository", f"s3://{BUCKET}/export/",
               "--report-path", f"s3://{BUCKET}/reports", "--state-dir", state,
               "--part-size", "8MiB", "--multipart-threshold", "8MiB", "--progress", "log",
               "--progress-interval", "0.5"]
        print("== " + " ".join(cmd), flush=True)
        env = dict(os.environ, **s3.env())
        out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
        task_id = out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""
        print(f"== export exited with {out.returncode}; task {task_id}", flush=True)
        if not task_id or out.returncode not in (0, 3):
            print(f"== the export did not run to the end (exit {out.returncode}); see the log above")
            return out.returncode or 1
        from .state import StateDir

        rec = StateDir(state).read(task_id)
        print("== pfsxport task describe " + task_id)
        print(json.dumps({"DataRepositoryTasks": [rec.to_fsx()]}, indent=4, ensure_ascii=False))
        c = s3.client()
        keys = [o["Key"] for p in c.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="export/")
                for o in p.get("Contents", [])]
        print(f"== {len(keys)} objects under s3://{BUCKET}/export/, for example:")
        types = set()
        for key in ("export/checkpoints/state.bin", "export/latest", "export/notes, ünïcode & spaces.txt"):
            h = c.head_object(Bucket=BUCKET, Key=key)
            types.add(h["ContentType"])
            print(f"   {key}  {h['ContentLength']} bytes  {h['ContentType']}  {h['Metadata']}")
        if types - {"application/octet-stream"}:
            print("   (pfsxport sends application/octet-stream; SeaweedFS replaces it with a type guessed from "
                  "the file name, and keeps no metadata on directory keys: see 'Known store quirks' in the README)")
        base = f"reports/{task_id}/"
        kept = f"local copy in {StateDir(state).task_dir(task_id)}" if workdir else \
            "the local copy goes with the demo's temporary directory (keep it with --workdir DIR)"
        print(f"== report: s3://{BUCKET}/{base}{{failures.csv,report.csv,report.h5}}; {kept}")
        failures = c.get_object(Bucket=BUCKET, Key=base + "failures.csv")["Body"].read().decode()
        print(f"   failures.csv: {len(failures.splitlines())} line(s)" + (":\n" + failures if failures else ""))
        import h5py

        with h5py.File(os.path.join(StateDir(state).task_dir(task_id), "report.h5")) as f:
            g = f["entries"]
            print(f"   report.h5: {g['path'].shape[0]} rows; first rows:")
            for i in range(min(5, g["path"].shape[0])):
                print(f"     {g['path'][i].decode():40s} {g['type'][i].decode():9s} "
                      f"{g['status'][i].decode():9s} {g['bytes'][i]:>9d} B  {g['checksum'][i].decode()}  "
                      f"rank {g['rank'][i]}")
        _picture(os.path.join(StateDir(state).task_dir(task_id), "report.h5"), bool(workdir))
        print("== stopping SeaweedFS", flush=True)
    if not workdir:
        shutil.rmtree(work, ignore_errors=True)
    return out.returncode
