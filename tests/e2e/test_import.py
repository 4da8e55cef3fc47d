"""`pfsxport import` against real S3 servers under real mpiexec: the round trip of the hard
tree, keys written by other tools, and hostile keys (FSX-FACTS §6, §9; SPEC §7)."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys

import pytest
from conftest import MPIEXEC, describe, list_keys, run_export
from treeutil import build_hard_tree

FILES_FAILED = 3


def run_import(server, args: list[str], ranks: int | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    base = [sys.executable, "-m", "pfsxport", "import"] + args
    cmd = base if ranks is None else [MPIEXEC, "-n", str(ranks)] + base
    env = {**os.environ, **server.env()}
    env.pop("PFSXPORT_STATE_DIR", None)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def snapshot(root: str, dir_metadata: bool = True) -> dict[str, tuple]:
    """Every entry under root: type, mode without setuid/setgid, owner, mtime, and content
    (a digest of a file's bytes, a symlink's target)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            if stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", st.st_mode & 0o1777, st.st_uid, st.st_gid, st.st_mtime_ns) if dir_metadata \
                    else ("dir",)
            elif stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(full), st.st_uid, st.st_gid, st.st_mtime_ns)
            elif stat.S_ISREG(st.st_mode):
                with open(full, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
                out[rel] = ("file", st.st_mode & 0o1777, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_size, digest)
    return out


def report(state: str, task_id: str, name: str) -> list[list[str]]:
    with open(os.path.join(state, "tasks", task_id, name), newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def task_of(r: subprocess.CompletedProcess) -> str:
    first = r.stdout.split()
    assert first and first[0].startswith("task-"), r.stdout + r.stderr
    return first[0]


@pytest.mark.parametrize("ranks", [1, 2, 4])
@pytest.mark.timeout(600)
def test_round_trip_of_the_hard_tree(server, tmp_path, ranks):
    src, dst, state = str(tmp_path / "src"), str(tmp_path / "dst"), str(tmp_path / "state")
    build_hard_tree(src)
    bucket = server.new_bucket()
    repo = f"s3://{bucket}/tree/"
    r = run_export(server, ["--fs-root", src, "--repository", repo, "--state-dir", state,
                            "--part-size", "5MiB", "--multipart-threshold", "5MiB"], ranks=ranks)
    assert r.returncode == FILES_FAILED, r.stderr  # the too-long and non-UTF-8 names
    keys = set(list_keys(server.client(), bucket, "tree/"))
    before = {p: v for p, v in snapshot(src, server.keeps_dir_metadata).items()
              if "tree/" + p + ("/" if v[0] == "dir" else "") in keys}
    shutil.rmtree(src)
    os.mkdir(dst)
    r = run_import(server, ["--fs-root", dst, "--repository", repo, "--state-dir", state, "--part-size", "5MiB"],
                   ranks=ranks)
    assert r.returncode == 0, r.stderr[-3000:]
    task = task_of(r)
    after = snapshot(dst, server.keeps_dir_metadata)
    assert len(before) > 30 and after == before
    assert after["modes/chowned"][2:4] == (1234, 5678) and after["links/to-dir"][1] == "target-dir"
    assert after["empty/nested-empty"][0] == "dir"
    assert not any(".pfsxport-tmp-" in p for p in after)
    d = describe(task, state)
    assert d["Type"] == "IMPORT_METADATA_FROM_REPOSITORY" and d["Lifecycle"] == "SUCCEEDED"
    assert d["Status"]["FailedCount"] == 0 and d["Status"]["SucceededCount"] == len(keys)
    assert report(state, task, "report.csv") == []  # FSx's import report: the failures, none here
    entries = report(state, task, "entries.csv")
    assert entries[0][:4] == ["path", "type", "size", "status"] and len(entries) == 1 + len(keys)
    assert {row[entries[0].index("rank")] for row in entries[1:]} == {str(r) for r in range(ranks)}
    remote = list_keys(server.client(), bucket, f"pfsxport-reports/{task}/")
    assert {f"pfsxport-reports/{task}/report.csv", f"pfsxport-reports/{task}/entries.csv"} <= set(remote)
    sparse = os.path.join(dst, "big", "several-parts")  # the modes tree's files exist; spot-check a big one
    assert os.path.getsize(sparse) == 3 * 5 * (1 << 20) + 777


def _put(client, bucket: str, key: str, body: bytes = b"", **meta: str) -> None:
    client.put_object(Bucket=bucket, Key=key, Body=body, Metadata=meta)


def test_keys_written_by_other_tools(moto, tmp_path):
    """No metadata: root:root 0755 with the object's LastModified; times in milliseconds; a
    `dir/` object with a regular-file mode is a directory with that mode's permission bits;
    DataSync's six-digit modes; setuid and setgid never set."""
    c, bucket = moto.client(), moto.new_bucket()
    _put(c, bucket, "p/plain.txt", b"no metadata\n")
    _put(c, bucket, "p/ms.txt", b"ms\n", **{"file-mtime": "1595002920123", "file-atime": "1595002920456",
                                           "file-permissions": "100640", "file-owner": "1000", "file-group": "1001"})
    _put(c, bucket, "p/dir/", **{"file-permissions": "0100664", "file-mtime": "1600000000000000000ns"})
    _put(c, bucket, "p/dir/inner", b"x", **{"file-permissions": "0104755"})
    _put(c, bucket, "p/noslash/deep/file", b"implicit parents\n")
    _put(c, bucket, "p/link", b"dir/inner", **{"file-permissions": "0120777"})
    dst, state = tmp_path / "dst", str(tmp_path / "state")
    dst.mkdir()
    r = run_import(moto, ["--fs-root", str(dst), "--repository", f"s3://{bucket}/p", "--state-dir", state])
    assert r.returncode == 0, r.stderr[-3000:]
    plain = os.lstat(dst / "plain.txt")
    assert (stat.S_IMODE(plain.st_mode), plain.st_uid, plain.st_gid) == (0o755, 0, 0)
    last_modified = c.head_object(Bucket=bucket, Key="p/plain.txt")["LastModified"].timestamp()
    assert abs(plain.st_mtime - last_modified) < 2
    ms = os.lstat(dst / "ms.txt")
    assert (ms.st_mtime_ns, ms.st_atime_ns) == (1595002920123 * 10 ** 6, 1595002920456 * 10 ** 6)
    assert (stat.S_IMODE(ms.st_mode), ms.st_uid, ms.st_gid) == (0o640, 1000, 1001)
    d = os.lstat(dst / "dir")
    assert stat.S_ISDIR(d.st_mode) and stat.S_IMODE(d.st_mode) == 0o664 and d.st_mtime_ns == 1600000000000000000
    assert stat.S_IMODE(os.lstat(dst / "dir" / "inner").st_mode) == 0o755  # setuid never set
    assert (dst / "noslash" / "deep" / "file").read_bytes() == b"implicit parents\n"
    assert os.readlink(dst / "link") == "dir/inner"


HOSTILE = {
    "../escape": "S3ObjectPathNotPosixCompliant",
    "/abs": "S3ObjectPathNotPosixCompliant",
    "a/../../b": "S3ObjectPathNotPosixCompliant",
    "./x": "S3ObjectPathNotPosixCompliant",
    "a//b": "S3ObjectPathNotPosixCompliant",
    "a/./b": "S3ObjectPathNotPosixCompliant",
    "out/secret": "S3ObjectPathThroughSymlink",  # `out` is a symlink already in the target
    "clash": "S3ObjectTypeMismatch",  # `clash/` objects too: the directory wins
}


@pytest.mark.parametrize("ranks", [1, 2, 4])
def test_hostile_keys_are_refused_and_nothing_lands_outside(moto, tmp_path, ranks):
    c, bucket = moto.client(), moto.new_bucket()
    for key in HOSTILE:
        _put(c, bucket, key, b"hostile\n")
    _put(c, bucket, "clash/inside", b"ok\n")
    _put(c, bucket, "file..txt", b"a fine name\n")
    _put(c, bucket, "a/fine", b"ok\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    dst, state = tmp_path / "work" / "dst", str(tmp_path / "state")
    dst.mkdir(parents=True)
    os.symlink(str(outside), dst / "out")
    r = run_import(moto, ["--fs-root", str(dst), "--repository", f"s3://{bucket}/", "--state-dir", state],
                   ranks=ranks)
    assert r.returncode == FILES_FAILED, r.stderr[-3000:]
    task = task_of(r)
    rows = {row[0]: (row[1], row[2]) for row in report(state, task, "report.csv")}
    assert rows == {k: ("failed", code) for k, code in HOSTILE.items()}
    assert os.listdir(outside) == []
    assert sorted(os.listdir(tmp_path)) == ["outside", "state", "work"]
    assert sorted(os.listdir(tmp_path / "work")) == ["dst"]
    assert sorted(os.listdir(dst)) == ["a", "clash", "file..txt", "out"]
    assert (dst / "file..txt").read_bytes() == b"a fine name\n"
    assert (dst / "clash" / "inside").read_bytes() == b"ok\n"
    d = describe(task, state)
    assert d["Lifecycle"] == "FAILED" and d["Status"]["FailedCount"] == len(HOSTILE)
    assert "report.csv" in d["FailureDetails"]["Message"]


def test_one_task_at_a_time_and_bad_paths(moto, tmp_path):
    c, bucket = moto.client(), moto.new_bucket()
    _put(c, bucket, "p/f", b"1")
    dst, state = tmp_path / "dst", str(tmp_path / "state")
    dst.mkdir()
    r = run_import(moto, ["--fs-root", str(dst), "--repository", f"s3://{bucket}/p/", "--state-dir", state,
                          f"s3://{bucket}/elsewhere/x"])
    assert r.returncode == 2, r.stderr
    r = run_import(moto, ["--fs-root", str(dst), "--repository", f"s3://{bucket}/p/", "--state-dir", state,
                          f"s3://{bucket}/p/missing"])
    assert r.returncode == 2 and "holds no objects" in r.stderr, r.stderr
    r = run_import(moto, ["--fs-root", str(dst), "--repository", f"s3://{bucket}/p/", "--state-dir", state,
                          f"s3://{bucket}/p/f"])
    assert r.returncode == 0, r.stderr
    assert (dst / "f").read_bytes() == b"1"
    _put(c, bucket, "p/d/g", b"2")
    for path in ("d", str(dst / "d")):  # a file-system path names the keys it was exported to
        r = run_import(moto, ["--fs-root", str(dst), "--repository", f"s3://{bucket}/p/", "--state-dir", state, path])
        assert r.returncode == 0, r.stderr
        assert (dst / "d" / "g").read_bytes() == b"2"
    r = run_import(moto, ["--fs-root", str(dst), "--repository", f"s3://{bucket}/p/", "--state-dir", state,
                          str(tmp_path / "outside")])
    assert r.returncode == 2 and "outside the file system root" in r.stderr, r.stderr
    out = subprocess.run([sys.executable, "-m", "pfsxport", "task", "describe", "--state-dir", state],
                         capture_output=True, text=True, check=True).stdout
    types = {t["Type"] for t in json.loads(io.StringIO(out).read())["DataRepositoryTasks"]}
    assert types == {"IMPORT_METADATA_FROM_REPOSITORY"}


@pytest.mark.timeout(300)
def test_sigterm_cancels_the_import(moto, tmp_path):
    import signal
    import time

    c, bucket = moto.client(), moto.new_bucket()
    for i in range(400):
        _put(c, bucket, f"p/d{i % 4}/f{i:04d}", b"x" * 100)
    dst, state = tmp_path / "dst", str(tmp_path / "state")
    dst.mkdir()
    env = {**os.environ, **moto.env()}
    proc = subprocess.Popen([sys.executable, "-m", "pfsxport", "import", "--fs-root", str(dst), "--repository",
                             f"s3://{bucket}/p/", "--state-dir", state, "--concurrency", "1",
                             "--progress-interval", "0.3"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while sum(len(fs) for _, _, fs in os.walk(dst)) < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # a progress line
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 4, err[-3000:]
    assert "progress: rank 0 of 1: " in err and " entries/s" in err
    task = out.split()[0]
    d = describe(task, state)
    assert d["Lifecycle"] == "CANCELED" and d["Type"] == "IMPORT_METADATA_FROM_REPOSITORY"
    files = [f for _, _, fs in os.walk(dst) for f in fs]
    assert 20 <= len(files) < 400 and not any(f.startswith(".pfsxport-tmp-") for f in files)
    assert d["Status"]["SucceededCount"] == len(files)


@pytest.mark.timeout(400)
def test_kill_9_then_a_rerun_with_another_rank_count(seaweed, tmp_path):
    """A job killed mid-import leaves no torn file under a final name; the next run (2 ranks)
    finishes the tree and removes the temporary files the dead one left."""
    import signal
    import time

    c, bucket = seaweed.client(), seaweed.new_bucket()
    want = {}
    for i in range(300):
        key = f"d{i % 3}/f{i:04d}"
        want[key] = bytes([i % 251]) * (1000 + i)
        _put(c, bucket, "p/" + key, want[key], **{"file-permissions": "0100644"})
    for i in range(3):
        key = f"d{i}/big"
        want[key] = os.urandom(12 << 20)
        _put(c, bucket, "p/" + key, want[key])
    dst, state = tmp_path / "dst", str(tmp_path / "state")
    dst.mkdir()
    env = {**os.environ, **seaweed.env()}
    proc = subprocess.Popen([sys.executable, "-m", "pfsxport", "import", "--fs-root", str(dst), "--repository",
                             f"s3://{bucket}/p/", "--state-dir", state, "--concurrency", "2", "--part-size", "5MiB"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while sum(len(fs) for _, _, fs in os.walk(dst)) < 30 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    for dirpath, _, names in os.walk(dst):  # whatever has its final name is whole
        for n in names:
            if not n.startswith(".pfsxport-tmp-"):
                rel = os.path.relpath(os.path.join(dirpath, n), dst)
                assert (dst / rel).read_bytes() == want[rel], rel
    r = run_import(seaweed, ["--fs-root", str(dst), "--repository", f"s3://{bucket}/p/", "--state-dir", state,
                             "--part-size", "5MiB"], ranks=2)
    assert r.returncode == 0, r.stderr[-3000:]
    got = {}
    for dirpath, _, names in os.walk(dst):
        for n in names:
            rel = os.path.relpath(os.path.join(dirpath, n), dst)
            got[rel] = (dst / rel).read_bytes()
    assert got.keys() == want.keys() and got == want


@pytest.mark.timeout(300)
def test_one_huge_directory_is_fetched_by_every_rank(seaweed, tmp_path):
    c, bucket = seaweed.client(), seaweed.new_bucket()
    for i in range(2500):  # three listing pages
        _put(c, bucket, f"p/flat/f{i:05d}", b"%d" % i)
    dst, state = tmp_path / "dst", str(tmp_path / "state")
    dst.mkdir()
    r = run_import(seaweed, ["--fs-root", str(dst), "--repository", f"s3://{bucket}/p/", "--state-dir", state],
                   ranks=2)
    assert r.returncode == 0, r.stderr[-3000:]
    entries = report(state, task_of(r), "entries.csv")
    ranks = [row[entries[0].index("rank")] for row in entries[1:]]
    assert len(ranks) == 2500 and set(ranks) == {"0", "1"}
    assert len(os.listdir(dst / "flat")) == 2500 and (dst / "flat" / "f01234").read_bytes() == b"1234"


def test_metadata_only_on_a_plain_tree(moto, tmp_path):
    c, bucket = moto.client(), moto.new_bucket()
    _put(c, bucket, "p/f", b"data" * 100, **{"file-permissions": "0100600", "file-mtime": "1234ns"})
    _put(c, bucket, "p/d/", **{"file-permissions": "0040700"})
    _put(c, bucket, "p/d/l", b"../f", **{"file-permissions": "0120777"})
    dst, state = tmp_path / "dst", str(tmp_path / "state")
    dst.mkdir()
    r = run_import(moto, ["--fs-root", str(dst), "--repository", f"s3://{bucket}/p/", "--state-dir", state,
                          "--metadata-only"])
    assert r.returncode == 0, r.stderr[-3000:]
    st = os.lstat(dst / "f")
    assert (st.st_size, stat.S_IMODE(st.st_mode), st.st_mtime_ns) == (0, 0o600, 1234)
    assert stat.S_IMODE(os.lstat(dst / "d").st_mode) == 0o700 and os.readlink(dst / "d" / "l") == "../f"
    rows = {row[0]: row for row in report(state, task_of(r), "entries.csv")[1:]}
    assert (rows["f"][2], rows["f"][5]) == ("400", "0")  # the object's size, no byte received


@pytest.mark.timeout(300)
def test_a_rerun_skips_what_is_identical(moto, tmp_path):
    """The second import lists the bucket and fetches nothing; an object replaced in the bucket
    and a file changed on disk are fetched again, and only those (with another rank count)."""
    c, bucket = moto.client(), moto.new_bucket()
    for i in range(40):
        _put(c, bucket, f"p/d{i % 4}/f{i:02d}", b"v1" * i, **{"file-permissions": "0100644",
                                                               "file-mtime": f"{1000 + i}ns"})
    _put(c, bucket, "p/d0/", **{"file-permissions": "0040750", "file-mtime": "5000ns"})
    dst, state = tmp_path / "dst", str(tmp_path / "state")
    dst.mkdir()
    args = ["--fs-root", str(dst), "--repository", f"s3://{bucket}/p/", "--state-dir", state]
    r = run_import(moto, args, ranks=1)
    assert r.returncode == 0, r.stderr[-3000:]
    assert describe(task_of(r), state)["Status"]["SucceededCount"] == 41
    r = run_import(moto, args, ranks=2)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "41 unchanged, 0 bytes received" in r.stderr
    assert len(report(state, task_of(r), "entries.csv")) == 1  # the header: no entry written
    _put(c, bucket, "p/d1/f05", b"v2", **{"file-permissions": "0100644"})
    os.chmod(dst / "d2" / "f06", 0o600)
    os.utime(dst / "d0", ns=(1, 1))
    r = run_import(moto, args, ranks=2)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = sorted(row[0] for row in report(state, task_of(r), "entries.csv")[1:])
    assert rows == ["d1/f05", "d2/f06"]
    assert (dst / "d1" / "f05").read_bytes() == b"v2"
    assert stat.S_IMODE(os.lstat(dst / "d2" / "f06").st_mode) == 0o644
    assert os.lstat(dst / "d0").st_mtime_ns == 5000  # a directory's metadata is set again every run


def test_a_full_target_fails_the_files_that_do_not_fit(moto, tmp_path):
    from test_faults import tmpfs

    c, bucket = moto.client(), moto.new_bucket()
    _put(c, bucket, "p/small", b"fits\n")
    _put(c, bucket, "p/d/huge", os.urandom(3 << 20))
    state = str(tmp_path / "state")
    with tmpfs(tmp_path / "small-fs", "2m") as dst:
        r = run_import(moto, ["--fs-root", dst, "--repository", f"s3://{bucket}/p/", "--state-dir", state])
        assert r.returncode == FILES_FAILED, r.stderr[-3000:]
        rows = {row[0]: (row[1], row[2]) for row in report(state, task_of(r), "report.csv")}
        assert rows == {"d/huge": ("failed", "NoDiskSpace")}
        assert open(os.path.join(dst, "small"), "rb").read() == b"fits\n"
        assert os.listdir(os.path.join(dst, "d")) == []  # no temporary file left, no torn file


@pytest.mark.timeout(300)
def test_an_object_overwritten_during_its_download(server, tmp_path):
    """The file ends as one whole version of the object, never a mix of two; a change seen
    mid-download (If-Match, or the ranges' ETag) fetches it again."""
    import threading
    import time

    c, bucket = server.client(), server.new_bucket()
    v1, v2 = b"1" * (60 << 20), b"2" * 1000  # the second one goes up fast
    _put(c, bucket, "p/big", v1)
    dst, state = tmp_path / "dst", str(tmp_path / "state")
    dst.mkdir()

    def overwrite():
        deadline = time.monotonic() + 60
        while not any(n.startswith(".pfsxport-tmp-") for n in os.listdir(dst)) and time.monotonic() < deadline:
            time.sleep(0.005)
        _put(c, bucket, "p/big", v2)
    t = threading.Thread(target=overwrite)
    t.start()
    r = run_import(server, ["--fs-root", str(dst), "--repository", f"s3://{bucket}/p/", "--state-dir", state,
                            "--part-size", "5MiB", "--parts-in-flight", "1"])
    t.join()
    assert r.returncode == 0, r.stderr[-3000:]
    body = (dst / "big").read_bytes()
    assert body in (v1, v2)
    row = report(state, task_of(r), "entries.csv")[1]
    if "changed while it was fetched" in r.stderr:
        assert body == v2 and int(row[8]) >= 1  # retries


def test_not_root_keeps_the_importing_user_as_owner(moto, tmp_path):
    """Owner and group are restored only by root: run as another user, every entry is that
    user's (and its group's), with the modes and times of the repository."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to run the import as another user")
    c, bucket = moto.client(), moto.new_bucket()
    _put(c, bucket, "p/d/", **{"file-permissions": "0040750", "file-owner": "0", "file-group": "0",
                               "file-mtime": "7000ns"})
    _put(c, bucket, "p/d/f", b"x", **{"file-permissions": "0100640", "file-owner": "1234", "file-group": "5678",
                                      "file-mtime": "9000ns"})
    import pathlib
    import tempfile

    top = tempfile.mkdtemp(prefix="pfsxport-nobody-")  # pytest's tmp_path is root's alone (0700)
    os.chmod(top, 0o755)
    base = pathlib.Path(top)
    (base / "dst").mkdir()
    for p in (base, base / "dst"):
        os.chown(p, 65534, 65534)
    cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "pfsxport",
           "import", "--fs-root", str(base / "dst"), "--repository", f"s3://{bucket}/p/",
           "--state-dir", str(base / "state")]
    env = {**os.environ, **moto.env(), "HOME": str(base)}
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-3000:]
        for rel, mode, mtime in (("d", 0o750, 7000), ("d/f", 0o640, 9000)):
            st = os.lstat(base / "dst" / rel)
            assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), st.st_mtime_ns) == (65534, 65534, mode, mtime)
    finally:
        shutil.rmtree(top)


@pytest.mark.timeout(300)
def test_task_cancel_and_one_task_at_a_time(moto, tmp_path):
    import time

    c, bucket = moto.client(), moto.new_bucket()
    for i in range(400):
        _put(c, bucket, f"p/d{i % 4}/f{i:04d}", b"x")
    dst, state = tmp_path / "dst", str(tmp_path / "state")
    dst.mkdir()
    args = ["--fs-root", str(dst), "--repository", f"s3://{bucket}/p/", "--state-dir", state]
    proc = subprocess.Popen([sys.executable, "-m", "pfsxport", "import", *args, "--concurrency", "1"],
                            env={**os.environ, **moto.env()}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    task = proc.stdout.readline().strip()
    assert task.startswith("task-")
    deadline = time.monotonic() + 60
    while sum(len(fs) for _, _, fs in os.walk(dst)) < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    other = run_import(moto, args)  # the file system is busy with the first import
    assert other.returncode == 6 and "DataRepositoryTaskExecuting" in other.stderr, other.stderr
    r = subprocess.run([sys.executable, "-m", "pfsxport", "task", "cancel", task, "--state-dir", state],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and json.loads(r.stdout)["Lifecycle"] == "CANCELING", r.stderr
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 4, err[-3000:]
    d = describe(task, state)
    assert d["Lifecycle"] == "CANCELED" and "EndTime" in d


def test_large_files_are_created_with_lfs_setstripe(moto, tmp_path):
    """On Lustre a new large file gets the layout asked for (`lfs setstripe`, here the stand-in),
    created through the directory's descriptor; small files get the directory's default."""
    standin = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "standin", "lfs")
    lfs_dir = tmp_path / "lfs"
    lfs_dir.mkdir()
    c, bucket = moto.client(), moto.new_bucket()
    big = os.urandom(3 << 20)
    _put(c, bucket, "p/d/big", big)
    _put(c, bucket, "p/small", b"small")
    dst, state = tmp_path / "dst", str(tmp_path / "state")
    dst.mkdir()
    base = [sys.executable, "-m", "pfsxport", "import", "--fs-root", str(dst), "--repository", f"s3://{bucket}/p/",
            "--state-dir", state, "--lfs", standin, "--setstripe", "-c 4 -S 1M", "--setstripe-min", "1MiB"]
    env = {**os.environ, **moto.env(), "PFSXPORT_STANDIN_LFS": str(lfs_dir)}
    r = subprocess.run(base, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    calls = [json.loads(line) for line in (lfs_dir / "calls").read_text().splitlines()]
    assert len(calls) == 1 and calls[0][:5] == ["setstripe", "-c", "4", "-S", "1M"]
    assert calls[0][5].startswith("/proc/") and "/fd/" in calls[0][5] and ".pfsxport-tmp-" in calls[0][5]
    assert (dst / "d" / "big").read_bytes() == big and (dst / "small").read_bytes() == b"small"
    (lfs_dir / "fail").write_text("setstripe\n")  # not Lustre after all: plain files, one warning
    shutil.rmtree(dst)
    dst.mkdir()
    r = subprocess.run(base, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr.count("lfs setstripe -c 4 -S 1M failed") == 1, r.stderr[-3000:]
    assert (dst / "d" / "big").read_bytes() == big


def test_import_through_the_associations(seaweed, tmp_path):
    """Without --repository: every association's repository into its FileSystemPath, or only
    what file-system paths (or s3:// URLs) name; a path under no association is bad input."""
    from conftest import pfsxport

    c, bucket = seaweed.client(), seaweed.new_bucket()
    _put(c, bucket, "ra/x/1", b"a1")
    _put(c, bucket, "ra/y/2", b"a2")
    _put(c, bucket, "rb/3", b"b3")
    root, state = tmp_path / "root", str(tmp_path / "state")
    for d in ("a", "b", "other"):
        (root / d).mkdir(parents=True)
    for fs_path, prefix in (("/a", "ra/"), ("/b", "rb/")):
        r = pfsxport("dra", "create", "--fs-root", str(root), "--state-dir", state, "--file-system-path", fs_path,
                     "--data-repository-path", f"s3://{bucket}/{prefix}", env=seaweed.env())
        assert r.returncode == 0, r.stderr
    (root / "b").rmdir()  # a fresh scratch directory: the FileSystemPath is made again
    r = run_import(seaweed, ["--fs-root", str(root), "--state-dir", state, "a/x"], ranks=2)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (root / "a" / "x" / "1").read_bytes() == b"a1" and not (root / "a" / "y").exists()
    assert not (root / "b").exists()
    r = run_import(seaweed, ["--fs-root", str(root), "--state-dir", state], ranks=2)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (root / "a" / "y" / "2").read_bytes() == b"a2" and (root / "b" / "3").read_bytes() == b"b3"
    task = task_of(r)
    paths = sorted(row[0] for row in report(state, task, "entries.csv")[1:])
    assert paths == ["a/y/2", "b/3"] and " 1 unchanged" in r.stderr  # a/x/1: imported by the first run
    r = run_import(seaweed, ["--fs-root", str(root), "--state-dir", state, f"s3://{bucket}/rb/3"])
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_import(seaweed, ["--fs-root", str(root), "--state-dir", state, "other/z"])
    assert r.returncode == 2 and "under no data repository association" in r.stderr, r.stderr


def test_an_unreachable_store_is_exit_5(moto, tmp_path):
    from pfsxport.localstore import free_ports

    dst, state = tmp_path / "dst", str(tmp_path / "state")
    dst.mkdir()
    env = {**os.environ, **moto.env(), "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_ports(1)[0]}"}
    r = subprocess.run([sys.executable, "-m", "pfsxport", "import", "--fs-root", str(dst), "--repository",
                        "s3://nowhere/p/", "--state-dir", state], env=env, capture_output=True, text=True, timeout=200)
    assert r.returncode == 5, r.stderr[-3000:]
    d = describe(task_of(r), state)
    assert d["Lifecycle"] == "FAILED" and "cannot import from s3://nowhere/p/" in d["FailureDetails"]["Message"]
    assert os.listdir(dst) == []
