"""Faults from the store: throttling (503 SlowDown), 500s, connection resets, answers cut
mid-body and read timeouts are retried through the one choke point and the export completes
whole; a part that fails for good aborts its upload and fails that one file (S3Error), never
the job.

The faults come from tests/faultproxy.py, a small HTTP proxy of ours on 127.0.0.1 in front of
SeaweedFS. pfsxport talks to the proxy; the tests read the bucket straight from SeaweedFS.
Which requests get a fault depends on timing (the proxy draws in arrival order from a seeded
generator), so every assertion here holds whichever requests are hit.

Signals are faults from the other side: scancel, walltime, a node drain and Ctrl-C send SIGTERM
or SIGINT to a running export. Those tests slow the export with the test hook
PFSXPORT_TEST_ENTRY_DELAY and signal it while multipart uploads are open."""
from __future__ import annotations

import csv
import errno
import json
import os
import random
import re
import signal
import subprocess
import time
from contextlib import contextmanager

import pytest
from conftest import describe, export_cmd, list_keys, pfsxport, run_export, task_id_of
from faultproxy import (
    FaultProxy,
    idempotent,
    is_complete_multipart,
    is_create_multipart,
    is_list_uploads,
    is_put,
    is_upload_part,
    key_contains,
)
from test_incremental import Poller
from treeutil import assert_bucket_matches_tree, settle_atimes

MiB = 1 << 20


def make_tree(root, small: int = 300, dirs: int = 5, big: int = 3, parts: int = 4, seed: int = 0) -> str:
    """`small` small files spread over directories d0..d{dirs-1}, and big/b0.. of `parts` 5 MiB
    parts each (the last one short)."""
    rnd = random.Random(seed)
    for d in range(dirs):
        os.makedirs(os.path.join(root, f"d{d}"), exist_ok=True)
    for i in range(small):
        with open(os.path.join(root, f"d{i % dirs}", f"f{i:04d}"), "wb") as f:
            f.write(rnd.randbytes(rnd.randrange(1, 4096)))
    if big:
        os.makedirs(os.path.join(root, "big"), exist_ok=True)
    for i in range(big):
        with open(os.path.join(root, "big", f"b{i}"), "wb") as f:
            f.write(rnd.randbytes(parts * 5 * MiB - 1000 * (i + 1)))
    settle_atimes(str(root))
    return str(root)


def export(seaweed, proxy, root, bucket, state, *extra, ranks=2, env=None):
    return run_export(seaweed, ["--fs-root", str(root), "--repository", f"s3://{bucket}/x/", "--report-path",
                                f"s3://{bucket}/reports", "--state-dir", str(state), "--endpoint-url", proxy.url,
                                "--part-size", "5MiB", "--multipart-threshold", "5MiB", "--progress", "off",
                                *extra], ranks=ranks, timeout=120, env=env)


def report_rows(state, task) -> dict[str, dict]:
    with open(os.path.join(state, "tasks", task, "report.csv"), newline="") as f:
        return {row["path"]: row for row in csv.DictReader(f)}


def total_retries(rows: dict[str, dict]) -> int:
    return sum(int(row["retries"]) for row in rows.values())


def config(tmp_path, **s3) -> str:
    path = tmp_path / "faults.yaml"
    path.write_text("s3:\n" + "".join(f"  {k}: {v}\n" for k, v in s3.items()))
    return str(path)


def open_uploads(client, bucket) -> list:
    return client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def on_files(proxy, bucket) -> int:
    """Faults on requests for the exported objects (not the probe's, not the report's),
    including the listings of open uploads made for a file whose create was retried."""
    return sum(1 for _, method, target in proxy.events
               if target.startswith(f"/{bucket}/x/") and ".pfsxport-probe-" not in target
               or method == "GET" and target.startswith(f"/{bucket}?") and "uploads" in target)


