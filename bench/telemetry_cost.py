"""What streaming telemetry costs an agent: its steps/s with telemetry on over the same off.

One container process (``bench.container_probe``: ``run_agents``, as ``python -m agents run``
runs it) with one agent per plan library, started with telemetry on: a proxy session to a live
daemon (a subprocess, on loopback) that every step and episode streams through. Inside that
process the probe switches the agent's telemetry behaviour between on (the session's sink and
its backpressure gate, as started) and off (a ``DiscardSink`` and no gate: what telemetry off
builds), and measures one short window per switch: many on/off pairs, in alternating order
(on-off, off-on, ...). The figure is the median of the pairs' wall-clock ratios.

Why in one process: processes differ (memory layout, hash seeds), and that alone moved one
agent's steps/s by a few percent from process to process, as much as the cost being measured.
A/A runs (off against off, ``python -m bench.telemetry_noise``) on learner_fast.asl: pairs of
processes of 6 s windows (the first design, 4 pairs a figure) gave pair ratios of 0.935-1.100
and run medians of 0.979 and 0.983; the same with one PYTHONHASHSEED for every process
0.975-1.030; pairs of 3 s windows in one process 0.988-1.019 with medians of 0.996-1.001
(0.952-1.069 in one run while other people's work came in bursts). Every probe gets PYTHONHASHSEED=HASH_SEED all
the same, so that repeated runs lay out alike. The off windows keep the session open, idle
(its sender wakes every 20 ms, heartbeats every 5 s): an in-process A/A of an idle extra
session against none (``bench.telemetry_noise idle-session``) found no cost (median 0.999).

Before an off window the probe waits until the session has delivered everything the on window
accepted (off must not pay for on's sending), and before an on window until the agent's record
buffer stopped growing: when the behaviour drains slower than the agent produces, the buffer
(65,536 records) fills while the agent runs at full speed, and only then does backpressure pace
the agent; a long run spends nearly all its time in that paced state, so that is what is
measured (each on window's buffer levels at start and end are in the notes). The agent first
runs WARMUP_S seconds: its first seconds run slower than the rest. The wall clock is the figure
(with the buffer full the agent also waits on backpressure, which only the wall clock shows);
steps per CPU second of the agent's process (the producer side's computation: encoding,
batching and the gRPC sender all run in that process; the daemon's CPU is on another core) are
in the notes. On this shared machine a burst of other people's work slows a window or two;
pairs a few seconds apart and their median keep it out of the figure.
"""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

from bench.context import BenchContext, Benchmark, median, spread
from bench.daemon_process import DaemonProcess
from bench.probe import Probe
from bench.report import Figure

PARITY = "parity (telemetry costing nothing)"
#: Every probe process hashes alike (dict and set layouts), so runs of the benchmark compare.
HASH_SEED = "0"
#: Seconds the agent runs before its first window (its first seconds run slower than the rest).
WARMUP_S = 5.0
#: Seconds between telling a cross-process probe its window and the window's start.
LEAD_S = 1.0
PLANS = {"agent.telemetry_on_off.ratio": ("learner.asl", "asl/learner.asl (a step per reasoning-cycle turn)"),
         "agent.telemetry_on_off.episode_action.ratio": ("learner_fast.asl",
                                                         "asl/learner_fast.asl (an episode per action)")}


@contextlib.contextmanager
def hash_seed(seed: str | None) -> Iterator[None]:
    """Probes started inside get PYTHONHASHSEED=seed (None: a random seed each, Python's default)."""
    before = os.environ.get("PYTHONHASHSEED")
    if seed is None:
        os.environ.pop("PYTHONHASHSEED", None)
    else:
        os.environ["PYTHONHASHSEED"] = seed
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PYTHONHASHSEED", None)
        else:
            os.environ["PYTHONHASHSEED"] = before


def pair_orders(pairs: int) -> list[tuple[str, str]]:
    """The order of each pair's two windows: on-off, off-on, on-off, ..."""
    return [("on", "off") if i % 2 == 0 else ("off", "on") for i in range(pairs)]


async def _start_probe(ctx: BenchContext, asl: str, seed: str | None, *flags: object) -> Probe:
    with hash_seed(seed):
        probe = await Probe.start(ctx.workdir, "bench.container_probe", await ctx.xmpp_port(), 1, asl, *flags)
    await probe.wait_ready(180)
    return probe


async def in_process_windows(ctx: BenchContext, daemon: DaemonProcess, asl: str, schedule: list[str],
                             seconds: float, seed: str | None = HASH_SEED,
                             idle_session: bool = False) -> tuple[list[dict[str, Any]], int]:
    """One container process, telemetry switched per window (`schedule`: "on"/"off" each); its
    windows (``bench.container_probe`` describes them) and the records the daemon acknowledged.
    With `idle_session`, telemetry stays off and "on" holds an idle session open instead."""
    probe = await _start_probe(ctx, asl, seed, "--idle-session" if idle_session else "--telemetry", daemon.address,
                               "--spool", ctx.workdir / "spool-telemetry",
                               "--schedule", ",".join(schedule), "--window", seconds, "--warmup", WARMUP_S)
    probe.send("go")
    result = await probe.result(120 + len(schedule) * (seconds + 40))
    return result["windows"], result["delivered"]


