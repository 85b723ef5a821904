"""Measurements that run in a process of their own (``python -m bench.<probe> ...``).

A probe prints one JSON object as its last line of stdout. Interactive probes first print
"ready" and wait for one line on stdin (the measuring window) before they measure, so that
several probes can measure over the same wall-clock window. A probe's stderr goes to a log
file in the run's work folder (a pipe nobody reads while the probe runs could fill up and
stall it); its last lines are quoted when the probe fails.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.daemon_process import PROJECT_ROOT

_serial = itertools.count(1)


class ProbeFailed(RuntimeError):
    """A probe process exited with an error or without its result."""


class Probe:
    """One running probe process."""

    def __init__(self, process: asyncio.subprocess.Process, command: str, log_path: Path) -> None:
        self._process = process
        self.command = command
        self.log_path = log_path

    @classmethod
    async def start(cls, workdir: Path, module: str, *args: object) -> "Probe":
        """Start ``python -m module args`` with its stderr logged in ``workdir``."""
        argv = [sys.executable, "-m", module, *map(str, args)]
        log_path = workdir / f"{module.rsplit('.', 1)[-1]}-{next(_serial)}.log"
        with open(log_path, "wb") as log:
            process = await asyncio.create_subprocess_exec(
                *argv, cwd=PROJECT_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
        return cls(process, " ".join(argv[1:]), log_path)

    async def wait_ready(self, timeout: float) -> None:
        """Wait for the probe's "ready" line."""
        try:
            line = await asyncio.wait_for(self._process.stdout.readline(), timeout)
        except asyncio.TimeoutError:
            await self.kill()
            raise ProbeFailed(f"{self.command}: not ready within {timeout:g} s: {self._log_tail()}") from None
        if line.strip() != b"ready":
            await self.kill()
            raise ProbeFailed(f"{self.command}: exit code {self._process.returncode}: {self._log_tail()}")

    def send(self, line: str) -> None:
        """Write one line to the probe's stdin."""
        self._process.stdin.write(line.encode() + b"\n")

    async def result(self, timeout: float) -> dict[str, Any]:
        """The probe's JSON result, once it exits."""
        try:
            out, _ = await asyncio.wait_for(self._process.communicate(), timeout)
        except asyncio.TimeoutError:
            await self.kill()
            raise ProbeFailed(f"{self.command}: no result within {timeout:g} s: {self._log_tail()}") from None
        lines = out.decode().strip().splitlines()
        if self._process.returncode != 0 or not lines:
            raise ProbeFailed(f"{self.command}: exit code {self._process.returncode}: {self._log_tail()}")
        return json.loads(lines[-1])

    async def kill(self) -> None:
        """Kill the probe if it still runs."""
        if self._process.returncode is None:
            self._process.kill()
            await self._process.wait()

    def _log_tail(self, lines: int = 15) -> str:
        text = self.log_path.read_text(errors="replace").strip()
        return "\n".join(text.splitlines()[-lines:]) or "(nothing on stderr)"


async def run_probe(workdir: Path, module: str, *args: object, timeout: float) -> dict[str, Any]:
    """Run a non-interactive probe to the end; its JSON result."""
    probe = await Probe.start(workdir, module, *args)
    return await probe.result(timeout)