def unexplained_retries(rows: dict[str, dict], proxy, bucket) -> dict[str, tuple[int, list]]:
    """{path: (retries, the faults seen on its key)} for the rows with more retries than faults."""
    out = {}
    for path, row in rows.items():
        key = f"/{bucket}/x/" + (f"{path}/" if row["type"] == "directory" and path else path)
        seen = [(k, m, t) for k, m, t in proxy.events if t.split("?")[0] == key]
        if int(row["retries"]) > len(seen):
            out[path] = (int(row["retries"]), seen)
    return out


def explain(r, proxy) -> str:
    return f"exit {r.returncode}; proxy: {proxy.summary()}\n{r.stderr[-4000:]}"


@pytest.mark.timeout(150)
def test_ten_percent_of_requests_faulted_the_export_completes_whole(seaweed, tmp_path):
    root = make_tree(tmp_path / "fs")  # 300 small files in 5 directories, 3 files of 4 parts
    bucket = seaweed.new_bucket()
    state = str(tmp_path / "st")
    direct = seaweed.client()
    poller = Poller(seaweed, bucket, root)
    # 10% of all requests: 3% 503 SlowDown, 2.5% 500, 2.5% reset before any answer, 2% cut
    # mid-body. Cuts hit only requests that can be replayed after the store acted on them; the
    # multipart POSTs have their own test below (test_each_multipart_step_faulted_once).
    rates = {"slowdown": 0.03, "internal": 0.025, "reset": 0.025, "cut": 0.02}
    with FaultProxy(seaweed.endpoint, rates=rates, seed=20261123, when_kind={"cut": idempotent}) as proxy:
        poller.start()
        try:
            r = export(seaweed, proxy, root, bucket, state)
        finally:
            poller.stop.set()
            poller.join()
    print(f"10% faults: {proxy.summary()}")
    assert r.returncode == 0, explain(r, proxy)
    task = task_id_of(r)
    t = describe(task, state)
    assert t["Lifecycle"] == "SUCCEEDED"
    assert t["Status"]["TotalCount"] == t["Status"]["SucceededCount"] == 300 + 5 + 1 + 3
    try:
        assert_bucket_matches_tree(direct, bucket, "x/", root, dir_metadata=False, content_types=False)
    except AssertionError as e:  # say what the report and the proxy saw of the keys in question
        rows = report_rows(state, task)
        seen = [(k, m, tg) for k, m, tg in proxy.events if any(p.rstrip("/") in tg for p in rows if p and p in str(e))]
        raise AssertionError(f"{e}\nreport rows: {[rows[p] for p in rows if p and p in str(e)]}\n"
                             f"faults on them: {seen}") from None
    assert open_uploads(direct, bucket) == []
    assert direct.get_object(Bucket=bucket, Key=f"reports/{task}/failures.csv")["Body"].read() == b""
    # the faults really happened, every kind of them ...
    assert all(proxy.counts[k] > 0 for k in rates) and proxy.counts["upstream_error"] == 0, proxy.summary()
    # ... and were retried: they show in the report (each fault on an exported object's request
    # costs that object one retry; the probe's and the report's own requests have no row)
    rows = report_rows(state, task)
    assert 0 < total_retries(rows) <= on_files(proxy, bucket), (total_retries(rows), proxy.summary(),
                                                                 unexplained_retries(rows, proxy, bucket))
    assert int(re.search(r"(\d+) retries", r.stderr).group(1)) == total_retries(rows)
    # seconds of work for two ranks: both took part (a tiny tree may all go to rank 0)
    assert {row["rank"] for row in rows.values()} == {"0", "1"}
    # nobody reading the bucket meanwhile saw a torn object
    assert poller.reads > 0 and poller.bad == []


