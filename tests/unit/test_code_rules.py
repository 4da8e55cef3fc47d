"""The code's own rules, checked with every test run (and so by CI): ruff's lint rules
(pyproject.toml) and the import contract of setup.cfg (import-linter)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)


def _tool(name: str) -> str:
    path = os.path.join(BIN, name)
    return path if os.path.exists(path) else shutil.which(name) or name


def test_ruff_finds_nothing():
    r = subprocess.run([_tool("ruff"), "check", "pfsxport", "tests", "bench"], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_import_contract_holds():
    r = subprocess.run([_tool("lint-imports")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "0 broken" in r.stdout, r.stdout + r.stderr
