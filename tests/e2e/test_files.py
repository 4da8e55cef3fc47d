"""Hard links (E-9: one full object per link path, data sent once, the other keys made by
server-side copy) and sparse files (their logical content, holes as zeros)."""
from __future__ import annotations

import csv
import os
import re

from conftest import describe, run_export, task_id_of
from treeutil import assert_bucket_matches_tree, settle_atimes

MiB = 1 << 20


def test_hard_links_are_full_objects_with_the_data_sent_once(server, tmp_path):
    root, state = tmp_path / "fs", str(tmp_path / "st")
    for d in ("a", "b", "c"):
        os.makedirs(root / d)
    with open(root / "a" / "small", "wb") as f:
        f.write(os.urandom(50_000))
    with open(root / "a" / "big", "wb") as f:
        f.write(os.urandom(3 * 5 * MiB + 123))
    for d in ("b", "c"):
        os.link(root / "a" / "small", root / d / "small-link")
    os.link(root / "a" / "big", root / "b" / "big-link")
    settle_atimes(str(root))
    bucket = server.new_bucket()
    r = run_export(server, ["--fs-root", str(root), "--repository", f"s3://{bucket}/x/", "--state-dir", state,
                            "--part-size", "5MiB", "--multipart-threshold", "5MiB"], ranks=2)
    assert r.returncode == 0, r.stderr
    assert_bucket_matches_tree(server.client(), bucket, "x/", str(root),
                               dir_metadata=server.keeps_dir_metadata, content_types=server.name == "moto")
    task = task_id_of(r)
    assert describe(task, state)["Status"]["SucceededCount"] == 3 + 5  # dirs + every link path
    with open(os.path.join(state, "tasks", task, "report.csv"), newline="") as f:
        rows = {row["path"]: row for row in csv.DictReader(f)}
    copies = {p for p, row in rows.items() if row["message"].startswith("hard link: server-side copy")}
    assert len(copies) == 3  # two of the three small links, one of the two big ones
    sent = int(re.search(r"(\d+) bytes sent", r.stderr).group(1))
    assert sent == 50_000 + 3 * 5 * MiB + 123  # each inode's data went up once
    checks = {row["checksum"] for p, row in rows.items() if "small" in p}
    assert len(checks) == 1  # copies carry the checksum of the data they copied


def test_sparse_file_is_its_logical_content(seaweed, tmp_path):
    root = tmp_path / "fs"
    os.makedirs(root)
    path = root / "sparse.dat"
    with open(path, "wb") as f:
        f.truncate(40 * MiB)  # holes everywhere ...
        for off in (0, 7 * MiB + 5, 21 * MiB, 40 * MiB - 3):  # ... but these bytes
            f.seek(off)
            f.write(b"DATA")
    with open(root / "all-hole.dat", "wb") as f:
        f.truncate(3 * MiB)
    settle_atimes(str(root))
    bucket = seaweed.new_bucket()
    r = run_export(seaweed, ["--fs-root", str(root), "--repository", f"s3://{bucket}/x/",
                             "--state-dir", str(tmp_path / "st"), "--part-size", "5MiB",
                             "--multipart-threshold", "5MiB"])
    assert r.returncode == 0, r.stderr
    assert_bucket_matches_tree(seaweed.client(), bucket, "x/", str(root), dir_metadata=False, content_types=False)