@pytest.mark.timeout(120)
def test_a_part_failing_for_good_fails_that_file_only(seaweed, tmp_path):
    root = make_tree(tmp_path / "fs", small=40, dirs=2, big=3, parts=3)
    bucket = seaweed.new_bucket()
    state = str(tmp_path / "st")
    direct = seaweed.client()
    doomed = lambda r: is_upload_part(r) and key_contains("/x/big/b1")(r)  # noqa: E731
    with FaultProxy(seaweed.endpoint, always=doomed) as proxy:
        r = export(seaweed, proxy, root, bucket, state, "--config", config(tmp_path, max_attempts=3))
    print(f"failed for good: {proxy.summary()}")
    assert r.returncode == 3, explain(r, proxy)  # FILES_FAILED: the job ran to its end
    task = task_id_of(r)
    t = describe(task, state)
    assert t["Lifecycle"] == "FAILED"
    assert (t["Status"]["FailedCount"], t["Status"]["SucceededCount"]) == (1, 40 + 2 + 1 + 2)
    failures = direct.get_object(Bucket=bucket, Key=f"reports/{task}/failures.csv")["Body"].read()
    assert failures == b"big/b1,failed,S3Error\n"
    row = report_rows(state, task)["big/b1"]
    assert (row["status"], row["error_code"]) == ("failed", "S3Error")
    assert "SlowDown" in row["message"] and "after 3 attempts" in row["message"], row
    assert int(row["retries"]) >= 2  # a part: 3 attempts, 2 retries
    # each attempt of the parts that were tried hit the wall: 3 per part, at most 3 parts
    assert proxy.counts["always"] in (3, 6, 9) and proxy.counts["upstream_error"] == 0, proxy.summary()
    # its upload was aborted and nothing of it is in the bucket
    assert open_uploads(direct, bucket) == []
    assert "x/big/b1" not in list_keys(direct, bucket, "x/")
    # everything else is there and whole
    os.unlink(os.path.join(root, "big", "b1"))
    assert_bucket_matches_tree(direct, bucket, "x/", root, dir_metadata=False, content_types=False)


@pytest.mark.timeout(120)
def test_read_timeouts_are_retried(seaweed, tmp_path):
    root = make_tree(tmp_path / "fs", small=60, dirs=2, big=1, parts=2)
    bucket = seaweed.new_bucket()
    state = str(tmp_path / "st")
    direct = seaweed.client()
    # 10% of the PUTs (objects and parts) wait 3 s before any answer: longer than the 1 s read
    # timeout, so the client gives up on them and tries again
    with FaultProxy(seaweed.endpoint, rates={"delay": 0.1}, seed=7, when=is_put, delay_seconds=3) as proxy:
        r = export(seaweed, proxy, root, bucket, state, "--config", config(tmp_path, read_timeout=1))
    print(f"read timeouts: {proxy.summary()}")
    assert r.returncode == 0, explain(r, proxy)
    task = task_id_of(r)
    assert describe(task, state)["Lifecycle"] == "SUCCEEDED"
    assert_bucket_matches_tree(direct, bucket, "x/", root, dir_metadata=False, content_types=False)
    assert open_uploads(direct, bucket) == []
    assert proxy.counts["delay"] > 0 and proxy.counts["upstream_error"] == 0, proxy.summary()
    assert proxy.counts["delay_dropped"] == proxy.counts["delay"]  # the client hung up on every one
    # every delayed request for an object cost that object a retry (a loaded machine may add
    # timeouts of its own)
    assert total_retries(report_rows(state, task)) >= on_files(proxy, bucket) > 0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("step, kind", [
    ("CreateMultipartUpload", "slowdown"),
    ("UploadPart", "reset"),
    ("CompleteMultipartUpload", "cut"),  # the store completed it; the answer is lost
    ("CreateMultipartUpload", "cut"),  # the store started an upload; its UploadId is lost
])
def test_each_multipart_step_faulted_once(seaweed, tmp_path, step, kind):
    """The first request of one multipart step gets one fault; the rest go through."""
    root = make_tree(tmp_path / "fs", small=0, dirs=0, big=1, parts=2)
    bucket = seaweed.new_bucket()
    state = str(tmp_path / "st")
    direct = seaweed.client()
    which = {"CreateMultipartUpload": is_create_multipart, "UploadPart": is_upload_part,
             "CompleteMultipartUpload": is_complete_multipart}[step]
    with FaultProxy(seaweed.endpoint, rates={kind: 1.0}, when=which, limit={kind: 1}) as proxy:
        r = export(seaweed, proxy, root, bucket, state, ranks=None)
    assert r.returncode == 0, explain(r, proxy)
    assert proxy.counts[kind] == 1 and proxy.counts["upstream_error"] == 0, proxy.summary()
    assert_bucket_matches_tree(direct, bucket, "x/", root, dir_metadata=False, content_types=False)
    assert report_rows(state, task_id_of(r))["big/b0"]["retries"] == "1"
    # nothing left open: an upload whose UploadId never reached pfsxport included
    assert open_uploads(direct, bucket) == [], f"{step} answer lost: upload(s) left open"


