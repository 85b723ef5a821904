"""How many agents one container runs before each agent's steps/s halves.

Method: for N = 1, 2, 4, 8 agents, one container process (``bench.container_probe``:
``run_agents``, as ``python -m agents run`` runs it; asl/learner.asl on slippery FrozenLake-v1,
telemetry off, so the figure is the container's own) is measured over a fixed wall-clock window
once every agent is learning; an agent's rate is its steps in the window over the window. r(N)
is the mean rate per agent. The figure is the N where r(N) crosses r(1) / 2, interpolated
linearly between the two measured N around the crossing (if it never crosses, the largest N
measured, and the notes say so).

Baseline, measured the same way in the same run: the same N agents as N separate processes of
one agent each, all measured over one common window. A container is one Python process (one
interpreter lock, one event loop), so its agents share one core, whereas separate processes
can use both cores of this machine; the ratio is what running agents together costs here.
"""
from __future__ import annotations

import time

from bench.context import BenchContext, Benchmark, median
from bench.probe import Probe
from bench.report import Figure

WARMUP_S = 1.5
ASL = "learner.asl"


async def _per_agent_rate(ctx: BenchContext, processes: int, agents_each: int, seconds: float) -> float:
    """Mean steps/s per agent with ``processes`` containers of ``agents_each`` agents at once."""
    port = await ctx.xmpp_port()
    probes = [await Probe.start(ctx.workdir, "bench.container_probe", port, agents_each, ASL)
              for _ in range(processes)]
    try:
        for probe in probes:
            await probe.wait_ready(180)
        start = time.time() + WARMUP_S
        for probe in probes:
            probe.send(f"{start} {start + seconds}")
        rates = [rate for probe in probes for rate in (await probe.result(120 + seconds))["steps_per_s"]]
    finally:
        for probe in probes:
            await probe.kill()
    return sum(rates) / len(rates)


def half_rate_point(rates: dict[int, float]) -> tuple[float, bool]:
    """(N where the per-agent rate falls to half of N=1's, whether it did within the N measured)."""
    counts = sorted(rates)
    half = rates[counts[0]] / 2
    for low, high in zip(counts, counts[1:]):
        if rates[high] <= half:
            drop = rates[low] - rates[high]
            return low + (high - low) * (rates[low] - half) / drop if drop > 0 else float(high), True
    return float(counts[-1]), False


def _describe(rates: dict[int, float]) -> str:
    return ", ".join(f"N={n}: {rate:,.0f}" for n, rate in sorted(rates.items()))


async def run(ctx: BenchContext) -> list[Figure]:
    """Per-agent rates for each N, in one container and in N processes, interleaved."""
    counts = (1, 2, 4) if ctx.quick else (1, 2, 4, 8)
    repeats = ctx.repeats(2, 1)
    seconds = ctx.seconds(5, 2)
    measured: dict[str, dict[int, list[float]]] = {"container": {n: [] for n in counts},
                                                   "processes": {n: [] for n in counts}}
    for round_ in range(repeats):
        for n in counts:
            ctx.progress(f"container: round {round_ + 1}/{repeats}: {n} agent(s) in one container")
            measured["container"][n].append(await _per_agent_rate(ctx, 1, n, seconds))
            ctx.progress(f"container: round {round_ + 1}/{repeats}: {n} agent(s), one process each")
            measured["processes"][n].append(await _per_agent_rate(ctx, n, 1, seconds))
            ctx.progress(f"container: N={n}: {measured['container'][n][-1]:,.0f} steps/s per agent in one "
                         f"container, {measured['processes'][n][-1]:,.0f} in separate processes")
    rates = {kind: {n: median(values) for n, values in by_n.items()} for kind, by_n in measured.items()}
    value, crossed = half_rate_point(rates["container"])
    baseline, baseline_crossed = half_rate_point(rates["processes"])
    bound = "" if crossed and baseline_crossed else " (a bound: the rate did not halve within the N measured)"
    return [Figure(
        name="container.agents_at_half_rate", value=value, unit="agents",
        baseline_name="the same, one agent per process", baseline_value=baseline,
        notes=(f"asl/learner.asl on slippery FrozenLake-v1, telemetry off, N in {', '.join(map(str, counts))}; "
               f"mean steps/s per agent over a {seconds:g} s window after {WARMUP_S:g} s warm-up, median of "
               f"{repeats} round(s); crossing of r(1)/2 interpolated linearly between measured N{bound}; one "
               f"container: {_describe(rates['container'])}; separate processes: {_describe(rates['processes'])}"))]


BENCHMARK = Benchmark(area="container", figures=("container.agents_at_half_rate",), run=run)
