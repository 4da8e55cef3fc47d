"""Incremental export (E-4): the next export sends exactly what changed; --delete removes the
objects of entries that are gone and nothing else; a killed job is finished by re-running
the same command, without re-sending completed files and without a torn object."""
from __future__ import annotations

import csv
import ctypes
import json
import os
import re
import signal
import subprocess
import threading
import time

import pytest
from conftest import describe, export_cmd, list_keys, run_export, task_id_of
from treeutil import assert_bucket_matches_tree, settle_atimes

MiB = 1 << 20


def make_tree(root):
    for d in ("a", "a/sub", "b", "b/deep/er"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    for i in range(8):
        with open(os.path.join(root, "a", f"f{i}"), "w") as f:
            f.write(f"content {i}\n")
    for d in ("a/sub", "b", "b/deep", "b/deep/er"):
        with open(os.path.join(root, d, "g"), "w") as f:
            f.write(d)
    os.symlink("f0", os.path.join(root, "a", "link"))
    settle_atimes(str(root))


def exported_paths(state, task):
    with open(os.path.join(state, "tasks", task, "report.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    return {r["path"]: r["status"] for r in rows}


def export(server, root, bucket, state, *extra, ranks=None, env=None):
    r = run_export(server, ["--fs-root", str(root), "--repository", f"s3://{bucket}/x/", "--report-path",
                            f"s3://{bucket}/reports", "--state-dir", str(state), "--part-size", "5MiB",
                            "--multipart-threshold", "5MiB", *extra], ranks=ranks, env=env)
    return r, task_id_of(r)


def test_each_kind_of_change_is_sent_and_nothing_else(seaweed, tmp_path):
    root, state = tmp_path / "fs", str(tmp_path / "st")
    make_tree(root)
    bucket = seaweed.new_bucket()
    r, t1 = export(seaweed, root, bucket, state, ranks=2)
    assert r.returncode == 0, r.stderr
    first = describe(t1, state)["Status"]["TotalCount"]
    assert first == len(exported_paths(state, t1)) == 18  # 5 directories, 12 files, 1 symlink

    r, t2 = export(seaweed, root, bucket, state, ranks=2)
    assert r.returncode == 0 and describe(t2, state)["Status"]["TotalCount"] == 0  # nothing changed

    a = lambda *p: os.path.join(root, "a", *p)  # noqa: E731
    with open(a("new"), "w") as f:  # new file (and so a/ itself: its mtime moved)
        f.write("new\n")
    st = os.stat(a("f1"))
    with open(a("f1"), "r+") as f:  # same size, new content
        f.write("CONTENT")
    os.utime(a("f1"), ns=(st.st_atime_ns, st.st_mtime_ns))  # even with mtime put back: ctime moved
    os.truncate(a("f2"), 3)
    os.chmod(a("f3"), 0o600)
    os.chown(a("f4"), 4321, 8765)
    os.utime(a("f5"), ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    os.rename(a("f6"), a("f6.renamed"))
    with open(a("f7"), "rb") as f:  # atime only: not a change
        f.read()
    os.chmod(os.path.join(root, "b", "deep"), 0o700)  # a directory's metadata
    r, t3 = export(seaweed, root, bucket, state, ranks=2)
    assert r.returncode == 0, r.stderr
    sent = exported_paths(state, t3)
    assert set(sent) == {"a", "a/new", "a/f1", "a/f2", "a/f3", "a/f4", "a/f5", "a/f6.renamed", "b/deep"}
    assert describe(t3, state)["Status"]["TotalCount"] == 9
    # without --delete the old key of the renamed file stays (FSx tasks do not delete)
    assert_bucket_matches_tree(seaweed.client(), bucket, "x/", str(root), dir_metadata=False,
                               content_types=False, extra=frozenset({"x/a/f6"}))

    r, t4 = export(seaweed, root, bucket, state, "--full")
    assert r.returncode == 0 and describe(t4, state)["Status"]["TotalCount"] == 19  # --full sends all


def test_delete_removes_what_pfsxport_wrote_and_is_gone_only(seaweed, tmp_path):
    root, state = tmp_path / "fs", str(tmp_path / "st")
    make_tree(root)
    bucket = seaweed.new_bucket()
    c = seaweed.client()
    for key in ("x/foreign.txt", "x/b/deep/foreign.txt", "x/a/f0.bak"):  # written by someone else
        c.put_object(Bucket=bucket, Key=key, Body=b"not ours")
    r, _ = export(seaweed, root, bucket, state, ranks=2)
    assert r.returncode == 0, r.stderr

    os.rename(os.path.join(root, "a", "f0"), os.path.join(root, "a", "f0.moved"))
    os.rename(os.path.join(root, "b", "deep"), os.path.join(root, "b", "shallow"))  # re-keys descendants
    os.unlink(os.path.join(root, "a", "f7"))
    r, t = export(seaweed, root, bucket, state, "--delete", ranks=2)
    assert r.returncode == 0, r.stderr
    rows = exported_paths(state, t)
    deleted = {p for p, s in rows.items() if s == "deleted"}
    assert deleted == {"a/f0", "a/f7", "b/deep", "b/deep/g", "b/deep/er", "b/deep/er/g"}
    with open(os.path.join(state, "tasks", t, "report.csv"), newline="") as f:
        sizes = {r["path"]: int(r["size"]) for r in csv.DictReader(f) if r["status"] == "deleted"}
    assert sizes == {"a/f0": 10, "a/f7": 10, "b/deep": 0, "b/deep/g": 6, "b/deep/er": 0, "b/deep/er/g": 9}
    assert {p for p, s in rows.items() if s == "succeeded"} == {
        "a", "a/f0.moved", "b", "b/shallow", "b/shallow/g", "b/shallow/er", "b/shallow/er/g"}
    assert_bucket_matches_tree(c, bucket, "x/", str(root), dir_metadata=False, content_types=False,
                               extra=frozenset({"x/foreign.txt", "x/b/deep/foreign.txt", "x/a/f0.bak"}))
    for key in ("x/foreign.txt", "x/b/deep/foreign.txt", "x/a/f0.bak"):
        assert c.get_object(Bucket=bucket, Key=key)["Body"].read() == b"not ours"
    # and the next --delete run has nothing left to do
    r, t = export(seaweed, root, bucket, state, "--delete")
    assert r.returncode == 0 and exported_paths(state, t) == {}


def test_an_object_sent_just_before_a_kill_is_deleted_when_its_file_goes(seaweed, tmp_path):
    """Killed between a PUT and its manifest record: the manifest still knows the key may
    be there, so --delete removes it once its file is gone (it is not left behind forever)."""
    root, state = tmp_path / "fs", str(tmp_path / "st")
    make_tree(root)
    bucket = seaweed.new_bucket()
    c = seaweed.client()
    killed, _ = export(seaweed, root, bucket, state, ranks=1, env={"PFSXPORT_TEST_KILL_AT": "after-put"})
    assert killed.returncode != 0
    sent = [k for k in list_keys(c, bucket, "x/") if not k.endswith("/")]
    assert sent  # at least the file whose record the kill cut off
    for key in sent:
        os.unlink(os.path.join(root, key[2:]))
    r, t = export(seaweed, root, bucket, state, "--delete", ranks=2)
    assert r.returncode == 0, r.stderr
    assert set(sent) <= {f"x/{p}" for p, s in exported_paths(state, t).items() if s == "deleted"}
    assert_bucket_matches_tree(c, bucket, "x/", str(root), dir_metadata=False, content_types=False)


class Poller(threading.Thread):
    """Reads every key of the bucket over and over while a test runs: an object is either
    absent or whole (equal to the file), never partial."""

    def __init__(self, server, bucket, root):
        super().__init__(daemon=True)
        self.c, self.bucket, self.root = server.client(), bucket, root
        self.stop = threading.Event()
        self.reads = 0
        self.bad: list[str] = []

    def run(self):
        try:
            self._poll()
        except Exception as e:  # a crashed poller must fail the test, not pass it
            self.bad.append(f"poller crashed: {e!r}")

    def _poll(self):
        while not self.stop.is_set():
            for key in list_keys(self.c, self.bucket, "x/"):
                if key.endswith("/") or ".pfsxport-probe-" in key:  # the probe's short-lived objects
                    continue
                body = self.c.get_object(Bucket=self.bucket, Key=key)["Body"].read()
                self.reads += 1
                path = os.path.join(self.root, key[2:])
                want = os.fsencode(os.readlink(path)) if os.path.islink(path) else open(path, "rb").read()
                if body != want:
                    self.bad.append(key)
            time.sleep(0.05)


@pytest.mark.parametrize("point, resume_ranks", [("before-complete", 1), ("between-parts", 4),
                                                 ("after-last-part", 2)])
@pytest.mark.timeout(300)
def test_killed_mid_multipart_then_rerun_finishes_without_resending(seaweed, tmp_path, point, resume_ranks):
    root, state = tmp_path / "fs", str(tmp_path / "st")
    make_tree(root)
    os.makedirs(root / "big")
    for i in range(3):
        with open(root / "big" / f"b{i}", "wb") as f:
            f.write(os.urandom(4 * 5 * MiB - 1000 * i))  # 4 parts each
    settle_atimes(str(root))
    bucket = seaweed.new_bucket()
    poller = Poller(seaweed, bucket, str(root))
    poller.start()
    try:
        killed, t1 = export(seaweed, root, bucket, state, "--concurrency", "2", ranks=2,
                            env={"PFSXPORT_TEST_KILL_AT": point, "PFSXPORT_TEST_ENTRY_DELAY": "0.02"})
        assert killed.returncode != 0
        uploads_after_kill = seaweed.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        r, t2 = export(seaweed, root, bucket, state, ranks=resume_ranks)
    finally:
        poller.stop.set()
        poller.join()
    assert r.returncode == 0, r.stderr
    assert poller.reads > 0 and poller.bad == []
    assert describe(t1, state)["Lifecycle"] == "FAILED"  # the killed job's task, reaped
    t = describe(t2, state)
    assert t["Lifecycle"] == "SUCCEEDED" and t["Status"]["TotalCount"] == t["Status"]["SucceededCount"]
    assert_bucket_matches_tree(seaweed.client(), bucket, "x/", str(root), dir_metadata=False, content_types=False)
    assert seaweed.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    # completed files were not sent again: the two tasks' exported entries do not overlap
    first = {p for p, s in exported_paths(state, t1).items() if s == "succeeded"} \
        if os.path.exists(os.path.join(state, "tasks", t1, "report.csv")) else set()
    second = {p for p, s in exported_paths(state, t2).items() if s == "succeeded"}
    assert not (first & second)
    if point != "before-complete" or uploads_after_kill:
        assert "multipart upload(s) left open" in r.stderr
    m = re.search(r"(\d+) bytes sent, (\d+) bytes of earlier uploads reused", r.stderr)
    sent, reused = int(m.group(1)), int(m.group(2))
    big = sum(os.path.getsize(root / "big" / f"b{i}") for i in range(3))
    print(f"{point}: resume sent {sent} bytes and reused {reused} of {big} bytes of the big files")
    if point in ("between-parts", "after-last-part"):
        assert reused > 0  # the parts the killed job uploaded were reused, not sent again


def _objects(c, bucket):
    return {k for k in list_keys(c, bucket, "x/") if ".pfsxport-probe-" not in k}


def test_objects_deleted_behind_its_back_come_back_with_reconcile_only(seaweed, tmp_path):
    """The manifest says what pfsxport wrote, not what the bucket holds: objects deleted by
    someone else are not sent again by a plain re-export (the documented blind spot);
    --reconcile lists the prefix once and sends exactly the missing ones."""
    root, state = tmp_path / "fs", str(tmp_path / "st")
    make_tree(root)
    bucket = seaweed.new_bucket()
    c = seaweed.client()
    r, _ = export(seaweed, root, bucket, state, ranks=2)
    assert r.returncode == 0, r.stderr
    gone = {"x/a/f1", "x/a/f5", "x/a/link", "x/b/deep/er/g", "x/b/deep/"}
    for key in gone:
        c.delete_object(Bucket=bucket, Key=key)
    c.put_object(Bucket=bucket, Key="x/a/f2", Body=b"shorter")  # replaced by someone else, another size

    r, t = export(seaweed, root, bucket, state, ranks=2)
    assert r.returncode == 0, r.stderr
    assert exported_paths(state, t) == {}
    assert not gone & _objects(c, bucket)  # not restored: the manifest believes they are there

    r, t = export(seaweed, root, bucket, state, "--reconcile", ranks=2)
    assert r.returncode == 0, r.stderr
    assert exported_paths(state, t) == {p[2:].rstrip("/"): "succeeded" for p in gone | {"x/a/f2"}}
    assert_bucket_matches_tree(c, bucket, "x/", str(root), dir_metadata=False, content_types=False)

    r, t = export(seaweed, root, bucket, state, "--reconcile")  # nothing missing: nothing sent
    assert r.returncode == 0 and exported_paths(state, t) == {}


def test_an_emptied_bucket_is_filled_again_with_reconcile(seaweed, tmp_path):
    root, state = tmp_path / "fs", str(tmp_path / "st")
    make_tree(root)
    bucket = seaweed.new_bucket()
    c = seaweed.client()
    r, t1 = export(seaweed, root, bucket, state)
    assert r.returncode == 0, r.stderr
    for key in list_keys(c, bucket):
        c.delete_object(Bucket=bucket, Key=key)
    r, t = export(seaweed, root, bucket, state)
    assert r.returncode == 0 and exported_paths(state, t) == {} and not _objects(c, bucket)
    cfg = tmp_path / "reconcile.yaml"
    cfg.write_text("reconcile: true\n")  # the config key does the same as the flag
    r, t = export(seaweed, root, bucket, state, "--config", str(cfg), ranks=2)
    assert r.returncode == 0, r.stderr
    assert exported_paths(state, t) == exported_paths(state, t1)
    assert_bucket_matches_tree(c, bucket, "x/", str(root), dir_metadata=False, content_types=False)


def test_a_task_that_finds_its_bucket_gone_makes_the_next_one_reconcile(moto, tmp_path):
    """A bucket deleted (and its objects with it) between tasks: the task that meets
    NoSuchBucket fails with exit 5 and leaves the manifest marked, so the next task after
    the bucket is back sends everything again, without --reconcile."""
    root, state = tmp_path / "fs", str(tmp_path / "st")
    make_tree(root)
    bucket = moto.new_bucket()
    c = moto.client()
    r, t1 = export(moto, root, bucket, state)
    assert r.returncode == 0, r.stderr
    for key in list_keys(c, bucket):
        c.delete_object(Bucket=bucket, Key=key)
    c.delete_bucket(Bucket=bucket)
    r, _ = export(moto, root, bucket, state)
    assert r.returncode == 5 and "NoSuchBucket" in r.stderr, r.stderr
    c.create_bucket(Bucket=bucket)
    r, t = export(moto, root, bucket, state, ranks=2)
    assert r.returncode == 0, r.stderr
    assert exported_paths(state, t) == exported_paths(state, t1)
    assert_bucket_matches_tree(c, bucket, "x/", str(root), dir_metadata=True, content_types=True)


def _descendants(pid: int) -> list[int]:
    """pid and every process below it (the ranks of mpiexec's job sit in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{p}/stat") as f:
                ppid = int(f.read().rpartition(")")[2].split()[1])
        except OSError:
            continue
        children.setdefault(ppid, []).append(int(p))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def _proc_state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0]
    except OSError:
        return ""


@pytest.mark.timeout(240)
def test_rerun_right_after_the_whole_job_is_killed_is_accepted(seaweed, tmp_path):
    """`kill -9` of every process of an `mpiexec -n 2` job in the middle of its task, then at
    once the same command again. This test process is the subreaper of the job, as a batch
    system's step daemon is, and reaps the killed processes only at the end: the dead rank 0
    stays a zombie while the re-run starts, as it does until init gets to it."""
    root, state = tmp_path / "fs", str(tmp_path / "st")
    make_tree(root)
    bucket = seaweed.new_bucket()
    args = ["--fs-root", str(root), "--repository", f"s3://{bucket}/x/", "--report-path", f"s3://{bucket}/reports",
            "--state-dir", state, "--concurrency", "1", "--progress", "off"]
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    job = subprocess.Popen(export_cmd(2, args), env={**os.environ, **seaweed.env(), "PFSXPORT_TEST_ENTRY_DELAY": "1"},
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed: list[int] = []
    c = seaweed.client()
    try:
        deadline = time.monotonic() + 120
        task = owner = None
        while owner is None or not [k for k in list_keys(c, bucket, "x/") if ".pfsxport-probe-" not in k]:
            assert time.monotonic() < deadline and job.poll() is None, "the job did not start its task"
            for name in os.listdir(os.path.join(state, "tasks")) if os.path.isdir(os.path.join(state, "tasks")) else []:
                if name.endswith(".json"):
                    with open(os.path.join(state, "tasks", name)) as f:
                        d = json.load(f)
                    if d["Lifecycle"] == "EXECUTING":
                        task, owner = d["TaskId"], d["Owner"]["Pid"]
            time.sleep(0.05)
        killed = _descendants(job.pid)
        assert owner in killed
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        job.wait()
        deadline = time.monotonic() + 30
        while _proc_state(owner) != "Z":  # dead, and not reaped: this process is its reaper now
            assert time.monotonic() < deadline, (owner, _proc_state(owner))
            time.sleep(0.01)

        r, t2 = export(seaweed, root, bucket, state, ranks=2)
        assert r.returncode == 0, r.stderr
        assert _proc_state(owner) == "Z"  # the re-run did not wait for the zombie to go
    finally:
        for pid in killed:
            if pid != job.pid:
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
        libc.prctl(36, 0, 0, 0, 0)
        if job.poll() is None:
            job.kill()
        job.communicate()
    assert describe(task, state)["Lifecycle"] == "FAILED"
    assert describe(t2, state)["Lifecycle"] == "SUCCEEDED"
    assert_bucket_matches_tree(seaweed.client(), bucket, "x/", str(root), dir_metadata=False, content_types=False)
    left = {n for n in os.listdir(os.path.join(state, "tasks")) if not n.startswith(".")}
    assert left - {task, t2} == {f"{task}.json", f"{t2}.json"}  # no lock file left behind
