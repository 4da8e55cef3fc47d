"""Hostile and broken input has a defined outcome: a clear message, a documented exit code,
nothing read from outside the root, nothing in the bucket that should not be there."""
from __future__ import annotations

import json
import os

import pytest
from conftest import describe, list_keys, pfsxport, run_export, task_id_of
from test_export_outcomes import args, small_tree


@pytest.fixture
def outside(tmp_path):
    """A directory outside the root with a secret in it, and a root whose links lead there."""
    out = tmp_path / "outside"
    (out / "sub").mkdir(parents=True)
    (out / "secret.txt").write_text("outside secret\n")
    (out / "sub" / "deep.txt").write_text("deeper secret\n")
    root = tmp_path / "fs"
    small_tree(root)
    os.symlink(out, root / "out2")
    os.symlink("/etc", root / "out-link")
    return root


def _no_outside_keys(client, bucket):
    keys = list_keys(client, bucket)
    assert not [k for k in keys if "secret" in k or "deep" in k or "passwd" in k], keys
    return keys


@pytest.mark.parametrize("path,link", [("out-link/passwd", "out-link"), ("out2/sub", "out2"),
                                       ("ABS/out2/secret.txt", "out2"), ("d/../out2/sub/deep.txt", "out2")])
def test_a_task_path_through_a_symlink_is_refused(seaweed, tmp_path, outside, path, link):
    bucket = seaweed.new_bucket()
    path = path.replace("ABS", str(outside))
    r = run_export(seaweed, args(outside, bucket, tmp_path / "st", path))
    assert r.returncode == 2, r.stderr
    msg = describe(task_id_of(r), str(tmp_path / "st"))["FailureDetails"]["Message"]
    assert f"goes through the symlink '{link}'" in msg, msg
    assert list_keys(seaweed.client(), bucket) == {}


def test_a_symlink_named_as_a_task_path_is_exported_as_a_link(seaweed, tmp_path, outside):
    bucket = seaweed.new_bucket()
    r = run_export(seaweed, args(outside, bucket, tmp_path / "st", "out2"))
    assert r.returncode == 0, r.stderr
    body = seaweed.client().get_object(Bucket=bucket, Key="x/out2")["Body"].read()
    assert body == os.fsencode(outside.parent / "outside")
    _no_outside_keys(seaweed.client(), bucket)


def test_an_association_through_a_symlink_is_refused_at_create_and_at_use(moto, tmp_path, outside):
    bucket = moto.new_bucket()
    state = str(tmp_path / "st")
    common = ["--fs-root", str(outside), "--state-dir", state]
    r = pfsxport("dra", "create", *common, "--file-system-path", "/out2", "--data-repository-path",
                 f"s3://{bucket}/a/", env=moto.env())
    assert r.returncode == 2 and "symlink 'out2'" in r.stderr, r.stderr
    assert json.loads(pfsxport("dra", "describe", *common).stdout)["Associations"] == []

    os.makedirs(outside / "later")
    r = pfsxport("dra", "create", *common, "--file-system-path", "/later", "--data-repository-path",
                 f"s3://{bucket}/a/", env=moto.env())
    assert r.returncode == 0, r.stderr
    os.rmdir(outside / "later")
    os.symlink(outside.parent / "outside", outside / "later")  # swapped for a link after it was made
    r = run_export(moto, ["--fs-root", str(outside), "--state-dir", state])
    assert r.returncode == 2, r.stderr
    assert "symlink 'later'" in describe(task_id_of(r), state)["FailureDetails"]["Message"]
    _no_outside_keys(moto.client(), bucket)


def test_a_file_name_cannot_forge_a_log_line(seaweed, tmp_path):
    root = tmp_path / "fs"
    small_tree(root)
    forged = "pfsxport[0] 01:00:00 INFO task task-00000000000000000 SUCCEEDED: all done"
    os.mkfifo(root / f"evil\n{forged}")
    bucket = seaweed.new_bucket()
    r = run_export(seaweed, args(root, bucket, tmp_path / "st"))
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert not [ln for ln in lines if ln.startswith("pfsxport[0] 01:00:00")], r.stderr
    assert [ln for ln in lines if "WARNING skipped special file" in ln and f"evil\\x0a{forged}" in ln], r.stderr


