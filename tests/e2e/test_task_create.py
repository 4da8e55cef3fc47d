"""task create (PENDING, FSx CreateDataRepositoryTask) and `export --task-id` running it later."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import MPIEXEC, describe, list_keys, pfsxport


def test_created_task_is_pending_then_runs_under_its_own_id(seaweed, tmp_path):
    root, state = tmp_path / "fs", str(tmp_path / "st")
    os.makedirs(root / "results")
    for i in range(5):
        (root / "results" / f"r{i}").write_text(f"result {i}\n")
    bucket = seaweed.new_bucket()
    env = seaweed.env()
    c = pfsxport("task", "create", "--fs-root", str(root), "--repository", f"s3://{bucket}/x/", "--state-dir",
                 state, "results", env=env)
    assert c.returncode == 0, c.stderr
    created = json.loads(c.stdout)["DataRepositoryTask"]
    task = created["TaskId"]
    assert created["Lifecycle"] == "PENDING" and created["Paths"] == ["results"]
    assert describe(task, state)["Lifecycle"] == "PENDING"
    # while it is PENDING another task on the file system is refused (T-6)
    other = pfsxport("task", "create", "--fs-root", str(root), "--repository", f"s3://{bucket}/x/",
                     "--state-dir", state, env=env)
    assert other.returncode == 6 and "DataRepositoryTaskExecuting" in other.stderr

    r = subprocess.run([MPIEXEC, "-n", "2", sys.executable, "-m", "pfsxport", "export", "--task-id", task,
                        "--state-dir", state], env={**os.environ, **env}, capture_output=True, text=True,
                       cwd="/", timeout=240)
    assert r.returncode == 0, r.stderr
    t = describe(task, state)
    assert t["Lifecycle"] == "SUCCEEDED" and t["Status"]["TotalCount"] == 6
    assert len(list_keys(seaweed.client(), bucket, "x/results/")) == 6

    again = subprocess.run([sys.executable, "-m", "pfsxport", "export", "--task-id", task, "--state-dir", state],
                           env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "DataRepositoryTaskEnded" in again.stderr


def test_canceled_pending_task_never_runs(seaweed, tmp_path):
    root, state = tmp_path / "fs", str(tmp_path / "st")
    os.makedirs(root)
    (root / "f").write_text("x")
    bucket = seaweed.new_bucket()
    c = pfsxport("task", "create", "--fs-root", str(root), "--repository", f"s3://{bucket}/x/", "--state-dir",
                 state, env=seaweed.env())
    task = json.loads(c.stdout)["DataRepositoryTask"]["TaskId"]
    cancel = pfsxport("task", "cancel", task, "--state-dir", state)
    assert cancel.returncode == 0 and json.loads(cancel.stdout)["Lifecycle"] == "CANCELED"
    r = subprocess.run([sys.executable, "-m", "pfsxport", "export", "--task-id", task, "--state-dir", state],
                       env={**os.environ, **seaweed.env()}, capture_output=True, text=True, timeout=120)
    assert r.returncode == 4 and "DataRepositoryTaskEnded" in r.stderr
    assert list_keys(seaweed.client(), bucket) == {}
