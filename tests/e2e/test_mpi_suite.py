"""Launch the in-MPI tests (tests/mpi) under real mpiexec with 2 and 4 ranks (4 oversubscribes
this 2-core machine on purpose)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import MPIEXEC

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("ranks", [2, 4])
@pytest.mark.timeout(300)
def test_mpi_suite(ranks):
    cmd = [MPIEXEC, "-n", str(ranks), sys.executable, "-m", "pytest", "--with-mpi", "-q", "-p", "no:cacheprovider",
           "--timeout", "120", os.path.join(HERE, "mpi")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=280, cwd=os.path.dirname(HERE),
                       env=dict(os.environ, EXPECTED_WORLD_SIZE=str(ranks)))
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "3 passed" in r.stdout  # every rank ran every test; none skipped