async def cross_process_window(ctx: BenchContext, daemon: DaemonProcess, asl: str, mode: str, seconds: float,
                               seed: str | None = HASH_SEED) -> dict[str, Any]:
    """One window in a container process of its own, telemetry `mode` ("on"/"off") from the start;
    shaped like an in-process window, with the records the daemon acknowledged."""
    flags = ["--telemetry", daemon.address, "--spool", ctx.workdir / "spool-telemetry"] if mode == "on" else []
    probe = await _start_probe(ctx, asl, seed, "--settle", *flags)
    start = time.time() + LEAD_S
    probe.send(f"{start} {start + seconds}")
    result = await probe.result(120 + seconds)
    return {"mode": mode, "steps": result["steps"], "wall_s": seconds, "cpu_s": result["cpu_s"],
            "buffered": result["buffered"], "settle_s": result["settle_s"], "quiet_s": 0.0,
            "load": os.getloadavg()[0], "delivered": result["delivered"]}


def wall_rate(window: dict[str, Any]) -> float:
    """The agent's steps per wall-clock second in a window."""
    return window["steps"][0] / window["wall_s"]


def cpu_rate(window: dict[str, Any]) -> float:
    """The agent's steps per CPU second of its process in a window."""
    return window["steps"][0] / window["cpu_s"]


def pair_ratios(windows: list[dict[str, Any]], rate=wall_rate) -> list[float]:
    """Each pair's on over off ratio, the windows in `schedule_of` order. A window is labelled by
    its position, not its mode, so that an A/A run (every window off) pairs exactly alike."""
    ratios = []
    for i, order in enumerate(pair_orders(len(windows) // 2)):
        by_label = dict(zip(order, windows[2 * i:2 * i + 2]))
        ratios.append(rate(by_label["on"]) / rate(by_label["off"]))
    return ratios


def schedule_of(pairs: int) -> list[str]:
    """The modes of `pairs` pairs' windows in order: on, off, off, on, on, off, ..."""
    return [mode for order in pair_orders(pairs) for mode in order]


def _levels(window: dict[str, Any]) -> str:
    (start,), (end,) = window["buffered"]
    return f"{start:,}->{end:,}"


def _notes(how: str, windows: list[dict[str, Any]], delivered: int, pairs: int, seconds: float) -> str:
    wall, cpu = pair_ratios(windows), pair_ratios(windows, cpu_rate)
    on = [w for w in windows if w["mode"] == "on"]
    off = [w for w in windows if w["mode"] == "off"]
    loads = [w["load"] for w in windows]
    return (f"{how}, one agent in a container process, slippery FrozenLake-v1; on: every step and episode "
            f"streamed through a proxy session to a live daemon subprocess ({delivered:,} records delivered), "
            f"off: records discarded (DiscardSink, no gate; the session stays open, idle); both in the same process "
            f"(PYTHONHASHSEED={HASH_SEED}), switched per window after {WARMUP_S:g} s of warm-up: {pairs} on/off "
            f"pairs of {seconds:g} s windows in alternating order, each off window once the session had delivered "
            f"everything, each on window once the record buffer stopped growing (records buffered at "
            f"on windows' start->end: {'; '.join(_levels(w) for w in on)}); "
            f"median of the pairs' wall-clock ratios ({spread(wall, '{:.3f}')}; range {min(wall):.3f}-{max(wall):.3f}); "
            f"steps/s on {spread([wall_rate(w) for w in on])}, off {spread([wall_rate(w) for w in off])}; "
            f"per CPU second of the agent's process the ratio is {median(cpu):.3f} ({spread(cpu, '{:.3f}')}); "
            f"load average {min(loads):.2f}-{max(loads):.2f}")


async def run(ctx: BenchContext) -> list[Figure]:
    """On/off pairs in one process for each plan library, one daemon."""
    pairs = ctx.repeats(10, 3)
    seconds = ctx.seconds(3, 1.5)
    figures = []
    with DaemonProcess(ctx.workdir, "telemetry-cost") as daemon:
        for name, (asl, how) in PLANS.items():
            ctx.progress(f"telemetry: {asl}: {pairs} on/off pairs of {seconds:g} s in one process")
            windows, delivered = await in_process_windows(ctx, daemon, asl, schedule_of(pairs), seconds)
            wall = pair_ratios(windows)
            ctx.progress(f"telemetry: {asl}: on/off {median(wall):.3f} wall clock ({spread(wall, '{:.3f}')}), "
                         f"{median(pair_ratios(windows, cpu_rate)):.3f} per CPU second")
            figures.append(Figure(name=name, value=median(wall), unit="x", baseline_name=PARITY, baseline_value=1.0,
                                  notes=_notes(how, windows, delivered, pairs, seconds)))
    return figures


BENCHMARK = Benchmark(
    area="telemetry",
    figures=tuple(PLANS),
    run=run,
)