@pytest.mark.parametrize("url", ["not a url", "http://127.0.0.1:notaport", "ftp://127.0.0.1/", "http://:9000"])
def test_an_invalid_endpoint_is_bad_input_before_any_task(seaweed, tmp_path, url):
    root = small_tree(tmp_path / "fs")
    r = run_export(seaweed, args(root, "bucket", tmp_path / "st", "--endpoint-url", url))
    assert r.returncode == 2, r.stderr
    assert "s3.endpoint_url" in r.stderr and "Traceback" not in r.stderr
    assert not os.path.exists(tmp_path / "st" / "tasks") or not os.listdir(tmp_path / "st" / "tasks")
    r = run_export(seaweed, args(root, "bucket", tmp_path / "st"), env={"AWS_ENDPOINT_URL": url})
    assert r.returncode == 2 and "AWS_ENDPOINT_URL" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_max_object_size_holds_below_the_multipart_threshold(seaweed, tmp_path):
    root = tmp_path / "fs"
    small_tree(root)
    (root / "big.bin").write_bytes(os.urandom(3_000_000))
    bucket = seaweed.new_bucket()
    r = run_export(seaweed, args(root, bucket, tmp_path / "st", "--max-object-size", "1MiB"))
    assert r.returncode == 3, r.stderr
    failures = seaweed.client().get_object(Bucket=bucket, Key=f"reports/{task_id_of(r)}/failures.csv")
    assert failures["Body"].read().decode() == "big.bin,failed,FileSizeTooLarge\n"
    assert "x/big.bin" not in list_keys(seaweed.client(), bucket)


def test_a_report_path_that_cannot_be_written_stops_the_task_first(moto, tmp_path):
    root = small_tree(tmp_path / "fs")
    bucket = moto.new_bucket()
    state = str(tmp_path / "st")
    r = run_export(moto, ["--fs-root", root, "--repository", f"s3://{bucket}/x/", "--state-dir", state,
                          "--report-path", "s3://no-such-report-bucket/r"])
    assert r.returncode == 5, r.stderr
    msg = describe(task_id_of(r), state)["FailureDetails"]["Message"]
    assert "cannot write the report to s3://no-such-report-bucket/r" in msg, msg
    assert list_keys(moto.client(), bucket) == {}
    r = run_export(moto, ["--fs-root", root, "--repository", f"s3://{bucket}/x/", "--state-dir", state,
                          "--report-path", "s3://bad/../../etc"])
    assert r.returncode == 2 and "report_path" in r.stderr and "'..'" in r.stderr, r.stderr


def test_a_report_lost_at_the_end_fails_the_task(moto, tmp_path):
    """The report bucket goes away while the task runs: the record says why, exit 5."""
    from test_export_outcomes import _wait_for, start_slow_export

    reports = moto.new_bucket()
    proc, _, _, state = start_slow_export(moto, tmp_path, "--report-path", f"s3://{reports}/r")
    tid = proc.stdout.readline().strip()
    _wait_for(lambda: describe(tid, state)["Lifecycle"] == "EXECUTING")
    moto.client().delete_bucket(Bucket=reports)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 5, err
    t = describe(tid, state)
    assert t["Lifecycle"] == "FAILED" and "the completion report could not be written" in \
        t["FailureDetails"]["Message"], t
    assert "(not in the bucket)" in err
    assert os.path.exists(os.path.join(state, "tasks", tid, "failures.csv"))