@pytest.mark.timeout(120)
def test_a_lost_create_is_cleaned_up_even_when_its_listing_is_faulted(seaweed, tmp_path):
    """The create's answer is cut (the store started an upload nobody knows the id of), and
    the listing made to find that upload gets a 503: both are retried, for that file's account,
    and no upload is left open. Two proxies in a row, one fault each."""
    root = make_tree(tmp_path / "fs", small=0, dirs=0, big=1, parts=2)
    bucket = seaweed.new_bucket()
    state = str(tmp_path / "st")
    direct = seaweed.client()
    with FaultProxy(seaweed.endpoint, rates={"slowdown": 1.0}, when=is_list_uploads, limit={"slowdown": 1}) as inner, \
            FaultProxy(inner.url, rates={"cut": 1.0}, when=is_create_multipart, limit={"cut": 1}) as outer:
        r = export(seaweed, outer, root, bucket, state, ranks=None)
    assert r.returncode == 0, explain(r, outer)
    assert (outer.counts["cut"], inner.counts["slowdown"]) == (1, 1), (outer.summary(), inner.summary())
    assert on_files(outer, bucket) == 2  # the outer one sees both: its cut, and the inner one's 503
    assert_bucket_matches_tree(direct, bucket, "x/", root, dir_metadata=False, content_types=False)
    assert report_rows(state, task_id_of(r))["big/b0"]["retries"] == "2"
    assert open_uploads(direct, bucket) == []


# ---- faults of the state directory: unusable, full, corrupt --------------------------------------

