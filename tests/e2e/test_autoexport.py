"""`pfsxport auto-export` against SeaweedFS with real inotify events: each policy event alone
and combined, renames, a file written for a while, MISCONFIGURED and back, kill -9 during a
burst, a second service, and an export task running alongside."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import list_keys, pfsxport, run_export
from treeutil import assert_bucket_matches_tree, posix_headers, settle_atimes

from pfsxport.config import file_system_id_for


def eventually(check, timeout: float = 60.0, what: str = "", show=None):
    """Poll `check` until it is true; on a timeout, fail with its last value and `show()`
    (e.g. the bucket's keys at that moment)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except AssertionError as e:  # noqa: PERF203
            last = e
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or check}: {last}" + (f"; now {show()}" if show else ""))


class Scrape:
    """One scrape of /metrics: value(name, **labels) of a sample, families by name."""

    def __init__(self, text: str):
        from prometheus_client.parser import text_string_to_metric_families

        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples = [s for f in self.families.values() for s in f.samples]

    def value(self, name: str, **labels: str) -> float | None:
        found = [s.value for s in self.samples if s.name == name and labels.items() <= s.labels.items()]
        assert len(found) <= 1, f"{name} {labels}: {len(found)} samples"
        return found[0] if found else None


class Service:
    """A running `pfsxport auto-export` for one tree."""

    def __init__(self, server, root, state, *extra: str):
        self.server, self.root, self.state, self.extra = server, str(root), str(state), extra
        self.proc = None
        self.log = os.path.join(self.state, "service.log")

    def dra(self, *args: str) -> dict:
        r = pfsxport("dra", *args, "--fs-root", self.root, "--state-dir", self.state, env=self.server.env())
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def associate(self, fs_path: str, repo: str, events: str) -> str:
        os.makedirs(os.path.join(self.root, fs_path.lstrip("/")), exist_ok=True)
        return self.dra("create", "--file-system-path", fs_path, "--data-repository-path", repo,
                        "--events", events)["Association"]["AssociationId"]

    def describe(self, aid: str) -> dict:
        return self.dra("describe", aid)["Associations"][0]

    def start(self, env: dict | None = None, wait: bool = True) -> Service:
        """Start the service and wait until its first scan is done (`env`: test hooks that
        may end it sooner; `wait=False`: a service that cannot finish it yet)."""
        os.makedirs(self.state, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pfsxport", "auto-export", "--fs-root", self.root, "--state-dir", self.state,
             "--debounce", "0.1", "--rescan-interval", "0", "--recheck-interval", "0.5", *self.extra],
            env={**os.environ, **self.server.env(), **(env or {})}, stdout=subprocess.DEVNULL,
            stderr=open(self.log, "ab"))
        if env or not wait:
            return self
        eventually(lambda: self.status().get("Pid") == self.proc.pid and all(
            a["Backlog"] == 0 for a in self.status()["Associations"].values()), 60, "the service to start")
        return self

    def status(self) -> dict:
        """The service's status file ({} before it is first written); the directory also
        holds the atomic writer's short-lived temporary files, which are not it."""
        folder = os.path.join(self.state, "autoexport")
        try:
            (name,) = [n for n in os.listdir(folder) if n.endswith(".json")]
            with open(os.path.join(folder, name)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def stats(self, aid: str) -> dict:
        return eventually(lambda: self.status().get("Associations", {}).get(aid), 10, "the status file")

    def events(self) -> list[dict]:
        path = os.path.join(self.state, "logs")
        out = []
        for name in os.listdir(path) if os.path.isdir(path) else ():
            with open(os.path.join(path, name)) as f:
                out += [json.loads(line) for line in f]
        return out

    def stop(self) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
        return self.proc.returncode

    def metrics(self) -> Scrape:
        """GET the service's /metrics over HTTP (its address is in the status file), parsed
        with prometheus_client's own parser."""
        url = eventually(lambda: self.status().get("Metrics"), 30, "the metrics address")
        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
            return Scrape(r.read().decode())

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(30)

    def output(self) -> str:
        with open(self.log, errors="replace") as f:
            return f.read()


@pytest.fixture
def service(seaweed, tmp_path):
    made: list[Service] = []

    def make(*extra: str, server=seaweed) -> Service:
        s = Service(server, tmp_path / "fs", tmp_path / "state", *extra)
        os.makedirs(s.root, exist_ok=True)
        made.append(s)
        return s
    yield make
    for s in made:
        s.stop()


def body(client, bucket, key):
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()


def meta(client, bucket, key):
    return client.head_object(Bucket=bucket, Key=key)["Metadata"]


def test_new_changed_deleted_renames_and_metadata(seaweed, service):
    s = service()
    bucket = seaweed.new_bucket()
    c = seaweed.client()
    aid = s.associate("/results", f"s3://{bucket}/out/", "NEW,CHANGED,DELETED")
    s.start()
    res = os.path.join(s.root, "results")
    # NEW: a file, a directory with a file, a symlink
    with open(os.path.join(res, "a.dat"), "wb") as f:
        f.write(b"first")
    os.makedirs(os.path.join(res, "run1", "sub"))
    with open(os.path.join(res, "run1", "sub", "x"), "wb") as f:
        f.write(b"x" * 1000)
    os.symlink("a.dat", os.path.join(res, "link"))
    eventually(lambda: {"out/a.dat", "out/run1/", "out/run1/sub/", "out/run1/sub/x", "out/link"}
               <= set(list_keys(c, bucket)), what="new entries",
               show=lambda: sorted(list_keys(c, bucket)))
    assert body(c, bucket, "out/link") == b"a.dat"
    assert meta(c, bucket, "out/a.dat") == posix_headers(os.lstat(os.path.join(res, "a.dat")))
    # CHANGED: content, then chmod and utime as metadata
    with open(os.path.join(res, "a.dat"), "wb") as f:
        f.write(b"second version")
    eventually(lambda: body(c, bucket, "out/a.dat") == b"second version", what="new content")
    os.chmod(os.path.join(res, "a.dat"), 0o600)
    os.utime(os.path.join(res, "run1", "sub", "x"), (1_600_000_000, 1_600_000_000))
    eventually(lambda: meta(c, bucket, "out/a.dat")["file-permissions"] == "0100600", what="chmod")
    eventually(lambda: meta(c, bucket, "out/run1/sub/x")["file-mtime"] == "1600000000000000000ns", what="utime")
    # rename of a file and of a directory with descendants: old keys go, new ones come
    os.rename(os.path.join(res, "a.dat"), os.path.join(res, "b.dat"))
    os.rename(os.path.join(res, "run1"), os.path.join(res, "run2"))
    eventually(lambda: set(list_keys(c, bucket)) == {"out/b.dat", "out/run2/", "out/run2/sub/", "out/run2/sub/x",
                                                     "out/link"}, what="renames",
               show=lambda: sorted(list_keys(c, bucket)))
    # DELETED: a file and a directory tree
    os.unlink(os.path.join(res, "link"))
    import shutil
    shutil.rmtree(os.path.join(res, "run2"))
    eventually(lambda: set(list_keys(c, bucket)) == {"out/b.dat"}, what="deletes",
               show=lambda: sorted(list_keys(c, bucket)))
    assert_bucket_matches_tree(c, bucket, "out/", res, dir_metadata=False, content_types=False)
    st = eventually(lambda: s.stats(aid)["Deleted"] == 8 and s.stats(aid), 10, "the status")
    assert st["Failed"] == 0  # 8 deleted: a.dat, run1/ sub/ x by the renames, link, run2/ sub/ x
    assert s.stop() == 0
    assert "Traceback" not in s.output()


@pytest.mark.parametrize("events", ["NEW", "CHANGED", "DELETED", "NEW,DELETED"])
def test_events_outside_the_policy_do_nothing(seaweed, service, events):
    s = service()
    bucket = seaweed.new_bucket()
    c = seaweed.client()
    res = os.path.join(s.root, "p")
    os.makedirs(res)
    for name in ("keep", "edit", "gone", "old"):
        with open(os.path.join(res, name), "wb") as f:
            f.write(name.encode())
    # everything already exported once, so CHANGED and DELETED have something to act on
    done = run_export(seaweed, ["--fs-root", res, "--repository", f"s3://{bucket}/p/", "--state-dir", s.state,
                                "--file-system-id", file_system_id_for(s.root), "--progress", "off"])
    assert done.returncode == 0, done.stderr
    s.associate("/p", f"s3://{bucket}/p/", events)
    s.start()
    with open(os.path.join(res, "new"), "wb") as f:
        f.write(b"new")
    with open(os.path.join(res, "edit"), "wb") as f:
        f.write(b"edited")
    os.unlink(os.path.join(res, "gone"))
    os.rename(os.path.join(res, "old"), os.path.join(res, "renamed"))
    # a marker the policy always covers, written last: once it is handled, so is the rest
    want = set(events.split(","))
    if "NEW" in want:
        marker = ("p/marker", lambda keys: "p/marker" in keys)
    elif "CHANGED" in want:
        marker = ("p/keep", lambda keys: body(c, bucket, "p/keep") == b"keep2")
    else:
        marker = ("p/keep", lambda keys: "p/keep" not in keys)
    time.sleep(0.3)
    if marker[0] == "p/marker":
        with open(os.path.join(res, "marker"), "wb") as f:
            f.write(b"m")
    elif "CHANGED" in want:
        with open(os.path.join(res, "keep"), "wb") as f:
            f.write(b"keep2")
    else:
        os.unlink(os.path.join(res, "keep"))
    eventually(lambda: marker[1](set(list_keys(c, bucket))), what="the marker")
    time.sleep(0.5)
    keys = set(list_keys(c, bucket))
    assert ("p/new" in keys) == ("NEW" in want)
    assert body(c, bucket, "p/edit") == (b"edited" if "CHANGED" in want else b"edit")
    assert ("p/gone" in keys) == ("DELETED" not in want)
    # a rename is a CHANGED event: the old key goes and the new one comes only with CHANGED
    assert ("p/old" in keys) == ("CHANGED" not in want)
    assert ("p/renamed" in keys) == ("CHANGED" in want)


def test_file_written_for_a_while_is_exported_once_after_close(seaweed, service):
    s = service()
    bucket = seaweed.new_bucket()
    c = seaweed.client()
    aid = s.associate("/w", f"s3://{bucket}/", "NEW,CHANGED,DELETED")
    s.start()
    path = os.path.join(s.root, "w", "slow.log")
    seen_early = []
    with open(path, "wb") as f:
        for i in range(25):
            f.write(f"line {i}\n".encode())
            f.flush()
            time.sleep(0.08)
            if "slow.log" in list_keys(c, bucket):
                seen_early.append(i)
    final = open(path, "rb").read()
    eventually(lambda: "slow.log" in list_keys(c, bucket), what="the closed file")
    time.sleep(1.0)
    assert not seen_early, f"exported while still open for writing (after line {seen_early[0]})"
    assert body(c, bucket, "slow.log") == final
    assert s.stats(aid)["Exported"] == 1


def test_misconfigured_keeps_the_backlog_and_recovers(moto, service):
    # moto: SeaweedFS creates a deleted bucket again on the next PUT, so it cannot lose one
    s = service(server=moto)
    bucket = moto.new_bucket()
    c = moto.client()
    aid = s.associate("/m", f"s3://{bucket}/m/", "NEW,CHANGED,DELETED")
    s.start()
    res = os.path.join(s.root, "m")
    with open(os.path.join(res, "before"), "wb") as f:
        f.write(b"1")
    eventually(lambda: "m/before" in list_keys(c, bucket), what="first export")
    c.delete_object(Bucket=bucket, Key="m/before")
    c.delete_bucket(Bucket=bucket)
    for i in range(20):
        with open(os.path.join(res, f"while-{i}"), "wb") as f:
            f.write(b"queued %d" % i)
    os.unlink(os.path.join(res, "before"))  # a deletion waits in the backlog too

    def misconfigured():
        a = s.describe(aid)
        return a["Lifecycle"] == "MISCONFIGURED" and a
    a = eventually(misconfigured, 60, "MISCONFIGURED")
    assert "NoSuchBucket" in a["FailureDetails"]["Message"] or "does not exist" in a["FailureDetails"]["Message"]
    assert any(e["level"] == "ERROR" and "paused" in e["message"] for e in s.events())
    eventually(lambda: s.stats(aid)["Backlog"] > 0, 10, "the backlog kept")
    c.create_bucket(Bucket=bucket)
    eventually(lambda: s.describe(aid)["Lifecycle"] == "AVAILABLE", 60, "AVAILABLE again")
    eventually(lambda: len([k for k in list_keys(c, bucket) if k.startswith("m/while-")]) == 20, 60,
               "the backlog in S3")
    assert_bucket_matches_tree(c, bucket, "m/", res, dir_metadata=False, content_types=False)


def _lose_bucket(c, bucket):
    """Delete the bucket and every object in it, as someone behind the service's back."""
    for key in list_keys(c, bucket):
        c.delete_object(Bucket=bucket, Key=key)
    c.delete_bucket(Bucket=bucket)


def _lost_bucket_tree(res):
    """9 entries exported before the bucket goes (unchanged since) and 19 made while it is gone."""
    os.makedirs(os.path.join(res, "old"))
    for i in range(8):
        with open(os.path.join(res, "old", f"f{i}"), "wb") as f:
            f.write(b"exported before %d" % i)
    settle_atimes(res)


def _while_gone(res):
    for i in range(19):
        with open(os.path.join(res, f"while-{i}"), "wb") as f:
            f.write(b"queued %d" % i)


@pytest.mark.parametrize("restart", [False, True])
def test_objects_lost_with_a_deleted_bucket_come_back(moto, service, restart):
    """The bucket is deleted (its objects with it) while auto-export runs, then made again:
    once AVAILABLE, the bucket equals the tree again, the entries exported before the outage
    and unchanged since included; also when the service was restarted while MISCONFIGURED."""
    s = service(server=moto)
    bucket = moto.new_bucket()
    c = moto.client()
    aid = s.associate("/m", f"s3://{bucket}/m/", "NEW,CHANGED,DELETED")
    idle = s.associate("/n", f"s3://{bucket}/n/", "NEW,CHANGED,DELETED")  # same bucket, no change at all
    res = os.path.join(s.root, "m")
    _lost_bucket_tree(res)
    with open(os.path.join(s.root, "n", "quiet"), "wb") as f:
        f.write(b"never touched")
    s.start()
    before = {"m/old/"} | {f"m/old/f{i}" for i in range(8)}
    eventually(lambda: before | {"n/quiet"} <= set(list_keys(c, bucket)), what="first export")
    _lose_bucket(c, bucket)
    _while_gone(res)
    eventually(lambda: s.describe(aid)["Lifecycle"] == "MISCONFIGURED", 60, "MISCONFIGURED")
    if restart:
        assert s.stop() == 0
        s.start(wait=False)
        eventually(lambda: s.status().get("Pid") == s.proc.pid, 30, "the restarted service")
        assert s.describe(aid)["Lifecycle"] == "MISCONFIGURED"
    c.create_bucket(Bucket=bucket)
    eventually(lambda: s.describe(aid)["Lifecycle"] == "AVAILABLE", 60, "AVAILABLE again")
    eventually(lambda: s.describe(idle)["Lifecycle"] == "AVAILABLE", 60, "the other association AVAILABLE")

    def settled():
        keys = {k for k in list_keys(c, bucket) if ".pfsxport-probe-" not in k}
        want = before | {f"m/while-{i}" for i in range(19)} | {"n/quiet"}
        assert keys == want, f"missing {sorted(want - keys)}, extra {sorted(keys - want)}"
        return True
    eventually(settled, 60, "the bucket to equal the tree again")
    assert_bucket_matches_tree(c, bucket, "m/", res, dir_metadata=True, content_types=True)
    assert_bucket_matches_tree(c, bucket, "n/", os.path.join(s.root, "n"), dir_metadata=True, content_types=True)
    # each entry sent once per bucket: 9 before, then the 9 lost and the 19 new (a restarted service counts anew)
    want = 28 if restart else 37
    eventually(lambda: s.stats(aid)["Exported"] == want, 10, f"{want} exported",
               show=lambda: s.stats(aid))
    assert s.stop() == 0
    assert "Traceback" not in s.output()


def test_kill9_during_a_burst_then_restart(seaweed, service):
    s = service("--concurrency", "4")
    bucket = seaweed.new_bucket()
    c = seaweed.client()
    s.associate("/b", f"s3://{bucket}/b/", "NEW,CHANGED,DELETED")
    s.start()
    res = os.path.join(s.root, "b")
    for d in range(4):
        os.makedirs(os.path.join(res, f"d{d}"))
        for i in range(500):
            with open(os.path.join(res, f"d{d}", f"f{i}"), "wb") as f:
                f.write(b"%d-%d" % (d, i))
    eventually(lambda: len(list_keys(c, bucket)) > 50, 60, "the burst to start")
    s.kill()
    partial = len(list_keys(c, bucket))
    # changes during the outage: new files, a rewrite, a delete
    with open(os.path.join(res, "d0", "f0"), "wb") as f:
        f.write(b"rewritten while the service was down")
    os.unlink(os.path.join(res, "d1", "f1"))
    with open(os.path.join(res, "late"), "wb") as f:
        f.write(b"late")
    s.start()
    want = {f"b/d{d}/" for d in range(4)} | {f"b/d{d}/f{i}" for d in range(4) for i in range(500)} | {"b/late"}
    want.discard("b/d1/f1")

    def settled():  # on a timeout, says what is missing and what is left over
        keys = set(list_keys(c, bucket))
        assert keys == want, f"missing {sorted(want - keys)[:10]}, extra {sorted(keys - want)[:10]}"
        return True
    eventually(settled, 120, "everything after restart")
    assert partial < 2004
    assert_bucket_matches_tree(c, bucket, "b/", res, dir_metadata=False, content_types=False)


def test_an_object_sent_just_before_a_kill_is_deleted_after_the_restart(seaweed, service):
    """The service killed between a PUT and its manifest record, and the file deleted
    while it is down: after the restart its object goes too (nothing is left behind)."""
    s = service()
    bucket = seaweed.new_bucket()
    c = seaweed.client()
    s.associate("/k", f"s3://{bucket}/k/", "NEW,CHANGED,DELETED")
    res = os.path.join(s.root, "k")
    for i in range(20):
        with open(os.path.join(res, f"f{i}"), "wb") as f:
            f.write(b"%d" % i)
    s.start(env={"PFSXPORT_TEST_KILL_AT": "after-put"})
    assert s.proc.wait(60) == -signal.SIGKILL
    sent = [k for k in list_keys(c, bucket) if not k.endswith("/")]
    assert sent
    for key in sent:
        os.unlink(os.path.join(res, key[2:]))
    s.start()
    eventually(lambda: not set(sent) & set(list_keys(c, bucket)), 60, "the objects of the deleted files to go")
    assert_bucket_matches_tree(c, bucket, "k/", res, dir_metadata=False, content_types=False)


def test_one_service_per_file_system_and_failed_when_the_path_goes(seaweed, service):
    s = service()
    bucket = seaweed.new_bucket()
    aid = s.associate("/gone", f"s3://{bucket}/g/", "NEW")
    s.start()
    second = pfsxport("auto-export", "--fs-root", s.root, "--state-dir", s.state, env=seaweed.env(), timeout=30)
    assert second.returncode == 6 and "already running" in second.stderr
    os.rmdir(os.path.join(s.root, "gone"))
    a = eventually(lambda: s.describe(aid)["Lifecycle"] == "FAILED" and s.describe(aid), 30, "FAILED")
    assert "no longer exists" in a["FailureDetails"]["Message"]


def test_export_task_and_auto_export_never_run_at_once(seaweed, service):
    s = service()
    bucket = seaweed.new_bucket()
    c = seaweed.client()
    aid = s.associate("/t", f"s3://{bucket}/t/", "NEW,CHANGED,DELETED")
    s.start()
    res = os.path.join(s.root, "t")
    for i in range(30):
        with open(os.path.join(res, f"f{i}"), "wb") as f:
            f.write(b"data")
    eventually(lambda: len(list_keys(c, bucket)) == 30, what="first export")
    other = os.path.join(s.root, "other")
    os.makedirs(other)
    for i in range(20):
        with open(os.path.join(other, f"o{i}"), "wb") as f:
            f.write(b"o")
    task = subprocess.Popen([sys.executable, "-m", "pfsxport", "export", "--fs-root", s.root, "--repository",
                             f"s3://{bucket}/task/", "--state-dir", s.state, "--progress", "off", "--concurrency", "1",
                             "other"], env={**os.environ, **seaweed.env(), "PFSXPORT_TEST_ENTRY_DELAY": "0.2"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    eventually(lambda: any(k.startswith("task/") for k in list_keys(c, bucket)), 60, "the task to run")
    with open(os.path.join(res, "during-task"), "wb") as f:
        f.write(b"waits for the task")
    time.sleep(1.0)
    running = task.poll() is None
    keys = set(list_keys(c, bucket))
    out, err = task.communicate(timeout=120)
    assert task.returncode == 0, err
    assert running, "the task ended before the check; make it slower"
    assert "t/during-task" not in keys  # auto-export waited for the task (E-18)
    eventually(lambda: "t/during-task" in list_keys(c, bucket), 30, "auto-export after the task")
    assert s.describe(aid)["Lifecycle"] == "AVAILABLE"


STANDIN_LFS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "standin", "lfs")


# as lfs prints a record's time (local time): an hour ago
_AN_HOUR_AGO = time.strftime("%H:%M:%S.968438800 %Y.%m.%d", time.localtime(time.time() - 3600))


def _record(index: int, kind: str, tfid: str, rest: str = "", flags: str = "0x0") -> str:
    return f"{index} {kind} {_AN_HOUR_AGO} {flags} t=[{tfid}] ef=0xf u=0:0 nid=0@lo {rest}".rstrip()


def test_lustre_changelog_source_clears_only_what_is_in_s3(seaweed, service, tmp_path):
    """The changelog source with a stand-in lfs over a real tree: records become objects,
    and `lfs changelog_clear` follows only once they are durable. The metrics count the
    records and the cursor's lag, and measure the lag from each record's own time."""
    lfsdir = tmp_path / "lfs"
    os.makedirs(lfsdir)
    cfg = tmp_path / "ae.yaml"
    cfg.write_text("auto_export:\n  rescan_on_start: false\n")
    s = service("--config", str(cfg), "--source", "changelog", "--changelog-mdt", "lus-MDT0000",
                "--changelog-user", "cl1", "--lfs", STANDIN_LFS, "--metrics-listen", "127.0.0.1:0")
    os.environ["PFSXPORT_STANDIN_LFS"] = str(lfsdir)  # inherited by the service
    try:
        bucket = seaweed.new_bucket()
        c = seaweed.client()
        aid = s.associate("/lus", f"s3://{bucket}/lus/", "NEW,CHANGED,DELETED")
        res = os.path.join(s.root, "lus")
        os.makedirs(os.path.join(res, "old"))
        with open(os.path.join(res, "old", "untouched"), "wb") as f:
            f.write(b"exported by a task")
        task = run_export(seaweed, ["--fs-root", s.root, "--state-dir", s.state, "--progress", "off"])
        assert task.returncode == 0, task.stderr  # through the association: lus/old/untouched
        with open(os.path.join(res, "old", "untouched"), "wb") as f:
            f.write(b"changed, but no record says so")
        os.makedirs(os.path.join(res, "run"))
        for name in ("a", "run/b"):
            with open(os.path.join(res, name), "wb") as f:
                f.write(name.encode() * 10)
        D, R, A, B = "0x200000401:0x1:0x0", "0x200000401:0x2:0x0", "0x200000401:0x3:0x0", "0x200000401:0x4:0x0"
        (lfsdir / "fids").write_text(f"{D}\tlus\n{R}\tlus/run\n{A}\tlus/a\n{B}\tlus/run/b\n")
        (lfsdir / "changelog").write_text("\n".join([
            _record(1, "01CREAT", A, f"p=[{D}] a"),
            _record(2, "11CLOSE", A, flags="0x242"),
            _record(3, "02MKDIR", R, f"p=[{D}] run"),
            _record(4, "01CREAT", B, f"p=[{R}] b"),
            _record(5, "11CLOSE", B, flags="0x242"),
        ]) + "\n")
        s.start()
        eventually(lambda: {"lus/a", "lus/run/", "lus/run/b"} <= set(list_keys(c, bucket)), 60, "the records")
        assert body(c, bucket, "lus/old/untouched") == b"exported by a task"  # no record, no rescan at start
        eventually(lambda: (lfsdir / "cleared").exists() and
                   (lfsdir / "cleared").read_text().split()[-1] == "5", 30, "the clear")
        assert (lfsdir / "cleared").read_text().split()[:2] == ["lus-MDT0000", "cl1"]
        # a delete and a rename arrive later
        os.unlink(os.path.join(res, "run", "b"))
        os.rename(os.path.join(res, "a"), os.path.join(res, "a2"))
        (lfsdir / "fids").write_text(f"{D}\tlus\n{R}\tlus/run\n{A}\tlus/a2\n")
        with open(lfsdir / "changelog", "a") as f:
            f.write(_record(6, "06UNLNK", B, f"p=[{R}] b", flags="0x1") + "\n")
            f.write(_record(7, "08RENME", "0:0x0:0x0", f"p=[{D}] a2 s=[{A}] sp=[{D}] a") + "\n")
        eventually(lambda: {k for k in list_keys(c, bucket) if k.startswith("lus/")} ==
                   {"lus/a2", "lus/run/", "lus/old/", "lus/old/untouched"}, 60, "delete and rename")
        eventually(lambda: (lfsdir / "cleared").read_text().split()[-1] == "7", 30, "the second clear")
        assert body(c, bucket, "lus/a2") == b"a" * 10
        mdt = {"mdt": "lus-MDT0000"}
        m = eventually(lambda: s.metrics().value("pfsxport_changelog_records_total", **mdt) == 7 and s.metrics(),
                       10, "7 records counted")
        assert m.value("pfsxport_changelog_cursor_lag_records", **mdt) == 0  # all cleared
        lag = {"association": aid}
        assert m.value("pfsxport_autoexport_lag_seconds_count", **lag) >= 6  # a, run/, run/b; b and a gone, a2
        assert m.value("pfsxport_autoexport_lag_seconds_bucket", le="600.0", **lag) == 0  # from an hour ago
    finally:
        os.environ.pop("PFSXPORT_STANDIN_LFS", None)


def test_metrics_follow_files_and_the_lifecycle(moto, service):
    """/metrics of a real service, scraped over HTTP: the counters move as files are made
    and removed, a failure is counted by its FSx error code, and the lifecycle gauge
    follows MISCONFIGURED (the bucket deleted) and back (the bucket made again)."""
    s = service("--metrics-listen", "127.0.0.1:0", server=moto)
    bucket = moto.new_bucket()
    c = moto.client()
    aid = s.associate("/m", f"s3://{bucket}/m/", "NEW,CHANGED,DELETED")
    s.start()
    a = {"association": aid}
    m = s.metrics()
    assert m.value("pfsxport_association_lifecycle", lifecycle="AVAILABLE", **a) == 1
    assert m.value("pfsxport_association_lifecycle", lifecycle="MISCONFIGURED", **a) == 0
    assert m.value("pfsxport_association_info", file_system_path="/m", data_repository_path=f"s3://{bucket}/m/",
                   **a) == 1
    assert m.value("pfsxport_autoexport_exported_objects_total", **a) == 0
    assert m.value("pfsxport_autoexport_last_rescan_timestamp_seconds", **a) > 0  # the scan at start
    assert m.families["pfsxport_autoexport_lag_seconds"].type == "histogram"
    assert m.families["pfsxport_autoexport_failures"].type == "counter"

    res = os.path.join(s.root, "m")
    for i in range(5):
        with open(os.path.join(res, f"f{i}"), "wb") as f:
            f.write(b"x" * 100)
    # 4 directories whose keys fit and a file whose key is too long, moved in at once
    deep = os.path.join(s.root, "staging", *["d" * 250] * 4)
    os.makedirs(deep)
    with open(os.path.join(deep, "too-long-" + "k" * 30), "wb") as f:
        f.write(b"never sent")
    os.rename(os.path.join(s.root, "staging", "d" * 250), os.path.join(res, "d" * 250))

    def exported():
        m = s.metrics()
        assert m.value("pfsxport_autoexport_exported_objects_total", **a) == 9, m.text  # 5 files, 4 directories
        assert m.value("pfsxport_autoexport_failures_total", code="PathSizeTooLong", **a) == 1
        return m
    m = eventually(exported, 60, "the counters to move")
    assert m.value("pfsxport_autoexport_exported_bytes_total", **a) == 500  # directory objects are empty
    assert m.value("pfsxport_autoexport_events_received_total", **a) >= 10  # a create and a close per file
    assert m.value("pfsxport_autoexport_events_coalesced_total", **a) >= 1
    assert m.value("pfsxport_autoexport_lag_seconds_count", **a) == 9  # one per object made durable
    assert m.value("pfsxport_autoexport_lag_seconds_bucket", le="+Inf", **a) == 9
    assert m.value("pfsxport_autoexport_backlog_entries", **a) == 0

    os.unlink(os.path.join(res, "f0"))
    os.unlink(os.path.join(res, "f1"))
    eventually(lambda: s.metrics().value("pfsxport_autoexport_deleted_objects_total", **a) == 2, 60, "2 deleted")
    m = s.metrics()
    assert m.value("pfsxport_autoexport_deleted_bytes_total", **a) == 200
    assert m.value("pfsxport_autoexport_lag_seconds_count", **a) == 11

    _lose_bucket(c, bucket)
    with open(os.path.join(res, "while-gone"), "wb") as f:
        f.write(b"queued")

    def misconfigured():
        m = s.metrics()
        return m.value("pfsxport_association_lifecycle", lifecycle="MISCONFIGURED", **a) == 1 and m
    m = eventually(misconfigured, 60, "the gauge to show MISCONFIGURED")
    assert m.value("pfsxport_association_lifecycle", lifecycle="AVAILABLE", **a) == 0
    assert s.describe(aid)["Lifecycle"] == "MISCONFIGURED"
    eventually(lambda: s.metrics().value("pfsxport_autoexport_backlog_entries", **a) > 0, 10, "the backlog shown")
    c.create_bucket(Bucket=bucket)
    eventually(lambda: s.metrics().value("pfsxport_association_lifecycle", lifecycle="AVAILABLE", **a) == 1, 60,
               "the gauge to show AVAILABLE again")
    m = eventually(lambda: "m/while-gone" in list_keys(c, bucket) and s.metrics(), 60, "the backlog in S3")
    assert m.value("pfsxport_association_lifecycle", lifecycle="MISCONFIGURED", **a) == 0
    assert s.stop() == 0
    assert "Traceback" not in s.output()


def test_metrics_address_in_use_is_a_config_error(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        os.makedirs(tmp_path / "fs")
        r = pfsxport("auto-export", "--fs-root", str(tmp_path / "fs"), "--state-dir", str(tmp_path / "st"),
                     "--metrics-listen", f"127.0.0.1:{port}", timeout=60)
    assert r.returncode == 2, r.stderr
    assert f"metrics.listen 127.0.0.1:{port}" in r.stderr and "in use" in r.stderr


def test_prometheus_client_is_loaded_only_for_a_service_with_metrics(tmp_path):
    """Export tasks and `task describe` start without it (it is imported by pfsxport.metrics,
    which the service loads only when metrics.listen is set)."""
    code = ("import sys; from pfsxport.cli import main; import pfsxport.autoexport, pfsxport.job; "
            f"rc = main(['task', 'describe', '--state-dir', {str(tmp_path)!r}]); "
            "print('loaded' if 'prometheus_client' in sys.modules else 'not loaded', rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.split()[-3:] == ["not", "loaded", "0"], r.stdout + r.stderr
