"""Emit-to-viewer latency: a step emitted through the proxy, until a live viewer receives it.

The producer is a real ``TelemetryGrpcProxy`` session with its default batching (it flushes
every 20 ms, or sooner when 2,000 records are waiting), emitting at a steady rate: each
millisecond it emits the steps that are due, each stamped with ``time.time_ns()`` as it is
emitted. The daemon (a subprocess) commits them and fans them out live. The viewer (another
subprocess, ``bench.viewer``) receives them on StreamRunStepBatches (many steps per message,
what our viewers use) and takes arrival minus stamp. The first second of every run is warm-up
and left out.

Baseline: the same pipeline at a low rate (100 steps/s), measured in the same run. It is what
the design costs with no load (mostly the proxy's flush interval and one commit); the ratio
says what 10,000 steps/s adds on top. The GetHealth round trip (the floor of any gRPC exchange
here) is given in the notes.

Secondary figures: the same at 10,000 steps/s with the viewer on StreamRunSteps (MOSAIC/1.0,
one step per message), read against the batched stream.
"""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field

import grpc

from bench.context import BenchContext, Benchmark, median, percentile, spread
from bench.daemon_process import PROJECT_ROOT, DaemonProcess
from bench.report import Figure
from telemetry import TelemetryGrpcProxy
from telemetry.generated import trainer_pb2 as pb
from telemetry.generated import trainer_pb2_grpc

HIGH_RATE = 10_000
LOW_RATE = 100
WARMUP_S = 1.0
TICK_S = 0.001
#: How long a viewer that falls behind may take to catch up after the producer is done.
VIEWER_GRACE_S = 300


class ViewerFailed(RuntimeError):
    """The viewer subprocess did not deliver its measurements."""


async def _emit_steadily(session, run_id: str, rate: int, count: int) -> None:
    """Emit ``count`` steps at ``rate`` steps/s, each stamped when emitted."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent = 0
    while sent < count:
        due = min(count, int((loop.time() - start) * rate) + 1)
        while sent < due:
            await session.emit_step(
                run_id=run_id, episode_index=sent // 100, step_index=sent % 100, action_json="1",
                observation_json=str(sent % 16), reward=0.0, terminated=False, truncated=False,
                policy_label="explore", backend="spade-bdi", agent_id="latency-agent", timestamp_ns=time.time_ns())
            sent += 1
        await asyncio.sleep(TICK_S)


async def _latencies(proxy: TelemetryGrpcProxy, run_id: str, rate: int, seconds: float,
                     stream: str) -> tuple[list[float], float]:
    """Milliseconds from emit to viewer (reading ``stream``, see ``bench.viewer``) for every
    step after the warm-up, and the rate (steps/s) at which the viewer received them."""
    warmup = int(rate * WARMUP_S)
    count = warmup + max(1, int(rate * seconds))
    async with proxy.session(run_id) as session:
        viewer = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.viewer", proxy.target, run_id, str(count), str(seconds + VIEWER_GRACE_S),
            stream,
            cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            ready = await asyncio.wait_for(viewer.stdout.readline(), 60)
            if ready.strip() != b"ready":
                raise ViewerFailed(f"the viewer did not start: {(await viewer.stderr.read()).decode().strip()}")
            await _emit_steadily(session, run_id, rate, count)
            await session.flush()
            out, err = await asyncio.wait_for(viewer.communicate(), VIEWER_GRACE_S)
        finally:
            if viewer.returncode is None:
                viewer.kill()
                await viewer.wait()
    if viewer.returncode != 0:
        raise ViewerFailed(f"the viewer exited with code {viewer.returncode}: {err.decode().strip()}")
    seen = json.loads(out)
    return [us / 1000 for us in seen["latencies_us"][warmup:]], (count - 1) / max(seen["span_s"], 1e-9)


async def _health_round_trip_ms(address: str, calls: int) -> float:
    """Median GetHealth round trip, in milliseconds."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = trainer_pb2_grpc.TrainerServiceStub(channel)
        await stub.GetHealth(pb.HealthCheckRequest())
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            await stub.GetHealth(pb.HealthCheckRequest())
            times.append((time.perf_counter() - start) * 1000)
    return median(times)


@dataclass(frozen=True)
class _Case:
    """One kind of round: a producer rate and the stream the viewer reads."""
    key: str
    rate: int
    stream: str


#: Batched stream at the target rate and at the low baseline rate; StreamRunSteps at the target rate.
CASES = (_Case("high", HIGH_RATE, "batches"), _Case("low", LOW_RATE, "batches"),
         _Case("per_step", HIGH_RATE, "steps"))
STREAM_RPC = {"batches": "StreamRunStepBatches", "steps": "StreamRunSteps"}


