"""The telemetry daemon under test: ``python -m telemetry.daemon`` in its own process.

A subprocess, not ``serve()`` in the benchmark's event loop, so that the daemon's memory and
CPU time are its own (read from /proc) and the load generators do not share its interpreter.
It listens on a free loopback port with a fresh SQLite file, without the web dashboard (whose
fixed default port could clash with a daemon someone else runs on this machine).
"""
from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class DaemonStartFailed(RuntimeError):
    """The daemon did not come up (its log is in the message)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def process_memory_mb(pid: int, field: str = "VmRSS") -> float:
    """A memory figure of a process from /proc (VmRSS: resident now; VmHWM: resident at its
    peak), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


class DaemonProcess:
    """A running daemon subprocess; use as a context manager (stopped with SIGTERM on exit)."""

    def __init__(self, workdir: Path, name: str) -> None:
        self.db_path = workdir / f"{name}.db"
        self.log_path = workdir / f"{name}.log"
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._process: subprocess.Popen | None = None

    def __enter__(self) -> "DaemonProcess":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self._process is not None, "the daemon is not started"
        return self._process.pid

    def start(self, timeout: float = 30.0) -> None:
        """Start it and wait for its "listening on" line."""
        with open(self.log_path, "w") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "telemetry.daemon", "--listen", self.address, "--db", str(self.db_path),
                 "--log-level", "WARNING", "--no-dashboard"],
                cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self._process.stdout], [], [], 0.2)
            if ready and self._process.stdout.readline().startswith("listening on"):
                return
            if self._process.poll() is not None:
                raise DaemonStartFailed(f"the telemetry daemon exited with code {self._process.returncode}: "
                                        f"{self.log_path.read_text().strip()}")
        self._process.kill()
        self._process.wait()
        raise DaemonStartFailed(f"the telemetry daemon did not start within {timeout:g} s "
                                f"(log: {self.log_path})")

    def rss_mb(self) -> float:
        """The daemon's resident memory now, in MiB."""
        return process_memory_mb(self.pid)

    def peak_rss_mb(self) -> float:
        """The daemon's highest resident memory so far, in MiB."""
        return process_memory_mb(self.pid, "VmHWM")

    def cpu_s(self) -> float:
        """CPU seconds the daemon has used so far."""
        return process_cpu_s(self.pid)

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM (the daemon commits what it accepted and exits), SIGKILL if it hangs."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()

    def discard_store(self) -> None:
        """Delete the daemon's database files (after stop): large runs fill the disk otherwise."""
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.db_path}{suffix}").unlink(missing_ok=True)
