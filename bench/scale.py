"""The export's scaling with ranks: CPU seconds and peak RSS per rank, rank 0's CPU beyond the
median rank's per entry, and the messages to or from rank 0 per 1,000 entries (bench/README.md
has the method and the targets). With work stealing the ranks' shares of the rows differ, so
the table also gives rank 0's CPU beyond what its own rows cost at the other ranks' median
rate: its coordination alone.

    python bench/scale.py --files 20000,200000 --ranks 1,2,4,8 [--modes store,dry] [--repeat 1]
    python bench/scale.py --files 2000000 --ranks 2,4 --modes dry --empty   # the RSS bound, no data

Builds FILES files of 4 KiB (or empty with --empty) in directories of 200, starts a local
SeaweedFS, and runs a full export into a fresh bucket under `mpiexec -n N` for each N (8 is
oversubscribed on small machines: CPU seconds still add up), every rank under /usr/bin/time.
`store` sends the data; `dry` is `--dry-run` (the walk, the comparison and the planning, no
request): the coordination cost with no store in the way. Prints one table row per run.
A benchmark: it asserts nothing about speed.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from pfsxport.localstore import SeaweedFS  # noqa: E402

PER_DIR = 200
_TRAFFIC = re.compile(r"coordination: (\d+) messages to or from rank 0 .* (\d+) units moved by theft")


def build(root: str, files: int, size: int) -> int:
    """FILES files in directories of PER_DIR (made unless `root` holds them already, from an
    earlier run with the same --files); returns the number of entries (directories too)."""
    body = b"x" * size
    dirs = -(-files // PER_DIR)
    done = os.path.join(root, ".built")
    if not os.path.exists(done):
        for i in range(files):
            d = os.path.join(root, f"d{i // PER_DIR // 100:03d}", f"e{i // PER_DIR % 100:02d}")
            if i % PER_DIR == 0:
                os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, f"f{i:08d}"), "wb") as f:
                if body:
                    f.write(body)
        with open(done, "w") as f:
            f.write(f"{files} {size}\n")
    return files + dirs + -(-dirs // 100) + 1  # + the .built file


def run(s3, root: str, work: str, ranks: int, dry: bool, tag: str) -> dict:
    bucket = f"scale-{tag}-{int(time.time() * 1000) % 10**8}"
    s3.create_bucket(bucket)
    out = os.path.join(work, f"time-{tag}")
    os.makedirs(out, exist_ok=True)
    state = os.path.join(work, f"state-{tag}")
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
    m = _TRAFFIC.search(r.stderr)
    return {"wall": wall, "cpus": cpus, "messages": int(m.group(1)) if m else 0, "moved": int(m.group(2)) if m else 0,
            "rows": rows_per_rank(state, ranks)}


def rows_per_rank(state: str, ranks: int) -> list[int]:
    """How many report rows each rank wrote: with work stealing the shares need not be equal."""
    import h5py

    tasks = os.path.join(state, "tasks")
    [task] = [d for d in os.listdir(tasks) if os.path.isdir(os.path.join(tasks, d))]
    with h5py.File(os.path.join(tasks, task, "report.h5")) as f:
        col = f["entries"]["rank"][:]
    return [int((col == r).sum()) for r in range(ranks)]


def excess(cpus: list[float], rows: list[int]) -> float:
    """Rank 0's CPU seconds beyond what its own rows cost at the other ranks' median rate."""
    rate = statistics.median(c / max(1, n) for c, n in zip(cpus[1:], rows[1:], strict=True))
    return cpus[0] - rows[0] * rate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", default="20000", help="comma-separated tree sizes")
    ap.add_argument("--ranks", default="1,2,4,8")
    ap.add_argument("--modes", default="store,dry")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--empty", action="store_true", help="empty files (a tree of millions on a small disk)")
    ap.add_argument("--keep", help="build the trees in this directory and reuse them in later runs")
    a = ap.parse_args()
    print("| entries | mode | ranks | wall s | CPU s per rank (rank 0 first) | rows per rank | rank 0 beyond the "
          "median, µs/entry | the same for rank 0's own rows, µs/entry | messages to/from rank 0 per 1,000 entries | "
          "units moved by theft | peak RSS MiB (rank 0 first) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for files in (int(x) for x in a.files.split(",")):
        with tempfile.TemporaryDirectory(prefix="pfsxport-scale-") as work:
            root = os.path.join(a.keep, f"tree-{files}-{int(not a.empty)}") if a.keep else os.path.join(work, "tree")
            entries = build(root, files, 0 if a.empty else 4096)
            with SeaweedFS(os.path.join(work, "seaweedfs")) as s3:
                for mode in a.modes.split(","):
                    for n in (int(x) for x in a.ranks.split(",")):
                        for rep in range(a.repeat):
                            res = run(s3, root, work, n, mode == "dry", f"{mode}-{n}-{rep}")
                            cpus = [c for c, _ in res["cpus"]]
                            rss = [m // 1024 for _, m in res["cpus"]]
                            extra = (cpus[0] - statistics.median(cpus[1:])) / entries * 1e6 if n > 1 else float("nan")
                            fair = excess(cpus, res["rows"]) / entries * 1e6 if n > 1 else float("nan")
                            per_k = res["messages"] / entries * 1000
                            print(f"| {entries:,} | {mode} | {n} | {res['wall']:.2f} | "
                                  f"{', '.join(f'{c:.2f}' for c in cpus)} | {', '.join(map(str, res['rows']))} | "
                                  f"{extra:.1f} | {fair:.1f} | {per_k:.2f} | "
                                  f"{res['moved']:,} | {', '.join(map(str, rss))} |", flush=True)


if __name__ == "__main__":
    main()
