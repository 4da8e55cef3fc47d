"""--dry-run: the walk, the comparison with the manifest and the planning run in full, and
nothing is sent, deleted or recorded: the bucket, the manifest and the tree stay as they were,
and the counts are those of the real export that follows."""
from __future__ import annotations

import csv
import hashlib
import os

import pytest
from conftest import describe, list_keys, run_export, task_id_of
from test_export_outcomes import args

MiB = 1 << 20


def _tree(root):
    for d in ("a", "a/b", "gone-dir"):
        os.makedirs(root / d, exist_ok=True)
    for i in range(30):
        (root / "a" / f"f{i}").write_bytes(b"x" * i)
    (root / "a" / "b" / "big").write_bytes(os.urandom(12 * MiB + 5))
    (root / "gone-dir" / "g").write_bytes(b"g")
    (root / "gone-file").write_bytes(b"bye")


def _bucket(client, bucket):
    return {o["Key"]: o["ETag"] for p in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="x/")
            for o in p.get("Contents", [])}


def _state_files(state):
    """Every file under the manifests' directory with its content's hash (a dry run adds,
    changes and removes none)."""
    out = {}
    for dirpath, _, names in os.walk(os.path.join(state, "manifests")):
        for n in names:
            p = os.path.join(dirpath, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, state)] = hashlib.sha256(f.read()).hexdigest()
    return out


def _tree_stat(root):
    return {os.path.relpath(os.path.join(d, n), root): (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            for d, dirs, files in os.walk(root) for n in dirs + files
            for st in [os.lstat(os.path.join(d, n))]}


def _report(state, task):
    with open(os.path.join(state, "tasks", task, "report.csv"), newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("ranks", [1, 2])
def test_a_dry_run_changes_nothing_and_counts_what_the_export_then_does(seaweed, tmp_path, ranks):
    root, state = tmp_path / "fs", tmp_path / "st"
    _tree(root)
    bucket = seaweed.new_bucket()
    c = seaweed.client()
    common = args(root, bucket, state, "--part-size", "5MiB", "--multipart-threshold", "5MiB", "--delete")
    assert run_export(seaweed, common, ranks=ranks).returncode == 0
    # changes: new, changed, a new large file, a symlink, and entries gone
    for i in range(5):
        (root / "a" / f"f{i}").write_bytes(b"changed" * (i + 1))
    os.makedirs(root / "new")
    (root / "new" / "n1").write_bytes(b"n1")
    (root / "new" / "large").write_bytes(os.urandom(11 * MiB))
    os.symlink("a/f1", root / "link")
    os.unlink(root / "gone-file")
    os.unlink(root / "gone-dir" / "g")
    os.rmdir(root / "gone-dir")

    before = (_bucket(c, bucket), _state_files(str(state)), _tree_stat(root))
    dry = run_export(seaweed, [*common, "--dry-run"], ranks=ranks)
    assert dry.returncode == 0, dry.stderr
    dry_task = task_id_of(dry)
    assert (_bucket(c, bucket), _state_files(str(state)), _tree_stat(root)) == before
    assert c.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert not [k for k in list_keys(c, bucket) if dry_task in k]  # its report stays in the state directory
    assert "dry run: would export 7 file(s) (11534443 bytes), 1 directory and 1 symlink(s); would delete 3 " \
        "object(s)" in dry.stderr and " 0 bytes sent" in dry.stderr, dry.stderr
    rows = _report(str(state), dry_task)
    would = {r["path"] for r in rows if r["status"] == "would-export"}
    would_delete = {r["path"] for r in rows if r["status"] == "would-delete"}
    assert would_delete == {"gone-file", "gone-dir", "gone-dir/g"}
    [large] = [r for r in rows if r["path"] == "new/large"]
    assert large["parts"] == "3"  # planned as its upload will be: 11 MiB in parts of 5 MiB
    planned = describe(dry_task, str(state))
    assert planned["Lifecycle"] == "SUCCEEDED" and planned["DryRun"] is True

    real = run_export(seaweed, common, ranks=ranks)
    assert real.returncode == 0, real.stderr
    done = describe(task_id_of(real), str(state))
    assert done["Status"]["TotalCount"] == planned["Status"]["TotalCount"]
    assert done["Status"]["SucceededCount"] == planned["Status"]["SucceededCount"]
    assert done["Status"]["FailedCount"] == planned["Status"]["FailedCount"] == 0
    rows = _report(str(state), task_id_of(real))
    assert {r["path"] for r in rows if r["status"] == "succeeded"} == would
    assert {r["path"] for r in rows if r["status"] == "deleted"} == would_delete
    assert [r["parts"] for r in rows if r["path"] == "new/large"] == ["3"]
