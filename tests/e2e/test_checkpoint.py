"""Checkpoint export on the walltime warning: the in-process API and checkpoint.sbatch run by
plain bash (the same script on a real Slurm is in test_slurm.py). One export per job, even
when the warning comes twice."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from conftest import describe, list_keys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SIMULATION = textwrap.dedent("""
    import os, signal, sys, time
    ckpt = sys.argv[1]
    stop = []
    signal.signal(signal.SIGUSR1, lambda *a: stop.append(1))
    os.makedirs(ckpt, exist_ok=True)
    step = 0
    print("running", flush=True)
    while not stop:
        with open(os.path.join(ckpt, f"step-{step % 3}.dat"), "wb") as f:
            f.write(os.urandom(1000))
        step += 1
        time.sleep(0.05)
    with open(os.path.join(ckpt, "final.dat"), "w") as f:   # the last checkpoint, on the warning
        f.write(f"stopped at step {step}\\n")
""")


def tasks_in(state):
    d = os.path.join(state, "tasks")
    return sorted(n[:-5] for n in os.listdir(d) if n.endswith(".json"))


def test_in_process_api_exports_once_on_the_signal(seaweed, tmp_path):
    root, state = tmp_path / "fs", str(tmp_path / "st")
    os.makedirs(root / "ckpt")
    (root / "ckpt" / "state.bin").write_bytes(os.urandom(10_000))
    bucket = seaweed.new_bucket()
    program = textwrap.dedent("""
        import os, signal, sys, time
        from pfsxport.checkpoint import ExportOnSignal
        with ExportOnSignal(sys.argv[1:]) as ck:
            print("ready", flush=True)
            while not ck.triggered:
                time.sleep(0.02)
            os.kill(os.getpid(), signal.SIGUSR1)  # a second warning: no second export
            time.sleep(0.2)
        print("exported", ck.exit_code, ck.signals, flush=True)
    """)
    p = subprocess.Popen([sys.executable, "-c", program, "--fs-root", str(root), "--repository",
                          f"s3://{bucket}/x/", "--state-dir", state, "ckpt"],
                         env={**os.environ, **seaweed.env()}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    assert p.stdout.readline().strip() == "ready"
    p.send_signal(signal.SIGUSR1)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert out.split()[-3:] == ["exported", "0", "2"], out + err
    assert len(tasks_in(state)) == 1 and describe(tasks_in(state)[0], state)["Lifecycle"] == "SUCCEEDED"
    assert "x/ckpt/state.bin" in list_keys(seaweed.client(), bucket, "x/")


def test_checkpoint_jobscript_exports_after_the_program_stops(seaweed, tmp_path):
    root, state = tmp_path / "fs", str(tmp_path / "st")
    os.makedirs(root)
    sim = tmp_path / "simulate.py"
    sim.write_text(SIMULATION)
    bucket = seaweed.new_bucket()
    env = {**os.environ, **seaweed.env(), "PFSXPORT_CHECKPOINT_DIR": "ckpt", "PFSXPORT_LAUNCHER": "none",
           "PFSXPORT": f"{sys.executable} -m pfsxport", "PFSXPORT_TEST_ENTRY_DELAY": "0.3",
           "PFSXPORT_EXPORT_ARGS": f"--fs-root {root} --repository s3://{bucket}/x/ --state-dir {state} "
                                   f"--report-path s3://{bucket}/reports"}
    p = subprocess.Popen(["bash", os.path.join(ROOT, "jobscripts", "checkpoint.sbatch"), sys.executable, str(sim),
                          str(root / "ckpt")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "running"
    time.sleep(0.3)
    p.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 60
    while not (os.path.isdir(os.path.join(state, "tasks")) and tasks_in(state)) and time.monotonic() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGUSR1)  # a second warning while the export runs
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert "ignored (no second export)" in err
    (task,) = tasks_in(state)
    assert describe(task, state)["Lifecycle"] == "SUCCEEDED"
    keys = list_keys(seaweed.client(), bucket)
    assert "x/ckpt/final.dat" in keys and f"reports/{task}/failures.csv" in keys
    c = seaweed.client()
    body = c.get_object(Bucket=bucket, Key="x/ckpt/final.dat")["Body"].read()
    assert body == (root / "ckpt" / "final.dat").read_bytes()
