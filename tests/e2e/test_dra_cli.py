"""pfsxport dra create|describe|update|delete against a real store: CREATING -> AVAILABLE
after a write probe, MISCONFIGURED with a message when the bucket cannot be written."""
from __future__ import annotations

import json
import os

from conftest import list_keys, pfsxport


def dra(seaweed, root, state, *args):
    return pfsxport("dra", *args, "--fs-root", str(root), "--state-dir", str(state), env=seaweed.env())


def test_create_describe_update_delete(seaweed, tmp_path):
    root, state = tmp_path / "fs", tmp_path / "st"
    os.makedirs(root / "results")
    os.makedirs(root / "scratch")
    bucket = seaweed.new_bucket()
    r = dra(seaweed, root, state, "create", "--file-system-path", "/results", "--data-repository-path",
            f"s3://{bucket}/results", "--events", "NEW,CHANGED")
    assert r.returncode == 0, r.stderr
    a = json.loads(r.stdout)["Association"]
    assert a["Lifecycle"] == "AVAILABLE" and a["DataRepositoryPath"] == f"s3://{bucket}/results/"
    assert a["S3"]["AutoExportPolicy"]["Events"] == ["NEW", "CHANGED"]
    assert list_keys(seaweed.client(), bucket) == {}  # the write probe's marker is gone
    aid = a["AssociationId"]

    overlap = dra(seaweed, root, state, "create", "--file-system-path", "/scratch", "--data-repository-path",
                  f"s3://{bucket}/results/sub/")
    assert overlap.returncode == 2 and "overlaps" in overlap.stderr
    missing = dra(seaweed, root, state, "create", "--file-system-path", "/nothing", "--data-repository-path",
                  f"s3://{bucket}/n/")
    assert missing.returncode == 2 and "not a directory" in missing.stderr

    u = dra(seaweed, root, state, "update", aid, "--events", "NEW,CHANGED,DELETED")
    assert u.returncode == 0, u.stderr
    assert json.loads(u.stdout)["Association"]["S3"]["AutoExportPolicy"]["Events"] == ["NEW", "CHANGED", "DELETED"]
    listed = json.loads(dra(seaweed, root, state, "describe").stdout)["Associations"]
    assert [x["AssociationId"] for x in listed] == [aid]
    (root / "results" / "kept").write_text("x")
    d = dra(seaweed, root, state, "delete", aid)
    assert json.loads(d.stdout) == {"AssociationId": aid, "Lifecycle": "DELETING", "DeleteDataInFileSystem": False}
    assert (root / "results" / "kept").exists()
    assert json.loads(dra(seaweed, root, state, "describe").stdout)["Associations"] == []
    gone = dra(seaweed, root, state, "describe", aid)
    assert gone.returncode == 2 and "DataRepositoryAssociationNotFound" in gone.stderr


def test_unwritable_repository_is_misconfigured_with_a_message(seaweed, tmp_path):
    root, state = tmp_path / "fs", tmp_path / "st"
    os.makedirs(root / "results")
    r = dra(seaweed, root, state, "create", "--file-system-path", "/results", "--data-repository-path",
            "s3://no-such-bucket-here/results/")
    assert r.returncode == 0, r.stderr
    a = json.loads(r.stdout)["Association"]
    assert a["Lifecycle"] == "MISCONFIGURED" and "NoSuchBucket" in a["FailureDetails"]["Message"]


