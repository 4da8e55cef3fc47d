"""Per-rank resource wrapper for the benchmark: `python bench/rss.py [--out-dir DIR] -- CMD ...`.

Runs CMD as a child (fork + exec, so the MPI/PMI file descriptors and environment pass through
unchanged), waits for it with os.wait4 and writes the child's own figures to
DIR/rank-<PMI_RANK>.json: peak RSS (ru_maxrss, KiB), user and system CPU seconds, exit status.
DIR defaults to $BENCH_RSS_DIR. SIGINT/SIGTERM/SIGHUP are forwarded to the child. Exits with
the child's exit code (128 + signal number if it was killed by a signal).

Standard library only; run it with `python -S` to keep the wrapper's own start-up small (its
CPU is not in the per-rank figures, only in the whole-tree figure that bench/run.py measures).
"""
from __future__ import annotations

import json
import os
import signal
import sys


def main(argv: list[str]) -> int:
    out_dir = os.environ.get("BENCH_RSS_DIR", "")
    if argv[:1] == ["--out-dir"]:
        out_dir, argv = argv[1], argv[2:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: rss.py [--out-dir DIR] -- CMD [ARG ...]", file=sys.stderr)
        return 2
    rank = os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("PMIX_RANK", "0")))
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)

    def forward(signum, _frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, forward)
    while True:
        try:
            _, status, ru = os.wait4(pid, 0)
            break
        except InterruptedError:
            continue
    code = os.waitstatus_to_exitcode(status)
    rc = 128 - code if code < 0 else code
    if out_dir:
        rec = {"rank": int(rank), "pid": pid, "maxrss_kib": ru.ru_maxrss, "utime": ru.ru_utime,
               "stime": ru.ru_stime, "exit": rc, "minflt": ru.ru_minflt, "majflt": ru.ru_majflt,
               "nvcsw": ru.ru_nvcsw, "nivcsw": ru.ru_nivcsw}
        tmp = os.path.join(out_dir, f".rank-{rank}.json.tmp")
        with open(tmp, "w") as f:
            json.dump(rec, f)
        os.replace(tmp, os.path.join(out_dir, f"rank-{rank}.json"))
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