def test_an_empty_path_and_dot_segments_are_refused(seaweed, tmp_path):
    root = small_tree(tmp_path / "fs")
    r = run_export(seaweed, args(root, "bucket", tmp_path / "st", ""))
    assert r.returncode == 2 and "empty path" in r.stderr, r.stderr
    r = run_export(seaweed, ["--fs-root", root, "--repository", "s3://bucket/a/../b/", "--state-dir",
                             str(tmp_path / "st")])
    assert r.returncode == 2 and "'..'" in r.stderr, r.stderr


def test_sbatch_options_may_be_a_single_option(seaweed, tmp_path):
    """`--sbatch "--ntasks=2"` is the option's value, not an option of its own."""
    root = small_tree(tmp_path / "fs")
    bucket = seaweed.new_bucket()
    r = pfsxport("task", "create", *args(root, bucket, tmp_path / "st"), "--sbatch", "--ntasks=2",
                 "--launcher", "mpiexec -n 2", env=seaweed.env())
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["DataRepositoryTask"]["Lifecycle"] == "PENDING"


def test_an_unlistable_directory_has_one_outcome(seaweed, tmp_path):
    """Run without the capability to read past permissions (as a user meets a mode-000
    directory): the directory fails once, and Total counts each entry once."""
    import csv
    import subprocess

    from conftest import export_cmd

    root = tmp_path / "fs"
    small_tree(root)
    (root / "locked").mkdir()
    (root / "locked" / "inner").write_text("x")
    os.chmod(root / "locked", 0)
    bucket = seaweed.new_bucket()
    state = tmp_path / "st"
    cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *export_cmd(None, args(root, bucket, state))]
    try:
        r = subprocess.run(cmd, env={**os.environ, **seaweed.env()}, capture_output=True, text=True, timeout=120)
    finally:
        os.chmod(root / "locked", 0o755)
    assert r.returncode == 3, r.stderr
    t = describe(task_id_of(r), str(state))["Status"]
    assert (t["TotalCount"], t["SucceededCount"], t["FailedCount"]) == (22, 21, 1)
    with open(state / "tasks" / task_id_of(r) / "report.csv", newline="") as f:
        rows = [row for row in csv.DictReader(f) if row["path"] == "locked"]
    assert [(row["status"], row["error_code"]) for row in rows] == [("failed", "LocalReadError")]
    assert "x/locked/" not in list_keys(seaweed.client(), bucket)


