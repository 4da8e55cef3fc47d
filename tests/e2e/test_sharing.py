"""How the ranks share the work: one huge directory is spread over every rank (the rank that
lists it keeps what it found, and idle ranks steal halves of it), and rank 0 hears of the
work in counts, not entries."""
from __future__ import annotations

import re

import h5py
import pytest
from conftest import describe, list_keys, run_export, task_id_of
from test_export_outcomes import args


def one_dir(root, files):
    (root / "one").mkdir(parents=True)
    for i in range(files):
        (root / "one" / f"f{i:05d}").touch()
    return root


def _ranks_of(state, task):
    with h5py.File(state / "tasks" / task / "report.h5") as f:
        g = f["entries"]
        return {p.decode(): int(r) for p, r in zip(g["path"][:], g["rank"][:], strict=True)}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("files, ranks, dry", [(50_000, 4, True), (5_000, 2, False)])
def test_one_huge_directory_is_shared_by_every_rank(seaweed, tmp_path, files, ranks, dry):
    """50,000 entries planned by 4 ranks (a dry run: the walk, the comparison and the planning
    in full), and 5,000 sent to the store by 2."""
    root = one_dir(tmp_path / "fs", files)
    bucket = seaweed.new_bucket()
    state = tmp_path / "st"
    r = run_export(seaweed, args(root, bucket, state, *(["--dry-run"] if dry else [])), ranks=ranks, timeout=280)
    assert r.returncode == 0, r.stderr[-3000:]
    task = task_id_of(r)
    by_rank = _ranks_of(state, task)
    sent = {p: rank for p, rank in by_rank.items() if p.startswith("one/")}
    assert len(sent) == files  # each entry once
    counts = [sum(1 for rank in sent.values() if rank == k) for k in range(ranks)]
    assert min(counts) > 0, counts  # every rank sent (or would have sent) part of the one directory
    assert describe(task, state)["Status"]["SucceededCount"] == files + 1
    m = re.search(r"coordination: (\d+) messages to or from rank 0 .*; (\d+) units moved by theft", r.stderr)
    assert m and int(m.group(1)) < files // 20, r.stderr[-2000:]  # rank 0 hears counts, not entries
    assert int(m.group(2)) > 0  # the directory's batches went from rank to rank
    if not dry:
        assert len(list_keys(seaweed.client(), bucket, "x/one/")) == files + 1
