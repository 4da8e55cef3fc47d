"""Every example in configs/ loads and validates (fs_root pointed at a real directory)."""
from __future__ import annotations

import glob
import os

import pytest

from pfsxport.config import load_yaml, resolve

CONFIGS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "..", "configs", "*.yaml")))


def test_there_are_examples():
    assert len(CONFIGS) >= 3


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_example_config_loads(path, tmp_path):
    values = load_yaml(path)
    service = "auto_export.source" in values  # the service takes its repositories from associations
    assert ("repository" in values) != service
    cfg = resolve(values, {"fs_root": str(tmp_path)}, path, need_repository=not service)
    if service:
        assert cfg.auto_export.changelog_mdt and cfg.auto_export.rescan_interval > 0
    else:
        assert cfg.repository.bucket and cfg.repository.prefix.endswith("/")
    assert cfg.transfer.part_size % (1 << 20) == 0


def test_the_service_example_serves_metrics_on_loopback(tmp_path):
    (path,) = [p for p in CONFIGS if os.path.basename(p) == "auto-export.yaml"]
    cfg = resolve(load_yaml(path), {"fs_root": str(tmp_path)}, path, need_repository=False)
    assert cfg.metrics.host == "127.0.0.1" and cfg.metrics.port > 0
