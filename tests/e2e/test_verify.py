"""`pfsxport verify` against a real SeaweedFS (and moto), under real mpiexec with 1 and 2
ranks: the exported hard tree matches (exit 0); each kind of difference, seeded one at a
time, is named with its kind for exactly that entry (exit 8); names with control
characters are escaped in log lines; bad input and an unreachable store have their codes."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import h5py
import pytest
from conftest import MPIEXEC, run_export
from treeutil import build_hard_tree

NEWLINE_NAME = "names/new\nline.txt"
SKIPPED = {"special.fifo", "bad-\\xff\\xfe-name.txt"}  # and the two entries under the too-long path


def run_verify(server, args: list[str], ranks: int | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    base = [sys.executable, "-m", "pfsxport", "verify"] + args
    cmd = base if ranks is None else [MPIEXEC, "-n", str(ranks)] + base
    env = {**os.environ, **server.env()}
    env.pop("PFSXPORT_STATE_DIR", None)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def summary(r: subprocess.CompletedProcess) -> dict:
    start = r.stdout.find("{")
    assert start >= 0, f"no summary printed:\n{r.stdout}\n{r.stderr}"
    return json.loads(r.stdout[start:])["Verify"]


def rows(report_dir: str) -> list[dict]:
    with open(os.path.join(report_dir, "verify.csv"), encoding="utf-8", newline="") as f:
        return list(csv.DictReader(io.StringIO(f.read())))


def differences(report_dir: str) -> list[tuple[str, str]]:
    return sorted((r["path"], r["difference"]) for r in rows(report_dir) if r["difference"] != "skipped")


@pytest.fixture(scope="module")
def exported(seaweed, tmp_path_factory):
    """The hard tree (plus a name with a newline) exported once to s3://BUCKET/v/."""
    base = tmp_path_factory.mktemp("verify")
    root = str(base / "fs")
    build_hard_tree(root)
    with open(os.path.join(root, NEWLINE_NAME), "w") as f:
        f.write("a name with a newline\n")
    bucket = seaweed.new_bucket()
    state = str(base / "state")
    r = run_export(seaweed, ["--fs-root", root, "--repository", f"s3://{bucket}/v/", "--state-dir", state,
                             "--part-size", "5MiB", "--multipart-threshold", "5MiB", "--progress", "off"])
    assert r.returncode == 3, r.stderr  # the too-long key and the non-UTF-8 name fail, as they must
    return root, bucket, state


def _verify_args(exported, tmp_path, *extra: str) -> tuple[list[str], str]:
    root, bucket, state = exported
    report = str(tmp_path / "report")
    return ["--fs-root", root, "--repository", f"s3://{bucket}/v/", "--state-dir", state,
            "--report-dir", report, *extra], report


@pytest.mark.parametrize("ranks", [None, 2, 4])  # 4 oversubscribes this 2-core machine on purpose
def test_exported_tree_matches(seaweed, exported, tmp_path, ranks):
    args, report = _verify_args(exported, tmp_path)
    r = run_verify(seaweed, args, ranks)
    assert r.returncode == 0, r.stderr
    s = summary(r)
    assert s["Result"] == "MATCH" and s["Ranks"] == (ranks or 1)
    assert s["Missing"] == s["Extra"] == s["ContentDiffers"] == s["MetadataDiffers"] == s["Errors"] == 0
    assert s["SizeOnly"] == 0  # SeaweedFS keeps the CRC32 export sent, multipart ones as composite
    assert s["DirectoryMetadataNotKept"] > 0  # SeaweedFS keeps no metadata on `dir/` keys
    skipped = {r["path"] for r in rows(report) if r["difference"] == "skipped"}
    assert SKIPPED <= skipped and len(skipped) == 4, skipped
    assert s["Matched"] + s["Skipped"] == s["Compared"]


def _keep_times(path: str):
    st = os.lstat(path)
    return lambda: os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


@contextlib.contextmanager
def _flip_byte(root: str, rel: str, offset: int):
    """The file's bytes changed, its size and mtime kept."""
    path = os.path.join(root, rel)
    restore_times = _keep_times(path)
    with open(path, "r+b") as f:
        f.seek(offset)
        old = f.read(1)
        f.seek(offset)
        f.write(bytes([old[0] ^ 0xFF]))
    restore_times()
    try:
        yield
    finally:
        with open(path, "r+b") as f:
            f.seek(offset)
            f.write(old)
        restore_times()


