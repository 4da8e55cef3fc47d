"""The jobscripts under a real Slurm: a private single-node cluster on loopback (tests/slurmcluster.py)
running `sbatch jobscripts/*.sbatch` with real srun/mpiexec launches against a real SeaweedFS.

Skipped with "SLURM NOT AVAILABLE: ..." where Slurm cannot be installed (not root, no apt-get)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest
from conftest import describe, list_keys
from treeutil import PART, assert_bucket_matches_tree, settle_atimes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXPORT = os.path.join(REPO, "jobscripts", "export.sbatch")
FLUSH = os.path.join(REPO, "jobscripts", "flush.sbatch")
VENV_BIN = os.path.dirname(sys.executable)
PFSXPORT = f"{sys.executable} -m pfsxport"  # word-split by the jobscripts: no spaces in the venv path
TASK_ID = re.compile(r"^(task-[0-9a-f]{17})$", re.M)
# compute jobs wait for this file, so the test sees them RUNNING with the flush PENDING behind them
GATE = 'for i in $(seq 600); do [ -e "{go}" ] && break; sleep 0.1; done; [ -e "{go}" ] || exit 9'


def small_tree(root) -> str:
    """A few directories, 50 small files and one file of 3 parts (5 MiB parts)."""
    for d in ("a", "a/b", "c", "c/d/e"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    dirs = ["a", "a/b", "c", "c/d/e", "."]
    for i in range(50):
        with open(os.path.join(root, dirs[i % len(dirs)], f"f{i:03d}.txt"), "w") as f:
            f.write(f"file {i}\n" * (i * 7 + 1))
    with open(os.path.join(root, "c", "big.bin"), "wb") as f:
        f.write(os.urandom(2 * PART + 12345))
    settle_atimes(str(root))
    return str(root)


def export_args(root, bucket, state) -> list[str]:
    return ["--fs-root", str(root), "--repository", f"s3://{bucket}/x/", "--report-path",
            f"s3://{bucket}/reports", "--state-dir", str(state), "--addressing-style", "path",
            "--part-size", "5MiB", "--multipart-threshold", "5MiB", "--progress", "log"]


def job_env(seaweed, slurm, **extra) -> dict[str, str | None]:
    """What the job gets through sbatch's default --export=ALL: the store's endpoint and credentials,
    SLURM_CONF, and the venv first on PATH (mpiexec, pfsxport). PFSXPORT_* of the caller are dropped."""
    env = {**seaweed.env(), **slurm.env()}
    env["PATH"] = VENV_BIN + os.pathsep + env["PATH"]
    for k in [k for k in os.environ if k.startswith("PFSXPORT")]:
        env[k] = None
    env.update(extra)
    return env


def output(info: dict) -> str:
    try:
        with open(info["StdOut"], errors="replace") as f:
            return f.read()
    except OSError as e:
        return f"(no output file {info.get('StdOut')}: {e})"


def explain(slurm, info: dict) -> str:
    return (f"job {info.get('JobId')}: {info.get('JobState')} ExitCode={info.get('ExitCode')} "
            f"Reason={info.get('Reason')}; states seen {slurm.history.get(info.get('JobId'))}\n"
            f"----- job output -----\n{output(info)[-6000:]}")


def ranks_logged(text: str) -> list[int]:
    return [int(n) for n in re.findall(r" with (\d+) rank\(s\)", text)]


@pytest.mark.timeout(90, func_only=True)
@pytest.mark.parametrize("launcher", ["srun", "mpiexec"])
def test_export_sbatch_two_ranks(slurm, seaweed, tmp_path, launcher):
    root = small_tree(tmp_path / "fs")
    bucket = seaweed.new_bucket()
    state = tmp_path / "state"
    if launcher == "srun":
        # the default launcher (srun --mpi=pmi2); pfsxport named by PFSXPORT, not found on PATH
        env = job_env(seaweed, slurm, PFSXPORT=PFSXPORT)
        env["PATH"] = slurm.env()["PATH"]
    else:
        # mpiexec from the venv on PATH (as with an activated venv); pfsxport from PATH too
        env = job_env(seaweed, slurm, PFSXPORT_LAUNCHER="mpiexec")
    job = slurm.sbatch(["--ntasks=2", "--time=5", f"--output={tmp_path}/export-%j.out", EXPORT,
                        *export_args(root, bucket, state)], env=env, cwd=str(tmp_path))
    info = slurm.wait(job, timeout=75)
    log = output(info)
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), explain(slurm, info)
    assert ranks_logged(log) == [2], f"world size is not 2 (srun --mpi=none gives singletons)\n{log}"
    task = TASK_ID.findall(log)
    assert len(task) == 1, log
    t = describe(task[0], str(state))
    assert t["Lifecycle"] == "SUCCEEDED", t
    assert t["Status"]["TotalCount"] == 56 and t["Status"]["FailedCount"] == 0, t  # 51 files, 5 dirs
    client = seaweed.client()
    assert_bucket_matches_tree(client, bucket, "x/", root, dir_metadata=seaweed.keeps_dir_metadata,
                               content_types=False)
    etag = client.head_object(Bucket=bucket, Key="x/c/big.bin")["ETag"].strip('"')
    assert etag.endswith("-3"), f"c/big.bin was not uploaded in 3 parts: ETag {etag}"


def compute_wrap(results: str, go: str, status: int) -> str:
    """A compute job: writes results, waits for the test's go, writes its last result, exits `status`."""
    return (f'set -e; mkdir -p "{results}"; for i in $(seq 1 10); do echo "result $i" > "{results}/r$i.txt"; done; '
            + GATE.format(go=go) + f'; echo final > "{results}/final.txt"; echo compute done; exit {status}')


