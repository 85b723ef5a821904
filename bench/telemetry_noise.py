"""How precise the telemetry-cost benchmark is: its noise floor, measured (not part of the suite).

``python -m bench.telemetry_noise DESIGN [--asl learner_fast.asl] [--pairs N] [--seconds S]
[--aa off|on] [--hash-seed SEED|random] [--out PATH]``

Runs `bench.telemetry_cost`'s pairs the way DESIGN takes them, and prints every pair's ratio,
their median and range:

- ``cross``: each window a container process of its own (the benchmark's first design);
- ``inproc``: every window in one container process, telemetry switched per window (the
  benchmark's design now);
- ``idle-session``: one container process with telemetry off throughout; "on" windows hold an
  extra telemetry session open to the daemon, idle (run registered, nothing streamed), "off"
  windows have none: what the in-process design's off windows, whose session stays open, pay
  over telemetry really off.

With ``--aa off`` (or ``on``) both windows of a pair are off (on): an A/A run, whose ratios
spread by noise alone, the floor under any on/off figure of the same design. Labels follow the pairs' order
(on-off, off-on, ...), so an A/A run pairs exactly like an on/off run.
"""
from __future__ import annotations

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.context import BenchContext, median, spread
from bench.daemon_process import DaemonProcess
from bench.telemetry_cost import (
    HASH_SEED,
    cpu_rate,
    cross_process_window,
    in_process_windows,
    pair_ratios,
    schedule_of,
    wall_rate,
)


async def _windows(ctx: BenchContext, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The run's windows, in `pair_orders` order."""
    labels = schedule_of(args.pairs)
    with DaemonProcess(ctx.workdir, "telemetry-noise") as daemon:
        if args.design in ("inproc", "idle-session"):
            modes = [args.aa] * len(labels) if args.aa else labels
            windows, _ = await in_process_windows(ctx, daemon, args.asl, modes, args.seconds, args.hash_seed,
                                                  idle_session=args.design == "idle-session")
            return windows
        windows = []
        for i, label in enumerate(labels):
            ctx.progress(f"window {i + 1}/{len(labels)}: {label}")
            windows.append(await cross_process_window(ctx, daemon, args.asl, args.aa or label, args.seconds,
                                                      args.hash_seed))
        return windows


def summary(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """Pair ratios (wall clock and per CPU second) with their median, range and deviation."""
    out: dict[str, Any] = {}
    for key, rate in (("wall", wall_rate), ("cpu", cpu_rate)):
        ratios = pair_ratios(windows, rate)
        out[key] = {"ratios": ratios, "median": median(ratios), "min": min(ratios), "max": max(ratios),
                    "stdev": statistics.stdev(ratios) if len(ratios) > 1 else 0.0}
    labels = schedule_of(len(windows) // 2)
    out["rates"] = {label: [wall_rate(w) for w, mine in zip(windows, labels) if mine == label]
                    for label in ("on", "off")}
    out["loads"] = [w["load"] for w in windows]
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.telemetry_noise")
    parser.add_argument("design", choices=("cross", "inproc", "idle-session"))
    parser.add_argument("--asl", default="learner_fast.asl")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--aa", choices=("off", "on"), help="an A/A run: both windows of every pair in this mode")
    parser.add_argument("--hash-seed", default=HASH_SEED, help="PYTHONHASHSEED of the probes ('random': unset)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.hash_seed == "random":
        args.hash_seed = None
    workdir = Path(tempfile.mkdtemp(prefix="mosaic-noise-"))
    ctx = BenchContext(quick=False, scale=1.0, workdir=workdir)

    async def go() -> list[dict[str, Any]]:
        try:
            return await _windows(ctx, args)
        finally:
            await ctx.close()

    windows = asyncio.run(go())
    shutil.rmtree(workdir, ignore_errors=True)
    result = {"design": args.design, "asl": args.asl, "aa": args.aa, "hash_seed": args.hash_seed,
              "pairs": args.pairs, "seconds": args.seconds, **summary(windows), "windows": windows}
    wall, cpu = result["wall"], result["cpu"]
    print(f"{args.design} {f'A/A {args.aa}' if args.aa else 'on/off'} {args.asl} seed={args.hash_seed}: "
          f"wall median {wall['median']:.3f} range {wall['min']:.3f}-{wall['max']:.3f} sd {wall['stdev']:.3f} "
          f"({spread(wall['ratios'], '{:.3f}')}); cpu median {cpu['median']:.3f} range {cpu['min']:.3f}-"
          f"{cpu['max']:.3f} sd {cpu['stdev']:.3f}; rates on {spread(result['rates']['on'])} off "
          f"{spread(result['rates']['off'])}; load {min(result['loads']):.2f}-{max(result['loads']):.2f}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
