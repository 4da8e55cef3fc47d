"""A private single-node Slurm cluster on loopback for tests: the session fixture `slurm`.

It installs Debian's slurmctld, slurmd, slurm-client and munge when they are missing (root and
apt-get needed; otherwise the tests that use it are skipped with a reason starting
"SLURM NOT AVAILABLE:"), then starts its own munged (own key and socket), slurmctld and slurmd
in the foreground as children of this process, with every config, state, spool and log file in
one private temporary directory, on free ports. Nothing is written under /etc and no system
daemon is started. Teardown cancels the cluster's jobs, stops the three daemons by PID (only
those it started) and removes the directory.

Usage (tests/ is on sys.path):

    from slurmcluster import slurm  # noqa: F401  (the fixture)

    def test_x(slurm, tmp_path):
        job = slurm.sbatch(["--ntasks=2", "--output", f"{tmp_path}/%j.out", "job.sbatch"], env={...})
        info = slurm.wait(job, timeout=60)
        assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0"

The config is the one found to work on these machines: auth/munge with a private socket,
proctrack/linuxproc, task/none, no accounting (so no sacct: job states come from
`scontrol show job`, kept for MinJobAge=600 s), select/cons_tres with CR_CPU, MpiDefault=pmi2
(what MPICH from PyPI speaks), a fast scheduler, and the node from `slurmd -C` advertising at
least 4 CPUs (SlurmdParameters=config_overrides) so 4 ranks can run on a 2-core machine.

Environment knobs: PFSXPORT_REQUIRE_SLURM=1 turns "not available" into a test error instead of
a skip (for CI that must run these tests); PFSXPORT_SLURM_NO_INSTALL=1 never runs apt-get.
"""
from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings

import pytest

SBIN = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")
NEEDED = ("slurmctld", "slurmd", "sbatch", "srun", "sinfo", "squeue", "scontrol", "scancel",
          "munged", "munge", "unmunge")
PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
TERMINAL = frozenset({"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
                      "OUT_OF_MEMORY", "PREEMPTED", "TIMEOUT"})
MIN_CPUS = 4
UP_TIMEOUT = 60.0  # seconds for each bring-up stage
APT_UPDATE_TIMEOUT = 300.0
APT_INSTALL_TIMEOUT = 600.0
# variables of an enclosing job or MPI launch that would leak into our sbatch calls
_FOREIGN_ENV = ("SLURM_", "SBATCH_", "SRUN_", "SALLOC_", "PMI_", "PMIX_", "HYDRA_")


class SlurmUnavailable(Exception):
    """Slurm cannot be installed here (no root, no apt-get, apt failed): skip, do not fail."""


def _search_path() -> str:
    parts = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join(parts + [d for d in SBIN if d not in parts])


def _which(cmd: str) -> str | None:
    return shutil.which(cmd, path=_search_path())


def _tail(path: str, lines: int = 30) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"(cannot read: {e})"
    return "\n".join(text.splitlines()[-lines:])


def _log(msg: str) -> None:
    print(f"slurmcluster: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# packages
# --------------------------------------------------------------------------------------------

def ensure_installed(logdir: str) -> float:
    """Install the Slurm and munge packages if any binary is missing. Returns the seconds spent;
    raises SlurmUnavailable when it cannot."""
    missing = [c for c in NEEDED if not _which(c)]
    if not missing:
        return 0.0
    why = f"{', '.join(missing)} not installed"
    if os.environ.get("PFSXPORT_SLURM_NO_INSTALL") == "1":
        raise SlurmUnavailable(f"{why} and PFSXPORT_SLURM_NO_INSTALL=1")
    if os.geteuid() != 0:
        raise SlurmUnavailable(f"{why}, and installing them (and running slurmd) needs root")
    apt = _which("apt-get")
    if not apt:
        raise SlurmUnavailable(f"{why}, and there is no apt-get to install {' '.join(PACKAGES)}")
    t0 = time.monotonic()
    _log(f"{why}: installing {' '.join(PACKAGES)} with apt-get")
    # Keep the packages' maintainer scripts from starting system daemons (we run private ones).
    policy = "/usr/sbin/policy-rc.d"
    made_policy = False
    try:
        fd = os.open(policy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o755)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write("#!/bin/sh\n# temporary, from pfsxport's tests/slurmcluster.py\nexit 101\n")
        made_policy = True
    aptlog = os.path.join(logdir, "apt.log")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", PATH=_search_path())
    lock = ["-o", "DPkg::Lock::Timeout=120"]  # another apt-get may be running
    try:
        with open(aptlog, "ab") as out:
            for cmd, timeout in (([apt, *lock, "update", "-q"], APT_UPDATE_TIMEOUT),
                                 ([apt, *lock, "install", "-y", "-q", "--no-install-recommends", *PACKAGES],
                                  APT_INSTALL_TIMEOUT)):
                out.write(f"\n$ {' '.join(cmd)}\n".encode())
                out.flush()
                try:
                    rc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                        env=env, timeout=timeout).returncode
                except subprocess.TimeoutExpired:
                    raise SlurmUnavailable(f"`{' '.join(cmd)}` did not finish in {timeout:.0f} s:\n"
                                           f"{_tail(aptlog, 15)}") from None
                if rc != 0:
                    raise SlurmUnavailable(f"`{' '.join(cmd)}` failed (exit {rc}):\n{_tail(aptlog, 15)}")
    finally:
        if made_policy:
            try:
                os.unlink(policy)
            except OSError:
                pass
    still = [c for c in NEEDED if not _which(c)]
    if still:
        raise SlurmUnavailable(f"{', '.join(still)} still missing after apt-get install")
    dt = time.monotonic() - t0
    _log(f"packages installed in {dt:.1f} s")
    return dt


