"""What streaming telemetry costs an agent: its steps/s with telemetry on over the same off.

Each measurement is a container (``bench.container_probe``: ``run_agents``, as
``python -m agents run`` runs it) with one agent, in its own process: "on" streams every step
and episode through the proxy to a live daemon (a subprocess, on loopback), "off" discards
them in the same telemetry behaviour. On and off alternate, in a different order each round.

The figure compares steps per CPU second of the agent's process: the proxy's work (encoding,
batching, the gRPC sender) is done in that process, so its CPU time holds the whole producer
side of the cost, and unlike wall-clock time it is not changed by whatever else this shared
machine is running. The daemon's own CPU is on another core. Wall-clock ratios are in the notes.
"""
from __future__ import annotations

import time

from bench.context import Benchmark, BenchContext, median, spread
from bench.daemon_process import DaemonProcess
from bench.probe import Probe
from bench.report import Figure

WARMUP_S = 1.5
PARITY = "parity (telemetry costing nothing)"


async def _measure(ctx: BenchContext, asl: str, telemetry: str | None, seconds: float) -> dict:
    """One container with one agent; its result with the agent's rates in the window."""
    flags = ["--telemetry", telemetry, "--spool", ctx.workdir / "spool-telemetry"] if telemetry else []
    probe = await Probe.start(ctx.workdir, "bench.container_probe", await ctx.xmpp_port(), 1, asl, *flags)
    await probe.wait_ready(120)
    start = time.time() + WARMUP_S
    probe.send(f"{start} {start + seconds}")
    result = await probe.result(120 + seconds)
    steps = result["steps"][0]
    return {"wall": steps / seconds, "cpu": steps / result["cpu_s"], "delivered": result["delivered"]}


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
    with DaemonProcess(ctx.workdir, "telemetry-cost") as daemon:
        for round_ in range(repeats):
            for name, (asl, _) in plans.items():
                order = ("on", "off") if round_ % 2 == 0 else ("off", "on")
                seen = {}
                for mode in order:
                    ctx.progress(f"telemetry: round {round_ + 1}/{repeats}: {asl}, telemetry {mode}, {seconds:g} s")
                    seen[mode] = await _measure(ctx, asl, daemon.address if mode == "on" else None, seconds)
                    rates[name][mode].append(seen[mode]["cpu"])
                delivered[name] += seen["on"]["delivered"]
                cpu_ratios[name].append(seen["on"]["cpu"] / seen["off"]["cpu"])
                wall_ratios[name].append(seen["on"]["wall"] / seen["off"]["wall"])
                ctx.progress(f"telemetry: {asl}: on/off {cpu_ratios[name][-1]:.3f} per CPU second, "
                             f"{wall_ratios[name][-1]:.3f} wall clock")
    return [Figure(
        name=name, value=median(cpu_ratios[name]), unit="x", baseline_name=PARITY, baseline_value=1.0,
        notes=(f"{how}, one agent in a container process, slippery FrozenLake-v1; on: proxy session to a live "
               f"daemon subprocess ({delivered[name]:,} records delivered), off: records discarded; steps per CPU "
               f"second of the agent's process over {seconds:g} s windows after {WARMUP_S:g} s warm-up; median of "
               f"{repeats} on/off pairs in alternating order ({spread(cpu_ratios[name], '{:.3f}')}); steps/CPU-s on "
               f"{spread(rates[name]['on'])}, off {spread(rates[name]['off'])}; wall-clock ratio median "
               f"{median(wall_ratios[name]):.3f} ({spread(wall_ratios[name], '{:.3f}')})"))
        for name, (_, how) in plans.items()]


BENCHMARK = Benchmark(
    area="telemetry",
    figures=("agent.telemetry_on_off.ratio", "agent.telemetry_on_off.episode_action.ratio"),
    run=run,
)