@dataclass
class _Rounds:
    """What the rounds of one case measured: p50/p99 per round, the rate served, samples."""
    percentiles: dict[int, list[float]] = field(default_factory=lambda: {50: [], 99: []})
    served: list[float] = field(default_factory=list)
    samples: int = 0

    def behind(self, rate: int) -> str:
        """A note when the viewer was served clearly less than the producer's rate."""
        if median(self.served) >= 0.95 * rate:
            return ""
        return (f"; the viewer fell behind (served {median(self.served):,.0f} of {rate:,} steps/s), so latency "
                f"grew through each round: this is the age of a growing backlog, not a steady state, and it "
                f"grows with the length of the round")


async def run(ctx: BenchContext) -> list[Figure]:
    """Interleaved rounds of every case, one daemon, a new run each time."""
    repeats = ctx.repeats(3, 1)
    seconds = ctx.seconds(10, 3)
    rounds = {case.key: _Rounds() for case in CASES}
    with DaemonProcess(ctx.workdir, "latency") as daemon:
        proxy = TelemetryGrpcProxy(daemon.address, spool_dir=ctx.workdir / "spool-latency", worker_id="bench-latency")
        round_trip = await _health_round_trip_ms(daemon.address, ctx.size(200, 50, minimum=10))
        for round_ in range(repeats):
            for case in CASES:
                ctx.progress(f"latency: round {round_ + 1}/{repeats}: {case.rate:,} steps/s for {seconds:g} s "
                             f"(+{WARMUP_S:g} s warm-up), viewer on {STREAM_RPC[case.stream]}")
                latencies, rate_seen = await _latencies(proxy, f"bench-latency-{case.key}-{round_}", case.rate,
                                                        seconds, case.stream)
                measured = rounds[case.key]
                measured.samples += len(latencies)
                measured.served.append(rate_seen)
                for q in (50, 99):
                    measured.percentiles[q].append(percentile(latencies, q))
                ctx.progress(f"latency: {case.rate:,} steps/s on {STREAM_RPC[case.stream]}: p50 "
                             f"{measured.percentiles[50][-1]:.1f} ms, p99 {measured.percentiles[99][-1]:.1f} ms; "
                             f"the viewer was served {rate_seen:,.0f} steps/s")
    pipeline = (f"proxy (defaults: flush every {proxy.flush_interval_s * 1000:g} ms or at "
                f"{proxy.batch_max_records:,} records) -> daemon subprocess (commit, live fan-out) -> viewer "
                f"subprocess; latency = arrival minus the step's emit timestamp; {seconds:g} s per round after "
                f"{WARMUP_S:g} s warm-up; median over {repeats} interleaved rounds; GetHealth round trip median "
                f"{round_trip:.2f} ms")
    high, low, per_step = rounds["high"], rounds["low"], rounds["per_step"]
    figures = []
    for q in (50, 99):
        figures.append(Figure(
            name=f"latency.emit_to_viewer.p{q}_ms", value=median(high.percentiles[q]), unit="ms",
            baseline_name=f"the same p{q} at {LOW_RATE} steps/s", baseline_value=median(low.percentiles[q]),
            notes=(f"viewer on StreamRunStepBatches (many steps per message); {pipeline}; {HIGH_RATE:,} steps/s: "
                   f"{high.samples:,} steps in all, rounds {spread(high.percentiles[q], '{:.1f}')} ms, the viewer "
                   f"was served {spread(high.served)} steps/s; baseline rounds {LOW_RATE} steps/s "
                   f"({spread(low.percentiles[q], '{:.1f}')} ms){high.behind(HIGH_RATE)}")))
    for q in (50, 99):
        figures.append(Figure(
            name=f"latency.emit_to_viewer.per_step_stream.p{q}_ms", value=median(per_step.percentiles[q]), unit="ms",
            baseline_name=f"the same p{q} on StreamRunStepBatches", baseline_value=median(high.percentiles[q]),
            notes=(f"viewer on StreamRunSteps (MOSAIC/1.0: one step per message) at {HIGH_RATE:,} steps/s; "
                   f"{pipeline}; {per_step.samples:,} steps in all, rounds "
                   f"{spread(per_step.percentiles[q], '{:.1f}')} ms, the viewer was served "
                   f"{spread(per_step.served)} steps/s{per_step.behind(HIGH_RATE)}")))
    return figures


BENCHMARK = Benchmark(
    area="latency",
    figures=("latency.emit_to_viewer.p50_ms", "latency.emit_to_viewer.p99_ms",
             "latency.emit_to_viewer.per_step_stream.p50_ms", "latency.emit_to_viewer.per_step_stream.p99_ms"),
    run=run,
)
