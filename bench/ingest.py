"""Durable ingest: steps/s into the daemon through the batched and the per-step paths, with 8
and with 1 concurrent producer sessions, against raw SQLite inserts of the same rows.

A measurement: a fresh daemon subprocess and store; every session registers (RegisterWorker)
before the clock starts; then all sessions send their pre-serialized steps at once and the
clock stops when the last publish call is answered. The daemon answers a publish call only
after every record of it is committed, so the rate counts durable steps (WAL,
synchronous=NORMAL: they survive the daemon being killed). Each session is one agent_id of one
run, as agents in a container are. The accepted counts are checked: a lost record fails the
benchmark instead of flattering it.
"""
from __future__ import annotations

import asyncio
import time

from bench import wire
from bench.context import BenchContext, Benchmark, median, spread
from bench.daemon_process import DaemonProcess
from bench.report import Figure
from bench.sqlite_baseline import raw_insert_rate

RUN_ID = "bench-ingest"
SESSIONS = 8
BASELINE_NAME = "raw SQLite batched insert, same rows and schema"
BASELINE_HOW = "executemany in transactions of 8,192 rows, WAL, synchronous=NORMAL, the store's own schema"


class RecordsLost(RuntimeError):
    """The daemon stored fewer records than were sent."""


def _agent_steps(sessions: int, total: int) -> list[list[bytes]]:
    """Each session's serialized steps (one agent each), ``total`` in all."""
    per_session = total // sessions
    return [wire.serialized_steps(RUN_ID, f"agent-{i}", per_session) for i in range(sessions)]


def _arrival_order(per_agent: list[list[bytes]]) -> list[bytes]:
    """All sessions' steps interleaved batch by batch, the order the daemon's writer gets them."""
    out: list[bytes] = []
    for first in range(0, max(len(s) for s in per_agent), wire.BATCH_RECORDS):
        for steps in per_agent:
            out.extend(steps[first:first + wire.BATCH_RECORDS])
    return out


def _payloads(per_agent: list[list[bytes]], encoding: str) -> list:
    """What each session sends: calls of column batches, calls of RunStep batches, or steps."""
    if encoding == "columns":
        return [wire.column_calls(RUN_ID, s) for s in per_agent]
    if encoding == "run_steps":
        return [wire.batch_calls(RUN_ID, s) for s in per_agent]
    return per_agent


async def _measure(ctx: BenchContext, name: str, per_agent: list[list[bytes]], encoding: str) -> tuple[float, float]:
    """One measurement on a fresh daemon: (steps/s durable, daemon CPU microseconds per step)."""
    total = sum(len(s) for s in per_agent)
    payloads = _payloads(per_agent, encoding)
    batched = encoding != "per_step"
    daemon = DaemonProcess(ctx.workdir, name)
    with daemon:
        producers = [wire.Producer(daemon.address, RUN_ID, f"bench-worker-{i}") for i in range(len(per_agent))]
        try:
            for producer in producers:
                await producer.register()
            cpu_before = daemon.cpu_s()
            start = time.perf_counter()
            if batched:
                stored = await asyncio.gather(*(p.publish_batches(c) for p, c in zip(producers, payloads)))
            else:
                stored = await asyncio.gather(*(p.publish_steps(s) for p, s in zip(producers, payloads)))
            elapsed = time.perf_counter() - start
            cpu = daemon.cpu_s() - cpu_before
        finally:
            for producer in producers:
                await producer.close()
    daemon.discard_store()
    if sum(stored) != total:
        raise RecordsLost(f"{name}: the daemon stored {sum(stored)} of {total} steps")
    return total / elapsed, cpu / total * 1e6