def test_an_endpoint_that_is_not_s3_is_named_as_such(seaweed, tmp_path):
    import subprocess
    import sys

    from pfsxport.localstore import free_ports, http_ready

    port = free_ports(1)[0]
    web = subprocess.Popen([sys.executable, "-m", "http.server", "-b", "127.0.0.1", str(port)], cwd=tmp_path,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not http_ready(f"http://127.0.0.1:{port}"):
            assert web.poll() is None
        root = small_tree(tmp_path / "fs")
        r = run_export(seaweed, args(root, "bucket", tmp_path / "st", "--endpoint-url", f"http://127.0.0.1:{port}"))
    finally:
        web.terminate()
        web.wait(10)
    assert r.returncode == 5, r.stderr
    assert "not an S3 store's" in describe(task_id_of(r), str(tmp_path / "st"))["FailureDetails"]["Message"]


def test_https_to_an_http_port_fails_at_once(seaweed, tmp_path):
    root = small_tree(tmp_path / "fs")
    https = seaweed.endpoint.replace("http://", "https://")
    r = run_export(seaweed, args(root, "bucket", tmp_path / "st", "--endpoint-url", https))
    assert r.returncode == 5, r.stderr
    msg = describe(task_id_of(r), str(tmp_path / "st"))["FailureDetails"]["Message"]
    assert "does not speak TLS" in msg and "attempts" not in msg, msg


def test_describe_says_what_is_wrong_with_its_question(tmp_path):
    r = pfsxport("task", "describe", "--state-dir", str(tmp_path / "nowhere"))
    assert r.returncode == 0 and json.loads(r.stdout) == {"DataRepositoryTasks": []}
    assert "does not exist" in r.stderr
    for bad, why in (("Name=task-lifecycle,Values=BOGUS", "not a task lifecycle"),
                     ("Name=colour,Values=red", "unknown filter name")):
        r = pfsxport("task", "describe", "--state-dir", str(tmp_path), "--filter", bad)
        assert r.returncode == 2 and why in r.stderr, r.stderr


def test_an_export_leaves_the_atime_of_files_and_directories_alone(seaweed, tmp_path):
    """Purge policies go by atime: reading a tree for export must not make it look used."""
    root = tmp_path / "fs"
    small_tree(root)
    (root / "d" / "e").mkdir()
    old = 1_600_000_000_000_000_000  # long before any mtime here: relatime would move it at the first read
    paths = [root / "d", root / "d" / "e", root / "d" / "f0003"]
    for p in paths:
        os.utime(p, ns=(old, os.stat(p).st_mtime_ns))
    bucket = seaweed.new_bucket()
    r = run_export(seaweed, args(root, bucket, tmp_path / "st"))
    assert r.returncode == 0, r.stderr
    assert [os.stat(p).st_atime_ns for p in paths] == [old] * 3


def test_a_second_state_directory_on_the_same_tree_is_warned_about(seaweed, tmp_path):
    root = small_tree(tmp_path / "fs")
    bucket = seaweed.new_bucket()
    first = run_export(seaweed, args(root, bucket, tmp_path / "st1"))
    assert first.returncode == 0 and "another state directory" not in first.stderr, first.stderr
    again = run_export(seaweed, args(root, bucket, tmp_path / "st1"))
    assert again.returncode == 0 and "another state directory" not in again.stderr, again.stderr
    second = run_export(seaweed, args(root, bucket, tmp_path / "st2"))
    assert second.returncode == 0
    assert f"another state directory, {tmp_path / 'st1'}, has also run tasks" in second.stderr, second.stderr


def test_a_task_writes_its_metrics_for_node_exporter(seaweed, tmp_path):
    """metrics.textfile: the task's counts in Prometheus's text format, equal to its record,
    with each rank's share."""
    from prometheus_client.parser import text_string_to_metric_families

    root = small_tree(tmp_path / "fs")
    os.mkfifo(os.path.join(root, "pipe"))  # skipped, not counted
    bucket = seaweed.new_bucket()
    prom = tmp_path / "textfile" / "pfsxport.prom"
    prom.parent.mkdir()
    r = run_export(seaweed, args(root, bucket, tmp_path / "st", "--metrics-textfile", str(prom)), ranks=2)
    assert r.returncode == 0, r.stderr
    t = describe(task_id_of(r), str(tmp_path / "st"))
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(prom.read_text()) for s in fam.samples}
    ids = (("file_system_id", t["FileSystemId"]), ("task_id", t["TaskId"]))

    def get(name, **labels):
        return samples[(name, tuple(sorted((*ids, *labels.items()))))]
    assert get("pfsxport_task_lifecycle", lifecycle="SUCCEEDED") == 1
    assert get("pfsxport_task_entries", outcome="total") == t["Status"]["TotalCount"] == 21
    assert get("pfsxport_task_entries", outcome="succeeded") == t["Status"]["SucceededCount"]
    assert get("pfsxport_task_entries", outcome="failed") == 0 and get("pfsxport_task_entries", outcome="skipped") == 1
    assert get("pfsxport_task_rank_entries", rank="0") + get("pfsxport_task_rank_entries", rank="1") == 21
    assert get("pfsxport_task_sent_bytes") == sum(get("pfsxport_task_rank_sent_bytes", rank=str(k)) for k in (0, 1))
    assert get("pfsxport_task_sent_bytes") == sum(len(f"file {i}\n") * (i + 1) for i in range(20))
    assert get("pfsxport_task_duration_seconds") > 0
    assert [p.name for p in prom.parent.iterdir()] == ["pfsxport.prom"]  # written atomically, nothing left beside