@contextmanager
def tmpfs(path, size: str, *options: str):
    """A small file system of its own at `path` (root only), unmounted at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    os.makedirs(path, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]), "tmpfs", str(path)],
                   check=True, capture_output=True)
    try:
        yield str(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True, capture_output=True)


def fill(directory) -> str:
    """Write a file in `directory` until its file system has no space left."""
    path = os.path.join(directory, "filler")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as e:
        assert e.errno == errno.ENOSPC, e
    try:
        while True:  # the last partial chunk
            os.write(fd, b"\0" * 512)
    except OSError:
        pass
    finally:
        os.close(fd)
    return path


def leftovers(state) -> list[str]:
    """Temporary files left anywhere in the state directory."""
    return [os.path.join(d, n) for d, _, names in os.walk(state) for n in names
            if n.endswith(".tmp") or n == ".rows.pickle"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind, reason", [("read-only", "Read-only file system"), ("a file", "Not a directory"),
                                          ("full", "No space left on device")])
def test_unusable_state_directory_is_refused_with_its_reason(seaweed, tmp_path, kind, reason):
    root = make_tree(tmp_path / "fs", small=3, dirs=1, big=0)
    bucket = seaweed.new_bucket()
    where = tmp_path / "st"
    args = ["--fs-root", root, "--repository", f"s3://{bucket}/x/", "--state-dir", str(where)]
    if kind == "a file":
        where.write_text("not a directory")
        mount = contextmanager(lambda: (yield))()
    else:
        mount = tmpfs(where, "256k", *(["ro"] if kind == "read-only" else []))
    with mount:
        if kind == "full":
            fill(where)
        r = run_export(seaweed, args, ranks=2, timeout=120)
        create = pfsxport("task", "create", *args, env=seaweed.env())
        left = leftovers(where) if kind != "a file" else []
    for out in (r, create):
        assert out.returncode == 7, out.stderr  # the state directory cannot be used
        assert reason in out.stderr and str(where) in out.stderr, out.stderr
        assert "Traceback" not in out.stderr, out.stderr
    assert left == []
    assert list_keys(seaweed.client(), bucket) == {}


@pytest.mark.timeout(240)
def test_state_directory_filling_up_mid_task_fails_the_task_with_the_reason(seaweed, tmp_path):
    """Another process fills the state directory's file system while a task runs: the task
    stops as a cancel would (queued entries are not started, no upload is left open) and
    ends FAILED with the reason; no temporary file stays; the same command, re-run once
    there is space again, finishes the export."""
    root = make_tree(tmp_path / "fs", small=400, dirs=4, big=2, parts=3)
    bucket = seaweed.new_bucket()
    direct = seaweed.client()
    with tmpfs(tmp_path / "st", "16m") as state:
        args = ["--fs-root", root, "--repository", f"s3://{bucket}/x/", "--report-path", f"s3://{bucket}/reports",
                "--state-dir", state, "--part-size", "5MiB", "--multipart-threshold", "5MiB", "--progress", "off",
                "--concurrency", "4"]
        job = subprocess.Popen(export_cmd(2, args), env={**os.environ, **seaweed.env(),
                                                         "PFSXPORT_TEST_ENTRY_DELAY": "0.1"},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 120
            while len([k for k in list_keys(direct, bucket, "x/") if not k.endswith("/")]) < 20:
                assert time.monotonic() < deadline and job.poll() is None, "the task did not get going"
                time.sleep(0.05)
            filler = fill(state)
            out, err = job.communicate(timeout=180)
        finally:
            if job.poll() is None:
                job.kill()
                job.communicate()
        assert job.returncode == 7, err
        assert "Traceback" not in err, err
        task = out.split()[0]
        t = describe(task, state)
        assert t["Lifecycle"] == "FAILED", t
        assert "No space left on device" in t["FailureDetails"]["Message"], t
        assert "No space left on device" in err and state in err
        assert leftovers(state) == []
        assert open_uploads(direct, bucket) == []
        sent = [k for k in list_keys(direct, bucket, "x/") if not k.endswith("/")]
        assert 20 <= len(sent) < 402  # it stopped before the end

        os.unlink(filler)  # space again: the same command finishes the export
        r = run_export(seaweed, args, ranks=2, timeout=180)
        assert r.returncode == 0, r.stderr
        assert describe(task_id_of(r), state)["Lifecycle"] == "SUCCEEDED"
        assert describe(task, state)["Lifecycle"] == "FAILED"
        assert_bucket_matches_tree(direct, bucket, "x/", root, dir_metadata=False, content_types=False)
        assert open_uploads(direct, bucket) == []


def test_a_cut_off_task_record_is_named_not_hidden(seaweed, tmp_path):
    root = make_tree(tmp_path / "fs", small=3, dirs=1, big=0)
    bucket = seaweed.new_bucket()
    state = str(tmp_path / "st")
    args = ["--fs-root", root, "--repository", f"s3://{bucket}/x/", "--state-dir", state]
    good = task_id_of(run_export(seaweed, args))
    cut = task_id_of(run_export(seaweed, args))
    path = os.path.join(state, "tasks", f"{cut}.json")
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])

    listing = pfsxport("task", "describe", "--state-dir", state)
    assert listing.returncode == 0, listing.stderr
    assert [t["TaskId"] for t in json.loads(listing.stdout)["DataRepositoryTasks"]] == [good]
    assert "WARNING" in listing.stderr and path in listing.stderr, listing.stderr

    one = pfsxport("task", "describe", cut, "--state-dir", state)
    assert one.returncode == 7 and "Traceback" not in one.stderr, one.stderr
    assert path in one.stderr and "StateFileCorrupt" in one.stderr, one.stderr

    again = run_export(seaweed, args)  # the next task is not blocked by it, and says why
    assert again.returncode == 0, again.stderr
    assert path in again.stderr


def test_a_manifest_overwritten_with_garbage_fails_the_task_and_says_what_to_do(seaweed, tmp_path):
    root = make_tree(tmp_path / "fs", small=3, dirs=1, big=0)
    bucket = seaweed.new_bucket()
    state = str(tmp_path / "st")
    args = ["--fs-root", root, "--repository", f"s3://{bucket}/x/", "--state-dir", state]
    assert run_export(seaweed, args).returncode == 0
    [manifest] = [os.path.join(d, n) for d, _, names in os.walk(os.path.join(state, "manifests"))
                  for n in names if n == "entries-00.sqlite"]  # the root's entries
    with open(manifest, "wb") as f:
        f.write(random.Random(1).randbytes(20000))

    r = run_export(seaweed, args, ranks=2)
    assert r.returncode == 7, r.stderr
    assert "Traceback" not in r.stderr and "StateFileCorrupt" in r.stderr and manifest in r.stderr, r.stderr
    assert "--full" in r.stderr
    t = describe(task_id_of(r), state)
    assert t["Lifecycle"] == "FAILED" and "--full" in t["FailureDetails"]["Message"], t

    os.rename(manifest, manifest + ".bad")  # what the message says to do
    r = run_export(seaweed, [*args, "--full"], ranks=2)
    assert r.returncode == 0, r.stderr
    assert_bucket_matches_tree(seaweed.client(), bucket, "x/", root, dir_metadata=False, content_types=False)


# ---- signals: scancel, walltime, a node drain, Ctrl-C -------------------------------------------

def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        out.setdefault(ppid, []).append(int(name))
    return out


def descendants(pid: int) -> list[int]:
    children, out, todo = _children(), [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


class SlowExport:
    """`pfsxport export` of make_tree's tree (200 small files, 3 files of 4 parts), under
    `mpiexec -n ranks` or alone (ranks None), slowed by the test hook (`delay` s per entry,
    4 x delay per part), in a session of its own so that a signal to its process group is what
    Ctrl-C in a terminal sends. stderr goes to a file (a pipe could fill up and stall it)."""

    def __init__(self, seaweed, tmp_path, ranks: int | None, delay: float, *extra: str):
        self.root = make_tree(tmp_path / "fs", small=200, dirs=4, big=3, parts=4)
        self.bucket = seaweed.new_bucket()
        self.state = str(tmp_path / "st")
        self.client = seaweed.client()
        self.entries = 200 + 4 + 1 + 3
        a = ["--fs-root", self.root, "--repository", f"s3://{self.bucket}/x/", "--report-path",
             f"s3://{self.bucket}/reports", "--state-dir", self.state, "--part-size", "5MiB",
             "--multipart-threshold", "5MiB", "--concurrency", "2", "--parts-in-flight", "2", "--progress", "off",
             *extra]
        env = {**os.environ, **seaweed.env(), "PFSXPORT_TEST_ENTRY_DELAY": str(delay)}
        env.pop("PFSXPORT_STATE_DIR", None)
        self.err_path = tmp_path / "stderr.txt"
        self._err = open(self.err_path, "w")
        self.proc = subprocess.Popen(export_cmd(ranks, a), env=env, stdout=subprocess.PIPE, stderr=self._err,
                                     text=True, start_new_session=True)
        self.family: set[int] = set()

    def task_id(self) -> str:
        line = self.proc.stdout.readline().strip()
        assert line.startswith("task-"), f"no task id printed: {line!r}\n{self.stderr()[-4000:]}"
        self.task = line
        return line

    def wait_for(self, pred, timeout: float = 60) -> bool:
        """Poll until pred() or the export has ended."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            self.family.update(descendants(self.proc.pid))
            if pred():
                return True
            time.sleep(0.1)
        return pred()

    def open_uploads(self) -> list:
        return open_uploads(self.client, self.bucket)

    def running_with_open_uploads(self) -> list:
        """Wait until multipart uploads are open in the bucket; returns them."""
        assert self.wait_for(self.open_uploads), f"no upload opened\n{self.stderr()[-4000:]}"
        assert self.proc.poll() is None
        return self.open_uploads()

    def rank_pid(self, rank: int) -> int:
        """The process of MPI rank `rank` under the launcher (hydra gives each its PMI_RANK)."""
        for pid in descendants(self.proc.pid):
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    env = f.read().split(b"\0")
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            if f"PMI_RANK={rank}".encode() in env and b"pfsxport" in cmd:
                return pid
        raise AssertionError(f"no rank {rank} under {self.proc.pid}")

    def send(self, target, sig: int) -> None:
        """`target`: "launcher" (mpiexec, or the one process), "group" (its process group, as
        Ctrl-C does), or a rank number (that process only, as a plain `kill` does)."""
        if target == "launcher":
            self.proc.send_signal(sig)
        elif target == "group":
            os.killpg(self.proc.pid, sig)
        else:
            os.kill(self.rank_pid(target), sig)

    def wait(self, timeout: float = 120) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"the export did not end {timeout} s after the signal\n{self.stderr()[-4000:]}") \
                from None

    def stop(self) -> None:
        """Kill what is left of it, by pid: the launcher, and the processes it started that
        still run this export (its state directory is on their command line)."""
        if self.proc.poll() is None:
            self.proc.kill()
        for pid in {*descendants(self.proc.pid), *self.family}:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if self.state.encode() not in f.read():
                        continue
                os.kill(pid, signal.SIGKILL)
            except (FileNotFoundError, ProcessLookupError):
                pass
        self.proc.wait(30)

    def stderr(self) -> str:
        self._err.flush()
        return self.err_path.read_text(errors="replace")

    def assert_canceled(self, code: int) -> dict:
        """Exit 4, the task CANCELED with its report, no traceback, no upload left open."""
        err = self.stderr()
        assert code == 4, f"exit {code}\n{err[-4000:]}"
        assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-4000:]
        t = describe(self.task, self.state)
        assert t["Lifecycle"] == "CANCELED" and "EndTime" in t and "FailureDetails" not in t, t
        st = t["Status"]
        assert st["TotalCount"] == st["SucceededCount"] + st["FailedCount"] < self.entries, st  # queued: not started
        assert self.open_uploads() == [], "multipart uploads left open"
        keys = list_keys(self.client, self.bucket)
        assert f"reports/{self.task}/failures.csv" in keys, sorted(keys)
        assert os.path.exists(os.path.join(self.state, "tasks", self.task, "report.h5"))
        for i in range(3):  # nothing torn: each big file whole, or not there
            key = f"x/big/b{i}"
            assert key not in keys or keys[key] == os.path.getsize(os.path.join(self.root, "big", f"b{i}"))
        return keys


