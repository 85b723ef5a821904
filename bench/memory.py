"""Daemon memory as a run grows: resident memory after 1,000,000 steps against after 100,000.

One daemon subprocess, one run, eight producer sessions (one agent_id each) sending through
the batched path. The first tenth of the steps goes in, every call answered (committed), and
the daemon's RSS is read from /proc; then the rest, and RSS again. Flat is the goal: the store
is on disk, and nothing in the daemon should keep per-step state.
"""
from __future__ import annotations

import asyncio
import time

from bench import wire
from bench.context import BenchContext, Benchmark
from bench.daemon_process import DaemonProcess
from bench.report import Figure

RUN_ID = "bench-memory"
SESSIONS = 8


async def _send(producers: list[wire.Producer], first: int, per_session: int) -> None:
    """Each producer sends its agent's steps ``first`` .. ``first + per_session - 1``."""
    calls = [wire.batch_calls(RUN_ID, wire.serialized_steps(RUN_ID, f"agent-{i}", per_session, first))
             for i in range(len(producers))]
    await asyncio.gather(*(p.publish_batches(c) for p, c in zip(producers, calls)))


async def run(ctx: BenchContext) -> list[Figure]:
    """RSS after a tenth of the steps (baseline) and after all of them, one run, one daemon."""
    total = ctx.size(1_000_000, 100_000, minimum=SESSIONS * 100)
    early = total // 10 // SESSIONS * SESSIONS
    chunk = ctx.size(100_000, 10_000, minimum=SESSIONS * 10)  # steps prepared at a time, bounding our own memory
    with DaemonProcess(ctx.workdir, "memory") as daemon:
        idle_rss = daemon.rss_mb()
        producers = [wire.Producer(daemon.address, RUN_ID, f"bench-worker-{i}") for i in range(SESSIONS)]
        try:
            for producer in producers:
                await producer.register()
            per_agent = 0  # steps each agent has sent so far
            rss: list[float] = []
            peaks: list[float] = []
            start = time.perf_counter()
            for phase_total in (early, total - early):
                remaining = phase_total // SESSIONS
                while remaining:
                    count = min(remaining, chunk // SESSIONS)
                    await _send(producers, per_agent, count)
                    per_agent += count
                    remaining -= count
                rss.append(daemon.rss_mb())
                peaks.append(daemon.peak_rss_mb())
                ctx.progress(f"memory: daemon RSS {rss[-1]:.1f} MiB after {per_agent * SESSIONS:,} steps "
                             f"(peak so far {peaks[-1]:.1f} MiB)")
            elapsed = time.perf_counter() - start
        finally:
            for producer in producers:
                await producer.close()
    daemon.discard_store()
    sent = per_agent * SESSIONS
    size_note = "" if sent == 1_000_000 else f" (reduced run: {sent:,} steps against {early:,})"
    return [Figure(
        name="daemon.rss_mb.after_1m_steps", value=rss[1], unit="MiB",
        baseline_name=f"daemon RSS after {early:,} steps of the same run", baseline_value=rss[0],
        notes=(f"VmRSS of the daemon subprocess{size_note}; {SESSIONS} batched sessions into one run, "
               f"read once every call was answered; RSS right after start {idle_rss:.1f} MiB; peak RSS (VmHWM) "
               f"{peaks[0]:.1f} MiB by the baseline point, {peaks[1]:.1f} MiB by the end; one measurement; "
               f"ingest over the whole run {sent / elapsed:,.0f} steps/s (serializing included)")),
    ]


BENCHMARK = Benchmark(area="memory", figures=("daemon.rss_mb.after_1m_steps",), run=run)
