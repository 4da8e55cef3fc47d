"""Data repository association rules (FSx D-1, D-4, A-1), table-driven."""
from __future__ import annotations

import re

import pytest

from pfsxport.dra import (
    MAX_ASSOCIATIONS,
    Association,
    AssociationLifecycle,
    new_association_id,
    normalize_events,
    validate_new,
)
from pfsxport.errors import ConfigError


def assoc(fs, repo, life=AssociationLifecycle.AVAILABLE):
    return Association(new_association_id(), "fs-0123456789abcdef0", fs, repo, ["NEW"], life)


def test_ids_look_like_fsx():
    assert re.fullmatch(r"dra-[0-9a-f]{17}", new_association_id())


@pytest.mark.parametrize("fs, repo, why", [
    ("results", "s3://b-1/p/", "absolute"),                       # relative path
    ("/a/../b", "s3://b-1/p/", "'..'"),
    ("/r", "http://b-1/p/", "s3://"),                             # not an S3 URL
    ("/r", "s3://B_ad/p/", "bucket name"),
    ("/ns1/ns2", "s3://b-1/other/", "overlaps /ns1"),             # file-system side, nested
    ("/ns1", "s3://b-1/other/", "overlaps /ns1"),                 # the same path
    ("/other", "s3://b-1/p/sub/", "overlaps s3://b-1/p/"),        # S3 side, nested
    ("/other", "s3://b-1/p/", "overlaps s3://b-1/p/"),
    ("/", "s3://b-2/x/", "sole association"),                      # '/' only alone
])
def test_invalid_associations_are_refused_with_the_reason(fs, repo, why):
    with pytest.raises(ConfigError) as e:
        validate_new([assoc("/ns1", "s3://b-1/p/")], fs, repo, ["NEW"])
    assert why in str(e.value)


@pytest.mark.parametrize("fs, repo", [("/ns10", "s3://b-1/p2/"), ("/other", "s3://b-2/p/"),
                                      ("/other", "s3://b-1/q/")])
def test_neighbours_that_do_not_overlap_are_fine(fs, repo):
    assert validate_new([assoc("/ns1", "s3://b-1/p/")], fs, repo, [])[0] == fs


def test_root_association_must_stay_alone_and_at_most_eight():
    with pytest.raises(ConfigError, match="sole association"):
        validate_new([assoc("/", "s3://b-1/p/")], "/x", "s3://b-2/", [])
    many = [assoc(f"/d{i}", f"s3://b-1/p{i}/") for i in range(MAX_ASSOCIATIONS)]
    with pytest.raises(ConfigError, match="at most 8"):
        validate_new(many, "/d9", "s3://b-1/p9/", [])


@pytest.mark.parametrize("events, out", [([], []), (["DELETED", "NEW"], ["NEW", "DELETED"]),
                                         (["NEW", "CHANGED", "DELETED"], ["NEW", "CHANGED", "DELETED"])])
def test_events(events, out):
    assert normalize_events(events) == out


def test_unknown_event_is_refused():
    with pytest.raises(ConfigError, match="RENAMED"):
        normalize_events(["NEW", "RENAMED"])


def test_fsx_shape_round_trips_and_shows_failures_only_when_misconfigured():
    a = assoc("/r", "s3://b-1/p/", AssociationLifecycle.MISCONFIGURED)
    a.failure_message = "NoSuchBucket"
    d = a.to_fsx()
    assert d["FailureDetails"] == {"Message": "NoSuchBucket"} and d["S3"]["AutoExportPolicy"]["Events"] == ["NEW"]
    assert Association.from_fsx(d).to_fsx() == d
    a.lifecycle = AssociationLifecycle.AVAILABLE
    assert "FailureDetails" not in a.to_fsx()


def test_declared_associations_are_created_once_and_take_the_declared_policy():
    from pfsxport.dra import declare

    existing: list = []
    added = declare(existing, "fs-0123456789abcdef0",
                    [("/results", "s3://bkt/r", ["NEW"]), ("/ckpt/", "s3://bkt/c/", [])])
    assert [(a.file_system_path, a.data_repository_path, a.events) for a in existing] == [
        ("/results", "s3://bkt/r/", ["NEW"]), ("/ckpt", "s3://bkt/c/", [])]
    assert added == existing and all(a.lifecycle.value == "AVAILABLE" for a in existing)
    ids = [a.association_id for a in existing]
    again = declare(existing, "fs-0123456789abcdef0", [("/results", "s3://bkt/r/", ["NEW", "DELETED"])])
    assert [a.association_id for a in existing] == ids and again == [existing[0]]
    assert existing[0].events == ["NEW", "DELETED"]
    with pytest.raises(ConfigError, match="overlaps"):
        declare(existing, "fs-0123456789abcdef0", [("/results/sub", "s3://bkt/other/", [])])