@pytest.mark.timeout(180)
@pytest.mark.parametrize("ranks, target, sig", [
    (2, "launcher", signal.SIGTERM),  # scancel, walltime: what srun and mpiexec pass on to every rank
    (2, "launcher", signal.SIGINT),  # Ctrl-C on mpiexec's terminal, passed on to every rank
    (2, 0, signal.SIGTERM),  # a plain `kill` of rank 0
    (2, 1, signal.SIGTERM),  # a plain `kill` of another rank: the cancel still reaches rank 0
    (None, "group", signal.SIGINT),  # Ctrl-C on a single process
    (None, "launcher", signal.SIGTERM),
], ids=["SIGTERM-mpiexec", "SIGINT-mpiexec", "SIGTERM-rank0", "SIGTERM-rank1", "Ctrl-C-single", "SIGTERM-single"])
def test_a_signal_cancels_the_task(seaweed, tmp_path, ranks, target, sig):
    """Queued files are not started, files in flight finish, the task ends CANCELED with its
    report, and no multipart upload is left open: the same as `pfsxport task cancel`."""
    run = SlowExport(seaweed, tmp_path, ranks, 0.2)
    try:
        run.task_id()
        run.running_with_open_uploads()
        run.send(target, sig)
        code = run.wait()
    finally:
        run.stop()
    run.assert_canceled(code)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("how, ranks, target, sig", [
    ("second signal", 2, "launcher", signal.SIGTERM),
    ("second signal", None, "group", signal.SIGINT),  # Ctrl-C twice on a single process
    ("grace runs out", 2, "launcher", signal.SIGTERM),
], ids=["second-SIGTERM-mpiexec", "second-Ctrl-C-single", "grace-mpiexec"])
def test_a_second_signal_or_the_end_of_the_grace_aborts_the_open_uploads(seaweed, tmp_path, how, ranks, target,
                                                                         sig):
    """Parts take 8 s here. A second signal, or the end of transfer.cancel_grace, does not wait
    for them: the open uploads are aborted (their files do not appear), the task ends CANCELED
    with its report and the job exits 4 at once."""
    grace = "1" if how == "grace runs out" else "120"
    run = SlowExport(seaweed, tmp_path, ranks, 2.0, "--cancel-grace", grace)
    try:
        task = run.task_id()
        opened = run.running_with_open_uploads()
        run.send(target, sig)
        assert run.wait_for(lambda: describe(task, run.state)["Lifecycle"] != "EXECUTING")
        life = describe(task, run.state)["Lifecycle"]
        if how == "second signal":
            from pfsxport.halt import REPEAT

            assert life == "CANCELING", life  # the first signal: a cancel, waiting for the parts in flight
            time.sleep(REPEAT + 0.5)  # a signal sooner than this after the first is a duplicate of it
            run.send(target, sig)
        else:
            assert life in ("CANCELING", "CANCELED"), life
        code = run.wait(60)
    finally:
        run.stop()
    keys = run.assert_canceled(code)
    assert opened and not {u["Key"] for u in opened} & set(keys), "an upload open at the signal was completed"


