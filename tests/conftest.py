"""Shared fixtures: real S3 servers on loopback (SeaweedFS for the data path, moto's server
mode where SeaweedFS departs from S3) and a runner for `pfsxport export` under real mpiexec."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

import boto3
import botocore.config
import pytest
from slurmcluster import slurm  # noqa: F401  (the session fixture of a private single-node Slurm)

from pfsxport.localstore import SeaweedFS, free_ports, http_ready

BIN = os.path.dirname(sys.executable)
MPIEXEC = os.path.join(BIN, "mpiexec") if os.path.exists(os.path.join(BIN, "mpiexec")) else shutil.which("mpiexec")


class Server:
    """An S3 endpoint with credentials; `client()` and `env()` reach it."""

    def __init__(self, name: str, endpoint: str, access: str, secret: str, keeps_dir_metadata: bool):
        self.name = name
        self.endpoint = endpoint
        self.access = access
        self.secret = secret
        self.keeps_dir_metadata = keeps_dir_metadata

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access, "AWS_SECRET_ACCESS_KEY": self.secret,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}

    def client(self):
        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access,
                            aws_secret_access_key=self.secret, region_name="us-east-1",
                            config=botocore.config.Config(s3={"addressing_style": "path"},
                                                          request_checksum_calculation="when_required",
                                                          response_checksum_validation="when_required"))

    def new_bucket(self) -> str:
        name = "t-" + uuid.uuid4().hex[:12]
        c = self.client()
        for _ in range(50):
            try:
                c.create_bucket(Bucket=name)
                return name
            except Exception:
                time.sleep(0.2)
        c.create_bucket(Bucket=name)
        return name


def _mapped_shm() -> set[str]:
    """Names under /dev/shm that a live process still maps."""
    names = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/maps") as f:
                names.update(line.rsplit("/", 1)[1].strip() for line in f if "/dev/shm/" in line)
        except OSError:
            continue
    return names


@pytest.fixture(scope="session", autouse=True)
def mpich_shared_memory():
    """Ranks killed with SIGKILL (the crash tests) leave MPICH's shared-memory segments in
    /dev/shm; the ones this session made and nobody maps any more are removed at its end."""
    shm = "/dev/shm"
    before = set(os.listdir(shm)) if os.path.isdir(shm) else set()
    yield
    if not os.path.isdir(shm):
        return
    left = {n for n in os.listdir(shm) if n.startswith("mpich_shm_")} - before
    for name in left - _mapped_shm():
        try:
            os.unlink(os.path.join(shm, name))
        except OSError:
            pass


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    s = SeaweedFS(str(tmp_path_factory.mktemp("seaweedfs"))).start()
    yield Server("seaweedfs", s.endpoint, *(s.env()[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")),
                 keeps_dir_metadata=False)
    s.stop()


@pytest.fixture(scope="session")
def moto(tmp_path_factory):
    port = free_ports(1)[0]
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    proc = subprocess.Popen([os.path.join(BIN, "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not http_ready(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("moto_server did not start")
        time.sleep(0.1)
    yield Server("moto", url, "testing", "testing", keeps_dir_metadata=True)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(10)


@pytest.fixture(params=["seaweedfs", "moto"])
def server(request):
    return request.getfixturevalue("seaweed" if request.param == "seaweedfs" else "moto")


def export_cmd(ranks: int | None, args: list[str]) -> list[str]:
    base = [sys.executable, "-m", "pfsxport", "export"] + args
    if ranks is None:
        return base
    return [MPIEXEC, "-n", str(ranks)] + base


def run_export(server: Server, args: list[str], ranks: int | None = None, timeout: float = 240,
               env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `pfsxport export` (under `mpiexec -n ranks` when given) and return the result."""
    e = {**os.environ, **server.env(), **(env or {})}
    e.pop("PFSXPORT_STATE_DIR", None)
    return subprocess.run(export_cmd(ranks, args), env=e, capture_output=True, text=True, timeout=timeout)


def task_id_of(result: subprocess.CompletedProcess) -> str:
    lines = result.stdout.split()
    assert lines and lines[0].startswith("task-"), f"no task id printed:\n{result.stdout}\n{result.stderr}"
    return lines[0]


def list_keys(client, bucket: str, prefix: str = "") -> dict[str, int]:
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            out[o["Key"]] = o["Size"]
    return out


# tests/mpi holds tests that run *inside* `mpiexec -n N python -m pytest --with-mpi`;
# tests/e2e/test_mpi_suite.py launches them. A plain pytest run does not collect them.
collect_ignore = [] if os.environ.get("PMI_SIZE") else ["mpi"]


def pfsxport(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a non-export pfsxport command (task describe, task cancel, demo, ...)."""
    return subprocess.run([sys.executable, "-m", "pfsxport", *args], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, **(env or {})))


def describe(task_id: str, state: str) -> dict:
    r = pfsxport("task", "describe", task_id, "--state-dir", state)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["DataRepositoryTasks"][0]