def submit_compute_and_flush(slurm, seaweed, tmp_path, status: int, kill_flag: bool = True):
    root = tmp_path / "fs"
    os.makedirs(root / "other")
    (root / "other" / "not-a-result.txt").write_text("not flushed\n")
    bucket = seaweed.new_bucket()
    state = tmp_path / "state"
    cfg = tmp_path / "site.yaml"  # the config-file convention: PFSXPORT_CONFIG and PFSXPORT_PATHS
    cfg.write_text(f"fs_root: {root}\nrepository: s3://{bucket}/x/\nreport_path: s3://{bucket}/reports\n"
                   f"state_dir: {state}\ns3:\n  addressing_style: path\n")
    go = tmp_path / "go"
    env = job_env(seaweed, slurm)
    compute = slurm.sbatch(["--ntasks=1", "--time=5", f"--output={tmp_path}/compute-%j.out", "--job-name=compute",
                            "--wrap", compute_wrap(str(root / "results" / "run-1"), str(go), status)],
                           env=env, cwd=str(tmp_path))
    kill = ["--kill-on-invalid-dep=yes"] if kill_flag else []  # else from flush.sbatch's #SBATCH header
    flush = slurm.sbatch([f"--dependency=afterok:{compute}", *kill, "--ntasks=2", "--time=5",
                          f"--output={tmp_path}/flush-%j.out", FLUSH, "--progress", "log"],
                         env=dict(env, PFSXPORT_CONFIG=str(cfg), PFSXPORT_PATHS="results"), cwd=str(tmp_path))
    c = slurm.wait(compute, "RUNNING", timeout=30)
    f = slurm.job(flush)
    assert (f["JobState"], f["Reason"]) == ("PENDING", "Dependency"), explain(slurm, f)
    assert c["JobState"] == "RUNNING"
    go.write_text("go\n")
    return root, bucket, state, compute, flush