# --------------------------------------------------------------------------------------------
# the cluster
# --------------------------------------------------------------------------------------------

def _free_ports(n: int) -> list[int]:
    """n distinct ports free on every address (slurmctld and slurmd bind the wildcard)."""
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind(("", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def _short_hostname() -> str:
    try:
        name = subprocess.run(["hostname", "-s"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        name = ""
    return name or socket.gethostname().split(".")[0]


def parse_job(line: str) -> dict[str, str]:
    """`scontrol show job -o` output -> {key: value}. Values may contain '=' and spaces; a key
    starts after a space and ends at the first '='."""
    out: dict[str, str] = {}
    matches = list(re.finditer(r"(?:^|\s)([A-Za-z][A-Za-z0-9:/_.]*)=", line.strip()))
    text = line.strip()
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        out[m.group(1)] = text[m.end():end].strip()
    return out


class SlurmCluster:
    """One private slurmctld + slurmd + munged. `start()` brings it up, `stop()` takes it down."""

    def __init__(self, root: str, cpus: int | None = None):
        self.root = root
        self.conf = os.path.join(root, "etc", "slurm.conf")
        self.logdir = os.path.join(root, "log")
        self.rundir = os.path.join(root, "run")
        self.munge_socket = os.path.join(self.rundir, "munge", "munge.socket")
        self.munge_key = os.path.join(root, "munge-key", "munge.key")
        self.host = _short_hostname()
        self.node = self.host
        self.cpus = cpus
        self.ctld_port = self.slurmd_port = 0
        self.first_job_id = 0
        self.procs: dict[str, subprocess.Popen] = {}
        self.history: dict[str, list[str]] = {}  # job id -> the states seen, in order, no repeats
        self.timings: dict[str, float] = {}
        self._bin = {c: _which(c) for c in NEEDED + ("mungekey", "setpriv")}

    # ---- environment ---------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """What a client (sbatch, squeue, ...) needs on top of the environment: SLURM_CONF, and
        PATH with /usr/sbin and /sbin (munged, slurmd, scontrol live in several places)."""
        return {"SLURM_CONF": self.conf, "PATH": _search_path()}

    def client_env(self, extra: dict[str, str | None] | None = None) -> dict[str, str]:
        """This process's environment without the variables of an enclosing job or MPI launch,
        plus env() and extra (a value None removes the variable). Jobs inherit it (sbatch's
        default --export=ALL)."""
        e = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_ENV)}
        e.update(self.env())
        for k, v in (extra or {}).items():
            if v is None:
                e.pop(k, None)
            else:
                e[k] = v
        return e

    def _run(self, cmd: list[str], timeout: float = 30, check: bool = True, **kw) -> subprocess.CompletedProcess:
        exe = self._bin.get(cmd[0]) or _which(cmd[0]) or cmd[0]
        kw.setdefault("env", self.client_env())
        r = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL, **kw)
        if check and r.returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd)}` failed (exit {r.returncode}): {r.stderr.strip()}\n"
                               f"{self.log_tails()}")
        return r

    # ---- jobs ----------------------------------------------------------------------------

    def sbatch(self, args: list[str], env: dict[str, str | None] | None = None, cwd: str | None = None,
               timeout: float = 30) -> str:
        """`sbatch --parsable ARGS` with client_env(env); returns the job id."""
        r = self._run(["sbatch", "--parsable", *args], timeout=timeout, env=self.client_env(env), cwd=cwd)
        job = r.stdout.strip().split(";")[0]
        if not job.isdigit():
            raise RuntimeError(f"sbatch printed no job id: {r.stdout!r} {r.stderr!r}")
        self.history.setdefault(job, [])
        return job

    def job(self, job: str) -> dict[str, str] | None:
        """`scontrol show job -o JOB` as a dict (None once slurmctld no longer knows the job)."""
        r = self._run(["scontrol", "show", "job", "-o", str(job)], timeout=15, check=False)
        if r.returncode != 0:
            if "Invalid job id" in r.stderr:
                return None
            raise RuntimeError(f"scontrol show job {job} failed: {r.stderr.strip()}")
        lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
        if not lines:
            return None
        info = parse_job(lines[0])
        seen = self.history.setdefault(str(job), [])
        state = info.get("JobState", "")
        if state and (not seen or seen[-1] != state):
            seen.append(state)
        return info

    def state(self, job: str) -> str | None:
        info = self.job(job)
        return info.get("JobState") if info else None

    def wait(self, job: str, states=TERMINAL, timeout: float = 60, poll: float = 0.1) -> dict[str, str]:
        """Poll until the job's state is one of `states` (default: any final state); returns the
        job's info. Raises TimeoutError with the job, the queue and the daemon logs otherwise."""
        states = {states} if isinstance(states, str) else set(states)
        deadline = time.monotonic() + timeout
        info = None
        while True:
            info = self.job(job)
            if info and info.get("JobState") in states:
                return info
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job} not in {sorted(states)} after {timeout:.0f} s; states seen: "
                                   f"{self.history.get(str(job))}\n{info}\n{self.diagnostics()}")
            time.sleep(poll)

    def scancel(self, *jobs: str, signal: str | None = None, batch: bool = False) -> None:
        args = ["scancel"] + ([f"--signal={signal}"] if signal else []) + (["--batch"] if batch else [])
        self._run(args + [str(j) for j in jobs], timeout=15)

    def queue(self) -> list[str]:
        r = self._run(["squeue", "-h", "-o", "%A"], timeout=15, check=False)
        return [j for j in r.stdout.split() if j.isdigit()] if r.returncode == 0 else []

    # ---- diagnostics ---------------------------------------------------------------------

    def log_tails(self, lines: int = 25) -> str:
        out = []
        if os.path.isdir(self.logdir):
            names = sorted(os.listdir(self.logdir))
            for name in names:
                p = os.path.join(self.logdir, name)
                log = name.replace(".stderr", ".log")
                if name.endswith(".stderr") and log in names and os.path.getsize(os.path.join(self.logdir, log)):
                    continue  # slurmctld -D / slurmd -D write the same lines to their log file
                if os.path.isfile(p) and os.path.getsize(p):
                    out.append(f"----- tail of {p} -----\n{_tail(p, lines)}")
        return "\n".join(out)

    def diagnostics(self) -> str:
        parts = []
        for cmd in (["squeue", "-a"], ["sinfo", "-N", "-l"]):
            try:
                r = self._run(cmd, timeout=10, check=False)
                parts.append(f"$ {' '.join(cmd)}\n{r.stdout}{r.stderr}")
            except Exception as e:  # noqa: BLE001 - diagnostics must not raise
                parts.append(f"$ {' '.join(cmd)}: {e}")
        alive = {n: (p.pid, p.poll()) for n, p in self.procs.items()}
        parts.append(f"daemons (pid, exit status or None if alive): {alive}")
        parts.append(self.log_tails())
        return "\n".join(parts)

    # ---- bring-up ------------------------------------------------------------------------

    def _node_hw(self) -> tuple[str, str]:
        r = subprocess.run([self._bin["slurmd"], "-C"], capture_output=True, text=True, timeout=30,
                           stdin=subprocess.DEVNULL)
        line = next((ln for ln in r.stdout.splitlines() if ln.startswith("NodeName=")), "")
        hw = dict(tok.split("=", 1) for tok in line.split()[1:] if "=" in tok)
        real = int(hw.get("CPUs") or os.cpu_count() or 1)
        want = self.cpus or max(MIN_CPUS, real)
        self.cpus = want
        if want == real and hw:
            return " ".join(f"{k}={v}" for k, v in hw.items() if k != "UpTime"), ""
        # More CPUs than exist: only CPUs and memory, as the topology would contradict them.
        mem = hw.get("RealMemory", "1")
        return f"CPUs={want} RealMemory={mem}", "SlurmdParameters=config_overrides"

    def _write_config(self) -> None:
        for d in ("etc", "run", "run/munge", "log", "state/ctld", "state/d", "lib", "munge-key"):
            os.makedirs(os.path.join(self.root, d), exist_ok=True)
        # munged refuses group/world-writable directories on its socket, key and log paths
        for d in (self.root, "etc", "run", "run/munge", "log"):
            os.chmod(os.path.join(self.root, d), 0o755)
        for d in ("lib", "munge-key"):
            os.chmod(os.path.join(self.root, d), 0o700)
        hw, extra = self._node_hw()
        self.ctld_port, self.slurmd_port = _free_ports(2)
        # Job ids of their own: MPICH under srun --mpi=pmi2 names its node-local shared memory
        # (/dev/shm/mpich_shm_*) after the PMI kvsname, which is "JOBID.STEPID". Two private
        # clusters on one machine (two test sessions at once) both starting at job 1 would make
        # their jobs' ranks attach to each other's segments and fail or hang in MPI_Init.
        self.first_job_id = random.SystemRandom().randrange(1000, 60_000_000)
        R = self.root
        conf = f"""\
# generated by pfsxport tests/slurmcluster.py: a private single-node cluster on loopback
ClusterName=pfsxtest
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={self.ctld_port}
SlurmdPort={self.slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={R}/state/ctld
SlurmdSpoolDir={R}/state/d
SlurmctldPidFile={R}/run/slurmctld.pid
SlurmdPidFile={R}/run/slurmd.pid
SlurmctldLogFile={R}/log/slurmctld.log
SlurmdLogFile={R}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig={R}/etc/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=100000
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=pmi2
ReturnToService=2
MailProg=/bin/true
InactiveLimit=0
KillWait=10
MinJobAge=600
FirstJobId={self.first_job_id}
{extra}
NodeName={self.node} NodeAddr=127.0.0.1 NodeHostname={self.host} {hw} State=UNKNOWN
PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
"""
        with open(self.conf, "w") as f:
            f.write(conf)
        open(os.path.join(R, "etc", "plugstack.conf"), "w").close()

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen:
        """Start a daemon in the foreground as our child. With setpriv --pdeathsig it also dies
        if this process is killed outright and cannot run the teardown."""
        if self._bin.get("setpriv"):
            cmd = [self._bin["setpriv"], "--pdeathsig", "TERM", "--", *cmd]
        out = open(os.path.join(self.logdir, f"{name}.stderr"), "ab")
        try:
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                 env=self.client_env(), cwd=self.root, start_new_session=True)
        finally:
            out.close()
        self.procs[name] = p
        return p

    def _until(self, what: str, ready, procs: list[str], timeout: float = UP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            for n in procs:
                rc = self.procs[n].poll()
                if rc is not None:
                    raise RuntimeError(f"{n} exited with status {rc} while waiting for {what}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: not ready after {timeout:.0f} s")
            time.sleep(0.1)

    def _munge_ok(self) -> bool:
        if not os.path.exists(self.munge_socket):
            return False
        try:
            cred = subprocess.run([self._bin["munge"], "-n", "-S", self.munge_socket], capture_output=True,
                                  timeout=10, stdin=subprocess.DEVNULL)
            if cred.returncode != 0:
                return False
            return subprocess.run([self._bin["unmunge"], "-S", self.munge_socket], input=cred.stdout,
                                  capture_output=True, timeout=10).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def _ctld_up(self) -> bool:
        r = self._run(["scontrol", "ping"], timeout=10, check=False)
        return "is UP" in r.stdout

    def _node_state(self) -> str:
        r = self._run(["sinfo", "-h", "-N", "-n", self.node, "-o", "%T"], timeout=10, check=False)
        return (r.stdout.split() or [""])[0]

    def start(self) -> SlurmCluster:
        t0 = time.monotonic()
        self._write_config()
        # munged: a private key and socket
        key_made = False
        if self._bin.get("mungekey"):
            key_made = subprocess.run([self._bin["mungekey"], "--create", f"--keyfile={self.munge_key}"],
                                      capture_output=True, timeout=30, stdin=subprocess.DEVNULL).returncode == 0
        if not key_made:  # what create-munge-key does: 1 KiB from the kernel's CSPRNG
            fd = os.open(self.munge_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o400)
            with os.fdopen(fd, "wb") as f:
                f.write(os.urandom(1024))
        os.chmod(self.munge_key, 0o400)
        self._spawn("munged", [self._bin["munged"], "--foreground", f"--socket={self.munge_socket}",
                               f"--key-file={self.munge_key}", f"--pid-file={self.rundir}/munged.pid",
                               f"--log-file={self.logdir}/munged.log",
                               f"--seed-file={self.root}/lib/munged.seed"])
        self._until("munged (munge -n | unmunge)", self._munge_ok, ["munged"])
        self.timings["munged"] = time.monotonic() - t0
        # slurmctld (-c: empty queue), then slurmd; both in the foreground (-D) so their PIDs are ours
        self._spawn("slurmctld", [self._bin["slurmctld"], "-D", "-c", "-f", self.conf])
        self._until("slurmctld (scontrol ping)", self._ctld_up, ["munged", "slurmctld"])
        self.timings["slurmctld"] = time.monotonic() - t0
        self._spawn("slurmd", [self._bin["slurmd"], "-D", "-f", self.conf, "-N", self.node])
        resumed = []

        def idle() -> bool:
            st = self._node_state()
            if st.startswith(("down", "drain")) and not resumed:
                resumed.append(st)
                self._run(["scontrol", "update", f"NodeName={self.node}", "State=RESUME"], check=False)
            return st == "idle"

        self._until(f"node {self.node} idle (sinfo)", idle, ["munged", "slurmctld", "slurmd"])
        self.timings["up"] = time.monotonic() - t0
        return self

    # ---- teardown ------------------------------------------------------------------------

    def _stop_procs(self, names: list[str], grace: float = 15) -> None:
        for n in names:
            p = self.procs.get(n)
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for n in names:
            p = self.procs.get(n)
            if not p:
                continue
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _log(f"{n} (pid {p.pid}) still alive {grace:.0f} s after SIGTERM: SIGKILL")
                p.kill()
                p.wait(10)

    def stop(self) -> None:
        ctld = self.procs.get("slurmctld")
        if ctld and ctld.poll() is None:
            try:
                jobs = self.queue()
                if jobs:
                    self._run(["scancel", *jobs], timeout=15, check=False)
                    deadline = time.monotonic() + 30
                    while self.queue() and time.monotonic() < deadline:
                        time.sleep(0.2)
            except Exception as e:  # noqa: BLE001 - the daemons must still be stopped
                _log(f"cancelling jobs at teardown: {e}")
        self._stop_procs(["slurmd", "slurmctld"])
        self._stop_procs(["munged"])


@pytest.fixture(scope="session")
def slurm():
    """A running private Slurm cluster (SlurmCluster). SLURM_CONF is set for this process."""
    root = tempfile.mkdtemp(prefix="pfsx-slurm-")  # short: the munge socket path must fit sun_path
    os.chmod(root, 0o755)
    os.makedirs(os.path.join(root, "log"), exist_ok=True)
    try:
        ensure_installed(os.path.join(root, "log"))
    except SlurmUnavailable as e:
        shutil.rmtree(root, ignore_errors=True)
        msg = f"SLURM NOT AVAILABLE: {e}"
        _log(msg)
        if os.environ.get("PFSXPORT_REQUIRE_SLURM") == "1":
            pytest.fail(f"{msg} (and PFSXPORT_REQUIRE_SLURM=1)", pytrace=False)
        warnings.warn(msg, stacklevel=1)
        pytest.skip(msg)
    cluster = SlurmCluster(root)
    t0 = time.monotonic()
    try:
        cluster.start()
    except BaseException as e:
        tails = cluster.log_tails()
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"private Slurm cluster did not come up: {e}\n{tails}") from e
    _log(f"cluster up in {time.monotonic() - t0:.1f} s (node {cluster.node}, {cluster.cpus} CPUs, "
         f"slurmctld :{cluster.ctld_port}, slurmd :{cluster.slurmd_port}, SLURM_CONF={cluster.conf})")
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = cluster.conf
    try:
        yield cluster
    finally:
        t1 = time.monotonic()
        try:
            cluster.stop()
        finally:
            if old is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = old
            shutil.rmtree(root, ignore_errors=True)
        _log(f"cluster down in {time.monotonic() - t1:.1f} s")
