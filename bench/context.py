"""What every benchmark gets: its sizes (full, --quick, --scale), a work folder, progress on
stderr, and the statistics the figures are made of."""
from __future__ import annotations

import asyncio
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.daemon_process import PROJECT_ROOT
from bench.report import Figure


@dataclass
class BenchContext:
    """One run of the suite.

    ``quick`` picks the small sizes (the whole suite in under 3 minutes here); ``scale``
    multiplies every size further (the test uses a tenth, to check the pipeline, not speed).
    Sizes never drop below what a figure needs to be computed at all.
    """
    quick: bool
    scale: float
    workdir: Path
    started: float = field(default_factory=time.monotonic)
    _xmpp: subprocess.Popen | None = None
    _xmpp_port: int = 0

    async def xmpp_port(self) -> int:
        """The client port of the run's XMPP server (``bench.xmpp_host``, started on first use,
        on free ports): every benchmark's agents log in there, from this process and from probes."""
        if self._xmpp is None:
            log_path = self.workdir / "xmpp.log"  # pyjabber's complaints stay out of the progress output
            with open(log_path, "w") as log:
                self._xmpp = subprocess.Popen([sys.executable, "-m", "bench.xmpp_host"], cwd=PROJECT_ROOT,
                                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True)
            line = await asyncio.wait_for(asyncio.to_thread(self._xmpp.stdout.readline), 60)
            if not line.strip().isdigit():
                self._xmpp.kill()
                raise RuntimeError(f"the benchmark's XMPP server did not start (exit code {self._xmpp.wait()}): "
                                   f"{log_path.read_text().strip()[-2000:]}")
            self._xmpp_port = int(line)
        return self._xmpp_port

    async def close(self) -> None:
        """Stop what the run started (the XMPP server: closing its stdin ends it)."""
        if self._xmpp is not None:
            self._xmpp.stdin.close()
            try:
                await asyncio.to_thread(self._xmpp.wait, 15)
            except subprocess.TimeoutExpired:
                self._xmpp.kill()
                self._xmpp.wait()
            self._xmpp = None

    def size(self, full: int, quick: int, minimum: int = 1) -> int:
        """A workload size: ``full`` or ``quick``, times ``scale``, at least ``minimum``."""
        return max(minimum, round((quick if self.quick else full) * self.scale))

    def seconds(self, full: float, quick: float, minimum: float = 0.5) -> float:
        """A measuring window in seconds, scaled like sizes."""
        return max(minimum, (quick if self.quick else full) * self.scale)

    def repeats(self, full: int, quick: int) -> int:
        """How many interleaved rounds to take medians over (never scaled: one is the least)."""
        return quick if self.quick else full

    def progress(self, message: str) -> None:
        """One progress line on stderr, stamped with the time since the suite started."""
        print(f"[bench {time.monotonic() - self.started:6.1f}s] {message}", file=sys.stderr, flush=True)


def median(values: list[float]) -> float:
    """The median (the figure of repeated, interleaved measurements on a noisy machine)."""
    return statistics.median(values)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by the nearest-rank method: a value that was observed."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def spread(values: list[float], fmt: str = "{:,.0f}") -> str:
    """Every repeat's value, for the notes ("12,000 / 11,500 / 12,900")."""
    return " / ".join(fmt.format(v) for v in values)


@dataclass(frozen=True)
class Benchmark:
    """One area of the suite: the figures it produces (their names, for --only and the test)
    and the coroutine that measures them, baselines included."""
    area: str
    figures: tuple[str, ...]
    run: Callable[[BenchContext], Awaitable[list[Figure]]]

    def selected_by(self, names: list[str]) -> bool:
        """Whether --only ``names`` asks for this area: an area name, a figure name, or a
        prefix of one ("ingest", "agent.asl_step")."""
        return any(n == self.area or any(f == n or f.startswith(n + ".") for f in self.figures) for n in names)