@pytest.mark.timeout(90, func_only=True)
def test_flush_runs_after_the_compute_job_succeeded(slurm, seaweed, tmp_path):
    root, bucket, state, compute, flush = submit_compute_and_flush(slurm, seaweed, tmp_path, 0)
    c = slurm.wait(compute, timeout=30)
    assert (c["JobState"], c["ExitCode"]) == ("COMPLETED", "0:0"), explain(slurm, c)
    f = slurm.wait(flush, timeout=60)
    log = output(f)
    assert (f["JobState"], f["ExitCode"]) == ("COMPLETED", "0:0"), explain(slurm, f)
    assert f["StartTime"] >= c["EndTime"], (c["EndTime"], f["StartTime"])  # ISO times, same clock
    assert slurm.history[flush][:2] == ["PENDING", "RUNNING"], slurm.history[flush]
    assert ranks_logged(log) == [2], log
    assert f"afterok:{compute}" in log, log  # the flush saw its dependency (SLURM_JOB_DEPENDENCY)
    keys = list_keys(seaweed.client(), bucket, "x/")
    want = {"x/results/", "x/results/run-1/", "x/results/run-1/final.txt"} | {
        f"x/results/run-1/r{i}.txt" for i in range(1, 11)}
    assert set(keys) == want, sorted(keys)  # final.txt: written last by the compute job; other/: not asked
    body = seaweed.client().get_object(Bucket=bucket, Key="x/results/run-1/final.txt")["Body"].read()
    assert body == b"final\n"
    assert describe(TASK_ID.findall(log)[0], str(state))["Lifecycle"] == "SUCCEEDED"


@pytest.mark.timeout(60, func_only=True)
@pytest.mark.parametrize("kill_flag", [True, False], ids=["flag", "header"])
def test_flush_is_cancelled_when_the_compute_job_fails(slurm, seaweed, tmp_path, kill_flag):
    root, bucket, state, compute, flush = submit_compute_and_flush(slurm, seaweed, tmp_path, 1, kill_flag)
    c = slurm.wait(compute, timeout=30)
    assert (c["JobState"], c["ExitCode"]) == ("FAILED", "1:0"), explain(slurm, c)
    # --kill-on-invalid-dep=yes: cancelled as soon as the dependency cannot be met, not left PENDING
    # (seen ~1 s after the compute job ended)
    f = slurm.wait(flush, timeout=20)
    assert (f["JobState"], f["Reason"]) == ("CANCELLED", "DependencyNeverSatisfied"), explain(slurm, f)
    assert "RUNNING" not in slurm.history[flush] and f.get("BatchHost") in (None, "", "(null)"), explain(slurm, f)
    assert not os.path.exists(f["StdOut"]), "the flush's batch script ran"
    assert list_keys(seaweed.client(), bucket) == {}
    assert not os.path.exists(state), "pfsxport ran"


@pytest.mark.timeout(60, func_only=True)
def test_bad_input_exit_status_reaches_slurm(slurm, seaweed, tmp_path):
    root = small_tree(tmp_path / "fs")
    bucket = seaweed.new_bucket()
    state = tmp_path / "state"
    env = job_env(seaweed, slurm, PFSXPORT=PFSXPORT, PFSXPORT_PATHS="a no/such/dir")
    job = slurm.sbatch(["--ntasks=2", "--time=5", f"--output={tmp_path}/export-%j.out", EXPORT,
                        *export_args(root, bucket, state)], env=env, cwd=str(tmp_path))
    info = slurm.wait(job, timeout=45)
    log = output(info)
    # exit 2 (bad input): the site must not requeue it; Slurm shows it as FAILED 2:0
    assert (info["JobState"], info["ExitCode"]) == ("FAILED", "2:0"), explain(slurm, info)
    assert "no/such/dir" in log and "does not exist" in log, log
    assert ranks_logged(log) == [2], log
    assert describe(TASK_ID.findall(log)[0], str(state))["Lifecycle"] == "FAILED"
    assert list_keys(seaweed.client(), bucket, "x/") == {}


CHECKPOINT = os.path.join(REPO, "jobscripts", "checkpoint.sbatch")
SIMULATION = """
import os, signal, sys, time
ckpt = sys.argv[1]
if os.path.exists(os.path.join(ckpt, "final.dat")):  # restarted: resume from the checkpoint, then end
    with open(os.path.join(os.path.dirname(ckpt), "resumed"), "w") as f:
        f.write(open(os.path.join(ckpt, "final.dat")).read())
    sys.exit(0)
stop = []
signal.signal(signal.SIGUSR1, lambda *a: stop.append(1))
os.makedirs(ckpt, exist_ok=True)
step = 0
open(os.path.join(os.path.dirname(ckpt), "running"), "w").close()
while not stop:
    with open(os.path.join(ckpt, f"step-{step % 3}.dat"), "wb") as f:
        f.write(os.urandom(2000))
    step += 1
    time.sleep(0.05)
with open(os.path.join(ckpt, "final.dat"), "w") as f:
    f.write(f"stopped at step {step}\\n")
"""