def test_export_task_maps_paths_through_associations(seaweed, tmp_path):
    """Without --repository a task exports each association's part of its paths to that
    association's prefix; entries outside every association are skipped with a WARN."""
    import csv

    from conftest import describe, run_export, task_id_of
    from treeutil import assert_bucket_matches_tree

    root, state = tmp_path / "fs", tmp_path / "st"
    for d in ("results/run1", "scratch/keep/sub", "scratch/tmp", "home"):
        os.makedirs(root / d)
    for f in ("results/run1/a", "results/top", "scratch/keep/sub/k", "scratch/tmp/t", "scratch/loose", "home/h"):
        (root / f).write_bytes(f.encode())
    bucket = seaweed.new_bucket()
    c = seaweed.client()
    for fs_path, repo in (("/results", f"s3://{bucket}/res/"), ("/scratch/keep", f"s3://{bucket}/keep/")):
        assert dra(seaweed, root, state, "create", "--file-system-path", fs_path, "--data-repository-path",
                   repo).returncode == 0

    r = run_export(seaweed, ["--fs-root", str(root), "--state-dir", str(state), "--progress", "off"], ranks=2)
    assert r.returncode == 0, r.stderr
    assert_bucket_matches_tree(c, bucket, "res/", str(root / "results"), dir_metadata=False, content_types=False)
    assert_bucket_matches_tree(c, bucket, "keep/", str(root / "scratch" / "keep"), dir_metadata=False,
                               content_types=False)
    task = task_id_of(r)
    assert set(list_keys(c, bucket)) - {k for k in list_keys(c, bucket) if k.startswith(("res/", "keep/"))} == {
        f"pfsxport-reports/{task}/{n}" for n in ("failures.csv", "report.csv", "report.h5", "shards/rank-00000.h5",
                                                  "shards/rank-00001.h5")}  # each rank's part of report.h5
    t = describe(task, str(state))
    assert t["Lifecycle"] == "SUCCEEDED" and t["Status"]["TotalCount"] == 3 + 2  # a, top, k + run1/ and sub/
    with open(os.path.join(state, "tasks", task, "report.csv"), newline="") as f:
        rows = {row["path"]: row for row in csv.DictReader(f)}
    skipped = {p for p, row in rows.items() if row["status"] == "skipped"}
    assert skipped == {"home", "scratch/tmp", "scratch/loose"}  # the topmost entries outside
    assert "results/run1/a" in rows and "scratch/keep/sub/k" in rows  # rows name file-system paths
    with open(os.path.join(state, "logs", f"datarepo_{t['FileSystemId']}.jsonl")) as f:
        warns = [json.loads(line) for line in f]
    assert {w["path"] for w in warns if w["eventCode"] == "S3ExportLocalObjectNotMatchDra"} == skipped
    assert all(w["level"] == "WARN" for w in warns)

    # a task path inside an association exports only that part; unchanged entries are not resent
    (root / "results" / "run1" / "b").write_bytes(b"new")
    r2 = run_export(seaweed, ["--fs-root", str(root), "--state-dir", str(state), "--progress", "off",
                              "results/run1"])
    assert r2.returncode == 0, r2.stderr
    assert describe(task_id_of(r2), str(state))["Status"]["TotalCount"] == 2  # b, and run1/ whose mtime moved
    assert c.get_object(Bucket=bucket, Key="res/run1/b")["Body"].read() == b"new"


def test_export_without_repository_or_association_names_the_key(seaweed, tmp_path):
    from conftest import run_export

    os.makedirs(tmp_path / "fs")
    r = run_export(seaweed, ["--fs-root", str(tmp_path / "fs"), "--state-dir", str(tmp_path / "st")])
    assert r.returncode == 2
    assert "missing required key 'repository'" in r.stderr and "dra create" in r.stderr


def test_delete_with_data_and_update_rechecks(seaweed, tmp_path):
    root, state = tmp_path / "fs", tmp_path / "st"
    os.makedirs(root / "results" / "d")
    (root / "results" / "d" / "f").write_text("x")
    (root / "results" / "g").write_text("y")
    bucket = seaweed.new_bucket()
    a = json.loads(dra(seaweed, root, state, "create", "--file-system-path", "/results", "--data-repository-path",
                       f"s3://{bucket}/r/").stdout)["Association"]
    u = dra(seaweed, root, state, "update", a["AssociationId"], "--events", "DELETED")
    assert json.loads(u.stdout)["Association"]["Lifecycle"] == "AVAILABLE"
    d = dra(seaweed, root, state, "delete", a["AssociationId"], "--delete-data-in-file-system")
    assert d.returncode == 0, d.stderr
    assert json.loads(d.stdout)["DeleteDataInFileSystem"] is True
    assert os.listdir(root / "results") == []


def test_associations_declared_in_a_config_file(seaweed, tmp_path):
    from conftest import run_export

    root, state = tmp_path / "fs", tmp_path / "st"
    os.makedirs(root / "results")
    (root / "results" / "r").write_text("r")
    bucket = seaweed.new_bucket()
    cfg = tmp_path / "site.yaml"
    cfg.write_text(f"fs_root: {root}\nstate_dir: {state}\nassociations:\n"
                   f"  - file_system_path: /results\n    data_repository_path: s3://{bucket}/declared/\n"
                   f"    events: [NEW, CHANGED]\n")
    for _ in range(2):  # the second run finds the association already there
        r = run_export(seaweed, ["--config", str(cfg), "--progress", "off"])
        assert r.returncode == 0, r.stderr
    assert "declared/r" in list_keys(seaweed.client(), bucket)
    listed = json.loads(dra(seaweed, root, state, "describe").stdout)["Associations"]
    assert [(a["FileSystemPath"], a["S3"]["AutoExportPolicy"]["Events"]) for a in listed] == [
        ("/results", ["NEW", "CHANGED"])]