@contextlib.contextmanager
def _chmod(root: str, rel: str, mode: int):
    path = os.path.join(root, rel)
    old = os.lstat(path).st_mode & 0o7777
    os.chmod(path, mode)
    try:
        yield
    finally:
        os.chmod(path, old)


@contextlib.contextmanager
def _retarget(root: str, rel: str, target: str):
    path = os.path.join(root, rel)
    old = os.readlink(path)
    restore_times = _keep_times(path)
    os.unlink(path)
    os.symlink(target, path)
    restore_times()
    try:
        yield
    finally:
        os.unlink(path)
        os.symlink(old, path)
        restore_times()


@contextlib.contextmanager
def _delete_object(client, bucket: str, key: str):
    got = client.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    body = got["Body"].read()
    client.delete_object(Bucket=bucket, Key=key)
    try:
        yield
    finally:
        client.put_object(Bucket=bucket, Key=key, Body=body, Metadata=got["Metadata"],
                          ContentType=got["ContentType"], ChecksumCRC32=got["ChecksumCRC32"])


@contextlib.contextmanager
def _add_object(client, bucket: str, key: str):
    client.put_object(Bucket=bucket, Key=key, Body=b"not from the tree")
    try:
        yield
    finally:
        client.delete_object(Bucket=bucket, Key=key)


SEEDS = {
    "missing": (lambda root, c, b: _delete_object(c, b, "v/names/with space.txt"), "names/with space.txt", "missing"),
    "extra": (lambda root, c, b: _add_object(c, b, "v/names/not-in-tree"), "names/not-in-tree", "extra"),
    "extra-subtree": (lambda root, c, b: _add_object(c, b, "v/ghost/deeper/x"), "ghost/deeper/x", "extra"),
    "content-small": (lambda root, c, b: _flip_byte(root, "names/comma,name.txt", 7), "names/comma,name.txt",
                      "content-differs"),
    "content-multipart": (lambda root, c, b: _flip_byte(root, "big/several-parts", 6 << 20), "big/several-parts",
                          "content-differs"),
    "chmod": (lambda root, c, b: _chmod(root, "modes/private", 0o640), "modes/private", "metadata-differs"),
    "symlink-target": (lambda root, c, b: _retarget(root, "links/to-file", "target-dir/INSIDE.txt"), "links/to-file",
                       "metadata-differs"),
    "newline-name": (lambda root, c, b: _chmod(root, NEWLINE_NAME, 0o600), NEWLINE_NAME, "metadata-differs"),
}


@pytest.mark.parametrize("ranks", [None, 2])
@pytest.mark.parametrize("seed", sorted(SEEDS))
def test_seeded_difference_is_named(seaweed, exported, tmp_path, seed, ranks):
    root, bucket, _ = exported
    make, path, kind = SEEDS[seed]
    args, report = _verify_args(exported, tmp_path)
    with make(root, seaweed.client(), bucket):
        r = run_verify(seaweed, args, ranks)
    assert r.returncode == 8, r.stderr
    s = summary(r)
    assert s["Result"] == "DIFFERENT"
    assert differences(report) == [(path, kind)], r.stderr
    with h5py.File(os.path.join(report, "verify.h5")) as f:  # the same rows as HDF5 columns
        got = {(p.decode(), d.decode()) for p, d in zip(f["entries/path"][:], f["entries/difference"][:], strict=True)}
    assert (path, kind) in got and len(got) == len(rows(report))
    row = next(x for x in rows(report) if x["path"] == path)
    assert row["reason"]
    for line in r.stderr.splitlines():  # every log line is one line: the name's newline is escaped
        assert line.startswith("pfsxport[") or not line.strip(), line
    if seed == "newline-name":
        assert "names/new\\x0aline.txt" in r.stderr
    if seed == "chmod":
        assert "file-permissions: tree 0100640, bucket 0100600" in row["reason"]
    if seed == "symlink-target":
        assert "target-dir/INSIDE.txt" in row["reason"] and "target-dir/inside.txt" in row["reason"]


def test_contents_compares_every_byte(seaweed, exported, tmp_path):
    root, _, _ = exported
    args, report = _verify_args(exported, tmp_path, "--contents", "big")
    r = run_verify(seaweed, args, 2)
    assert r.returncode == 0, r.stderr
    assert summary(r)["BytesRead"] > 15 << 20
    with _flip_byte(root, "big/two-parts-exact", (5 << 20) + 3):
        r = run_verify(seaweed, args, 2)
    assert r.returncode == 8, r.stderr
    assert differences(report) == [("big/two-parts-exact", "content-differs")]
    assert f"bytes differ from offset {(5 << 20) + 3}" in rows(report)[0]["reason"]