async def run(ctx: BenchContext) -> list[Figure]:
    """Interleaved rounds of: raw SQLite, batched x8, batched x1, per-step x8, per-step x1."""
    repeats = ctx.repeats(3, 1)
    batched_total = ctx.size(400_000, 40_000, minimum=SESSIONS * 10)
    per_step_total = ctx.size(40_000, 4_000, minimum=SESSIONS * 10)
    ctx.progress(f"ingest: preparing {batched_total:,} + {per_step_total:,} serialized steps")
    batched_8 = _agent_steps(SESSIONS, batched_total)
    batched_1 = [[s for steps in batched_8 for s in steps]]
    per_step_8 = _agent_steps(SESSIONS, per_step_total)
    per_step_1 = [[s for steps in per_step_8 for s in steps]]
    arrival = _arrival_order(batched_8)
    variants = {
        "ingest.batched.steps_per_s": (batched_8, "columns"),
        "ingest.batched.1_session.steps_per_s": (batched_1, "columns"),
        "ingest.batched_run_steps.steps_per_s": (batched_8, "run_steps"),
        "ingest.per_step.steps_per_s": (per_step_8, "per_step"),
        "ingest.per_step.1_session.steps_per_s": (per_step_1, "per_step"),
    }
    raw: list[float] = []
    rates: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(repeats):
        ctx.progress(f"ingest: round {round_ + 1}/{repeats}: raw SQLite insert of {len(arrival):,} rows")
        db = ctx.workdir / f"raw-sqlite-{round_}.db"
        raw.append(await asyncio.to_thread(raw_insert_rate, db, arrival))
        for suffix in ("", "-wal", "-shm"):
            db.with_name(db.name + suffix).unlink(missing_ok=True)
        for name, (per_agent, encoding) in variants.items():
            ctx.progress(f"ingest: round {round_ + 1}/{repeats}: {name} "
                         f"({sum(map(len, per_agent)):,} steps, {len(per_agent)} session(s))")
            rate, cpu_us = await _measure(ctx, f"{name}-{round_}", per_agent, encoding)
            rates[name].append(rate)
            cpu[name].append(cpu_us)
            ctx.progress(f"ingest: {name}: {rate:,.0f} steps/s")
    baseline = median(raw)
    how = {
        "ingest.batched.steps_per_s": f"{SESSIONS} concurrent sessions (one agent_id each, one run), "
                                      f"PublishTelemetryBatch calls of {wire.BATCHES_PER_CALL} batches x "
                                      f"{wire.BATCH_RECORDS} steps in StepColumns blocks of {wire.SINK_CHUNK}, "
                                      "as the proxy sends what agents hand it (emit_steps)",
        "ingest.batched.1_session.steps_per_s": "1 session, same batches",
        "ingest.batched_run_steps.steps_per_s": f"{SESSIONS} concurrent sessions, PublishTelemetryBatch calls "
                                                f"of {wire.BATCHES_PER_CALL} batches x {wire.BATCH_RECORDS} "
                                                "RunStep messages (what emit_step, one step per call, sends)",
        "ingest.per_step.steps_per_s": f"{SESSIONS} concurrent MOSAIC/1.0 PublishRunSteps streams, "
                                       "one RunStep per wire message",
        "ingest.per_step.1_session.steps_per_s": "1 PublishRunSteps stream, one RunStep per wire message",
    }
    figures = []
    for name, (per_agent, _) in variants.items():
        figures.append(Figure(
            name=name, value=median(rates[name]), unit="steps/s", baseline_name=BASELINE_NAME,
            baseline_value=baseline,
            notes=(f"{how[name]}; {sum(map(len, per_agent)):,} steps per measurement, durable when the call "
                   f"is answered; fresh daemon subprocess each time; median of {repeats} interleaved rounds "
                   f"({spread(rates[name])}); daemon CPU {median(cpu[name]):.1f} us/step. Baseline: "
                   f"{len(arrival):,} rows, {BASELINE_HOW}, median of {repeats} ({spread(raw)})")))
    return figures

BENCHMARK = Benchmark(
    area="ingest",
    figures=("ingest.batched.steps_per_s", "ingest.batched.1_session.steps_per_s",
             "ingest.batched_run_steps.steps_per_s", "ingest.per_step.steps_per_s", "ingest.per_step.1_session.steps_per_s"),
    run=run,
)