def test_one_unwritable_association_fails_its_entries_and_the_others_go_ahead(seaweed, tmp_path):
    import csv

    from conftest import describe, run_export, task_id_of
    from treeutil import assert_bucket_matches_tree

    root, state = tmp_path / "fs", tmp_path / "st"
    for d in ("good/sub", "bad/sub"):
        os.makedirs(root / d)
        (root / d / "f").write_bytes(d.encode())
    bucket = seaweed.new_bucket()
    made = dra(seaweed, root, state, "create", "--file-system-path", "/bad", "--data-repository-path",
               "s3://no-such-bucket-here/bad/")
    assert json.loads(made.stdout)["Association"]["Lifecycle"] == "MISCONFIGURED"
    assert dra(seaweed, root, state, "create", "--file-system-path", "/good", "--data-repository-path",
               f"s3://{bucket}/good/").returncode == 0  # the report goes to the bucket that can be written

    r = run_export(seaweed, ["--fs-root", str(root), "--state-dir", str(state), "--progress", "off"])
    assert r.returncode == 3, r.stderr
    assert_bucket_matches_tree(seaweed.client(), bucket, "good/", str(root / "good"), dir_metadata=False,
                               content_types=False)
    task = task_id_of(r)
    t = describe(task, str(state))
    assert t["Lifecycle"] == "FAILED" and (t["Status"]["SucceededCount"], t["Status"]["FailedCount"]) == (2, 1)
    failures = seaweed.client().get_object(Bucket=bucket, Key=f"pfsxport-reports/{task}/failures.csv")
    assert failures["Body"].read().decode() == "bad,failed,S3Error\n"
    with open(os.path.join(state, "tasks", task, "report.csv"), newline="") as f:
        (row,) = [row for row in csv.DictReader(f) if row["path"] == "bad"]
    assert "NoSuchBucket" in row["message"]


def _rows(table: str) -> dict:
    """key -> value of the key/value rows of `--output table` text."""
    out = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 2 and not line.lstrip("|").startswith("+"):
            out.setdefault(cells[0], cells[1])
    return out


def test_describe_output_table_for_people_json_by_default(seaweed, tmp_path):
    """`dra describe` and `task describe` print FSx JSON by default and, with --output
    table, a box per object as `aws --output table` does."""
    root, state = tmp_path / "fs", tmp_path / "st"
    os.makedirs(root / "results")
    bucket = seaweed.new_bucket()
    made = dra(seaweed, root, state, "create", "--file-system-path", "/results", "--data-repository-path",
               f"s3://{bucket}/results/", "--events", "NEW,CHANGED")
    aid = json.loads(made.stdout)["Association"]["AssociationId"]
    assert json.loads(dra(seaweed, root, state, "describe").stdout)["Associations"][0]["AssociationId"] == aid
    t = dra(seaweed, root, state, "describe", "--output", "table")
    assert t.returncode == 0, t.stderr
    lines = t.stdout.splitlines()
    assert lines[1].strip("| ") == "DescribeDataRepositoryAssociations"
    assert len({len(line) for line in lines}) == 1, t.stdout
    rows = _rows(t.stdout)
    assert rows["AssociationId"] == aid and rows["Lifecycle"] == "AVAILABLE"
    assert rows["DataRepositoryPath"] == f"s3://{bucket}/results/"
    assert [ln.strip("| ") for ln in lines if ln.strip("| ") in ("NEW", "CHANGED", "Events")] == [
        "Events", "NEW", "CHANGED"]  # S3 > AutoExportPolicy > Events, one value a row

    os.makedirs(root / "red\x1b[31mdir")
    c = pfsxport("task", "create", "--fs-root", str(root), "--repository", f"s3://{bucket}/x/", "--state-dir",
                 str(state), "red\x1b[31mdir", env=seaweed.env())
    assert c.returncode == 0, c.stderr
    task = json.loads(c.stdout)["DataRepositoryTask"]["TaskId"]
    d = pfsxport("task", "describe", "--state-dir", str(state), "--output", "table")
    assert d.returncode == 0, d.stderr
    rows = _rows(d.stdout)
    assert d.stdout.splitlines()[1].strip("| ") == "DescribeDataRepositoryTasks"
    assert rows["TaskId"] == task and rows["Lifecycle"] == "PENDING"
    assert "red\\x1b[31mdir" in d.stdout and "\x1b" not in d.stdout  # a path is data: no terminal escapes
    assert len({len(line) for line in d.stdout.splitlines()}) == 1, d.stdout
    bad = pfsxport("task", "describe", "--state-dir", str(state), "--output", "yaml")
    assert bad.returncode == 2 and "--output" in bad.stderr