def test_a_report_directory_inside_the_tree_is_not_compared(seaweed, exported, tmp_path):
    root, bucket, state = exported
    report = os.path.join(root, "names", "verify-report")
    try:
        r = run_verify(seaweed, ["--fs-root", root, "--repository", f"s3://{bucket}/v/", "--state-dir", state,
                                 "--report-dir", report, "names"])
        assert r.returncode == 0, r.stderr
        assert os.path.exists(os.path.join(report, "verify.csv"))
    finally:
        shutil.rmtree(report, ignore_errors=True)


def test_paths_limit_the_comparison(seaweed, exported, tmp_path):
    root, bucket, _ = exported
    args, report = _verify_args(exported, tmp_path, "links", "modes/private")
    with _chmod(root, "names/comma,name.txt", 0o600):  # outside the paths: not seen
        r = run_verify(seaweed, args)
    assert r.returncode == 0, r.stderr
    assert summary(r)["Compared"] == 8  # links/ and its 6 entries, and modes/private


def test_bad_input_and_unreachable_store(seaweed, exported, tmp_path):
    args, _ = _verify_args(exported, tmp_path, "../outside")
    r = run_verify(seaweed, args)
    assert r.returncode == 2 and "outside the file system root" in r.stderr
    args, _ = _verify_args(exported, tmp_path, "--endpoint-url", "http://127.0.0.1:9")
    r = run_verify(seaweed, args, timeout=120)
    assert r.returncode == 5, r.stderr


def test_moto_checks_md5_etags_and_composite_crc(moto, tmp_path):
    """moto returns no CRC32 for a single PUT (the MD5 ETag is compared) and a multipart
    object's composite CRC32 without its -N suffix."""
    root = str(tmp_path / "fs")
    os.makedirs(os.path.join(root, "d"))
    with open(os.path.join(root, "d", "small"), "wb") as f:
        f.write(b"small file\n" * 100)
    with open(os.path.join(root, "big"), "wb") as f:
        f.write(os.urandom((5 << 20) * 2 + 1000))
    bucket = moto.new_bucket()
    state = str(tmp_path / "state")
    r = run_export(moto, ["--fs-root", root, "--repository", f"s3://{bucket}/m/", "--state-dir", state,
                          "--part-size", "5MiB", "--multipart-threshold", "5MiB", "--progress", "off"])
    assert r.returncode == 0, r.stderr
    args = ["--fs-root", root, "--repository", f"s3://{bucket}/m/", "--state-dir", state,
            "--report-dir", str(tmp_path / "report")]
    r = run_verify(moto, args)
    assert r.returncode == 0, r.stderr
    s = summary(r)
    assert s["Result"] == "MATCH" and s["SizeOnly"] == 0 and s["DirectoryMetadataNotKept"] == 0
    with _flip_byte(root, "d/small", 5), _flip_byte(root, "big", (5 << 20) * 2 + 10):
        r = run_verify(moto, args)
    assert r.returncode == 8, r.stderr
    assert differences(str(tmp_path / "report")) == [("big", "content-differs"), ("d/small", "content-differs")]


@pytest.mark.parametrize("ranks,sig", [(2, signal.SIGTERM), (None, signal.SIGINT)], ids=["SIGTERM-mpiexec",
                                                                                       "Ctrl-C-single"])
