"""Striped files through a real export: layouts from a stand-in `lfs getstripe -y` (recorded
output, LUSTRE.md's formats), `mpiexec -n 2`, SeaweedFS. Parts follow the layout (a multiple
of the stripe size; the coarsest stripe for PFL), the report names each file's OSTs, and the
per-OST read cap holds the job back without stalling it."""
from __future__ import annotations

import csv
import io
import os
import shutil

import pytest
from conftest import list_keys, run_export, task_id_of
from layoututil import comp, composite, sub
from treeutil import assert_bucket_matches_tree

MiB = 1 << 20
STANDIN = os.path.join(os.path.dirname(os.path.dirname(__file__)), "standin", "lfs")

# name -> (size, recorded layout, OSTs the report must name, parts at a 5 MiB target)
FILES = {
    # plain, one stripe on OST 7; a size that is a multiple of nothing
    "single.dat": (23 * MiB + 123, sub(1, MiB, (7,), indent=""), {"7"}, 5),
    # PFL: the first 4 MiB on OST 0 in 1 MiB stripes, then 4 MiB stripes over OSTs 1 and 2 to EOF;
    # parts are a multiple of the coarsest stripe (8 MiB)
    "pfl.dat": (30 * MiB, composite(2, 1, [comp(1, 0, "init", 0, 4 * MiB, sub(1, MiB, (0,))),
                                           comp(2, 0, "init", 4 * MiB, "EOF", sub(2, 4 * MiB, (1, 2)))]),
                {"0", "1", "2"}, 4),
    # Data-on-MDT for the first MiB, then four OSTs
    "dom.dat": (17 * MiB + 5, composite(2, 1, [comp(1, 0, "init", 0, MiB, sub(0, MiB, (), pattern="mdt")),
                                               comp(2, 0, "init", MiB, "EOF", sub(4, MiB, (3, 4, 5, 6)))]),
                {"3", "4", "5", "6"}, 4),
}


@pytest.fixture
def striped(tmp_path):
    root = tmp_path / "fs"
    (root / "big").mkdir(parents=True)
    (root / "small").write_bytes(b"not striped: below the multipart threshold")
    lfs_dir = tmp_path / "lfs"
    (lfs_dir / "layouts").mkdir(parents=True)
    for i, (name, (size, text, _, _)) in enumerate(FILES.items()):
        with open(root / "big" / name, "wb") as f:
            for off in range(0, size, MiB):
                f.write(bytes([i + 1]) * min(MiB, size - off))
        (lfs_dir / "layouts" / name).write_text(text)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shutil.copy(STANDIN, bin_dir / "lfs")
    return str(root), str(lfs_dir), str(bin_dir / "lfs")


@pytest.mark.parametrize("reads_per_ost", ["1", "0"])
def test_striped_files_follow_their_layouts(seaweed, striped, tmp_path, reads_per_ost):
    root, lfs_dir, lfs = striped
    bucket = seaweed.new_bucket()
    c = seaweed.client()
    state = str(tmp_path / "state")
    r = run_export(seaweed, ["--fs-root", root, "--repository", f"s3://{bucket}/data/", "--state-dir", state,
                             "--report-path", f"s3://{bucket}/reports", "--lfs", lfs,
                             "--part-size", "5MiB", "--multipart-threshold", "8MiB",
                             "--reads-per-ost", reads_per_ost, "--progress", "off"],
                   ranks=2, env={"PFSXPORT_STANDIN_LFS": lfs_dir})
    assert r.returncode == 0, r.stderr
    task = task_id_of(r)
    assert_bucket_matches_tree(c, bucket, "data/", root, dir_metadata=seaweed.keeps_dir_metadata,
                               content_types=False)
    assert "data/big/single.dat" in list_keys(c, bucket, "data/")

    text = c.get_object(Bucket=bucket, Key=f"reports/{task}/report.csv")["Body"].read().decode()
    rows = {row["path"]: row for row in csv.DictReader(io.StringIO(text))}
    for name, (size, _, osts, parts) in FILES.items():
        row = rows[f"big/{name}"]
        assert row["status"] == "succeeded" and int(row["bytes"]) == size
        assert set(row["osts"].split(",")) == osts, (name, row["osts"])
        assert int(row["parts"]) == parts, (name, row["parts"])
        etag = c.head_object(Bucket=bucket, Key=f"data/big/{name}")["ETag"].strip('"')
        assert etag.endswith(f"-{parts}"), (name, etag)  # a multipart object of exactly those parts
    assert rows["small"]["osts"] == "" and rows["small"]["parts"] == "1"  # one PUT

    getstripes = [ln for ln in open(os.path.join(lfs_dir, "calls")) if ln.startswith('["getstripe"')]
    assert len(getstripes) == 1, "one lfs process for the three large files of a directory"
