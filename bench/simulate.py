"""The export at 10, 100 and 1,000 ranks, simulated in one process: do entries/s grow in a
straight line with the ranks, and does the coordinator keep up?

    python bench/simulate.py [--ranks 10,100,1000] [--per-rank 2000] [--put-ms 0.3]

What is real: the scan (`Transfer.scan` with only the lstat of each directory's children
replaced, as bench/planner.py does), the routing into units, `worker.split` (what stays on
the rank), every rank's `share.LocalQueue` and its halves given to thieves, the coordinator
(`schedule.Scheduler.serve` with each rank's `share.Tally` and `share.Status`, and
`share.Termination`), and a `report.ReportWriter` shard per rank that every row goes to.

What is modelled: time. Each rank runs one unit at a time on a simulated clock: a small file
costs `--put-ms` (the client's CPU per small file, which is what bounds a rank), a scan 5 µs
per child. A message takes 20 µs. The coordinator is a queue served one request at a time,
each taking the real CPU time its `serve` call took here, and rank 0 loses that time from
its own work. Ranks report every worker.HEARTBEAT and when they have something for
the coordinator; an idle rank asks a random peer for work and the coordinator for its own,
backing off as worker.Worker does.

Prints per rank count: entries, simulated seconds, entries/s (and per rank), the
coordinator's requests, its real CPU seconds and utilisation (CPU / simulated time: below 1
means it keeps up), messages to or from rank 0 per 1,000 entries, thefts, the most entries one
rank held queued, and the real peak RSS of this process. A benchmark: it asserts nothing.
"""
from __future__ import annotations

import argparse
import heapq
import os
import random
import resource
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import planner  # noqa: E402

from pfsxport.config import TransferSettings  # noqa: E402
from pfsxport.export import Transfer, TransferOptions  # noqa: E402
from pfsxport.export import scan as scan_mod  # noqa: E402
from pfsxport.model import BatchUnit, DirUnit  # noqa: E402
from pfsxport.plan import S3_MAX_OBJECT  # noqa: E402
from pfsxport.report import ReportWriter  # noqa: E402
from pfsxport.schedule import STOP, WAIT, Request, Scheduler  # noqa: E402
from pfsxport.share import LocalQueue, Status, Tally  # noqa: E402
from pfsxport.worker import HEARTBEAT, STEAL_BACKOFF, split  # noqa: E402

LATENCY = 20e-6
SCAN_PER_CHILD = 5e-6


class SmallFiles(planner.Namespace):
    """planner's namespace, every file 4 KiB: the case whose rate the coordinator could cap."""

    def children(self, rel):
        return [(n, planner._Stat(planner.FILE_MODE, 4096, s.st_ino) if s.st_mode == planner.FILE_MODE else s)
                for n, s in super().children(rel)]


class SimRank:
    def __init__(self, rank: int, writer: ReportWriter, longest: float):
        self.rank = rank
        self.pool = LocalQueue()
        self.held: list = []  # the coordinator's units, not yet run
        self.outbox: list = []
        self.tally = Tally()
        self.writer = writer
        self.busy_until = 0.0
        self.asked = self.stealing = self.stopped = False
        self.last_post = -1.0
        self.backoff = 0.0
        self.steal_wait = self.steal_wait_until = 0.0
        self.given = self.taken = 0
        self.peak = 0
        self.longest = longest
        self.central = (1, 1)

    @property
    def idle(self) -> bool:
        return not (self.pool or self.held or self.stealing) and self.busy_until == 0.0


