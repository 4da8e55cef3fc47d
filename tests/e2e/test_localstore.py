"""The local SeaweedFS of the demo, the tests and the benchmark: a start that fails says
why (the server's own warnings) and leaves nothing behind; a stop removes the unix sockets
SeaweedFS leaves in /tmp."""
from __future__ import annotations

import glob
import os

import pytest

from pfsxport.localstore import SeaweedFS


def sockets(ports) -> list[str]:
    return [p for port in ports for p in glob.glob(f"/tmp/seaweedfs-*-{port}.sock")]


def test_a_server_that_never_answers_in_time_fails_clearly_and_leaves_nothing():
    s = SeaweedFS(startup_timeout=0.3)
    try:
        with pytest.raises(RuntimeError) as e:
            s.start()
    finally:
        s.stop()  # a no-op after a failed start; a server that did answer is not left running
    msg = str(e.value)
    assert "did not answer within 0s" in msg and "an earlier attempt failed too" in msg
    assert s.proc.poll() is not None
    assert not os.path.exists(s.workdir)
    assert sockets(s.ports) == []


def test_a_stopped_server_leaves_no_sockets():
    with SeaweedFS() as s:
        ports = list(s.ports)
        assert sockets(ports)  # it does make them
    assert sockets(ports) == []