@pytest.mark.timeout(180)
def test_an_abort_the_store_does_not_answer_still_ends_the_job(seaweed, tmp_path):
    """The store holds every AbortMultipartUpload: the job ends anyway once halt.ABORT_WAIT has
    passed, exit 4 with the task CANCELED and its report in the state directory. The uploads it
    could not abort are aborted by the next export, which then exports the whole tree."""
    from pfsxport.halt import ABORT_WAIT

    held = lambda r: r.method == "DELETE" and "uploadId" in r.query  # noqa: E731
    with FaultProxy(seaweed.endpoint, rates={"delay": 1.0}, when=held, delay_seconds=4 * ABORT_WAIT + 30) as proxy:
        run = SlowExport(seaweed, tmp_path, 2, 2.0, "--cancel-grace", "1", "--endpoint-url", proxy.url)
        try:
            task = run.task_id()
            run.running_with_open_uploads()
            run.send("launcher", signal.SIGTERM)
            code = run.wait(60)
        finally:
            run.stop()
        err = run.stderr()
        assert code == 4, err[-4000:]
        assert proxy.counts["delay"] > 0, proxy.summary()
    assert "Traceback" not in err and "did not stop within" in err, err[-4000:]
    t = describe(task, run.state)
    assert t["Lifecycle"] == "CANCELED" and "FailureDetails" not in t, t
    assert os.path.exists(os.path.join(run.state, "tasks", task, "report.h5"))
    assert run.open_uploads(), "nothing was left open: the store did answer the aborts"
    again = run_export(seaweed, ["--fs-root", run.root, "--repository", f"s3://{run.bucket}/x/", "--report-path",
                                 f"s3://{run.bucket}/reports", "--state-dir", run.state, "--part-size", "5MiB",
                                 "--multipart-threshold", "5MiB", "--progress", "off"], ranks=2, timeout=120)
    assert again.returncode == 0, again.stderr[-4000:]
    assert run.open_uploads() == []
    assert_bucket_matches_tree(run.client, run.bucket, "x/", run.root, dir_metadata=False, content_types=False)
