"""Readers that never read: daemon memory, health and ingest while 200 step streams stall.

One daemon subprocess and one run of 1 KB-observation steps. First without readers: the
daemon's RSS, GetHealth round trips and the ingest rate of a further block of steps (the
baselines). Then 200 step streams are opened from seq 0 on 200 connections (half
StreamRunSteps, half StreamRunStepBatches, as `telemetry tail ... | less` left paused would)
and never read; once the daemon's memory settles, the same three are measured again while a
producer keeps publishing into the run the stalled readers follow. A bounded daemon pauses
each stalled stream at its bound and resumes it from the store, so memory stays near the
baseline and health and ingest keep answering.
"""
from __future__ import annotations

import asyncio
import time

import grpc
import grpc.aio

from bench import wire
from bench.context import BenchContext, Benchmark, median
from bench.daemon_process import DaemonProcess
from bench.report import Figure
from telemetry.generated import trainer_pb2 as pb
from telemetry.generated import trainer_pb2_grpc

RUN_ID = "bench-readers"
OBSERVATION_BYTES = 1024
HEALTH_PROBES = 20


def _steps(first: int, count: int) -> list[bytes]:
    """``count`` serialized steps of one agent with a 1 KB observation each, numbered from ``first``."""
    now = time.time_ns()
    payload = '"' + "x" * (OBSERVATION_BYTES - 2) + '"'
    out = []
    for number in range(first, first + count):
        step = wire.step(RUN_ID, "agent-0", number, timestamp_ns=now)
        step.observation_json = payload
        out.append(step.SerializeToString())
    return out


async def _health_ms(stub: trainer_pb2_grpc.TrainerServiceStub) -> list[float]:
    """GetHealth round trips in milliseconds, one after another."""
    times = []
    for _ in range(HEALTH_PROBES):
        start = time.perf_counter()
        await stub.GetHealth(pb.HealthCheckRequest(), timeout=60)
        times.append((time.perf_counter() - start) * 1000)
    return times


async def _ingest_rate(producer: wire.Producer, first: int, count: int) -> float:
    """Steps per second for publishing ``count`` prepared steps (every call answered)."""
    calls = wire.batch_calls(RUN_ID, _steps(first, count))
    start = time.perf_counter()
    await producer.publish_batches(calls)
    return count / (time.perf_counter() - start)


async def _settled_rss(daemon: DaemonProcess, timeout_s: float = 120.0) -> float:
    """The daemon's RSS once it is idle again (under 5% of a core over a second: the stalled
    readers' connections are full and nothing more moves), or after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    cpu = daemon.cpu_s()
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        now = daemon.cpu_s()
        if now - cpu < 0.05:
            break
        cpu = now
    return daemon.rss_mb()


async def run(ctx: BenchContext) -> list[Figure]:
    """RSS, GetHealth latency and ingest rate with 200 stalled readers, against the same daemon
    before they connected."""
    stored = ctx.size(10_000, 5_000, minimum=500)
    block = ctx.size(10_000, 5_000, minimum=500)
    readers = ctx.size(200, 100, minimum=4)
    with DaemonProcess(ctx.workdir, "readers") as daemon:
        producer = wire.Producer(daemon.address, RUN_ID, "bench-readers-worker")
        channels: list[grpc.aio.Channel] = []
        calls: list = []
        try:
            await producer.register()
            await producer.publish_batches(wire.batch_calls(RUN_ID, _steps(0, stored)))
            probe_channel = grpc.aio.insecure_channel(daemon.address)
            channels.append(probe_channel)
            stub = trainer_pb2_grpc.TrainerServiceStub(probe_channel)
            await _health_ms(stub)  # warm the channel
            rss_before = await _settled_rss(daemon)
            health_before = await _health_ms(stub)
            rate_before = await _ingest_rate(producer, stored, block)
            ctx.progress(f"readers: without readers RSS {rss_before:.1f} MiB, GetHealth median "
                         f"{median(health_before):.2f} ms, ingest {rate_before:,.0f} steps/s")
            for index in range(readers):
                channel = grpc.aio.insecure_channel(daemon.address, options=[("grpc.use_local_subchannel_pool", 1)])
                channels.append(channel)
                reader = trainer_pb2_grpc.TrainerServiceStub(channel)
                rpc = reader.StreamRunSteps if index % 2 else reader.StreamRunStepBatches
                call = rpc(pb.StreamStepsRequest(run_id=RUN_ID, since_seq=0))
                await call.wait_for_connection()
                calls.append(call)
            rss_open = await _settled_rss(daemon)
            health_stalled = await _health_ms(stub)
            rate_stalled = await _ingest_rate(producer, stored + block, block)
            rss_after = await _settled_rss(daemon)
            peak = daemon.peak_rss_mb()
            ctx.progress(f"readers: {readers} stalled readers: RSS {rss_open:.1f} MiB after opening, "
                         f"{rss_after:.1f} MiB after {block:,} more steps (peak {peak:.1f}), GetHealth median "
                         f"{median(health_stalled):.2f} ms (max {max(health_stalled):.1f}), "
                         f"ingest {rate_stalled:,.0f} steps/s")
        finally:
            for call in calls:
                call.cancel()
            for channel in channels:
                await channel.close()
            await producer.close()
    daemon.discard_store()
    setup = (f"{readers} never-read step streams from seq 0 (half StreamRunSteps, half StreamRunStepBatches, "
             f"one connection each) on a run of {stored:,} stored steps with {OBSERVATION_BYTES} B observations, "
             f"then {block:,} more published live")
    return [
        Figure(name="readers.rss_mb.stalled", value=rss_after, unit="MiB",
               baseline_name="daemon RSS before the readers connected", baseline_value=rss_before,
               notes=f"{setup}; VmRSS once settled after the live block; {rss_open:.1f} MiB right after "
                     f"opening; peak (VmHWM) {peak:.1f} MiB; one measurement"),
        Figure(name="readers.health_ms.stalled", value=median(health_stalled), unit="ms",
               baseline_name="GetHealth median before the readers connected", baseline_value=median(health_before),
               notes=f"{setup}; median of {HEALTH_PROBES} sequential GetHealth calls; max {max(health_stalled):.1f} ms "
                     f"(before: {max(health_before):.1f} ms)"),
        Figure(name="readers.ingest_steps_per_s.stalled", value=rate_stalled, unit="steps/s",
               baseline_name="the same block's ingest rate before the readers connected", baseline_value=rate_before,
               notes=f"{setup}; {block:,} steps in PublishTelemetryBatch calls, every call answered"),
    ]


BENCHMARK = Benchmark(area="readers", figures=("readers.rss_mb.stalled", "readers.health_ms.stalled",
                                               "readers.ingest_steps_per_s.stalled"), run=run)
