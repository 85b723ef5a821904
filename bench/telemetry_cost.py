"""What streaming telemetry costs an agent: its steps/s with telemetry on over the same off.

Each measurement is a container (``bench.container_probe``: ``run_agents``, as
``python -m agents run`` runs it) with one agent, in its own process: "on" streams every step
and episode through the proxy to a live daemon (a subprocess, on loopback), "off" discards
them in the same telemetry behaviour. On and off alternate, in a different order each round.

Each container first settles (``--settle``): the measuring window opens only once the agent's
record buffer has stopped growing. When the telemetry behaviour drains slower than the agent
produces, the buffer (65,536 records) fills for several seconds while the agent runs at full
speed, and only then does backpressure pace the agent; a long run spends nearly all its time in
that paced state, so that is what is measured.

The figure is the wall-clock ratio (the agent's steps/s, as the issue defines it): with the
buffer full, the agent also waits on backpressure, which only the wall clock shows. On this
shared machine wall-clock rates move with other people's load, so on and off alternate in
pairs, in a different order each round, and the figure is the median of the pairs' ratios. The
ratio of steps per CPU second of the agent's process (what the producer side of telemetry
costs in computation: encoding, batching and the gRPC sender all run in that process) is in
the notes; the daemon's own CPU is on another core.
"""
from __future__ import annotations

import time

from bench.context import Benchmark, BenchContext, median, spread
from bench.daemon_process import DaemonProcess
from bench.probe import Probe
from bench.report import Figure

WARMUP_S = 1.0
PARITY = "parity (telemetry costing nothing)"


async def _measure(ctx: BenchContext, asl: str, telemetry: str | None, seconds: float) -> dict:
    """One container with one agent; its result with the agent's rates in the window."""
    flags = ["--telemetry", telemetry, "--spool", ctx.workdir / "spool-telemetry"] if telemetry else []
    probe = await Probe.start(ctx.workdir, "bench.container_probe", await ctx.xmpp_port(), 1, asl, "--settle", *flags)
    await probe.wait_ready(180)
    start = time.time() + WARMUP_S
    probe.send(f"{start} {start + seconds}")
    result = await probe.result(120 + seconds)
    steps = result["steps"][0]
    return {"wall": steps / seconds, "cpu": steps / result["cpu_s"], "delivered": result["delivered"],
            "settle_s": result["settle_s"], "buffered": [level[0] for level in result["buffered"]]}


async def run(ctx: BenchContext) -> list[Figure]:
    """On/off pairs for the step-by-step and the episode-level plan library, one daemon."""
    repeats = ctx.repeats(4, 1)
    seconds = ctx.seconds(6, 2)
    plans = {"agent.telemetry_on_off.ratio": ("learner.asl", "asl/learner.asl (a step per reasoning-cycle turn)"),
             "agent.telemetry_on_off.episode_action.ratio": ("learner_fast.asl",
                                                             "asl/learner_fast.asl (an episode per action)")}
    cpu_ratios: dict[str, list[float]] = {name: [] for name in plans}
    wall_ratios: dict[str, list[float]] = {name: [] for name in plans}
    rates: dict[str, dict[str, list[float]]] = {name: {"on": [], "off": []} for name in plans}
    delivered: dict[str, int] = {name: 0 for name in plans}
    regime: dict[str, list[str]] = {name: [] for name in plans}
    with DaemonProcess(ctx.workdir, "telemetry-cost") as daemon:
        for round_ in range(repeats):
            for name, (asl, _) in plans.items():
                order = ("on", "off") if round_ % 2 == 0 else ("off", "on")
                seen = {}
                for mode in order:
                    ctx.progress(f"telemetry: round {round_ + 1}/{repeats}: {asl}, telemetry {mode}, {seconds:g} s")
                    seen[mode] = await _measure(ctx, asl, daemon.address if mode == "on" else None, seconds)
                    rates[name][mode].append(seen[mode]["wall"])
                    if mode == "on":
                        start_level, end_level = seen[mode]["buffered"]
                        regime[name].append(f"{seen[mode]['settle_s']:.0f} s, {start_level:,}->{end_level:,}")
                delivered[name] += seen["on"]["delivered"]
                cpu_ratios[name].append(seen["on"]["cpu"] / seen["off"]["cpu"])
                wall_ratios[name].append(seen["on"]["wall"] / seen["off"]["wall"])
                ctx.progress(f"telemetry: {asl}: on/off {wall_ratios[name][-1]:.3f} wall clock, "
                             f"{cpu_ratios[name][-1]:.3f} per CPU second")
    return [Figure(
        name=name, value=median(wall_ratios[name]), unit="x", baseline_name=PARITY, baseline_value=1.0,
        notes=(f"{how}, one agent in a container process, slippery FrozenLake-v1; on: proxy session to a live "
               f"daemon subprocess ({delivered[name]:,} records delivered), off: records discarded; the agent's "
               f"steps/s (wall clock) over {seconds:g} s windows once its record buffer stopped growing (with "
               f"telemetry on: settled after, and records buffered at window start->end: "
               f"{'; '.join(regime[name])}); median of {repeats} on/off pairs in alternating order "
               f"({spread(wall_ratios[name], '{:.3f}')}); steps/s on {spread(rates[name]['on'])}, off "
               f"{spread(rates[name]['off'])}; per CPU second of the agent's process the ratio is "
               f"{median(cpu_ratios[name]):.3f} ({spread(cpu_ratios[name], '{:.3f}')})"))
        for name, (_, how) in plans.items()]


BENCHMARK = Benchmark(
    area="telemetry",
    figures=("agent.telemetry_on_off.ratio", "agent.telemetry_on_off.episode_action.ratio"),
    run=run,
)
