"""The hard tree exported by 1 (plain process), 2 and 4 MPI ranks into real S3 servers:
FSx layout, identical buckets, failures.csv, a report row per entry, counts that add up."""
from __future__ import annotations

import csv
import io
import os

import h5py
import pytest
from conftest import describe, list_keys, run_export, task_id_of
from treeutil import PART, assert_bucket_matches_tree, build_hard_tree


@pytest.fixture(scope="module")
def hard_tree(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("hard") / "fs")
    build_hard_tree(root)
    return root


def _parse_failures(text: str) -> dict[str, tuple[str, str]]:
    rows = list(csv.reader(io.StringIO(text)))
    return {r[0]: (r[1], r[2]) for r in rows}


@pytest.mark.timeout(600)
def test_hard_tree_by_1_2_4_ranks(server, hard_tree, tmp_path):
    bucket = server.new_bucket()
    c = server.client()
    state = str(tmp_path / "state")
    snapshots, reports = {}, {}
    for ranks in (None, 2, 4):
        label = f"r{ranks or 1}"
        r = run_export(server, ["--fs-root", hard_tree, "--repository", f"s3://{bucket}/{label}/",
                                "--report-path", f"s3://{bucket}/reports", "--state-dir", state,
                                "--part-size", "5MiB", "--multipart-threshold", "5MiB"], ranks=ranks)
        task = task_id_of(r)
        # some files are meant to fail (too-long key, non-UTF-8 name): the task is FAILED, exit 3
        assert r.returncode == 3, r.stderr
        if ranks:
            assert f"with {ranks} rank(s)" in r.stderr  # the job really ran with that world size
        fails = assert_bucket_matches_tree(c, bucket, f"{label}/", hard_tree,
                                           dir_metadata=server.keeps_dir_metadata,
                                           content_types=server.name == "moto")
        assert "PathNotUtf8" in fails.values() and "PathSizeTooLong" in fails.values()

        # failures.csv in the bucket: exactly the failing entries, FSx columns, no header
        text = c.get_object(Bucket=bucket, Key=f"reports/{task}/failures.csv")["Body"].read().decode()
        got = _parse_failures(text)
        want = {p.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"): ("failed", code)
                for p, code in fails.items()}
        assert got == want
        assert text.endswith("\n") and "\r" not in text

        # the task record: FAILED with a message, counts add up
        t = describe(task, state)
        st = t["Status"]
        assert t["Lifecycle"] == "FAILED" and t["FailureDetails"]["Message"]
        assert st["TotalCount"] == st["SucceededCount"] + st["FailedCount"]
        assert st["FailedCount"] == len(fails)
        exported = len(list_keys(c, bucket, f"{label}/"))
        assert st["SucceededCount"] == exported

        # report.h5 beside failures.csv and in the state directory: one row per entry
        local = os.path.join(state, "tasks", task, "report.h5")
        with h5py.File(local) as f:
            g = f["entries"]
            status = [s.decode() for s in g["status"][:]]
            assert len(status) == st["TotalCount"] + 1  # + the FIFO, skipped
            assert status.count("skipped") == 1
            assert f.attrs["TaskId"] == task
            big = [i for i, p in enumerate(g["path"][:]) if p.decode() == "big/several-parts"][0]
            assert g["parts"][big] == 4 and g["bytes"][big] == 3 * PART + 777
            assert set(g["rank"][:]) <= set(range(ranks or 1))
        remote = c.get_object(Bucket=bucket, Key=f"reports/{task}/report.h5")["Body"].read()
        assert remote == open(local, "rb").read()
        copy = tmp_path / f"report-of-{label}"  # the bucket's report, fetched whole, reads as one table
        for key in list_keys(c, bucket, f"reports/{task}/"):
            dest = copy / key[len(f"reports/{task}/"):]
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(c.get_object(Bucket=bucket, Key=key)["Body"].read())
        with h5py.File(copy / "report.h5") as f, h5py.File(local) as mine:
            assert sorted(f["entries"]["path"][:]) == sorted(mine["entries"]["path"][:])
            assert len(f["entries"]["path"][:]) == st["TotalCount"] + 1
        assert c.head_object(Bucket=bucket, Key=f"reports/{task}/report.csv")["ContentLength"] > 0

        snapshots[label] = {
            k[len(label) + 1:]: (v, c.head_object(Bucket=bucket, Key=k)["Metadata"])
            for k, v in list_keys(c, bucket, f"{label}/").items()}
        with h5py.File(local) as f:  # what a report says of each entry, whichever rank sent it
            g = f["entries"]
            cols = [g[n][:] for n in ("path", "type", "size", "status", "error_code", "bytes", "parts", "checksum")]
            reports[label] = {tuple(v.decode() if isinstance(v, bytes) else int(v) for v in row)
                              for row in zip(*cols, strict=True)}
            assert len(reports[label]) == len(g["path"])  # one row per entry, none twice
    assert snapshots["r1"] == snapshots["r2"] == snapshots["r4"]
    assert reports["r1"] == reports["r2"] == reports["r4"]
    assert c.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_every_directory_object_survives_many_new_directories(seaweed, tmp_path):
    """SeaweedFS loses a directory marker written while its first child's upload creates the
    folder (about one in a hundred when they overlap): each directory's object goes up
    before its children are handed out, so all 600 are there."""
    root = tmp_path / "fs"
    for d in range(300):
        os.makedirs(root / f"d{d}" / "s")
        for i in range(4):
            (root / f"d{d}" / f"f{i}").write_bytes(b"x")
        (root / f"d{d}" / "s" / "g").write_bytes(b"y")
    bucket = seaweed.new_bucket()
    r = run_export(seaweed, ["--fs-root", str(root), "--repository", f"s3://{bucket}/x/",
                             "--state-dir", str(tmp_path / "state")], ranks=2)
    assert r.returncode == 0, r.stderr
    keys = set(list_keys(seaweed.client(), bucket, "x/"))
    dirs = {f"x/d{d}/" for d in range(300)} | {f"x/d{d}/s/" for d in range(300)}
    assert sorted(dirs - keys) == []
    assert len(keys) == 600 + 300 * 5
