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
    d = dra(seaweed, root, state, "delete", aid)
    assert json.loads(d.stdout) == {"AssociationId": aid, "Lifecycle": "DELETING"}
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