class Sim:
    def __init__(self, nranks: int, per_rank: int, put_s: float, work: str):
        self.n = nranks
        self.ns = SmallFiles(nranks * per_rank, 200)
        ts = TransferSettings()
        opts = TransferOptions(part_size=ts.part_size, multipart_threshold=ts.multipart_threshold,
                               max_object_size=S3_MAX_OBJECT, batch_entries=ts.batch_entries,
                               busy_retries=ts.busy_retries)
        self.transfer = Transfer(planner.FS_ROOT, None, None, planner.SyntheticLayouts(ts.stripe_size), opts)
        self.exe = planner.Ranks(self.transfer, ts.part_size)
        self.put_s = put_s
        longest = min(0.25, max(0.02, 0.0005 * nranks))  # as worker.Worker
        self.ranks = [SimRank(r, ReportWriter(work, r), longest) for r in range(nranks)]
        self.sched = Scheduler([DirUnit("")], nranks)
        self.events: list = []
        self.seq = 0
        self.coord_free = 0.0
        self.coord_cpu = 0.0
        self.last_done = 0.0
        self.owed = 0.0  # coordinator CPU that rank 0's own work has not paid for yet
        self.requests = 0
        self.thefts = 0
        self.rng = random.Random(1)

    def at(self, t: float, fn, *args) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, fn, args))

    # ---- a rank ------------------------------------------------------------------------

    def step(self, t: float, r: SimRank) -> None:
        """Start the rank's next unit, or post, or steal."""
        if r.stopped or r.busy_until:
            return
        unit = r.held.pop(0) if r.held else r.pool.take()
        r.peak = max(r.peak, sum(len(u.entries) if isinstance(u, BatchUnit) else 1
                                 for u in list(r.pool.dirs) + list(r.pool.batches)))
        if unit is not None:
            cost = self.cost(unit)
            if r.rank == 0:  # the coordinator's CPU is rank 0's
                cost += self.owed
                self.owed = 0.0
            r.busy_until = t + cost
            self.at(r.busy_until, self.done, r, unit)
        elif not r.stealing and self.n > 1 and t >= r.steal_wait_until:
            self.steal(t, r)
        self.maybe_post(t, r)

    def cost(self, unit) -> float:
        if isinstance(unit, DirUnit):
            return 1e-4 + SCAN_PER_CHILD * len(self.ns.children(unit.path))
        if isinstance(unit, BatchUnit):
            return self.put_s * len(unit.entries)
        return self.put_s

    def done(self, t: float, r: SimRank, unit) -> None:
        o = self.exe.execute(unit, r.rank)
        r.tally.rows(o.rows)
        r.writer.add(o.rows)
        o.rows = []
        if o.discovered is not None:
            r.tally.discovered += o.discovered.entries
            o.discovered = None
        local, o.units = split(o.units)
        for u in local:
            r.pool.push(u)
        if unit.uid > 0 or o.units or o.started or o.parts:
            r.outbox.append(o)
        r.busy_until = 0.0
        self.last_done = t
        self.step(t, r)

    def maybe_post(self, t: float, r: SimRank) -> None:
        if r.asked or r.stopped:
            return
        due = t - r.last_post >= r.backoff
        if r.outbox or (due and (r.idle or r.central != (0, 0))) or t - r.last_post >= HEARTBEAT:
            r.asked, r.last_post = True, t
            req = Request(r.outbox, 8 if not r.pool else 1, 8, tally=Tally(*r.tally.as_tuple()),
                          status=Status(r.idle, r.given, r.taken, len(r.pool)))
            r.outbox = []
            self.at(t + LATENCY, self.serve, r, req)
        elif not r.busy_until:
            self.at(t + max(r.backoff, 0.001), self.step, r)

    def serve(self, t: float, r: SimRank, req: Request) -> None:
        start = max(t, self.coord_free)
        c0 = time.process_time()
        reply = self.sched.serve(r.rank, req)
        spent = time.process_time() - c0
        self.coord_cpu += spent
        self.owed += spent
        self.requests += r.rank != 0  # rank 0's own are calls, not messages
        self.coord_free = start + spent
        self.at(self.coord_free + LATENCY, self.reply, r, reply)

    def reply(self, t: float, r: SimRank, reply) -> None:
        r.asked = False
        r.central = (reply.light, reply.heavy)
        if reply.units is STOP:
            r.stopped = True
            return
        if reply.units is WAIT:  # as worker.Worker
            r.backoff = r.longest if reply.light + reply.heavy == 0 else min(r.longest, max(0.001, r.backoff * 2))
        else:
            r.backoff = 0.0
            r.held.extend(reply.units)
        self.step(t, r)

    def steal(self, t: float, r: SimRank) -> None:
        victim = self.ranks[(r.rank + 1 + self.rng.randrange(self.n - 1)) % self.n]
        r.stealing = True
        self.thefts += 1
        self.at(t + LATENCY, self.answer, victim, r)

    def answer(self, t: float, victim: SimRank, thief: SimRank) -> None:
        spare = victim.busy_until or len(victim.pool) > 1
        loot = victim.pool.steal() if spare and not victim.stopped else []
        victim.given += len(loot)
        self.at(t + LATENCY, self.loot, thief, loot)

    def loot(self, t: float, r: SimRank, units: list) -> None:
        r.stealing = False
        r.taken += len(units)
        for u in units:
            r.pool.push(u)
        r.steal_wait = 0.0 if units else min(STEAL_BACKOFF, r.steal_wait * 2 or 0.001)
        r.steal_wait_until = t + r.steal_wait
        if units:
            self.step(t, r)
        else:
            self.at(r.steal_wait_until, self.step, r)

    def run(self) -> dict:
        for r in self.ranks:
            self.at(0.0, self.step, r)
        t = 0.0
        while self.events and not all(r.stopped for r in self.ranks):
            t, _, fn, args = heapq.heappop(self.events)
            fn(t, *args)
        for r in self.ranks:
            r.writer.finish()
        total = Tally.summed(r.tally for r in self.ranks)
        return {"entries": self.ns.entries, "rows": total.total, "seconds": t, "work_s": self.last_done, "requests": self.requests,
                "coord_cpu": self.coord_cpu, "thefts": self.thefts,
                "moved": sum(r.taken for r in self.ranks), "peak": max(r.peak for r in self.ranks)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ranks", default="10,100,1000")
    ap.add_argument("--per-rank", type=int, default=2000, help="entries per rank (weak scaling)")
    ap.add_argument("--put-ms", type=float, default=0.3)
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # a report shard per simulated rank
    real = scan_mod.scan_dir
    print("| ranks | entries | simulated s (last unit done) | entries/s | per rank | coordinator requests | its CPU s | "
          "utilisation | messages to/from rank 0 per 1,000 entries | thefts | units moved | most entries "
          "queued on one rank | peak RSS of the process MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n in (int(x) for x in a.ranks.split(",")):
        with tempfile.TemporaryDirectory(prefix="pfsxport-sim-") as work:
            sim = Sim(n, a.per_rank, a.put_ms / 1000, work)
            scan_mod.scan_dir = sim.ns.scan_dir
            try:
                res = sim.run()
            finally:
                scan_mod.scan_dir = real
            assert res["rows"] == res["entries"], res  # every entry exactly once
            rate = res["entries"] / res["seconds"]
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
            print(f"| {n} | {res['entries']:,} | {res['seconds']:.2f} ({res['work_s']:.2f}) | {rate:,.0f} | {rate / n:,.0f} | "
                  f"{res['requests']:,} | {res['coord_cpu']:.2f} | {res['coord_cpu'] / res['seconds']:.3f} | "
                  f"{2 * res['requests'] / res['entries'] * 1000:.2f} | {res['thefts']:,} | {res['moved']:,} | "
                  f"{res['peak']:,} | {rss} |", flush=True)


if __name__ == "__main__":
    main()
