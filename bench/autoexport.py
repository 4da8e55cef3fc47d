"""Auto-export benchmark: the lag from a file's close to its object in S3, and burst throughput.

Usage (with the project's virtualenv):

    python bench/autoexport.py [--files 1000] [--rate 50] [--burst 10000] [--debounce 0.5]
                               [--workdir DIR] [--out bench/results]

What it does, on one SeaweedFS (pfsxport.localstore.SeaweedFS, in a temporary directory):
1. Makes a tree with one directory, links it to a fresh bucket with
   `pfsxport dra create --events NEW,CHANGED,DELETED`, and starts `pfsxport auto-export`
   (inotify source, the given --debounce, no periodic rescan).
2. Lag: writes --files files of 4 KiB one after another at --rate files per second
   (open, write, close), noting each close time; a poller lists the prefix without pause
   (ListObjectsV2, about every 10-30 ms) and notes when each key is first seen. The lag of a
   file is first-seen minus close; the poller's period bounds the error (printed).
3. Burst: writes --burst files of 4 KiB into a new directory as fast as one Python process can,
   then waits until every key is listed. Throughput = files / (last key seen - first file closed);
   the creation time alone is printed beside it.
4. Checks the bucket: every file present with its size. Prints a table and writes JSON to --out.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pfsxport.localstore import SeaweedFS  # noqa: E402


def _client(s3: SeaweedFS):
    import boto3
    import botocore.config

    env = s3.env()
    return boto3.client("s3", endpoint_url=s3.endpoint, aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1",
                        config=botocore.config.Config(s3={"addressing_style": "path"}, max_pool_connections=4))


def _keys(client, bucket: str, prefix: str) -> dict[str, int]:
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
    return out


class Poller(threading.Thread):
    """Lists a prefix without pause; remembers when each key was first seen."""

    def __init__(self, client, bucket: str, prefix: str):
        super().__init__(daemon=True)
        self.client, self.bucket, self.prefix = client, bucket, prefix
        self.seen: dict[str, float] = {}
        self.periods: list[float] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            t0 = time.monotonic()
            keys = _keys(self.client, self.bucket, self.prefix)
            t1 = time.monotonic()
            for k in keys:
                self.seen.setdefault(k, t1)
            self.periods.append(t1 - t0)


def _write(path: str, data: bytes) -> float:
    with open(path, "wb") as f:
        f.write(data)
    return time.monotonic()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=50.0, help="files per second in the lag phase")
    ap.add_argument("--burst", type=int, default=10000)
    ap.add_argument("--debounce", type=float, default=0.5)
    ap.add_argument("--workdir")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = ap.parse_args()
    work = args.workdir or tempfile.mkdtemp(prefix="pfsxport-ae-bench-")
    os.makedirs(work, exist_ok=True)
    root, state = os.path.join(work, "fs"), os.path.join(work, "state")
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(state, ignore_errors=True)
    os.makedirs(os.path.join(root, "live"))
    s3 = SeaweedFS(os.path.join(work, "seaweedfs")).start()
    env = {**os.environ, **s3.env()}
    client = _client(s3)
    bucket = f"ae-{int(time.time())}"
    client.create_bucket(Bucket=bucket)
    py = [sys.executable, "-m", "pfsxport"]
    r = subprocess.run(py + ["dra", "create", "--fs-root", root, "--state-dir", state, "--file-system-path", "/live",
                             "--data-repository-path", f"s3://{bucket}/live/", "--events", "NEW,CHANGED,DELETED"],
                       env=env, capture_output=True, text=True)
    if r.returncode:
        print(r.stderr, file=sys.stderr)
        return 1
    log = open(os.path.join(work, "service.log"), "wb")
    svc = subprocess.Popen(py + ["auto-export", "--fs-root", root, "--state-dir", state, "--debounce",
                                 str(args.debounce), "--rescan-interval", "0"], env=env, stderr=log)
    result: dict = {"files": args.files, "rate": args.rate, "burst": args.burst, "debounce": args.debounce}
    try:
        time.sleep(2.0)
        data = os.urandom(4096)
        # ---- lag --------------------------------------------------------------------------
        poller = Poller(client, bucket, "live/lag/")
        os.makedirs(os.path.join(root, "live", "lag"))
        time.sleep(1.0)
        poller.start()
        closed: dict[str, float] = {}
        t_next = time.monotonic()
        for i in range(args.files):
            closed[f"live/lag/f{i:05d}"] = _write(os.path.join(root, "live", "lag", f"f{i:05d}"), data)
            t_next += 1.0 / args.rate
            time.sleep(max(0.0, t_next - time.monotonic()))
        deadline = time.monotonic() + 120
        while len(set(closed) & set(poller.seen)) < len(closed) and time.monotonic() < deadline:
            time.sleep(0.05)
        poller.done.set()
        poller.join()
        lags = sorted(poller.seen[k] - t for k, t in closed.items() if k in poller.seen)
        result["lag"] = {"seen": len(lags), "median_s": statistics.median(lags), "p95_s": lags[int(0.95 * len(lags)) - 1],
                         "worst_s": lags[-1], "best_s": lags[0],
                         "poll_period_median_s": statistics.median(poller.periods)}
        # ---- burst ------------------------------------------------------------------------
        bdir = os.path.join(root, "live", "burst")
        os.makedirs(bdir)
        t0 = time.monotonic()
        for i in range(args.burst):
            _write(os.path.join(bdir, f"b{i:06d}"), data)
        t_created = time.monotonic()
        deadline = time.monotonic() + 600
        n = 0
        while time.monotonic() < deadline:
            n = sum(1 for k in _keys(client, bucket, "live/burst/") if not k.endswith("/"))
            if n >= args.burst:
                break
            time.sleep(0.2)
        t_all = time.monotonic()
        result["burst_result"] = {"created_s": t_created - t0, "all_in_s3_s": t_all - t0, "objects": n,
                                  "files_per_s": args.burst / (t_all - t0)}
        keys = _keys(client, bucket, "live/")
        want = {f"live/lag/f{i:05d}" for i in range(args.files)} | {f"live/burst/b{i:06d}" for i in range(args.burst)}
        missing = [k for k in want if keys.get(k) != 4096]
        result["check"] = {"missing_or_wrong": len(missing)}
    finally:
        svc.terminate()
        svc.wait(60)
        s3.stop()
    lag, b = result["lag"], result["burst_result"]
    print(f"auto-export, debounce {args.debounce} s, inotify, one SeaweedFS on this machine")
    print(f"lag close -> listed in S3 over {lag['seen']} files at {args.rate:.0f} files/s: "
          f"median {lag['median_s'] * 1000:.0f} ms, p95 {lag['p95_s'] * 1000:.0f} ms, worst {lag['worst_s'] * 1000:.0f} ms "
          f"(poller period {lag['poll_period_median_s'] * 1000:.0f} ms)")
    print(f"burst of {args.burst} x 4 KiB: created in {b['created_s']:.1f} s, all in S3 after {b['all_in_s3_s']:.1f} s "
          f"-> {b['files_per_s']:.0f} files/s")
    print(f"check: {result['check']['missing_or_wrong']} missing or wrong")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"autoexport-{time.strftime('%Y%m%d-%H%M%S')}.json"), "w") as f:
        json.dump(result, f, indent=1)
    return 0 if result["check"]["missing_or_wrong"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
