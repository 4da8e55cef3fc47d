"""pfsxport.metrics without its HTTP server: the series an association gets, and a registry
written as a node_exporter textfile (atomically) and read back with prometheus_client's parser."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from pfsxport.autoexport import BatchResult
from pfsxport.dra import Association, AssociationLifecycle
from pfsxport.metrics import ServiceMetrics, write_textfile


def samples(path) -> dict:
    with open(path) as f:
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(f.read()) for s in fam.samples}


def test_an_association_series_and_forget(tmp_path):
    m = ServiceMetrics("fs-0123456789abcdef0")
    a = Association("dra-1", "fs-0123456789abcdef0", "/res\nults", "s3://b/r/", ["NEW"])
    am = m.association(a)
    am.batch(BatchResult(exported=2, exported_bytes=30, failures={"S3AccessDenied": 1}, lags=[0.3, 700.0],
                         rescan_seconds=1.5, rescan_end=1.7e9))
    am.lifecycle(AssociationLifecycle.MISCONFIGURED)
    path = tmp_path / "pfsxport.prom"
    write_textfile(m.registry, str(path))
    got = samples(path)
    lab = (("association", "dra-1"), ("file_system_id", "fs-0123456789abcdef0"))
    assert got[("pfsxport_autoexport_exported_objects_total", lab)] == 2
    assert got[("pfsxport_autoexport_exported_bytes_total", lab)] == 30
    assert got[("pfsxport_autoexport_failures_total", tuple(sorted(lab + (("code", "S3AccessDenied"),))))] == 1
    assert got[("pfsxport_autoexport_lag_seconds_bucket", tuple(sorted(lab + (("le", "0.5"),))))] == 1
    assert got[("pfsxport_autoexport_lag_seconds_bucket", tuple(sorted(lab + (("le", "600.0"),))))] == 1
    assert got[("pfsxport_autoexport_lag_seconds_count", lab)] == 2
    assert got[("pfsxport_autoexport_last_rescan_duration_seconds", lab)] == 1.5
    assert got[("pfsxport_association_lifecycle", tuple(sorted(lab + (("lifecycle", "MISCONFIGURED"),))))] == 1
    assert got[("pfsxport_association_lifecycle", tuple(sorted(lab + (("lifecycle", "AVAILABLE"),))))] == 0
    info = [k for k in got if k[0] == "pfsxport_association_info"]
    assert dict(info[0][1])["file_system_path"] == "/res\\x0aults"  # one line, as in the logs
    assert not [k for k in got if k[0].endswith("_created")]
    m.forget("dra-1")
    write_textfile(m.registry, str(path))
    assert not [k for k in samples(path) if dict(k[1]).get("association") == "dra-1"]