def checkpoint_job(seaweed, slurm, tmp_path, **extra):
    """An empty tree, a bucket, the jobscript's environment and the command of a checkpointing job."""
    root = tmp_path / "fs"
    os.makedirs(root)
    sim = tmp_path / "simulate.py"
    sim.write_text(SIMULATION)
    bucket = seaweed.new_bucket()
    state = tmp_path / "state"
    env = job_env(seaweed, slurm, PFSXPORT=PFSXPORT, PFSXPORT_CHECKPOINT_DIR="ckpt",
                  PFSXPORT_EXPORT_ARGS=" ".join(export_args(root, bucket, state)), **extra)
    return root, bucket, state, env, [CHECKPOINT, sys.executable, str(sim), str(root / "ckpt")]


def warn_once_running(slurm, job: str, root) -> None:
    """The walltime warning by hand, once the program has started writing its checkpoints."""
    slurm.wait(job, "RUNNING", timeout=30)
    deadline = time.monotonic() + 30
    while not (root / "running").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    slurm.scancel(job, signal="USR1", batch=True)


@pytest.mark.timeout(120, func_only=True)
def test_checkpoint_sbatch_exports_on_the_warning_and_completes(slurm, seaweed, tmp_path):
    """The walltime warning, delivered with `scancel --signal=USR1 --batch`: the program writes
    its last checkpoint and stops, the checkpoint directory is exported with its report, and
    the job ends COMPLETED."""
    root, bucket, state, env, program = checkpoint_job(seaweed, slurm, tmp_path)
    job = slurm.sbatch(["--ntasks=2", "--time=5", f"--output={tmp_path}/ckpt-%j.out", *program], env=env,
                       cwd=str(tmp_path))
    warn_once_running(slurm, job, root)
    info = slurm.wait(job, timeout=90)
    log = output(info)
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), explain(slurm, info)
    assert ranks_logged(log) == [2], log
    (task,) = TASK_ID.findall(log)
    assert describe(task, str(state))["Lifecycle"] == "SUCCEEDED"
    keys = list_keys(seaweed.client(), bucket)
    assert f"reports/{task}/failures.csv" in keys
    got = seaweed.client().get_object(Bucket=bucket, Key="x/ckpt/final.dat")["Body"].read()
    assert got == (root / "ckpt" / "final.dat").read_bytes()


def import_args(root, bucket, state) -> list[str]:
    return ["--fs-root", str(root), "--repository", f"s3://{bucket}/x/", "--report-path", f"s3://{bucket}/reports",
            "--state-dir", str(state), "--addressing-style", "path"]


@pytest.mark.timeout(180, func_only=True)
def test_checkpoint_sbatch_restores_the_checkpoint_before_the_program_resumes(slurm, seaweed, tmp_path):
    """The restart loop: a job exports its checkpoint on the warning; the scratch directory is
    then gone (a new allocation), and the next job, with PFSXPORT_RESTORE=1, brings the
    checkpoint back from S3 before the program starts, so the program resumes from it. A
    restore that fails never starts the program."""
    root, bucket, state, env, program = checkpoint_job(seaweed, slurm, tmp_path, PFSXPORT_RESTORE="1")
    env["PFSXPORT_IMPORT_ARGS"] = " ".join(import_args(root, bucket, state))

    lost = seaweed.new_bucket()  # nothing was ever exported there: the restore fails, nothing runs
    failing = {**env, "PFSXPORT_IMPORT_ARGS": " ".join(import_args(root, lost, state))}
    job = slurm.sbatch(["--ntasks=2", "--time=5", f"--output={tmp_path}/none-%j.out", *program], env=failing,
                       cwd=str(tmp_path))
    info = slurm.wait(job, timeout=60)
    assert (info["JobState"], info["ExitCode"]) == ("FAILED", "2:0"), explain(slurm, info)
    assert "the program is not started" in output(info) and not (root / "running").exists(), explain(slurm, info)

    env["PFSXPORT_RESTORE"] = "requeued"  # a first run has nothing to restore
    job = slurm.sbatch(["--ntasks=2", "--time=5", f"--output={tmp_path}/first-%j.out", *program], env=env,
                       cwd=str(tmp_path))
    warn_once_running(slurm, job, root)
    info = slurm.wait(job, timeout=90)
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), explain(slurm, info)
    assert "restoring" not in output(info)
    saved = {n: (root / "ckpt" / n).read_bytes() for n in os.listdir(root / "ckpt")}
    assert "final.dat" in saved

    subprocess.run(["rm", "-rf", str(root)], check=True)  # a fresh scratch directory
    os.makedirs(root)
    env["PFSXPORT_RESTORE"] = "1"
    job = slurm.sbatch(["--ntasks=2", "--time=5", f"--output={tmp_path}/again-%j.out", *program], env=env,
                       cwd=str(tmp_path))
    info = slurm.wait(job, timeout=90)
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), explain(slurm, info)
    assert (root / "resumed").read_bytes() == saved["final.dat"], explain(slurm, info)
    assert {n: (root / "ckpt" / n).read_bytes() for n in os.listdir(root / "ckpt")} == saved
    assert not (root / "running").exists()  # the program resumed; it did not start over