def test_a_signal_stops_verify(seaweed, exported, tmp_path, ranks, sig):
    """Nothing more is started after the signal: the summary says CANCELED and the code is 4."""
    args, report = _verify_args(exported, tmp_path, "--concurrency", "1")
    base = [sys.executable, "-m", "pfsxport", "verify"] + args
    cmd = base if ranks is None else [MPIEXEC, "-n", str(ranks)] + base
    env = {**os.environ, **seaweed.env(), "PFSXPORT_TEST_ENTRY_DELAY": "0.5"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 4, err
    s = json.loads(out[out.find("{"):])["Verify"]
    assert s["Result"] == "CANCELED" and s["Compared"] < 40, s
    assert os.path.exists(os.path.join(report, "verify.csv"))


@pytest.mark.parametrize("seed", ["chmod", "content-small", "symlink-target", "missing", "extra"])
def test_quick_trusts_only_what_the_manifest_recorded(seaweed, exported, tmp_path, seed):
    """--quick: entries whose lstat is the manifest's record match from the listing alone; any
    change in the tree (ctime moves with it) is compared in full, so it is still found."""
    root, bucket, _ = exported
    args, report = _verify_args(exported, tmp_path, "--quick")
    r = run_verify(seaweed, args, 2)
    assert r.returncode == 0, r.stderr
    s = summary(r)
    # entries seeded and put back by earlier tests have a new ctime: those few are compared in full
    assert s["Result"] == "MATCH" and s["Trusted"] > 30
    make, path, kind = SEEDS[seed]
    with make(root, seaweed.client(), bucket):
        r = run_verify(seaweed, args, 2)
    assert r.returncode == 8, r.stderr
    assert differences(report) == [(path, kind)], r.stderr


def test_verify_maps_paths_through_associations(seaweed, tmp_path):
    """Without --repository verify reads the associations as export does; rows name
    file-system paths, and entries under no association are not compared."""
    root, state = tmp_path / "fs", tmp_path / "st"
    for d in ("results/run1", "scratch/keep/sub", "home"):
        os.makedirs(root / d)
    for f in ("results/run1/a", "results/top", "scratch/keep/sub/k", "home/h"):
        (root / f).write_bytes(f.encode())
    bucket = seaweed.new_bucket()
    env = seaweed.env()
    for fs_path, repo in (("/results", f"s3://{bucket}/res/"), ("/scratch/keep", f"s3://{bucket}/keep/")):
        r = subprocess.run([sys.executable, "-m", "pfsxport", "dra", "create", "--fs-root", str(root), "--state-dir",
                            str(state), "--file-system-path", fs_path, "--data-repository-path", repo],
                           env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    r = run_export(seaweed, ["--fs-root", str(root), "--state-dir", str(state), "--progress", "off"])
    assert r.returncode == 0, r.stderr
    report = str(tmp_path / "report")
    args = ["--fs-root", str(root), "--state-dir", str(state), "--report-dir", report]
    r = run_verify(seaweed, args, 2)
    assert r.returncode == 0, r.stderr
    assert summary(r)["Compared"] == 5  # a, top, k, and the directories run1/ and sub/
    c = seaweed.client()
    with _delete_object(c, bucket, "res/run1/a"), _flip_byte(str(root), "scratch/keep/sub/k", 2):
        r = run_verify(seaweed, args, 2)
    assert r.returncode == 8, r.stderr
    assert differences(report) == [("results/run1/a", "missing"), ("scratch/keep/sub/k", "content-differs")]


def test_a_path_through_a_symlink_and_an_unwritable_report(seaweed, exported, tmp_path):
    args, _ = _verify_args(exported, tmp_path, "links/to-dir/inside.txt")
    r = run_verify(seaweed, args)
    assert r.returncode == 2 and "goes through the symlink" in r.stderr, r.stderr
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    args, _ = _verify_args(exported, tmp_path)
    args[args.index("--report-dir") + 1] = str(blocker / "report")
    r = run_verify(seaweed, args, 2)
    assert r.returncode == 7 and "StateDirectoryUnusable" in r.stderr, r.stderr


def test_a_huge_directory_is_checked_by_every_rank(seaweed, tmp_path):
    """A directory of more checks than verify.SHARE_OVER is dealt over the ranks: each rank
    finds some of the differences seeded in it, and the report has them all."""
    from pfsxport.verify import SHARE_OVER

    root = tmp_path / "fs"
    os.makedirs(root / "huge")
    n = SHARE_OVER + 100
    for i in range(n):
        (root / "huge" / f"f{i:05d}").write_bytes(b"%d" % i)
    bucket = seaweed.new_bucket()
    state = str(tmp_path / "state")
    r = run_export(seaweed, ["--fs-root", str(root), "--repository", f"s3://{bucket}/h/", "--state-dir", state,
                             "--progress", "off"], ranks=2)
    assert r.returncode == 0, r.stderr
    seeded = sorted(f"huge/f{i:05d}" for i in range(0, n, n // 40))
    for p in seeded:
        os.chmod(root / p, 0o600)
    report = str(tmp_path / "report")
    r = run_verify(seaweed, ["--fs-root", str(root), "--repository", f"s3://{bucket}/h/", "--state-dir", state,
                             "--report-dir", report], 2)
    assert r.returncode == 8, r.stderr
    assert differences(report) == [(p, "metadata-differs") for p in seeded]
    by_rank = {line.split("]")[0] for line in r.stderr.splitlines() if "metadata-differs: huge/" in line}
    assert by_rank == {"pfsxport[0", "pfsxport[1"}, r.stderr[-2000:]
    assert summary(r)["Compared"] == n + 1
