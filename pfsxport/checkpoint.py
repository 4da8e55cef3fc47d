"""Export on a signal, in-process: for codes that want their checkpoint exported when Slurm
warns that walltime is near (`#SBATCH --signal=USR1@300`, or `B:USR1` with the wrapper
jobscripts/checkpoint.sbatch) without a wrapper script.

    from pfsxport.checkpoint import ExportOnSignal

    with ExportOnSignal(["--config", "site.yaml", "checkpoints/latest"]) as ck:
        while not ck.triggered:
            step()                      # the export runs in the background once signalled
    # leaving the block waits for the export; ck.exit_code is pfsxport's exit code

Local: the export runs as a separate `pfsxport export` process (under a launcher such as
`srun --overlap -n 4 --mpi=pmi2` if given), so the program's own MPI is not disturbed.
A signal that arrives while the export runs does not start a second one.
"""
from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading

log = logging.getLogger("pfsxport")


class ExportOnSignal:
    def __init__(self, export_args: list[str], signum: int = signal.SIGUSR1, launcher: list[str] | None = None,
                 env: dict[str, str] | None = None):
        self.command = [*(launcher or []), sys.executable, "-m", "pfsxport", "export", *export_args]
        self.signum = signum
        self.env = env
        self.exit_code: int | None = None
        self.signals = 0
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._previous = None

    @property
    def triggered(self) -> bool:
        """True once the signal came (the export has started or finished)."""
        return self._thread is not None

    def start(self) -> bool:
        """Start the export now, unless one was started already. Returns True if it started."""
        with self._lock:
            if self._thread is not None:
                log.warning("an export is already running or done; not starting a second one")
                return False
            self._thread = threading.Thread(target=self._run, name="pfsxport-checkpoint", daemon=True)
            self._thread.start()
            return True

    def _run(self) -> None:
        log.info("exporting: %s", " ".join(self.command))
        self.exit_code = subprocess.run(self.command, env=self.env).returncode

    def _handler(self, signum, frame) -> None:
        self.signals += 1
        self.start()

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the export (if one started); its exit code, or None if none ran."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.exit_code

    def __enter__(self) -> ExportOnSignal:
        self._previous = signal.signal(self.signum, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(self.signum, self._previous)
        self.wait()