@pytest.mark.timeout(120, func_only=True)
def test_task_create_submit_describe_cancel(slurm, seaweed, tmp_path):
    """task create --submit: PENDING while Slurm queues it, EXECUTING while it runs, then its
    end state; cancel of a queued task removes the job and ends it CANCELED."""
    root = small_tree(tmp_path / "fs")
    bucket = seaweed.new_bucket()
    state = str(tmp_path / "state")
    env = {k: v for k, v in job_env(seaweed, slurm).items() if v is not None}
    base = [sys.executable, "-m", "pfsxport", "task"]

    def run(*args):
        r = subprocess.run([*base, *args], env={**os.environ, **env}, capture_output=True, text=True,
                           timeout=60, cwd=str(tmp_path))
        assert r.returncode == 0, r.stderr
        return r

    held = run("create", *export_args(root, bucket, state), "--submit", "--sbatch", "--hold")  # a lone option
    queued = json.loads(held.stdout)["DataRepositoryTask"]["TaskId"]
    assert describe(queued, state)["Lifecycle"] == "PENDING"
    job = json.load(open(os.path.join(state, "tasks", queued + ".json")))["Owner"]["SlurmJobId"]
    assert slurm.state(job) == "PENDING"
    cancel = json.loads(run("cancel", queued, "--state-dir", state).stdout)
    assert cancel == {"Lifecycle": "CANCELED", "TaskId": queued}
    assert slurm.wait(job, timeout=30)["JobState"] == "CANCELLED"
    assert describe(queued, state)["Lifecycle"] == "CANCELED"

    env_slow = {"PFSXPORT_TEST_ENTRY_DELAY": "0.05"}  # long enough to be seen EXECUTING
    r = subprocess.run([*base, "create", *export_args(root, bucket, state), "--submit", "--sbatch",
                        f"--ntasks=2 --time=5 --output={tmp_path}/run-%j.out"],
                       env={**os.environ, **env, **env_slow}, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    task = json.loads(r.stdout)["DataRepositoryTask"]["TaskId"]
    seen = set()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        life = describe(task, state)["Lifecycle"]
        seen.add(life)
        if life in ("SUCCEEDED", "FAILED", "CANCELED"):
            break
        time.sleep(0.1)
    assert {"PENDING", "EXECUTING", "SUCCEEDED"} <= seen, seen
    t = describe(task, state)
    assert t["Status"]["TotalCount"] == 56 and t["TaskId"] == task
    assert_bucket_matches_tree(seaweed.client(), bucket, "x/", root, dir_metadata=False, content_types=False)


@pytest.mark.timeout(120, func_only=True)
def test_task_cancel_of_a_running_slurm_task(slurm, seaweed, tmp_path):
    """Cancel while the job runs: queued files are not started, the task ends CANCELED, the
    job ends with pfsxport's 'canceled' status (4), and no multipart upload is left open."""
    root = small_tree(tmp_path / "fs")
    for i in range(200):
        with open(os.path.join(root, "a", f"more-{i:03d}"), "w") as f:
            f.write(f"{i}\n")
    bucket = seaweed.new_bucket()
    state = str(tmp_path / "state")
    env = {**os.environ, **{k: v for k, v in job_env(seaweed, slurm).items() if v is not None},
           "PFSXPORT_TEST_ENTRY_DELAY": "0.2"}
    r = subprocess.run([sys.executable, "-m", "pfsxport", "task", "create", *export_args(root, bucket, state),
                        "--concurrency", "2", "--submit", "--sbatch",
                        f"--ntasks=2 --time=5 --output={tmp_path}/run-%j.out"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    task = json.loads(r.stdout)["DataRepositoryTask"]["TaskId"]
    job = json.load(open(os.path.join(state, "tasks", task + ".json")))["Owner"]["SlurmJobId"]
    deadline = time.monotonic() + 60
    while describe(task, state)["Status"]["SucceededCount"] < 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert describe(task, state)["Lifecycle"] == "EXECUTING"
    c = subprocess.run([sys.executable, "-m", "pfsxport", "task", "cancel", task, "--state-dir", state],
                       env=env, capture_output=True, text=True, timeout=60)
    assert c.returncode == 0 and json.loads(c.stdout)["Lifecycle"] == "CANCELING", c.stderr
    info = slurm.wait(job, timeout=90)
    assert info["ExitCode"] == "4:0", explain(slurm, info)
    t = describe(task, state)
    assert t["Lifecycle"] == "CANCELED" and t["Status"]["TotalCount"] < 256
    assert seaweed.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


@pytest.mark.timeout(150, func_only=True)
@pytest.mark.parametrize("launcher", ["srun", "mpiexec"])
def test_scancel_of_a_running_export_job(slurm, seaweed, tmp_path, launcher):
    """`scancel JOB` (as walltime and a node drain do) sends SIGTERM to every process of the
    job: each rank, srun or mpiexec, and the batch shell. The task is canceled as `task cancel`
    would: it ends CANCELED with its report, no multipart upload is left open, nothing prints a
    traceback, and the job's exit status is pfsxport's 'canceled' (4)."""
    root = small_tree(tmp_path / "fs")
    for i in range(200):
        with open(os.path.join(root, "a", f"more-{i:03d}"), "w") as f:
            f.write(f"{i}\n")
    for i in range(2):
        with open(os.path.join(root, "c", f"big-{i}.bin"), "wb") as f:
            f.write(os.urandom(3 * PART + 1))
    bucket = seaweed.new_bucket()
    state = tmp_path / "state"
    extra = {"PFSXPORT_LAUNCHER": "mpiexec"} if launcher == "mpiexec" else {}
    env = job_env(seaweed, slurm, PFSXPORT=PFSXPORT, PFSXPORT_TEST_ENTRY_DELAY="0.2", **extra)
    # a grace well inside the test cluster's KillWait (10 s), after which Slurm sends SIGKILL
    job = slurm.sbatch(["--ntasks=2", "--time=5", f"--output={tmp_path}/export-%j.out", EXPORT,
                        *export_args(root, bucket, state), "--concurrency", "2", "--cancel-grace", "4"],
                       env=env, cwd=str(tmp_path))
    client = seaweed.client()
    deadline = time.monotonic() + 60
    while not client.list_multipart_uploads(Bucket=bucket).get("Uploads") and time.monotonic() < deadline:
        time.sleep(0.1)
    info = slurm.job(job)
    assert info["JobState"] == "RUNNING" and client.list_multipart_uploads(Bucket=bucket).get("Uploads"), \
        explain(slurm, info)
    slurm.scancel(job)
    info = slurm.wait(job, timeout=60)
    log = output(info)
    assert (info["JobState"], info["ExitCode"]) == ("CANCELLED", "4:0"), explain(slurm, info)
    assert "Traceback" not in log, log
    assert ranks_logged(log) == [2], log
    (task,) = TASK_ID.findall(log)
    t = describe(task, str(state))
    assert t["Lifecycle"] == "CANCELED" and "FailureDetails" not in t, t
    assert t["Status"]["TotalCount"] < 200 + 51 + 2 + 5, t  # queued files were not started
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert f"reports/{task}/failures.csv" in list_keys(client, bucket, "reports/")
