"""CPU seconds per rank of one export, the coordinator's (rank 0's) beyond the median rank's,
per entry: how much per-entry work rank 0 still does (bench/README.md has the method).

    python bench/rankcpu.py --files 20000 --ranks 1,2,4 [--dry-run] [--repeat 3]

Builds FILES x 4 KiB in 100 directories, starts a local SeaweedFS, and runs a full export
into a fresh bucket under `mpiexec -n N` for each N, every rank under /usr/bin/time. Prints
a table: wall, CPU per rank, rank 0 minus the median of the others, in microseconds per
entry. A benchmark: it asserts nothing about speed.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from pfsxport.localstore import SeaweedFS  # noqa: E402


def build(root: str, files: int) -> None:
    per = max(1, files // 100)
    for i in range(files):
        d = os.path.join(root, f"d{i // per:03d}")
        if i % per == 0:
            os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i:07d}"), "wb") as f:
            f.write(b"x" * 4096)


def run(s3, root: str, work: str, ranks: int, dry: bool, rep: int) -> dict:
    bucket = f"rank-cpu-{ranks}-{rep}-{int(time.time() * 1000) % 10**8}"
    s3.create_bucket(bucket)
    out = os.path.join(work, f"time-{ranks}-{rep}")
    os.makedirs(out, exist_ok=True)
    state = os.path.join(work, f"state-{ranks}-{rep}")
    bindir = os.path.dirname(sys.executable)
    timed = f'exec /usr/bin/time -o "{out}/rank-$PMI_RANK" -f "%U %S %M" "$@"'  # one file per rank, by its rank
    cmd = [os.path.join(bindir, "mpiexec"), "-n", str(ranks), "sh", "-c", timed, "sh",
           sys.executable, "-m", "pfsxport", "export", "--fs-root", root,
           "--repository", f"s3://{bucket}/x/", "--state-dir", state, "--progress", "off", "--full"]
    if dry:
        cmd.append("--dry-run")
    env = dict(os.environ, **s3.env())
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"export failed ({r.returncode}):\n{r.stderr[-3000:]}")
    cpus = []
    for rank in range(ranks):
        with open(os.path.join(out, f"rank-{rank}")) as f:
            u, s, m = f.read().split()[-3:]
        cpus.append((float(u) + float(s), int(m)))
    return {"wall": wall, "cpus": cpus}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--ranks", default="1,2,4")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--dry-run", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pfsxport-rankcpu-") as work:
        root = os.path.join(work, "tree")
        build(root, a.files)
        entries = a.files + 100
        with SeaweedFS(os.path.join(work, "seaweedfs")) as s3:
            print("| ranks | wall s | CPU s per rank (rank 0 first) | rank 0 beyond the median of the others, "
                  "µs per entry | peak RSS MiB (rank 0 first) |")
            print("|---|---|---|---|---|")
            for n in (int(x) for x in a.ranks.split(",")):
                for rep in range(a.repeat):
                    res = run(s3, root, work, n, a.dry_run, rep)
                    cpus = [c for c, _ in res["cpus"]]
                    rss = [m // 1024 for _, m in res["cpus"]]
                    extra = (cpus[0] - statistics.median(cpus[1:])) / entries * 1e6 if n > 1 else float("nan")
                    print(f"| {n} | {res['wall']:.2f} | {', '.join(f'{c:.2f}' for c in cpus)} | {extra:.1f} | "
                          f"{', '.join(map(str, rss))} |", flush=True)


if __name__ == "__main__":
    main()
