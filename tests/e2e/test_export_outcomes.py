"""Each bad input and each fault has a defined, tested outcome: exit code, task record,
and nothing torn or left open in the bucket."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
from conftest import describe, export_cmd, list_keys, pfsxport, run_export, task_id_of

from pfsxport.localstore import free_ports


def small_tree(root, n=20):
    os.makedirs(os.path.join(root, "d"), exist_ok=True)
    for i in range(n):
        with open(os.path.join(root, "d", f"f{i:04d}"), "w") as f:
            f.write(f"file {i}\n" * (i + 1))
    return str(root)


def args(root, bucket, state, *extra):
    return ["--fs-root", str(root), "--repository", f"s3://{bucket}/x/", "--report-path",
            f"s3://{bucket}/reports", "--state-dir", str(state), *extra]


def test_missing_path_fails_the_task_before_any_upload(seaweed, tmp_path):
    root = small_tree(tmp_path / "fs")
    bucket = seaweed.new_bucket()
    r = run_export(seaweed, args(root, bucket, tmp_path / "st", "d", "no/such/dir"))
    assert r.returncode == 2, r.stderr
    t = describe(task_id_of(r), str(tmp_path / "st"))
    assert t["Lifecycle"] == "FAILED"
    assert "no/such/dir" in t["FailureDetails"]["Message"] and "does not exist" in t["FailureDetails"]["Message"]
    assert list_keys(seaweed.client(), bucket) == {}


def test_unreachable_endpoint_is_exit_5_with_a_message(seaweed, tmp_path):
    root = small_tree(tmp_path / "fs")
    cfg = tmp_path / "site.yaml"
    cfg.write_text("s3:\n  max_attempts: 2\n  connect_timeout: 1\n")
    port = free_ports(1)[0]  # nothing listens there
    r = run_export(seaweed, args(root, "bucket", tmp_path / "st", "--config", str(cfg),
                                 "--endpoint-url", f"http://127.0.0.1:{port}"), timeout=60)
    assert r.returncode == 5, r.stderr
    t = describe(task_id_of(r), str(tmp_path / "st"))
    assert t["Lifecycle"] == "FAILED" and "cannot write to s3://bucket/x/" in t["FailureDetails"]["Message"]


@pytest.mark.parametrize("case", ["wrong secret", "missing bucket"])
def test_denied_or_missing_bucket_is_exit_5(seaweed, tmp_path, case):
    root = small_tree(tmp_path / "fs")
    bucket = seaweed.new_bucket() if case == "wrong secret" else "no-such-bucket-here"
    env = {"AWS_SECRET_ACCESS_KEY": "not-the-secret"} if case == "wrong secret" else {}
    r = run_export(seaweed, args(root, bucket, tmp_path / "st"), env=env)
    assert r.returncode == 5, r.stderr
    msg = describe(task_id_of(r), str(tmp_path / "st"))["FailureDetails"]["Message"]
    assert ("SignatureDoesNotMatch" in msg or "AccessDenied" in msg or "403" in msg) if case == "wrong secret" \
        else ("NoSuchBucket" in msg or "404" in msg)


def test_bad_config_names_the_key_and_the_file(seaweed, tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("fs_root: /tmp\nrepository: s3://bucket/p/\ntransfer:\n  part_sise: 8MiB\n")
    r = run_export(seaweed, ["--config", str(cfg)])
    assert r.returncode == 2
    assert "transfer.part_sise" in r.stderr and str(cfg) in r.stderr
    cfg.write_text("fs_root: /tmp\nrepository: s3://bucket/p/\ntransfer:\n  part_size: 1MiB\n")
    r = run_export(seaweed, ["--config", str(cfg)])
    assert r.returncode == 2 and "transfer.part_size" in r.stderr and str(cfg) in r.stderr
    r = run_export(seaweed, ["--config", str(cfg), "--part-size", "8MiB", "--repository", "http://x"])
    assert r.returncode == 2 and "repository" in r.stderr and "the command line" in r.stderr


def _slow_tree(root):
    small_tree(root, n=300)
    os.makedirs(os.path.join(root, "big"))
    for i in range(3):
        with open(os.path.join(root, "big", f"b{i}"), "wb") as f:
            f.write(os.urandom(3 * (5 << 20) + 1))
    return str(root)


def start_slow_export(seaweed, tmp_path, *extra, env=None):
    """An export under mpiexec -n 2 slowed by the test hook (0.2 s per entry, 0.8 s per part),
    so that tests can act while it runs. Returns (process, root, bucket, state)."""
    root = _slow_tree(tmp_path / "fs")
    bucket = seaweed.new_bucket()
    state = str(tmp_path / "st")
    a = args(root, bucket, state, "--part-size", "5MiB", "--multipart-threshold", "5MiB", "--concurrency", "2",
             *extra)
    e = {**os.environ, **seaweed.env(), "PFSXPORT_TEST_ENTRY_DELAY": "0.2", **(env or {})}
    proc = subprocess.Popen(export_cmd(2, a), env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, root, bucket, state


def _wait_for(pred, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.timeout(300)
def test_cancel_from_another_shell_and_one_task_at_a_time(seaweed, tmp_path):
    proc, root, bucket, state = start_slow_export(seaweed, tmp_path, "--parts-in-flight", "2",
                                                  "--progress-interval", "0.5")
    try:
        task = proc.stdout.readline().strip()
        assert task.startswith("task-")
        assert _wait_for(lambda: describe(task, state)["Status"]["SucceededCount"] >= 20)
        assert describe(task, state)["Lifecycle"] == "EXECUTING"

        # a second export on the same file system is refused while this one runs (T-6)
        r2 = run_export(seaweed, args(root, bucket, state, "d"))
        assert r2.returncode == 6 and "DataRepositoryTaskExecuting" in r2.stderr and task in r2.stderr

        c = pfsxport("task", "cancel", task, "--state-dir", state)
        assert c.returncode == 0 and '"CANCELING"' in c.stdout
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 4, err
    t = describe(task, state)
    assert t["Lifecycle"] == "CANCELED" and "EndTime" in t and "FailureDetails" not in t
    st = t["Status"]
    assert st["TotalCount"] == st["SucceededCount"] + st["FailedCount"]
    assert st["TotalCount"] < 300 + 3 + 2  # queued files were not started
    client = seaweed.client()
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert f"reports/{task}/failures.csv" in list_keys(client, bucket, "reports/")
    # every big file in the bucket is whole: in-flight files finished, nothing torn
    for key, size in list_keys(client, bucket, "x/big/").items():
        if not key.endswith("/"):
            assert size == 3 * (5 << 20) + 1

    again = pfsxport("task", "cancel", task, "--state-dir", state)
    assert again.returncode == 2 and "DataRepositoryTaskEnded" in again.stderr
    unknown = pfsxport("task", "cancel", "task-0123456789abcdef0", "--state-dir", state)
    assert unknown.returncode == 2 and "DataRepositoryTaskNotFound" in unknown.stderr

    # describe filters (T-8)
    r3 = run_export(seaweed, args(root, bucket, state, "d"))
    assert r3.returncode == 0, r3.stderr
    import json

    def ids(*filters):
        out = pfsxport("task", "describe", "--state-dir", state, *sum((["--filter", f] for f in filters), []))
        assert out.returncode == 0, out.stderr
        return [x["TaskId"] for x in json.loads(out.stdout)["DataRepositoryTasks"]]

    assert ids("Name=task-lifecycle,Values=CANCELED") == [task]
    assert ids("Name=task-lifecycle,Values=SUCCEEDED,CANCELED") == [task, task_id_of(r3)]
    assert ids(f"Name=file-system-id,Values={t['FileSystemId']}", "Name=task-lifecycle,Values=FAILED") == []
    bad = pfsxport("task", "describe", "--state-dir", state, "--filter", "Name=colour,Values=red")
    assert bad.returncode == 2 and "colour" in bad.stderr


def test_a_file_appended_during_export_is_busy_or_one_consistent_version(seaweed, tmp_path):
    root = tmp_path / "fs"
    os.makedirs(root)
    path = root / "growing.log"
    path.write_bytes(b"")
    stop = threading.Event()

    def append():
        with open(path, "ab", buffering=0) as f:
            i = 0
            while not stop.is_set():
                f.write(b"line %08d\n" % i)
                i += 1

    t = threading.Thread(target=append)
    t.start()
    bucket = seaweed.new_bucket()
    try:
        r = run_export(seaweed, args(root, bucket, tmp_path / "st", "--part-size", "5MiB",
                                     "--multipart-threshold", "5MiB"))
    finally:
        stop.set()
        t.join()
    final = path.read_bytes()
    keys = list_keys(seaweed.client(), bucket, "x/")
    if "x/growing.log" in keys:
        body = seaweed.client().get_object(Bucket=bucket, Key="x/growing.log")["Body"].read()
        assert final.startswith(body) and body.endswith(b"\n")  # one version, never a mix
        assert r.returncode == 0
    else:
        assert r.returncode == 3
        failures = seaweed.client().get_object(Bucket=bucket, Key=f"reports/{task_id_of(r)}/failures.csv")
        assert failures["Body"].read().decode() == "growing.log,failed,ResourceBusy\n"


def test_demo_runs_and_shows_the_task_and_report():
    r = subprocess.run([sys.executable, "-m", "pfsxport", "demo"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert '"Lifecycle": "SUCCEEDED"' in r.stdout
    assert "failures.csv" in r.stdout and "report.h5" in r.stdout
    assert "with 2 rank(s)" in r.stderr and "progress:" in r.stderr
    assert "keep it with --workdir" in r.stdout  # its local copy is removed with the temporary directory
    assert "SeaweedFS replaces it with a type guessed" in r.stdout  # the quirk it shows is named
    assert "== a picture of the task (pfsxport report plot): " in r.stdout


def rank_pids(mark: str) -> dict[int, int]:
    """{rank: pid} of the pfsxport ranks whose environment carries PFSXPORT_TEST_MARK=mark."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            cmd = open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            continue
        if b"pfsxport" in cmd and b"mpiexec" not in cmd:
            vals = dict(kv.split(b"=", 1) for kv in env if b"=" in kv)
            if b"PMI_RANK" in vals and vals.get(b"PFSXPORT_TEST_MARK") == mark.encode():
                out[int(vals[b"PMI_RANK"])] = int(pid)
    return out


@pytest.mark.timeout(300)
def test_a_rank_killed_mid_export_leaves_nothing_torn_and_the_task_failed(seaweed, tmp_path):
    proc, root, bucket, state = start_slow_export(seaweed, tmp_path, env={"PFSXPORT_TEST_MARK": "kill-test"})
    try:
        task = proc.stdout.readline().strip()
        assert _wait_for(lambda: describe(task, state)["Status"]["SucceededCount"] >= 20)
        pids = rank_pids("kill-test")
        assert set(pids) == {0, 1}
        os.kill(pids[1], 9)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    t = describe(task, state)  # the job is gone: its record is not left EXECUTING
    assert t["Lifecycle"] == "FAILED" and "ended without finishing" in t["FailureDetails"]["Message"]
    client = seaweed.client()
    for key in list_keys(client, bucket, "x/"):
        if key.endswith("/"):
            continue
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert body == open(os.path.join(root, key[2:]), "rb").read(), f"{key} is torn"
    # a new task on the same file system is not blocked by the dead one
    r = run_export(seaweed, args(root, bucket, state, "d"))
    assert r.returncode == 0, r.stderr
