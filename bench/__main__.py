"""``python -m bench [--quick] [--only NAME ...] [--out PATH]``: the whole pipeline's benchmarks.

Runs every benchmark against the real components (the daemon as a subprocess over gRPC on
loopback, real SPADE agents on an embedded XMPP server), prints a table, and writes the
figures as a JSON list to ``--out`` and the machine they were measured on beside it
(``<out stem>.machine.json``). Progress goes to stderr. Only a full run (no --quick, --only or
--scale) writes the tracked reference, bench/results/latest.json, by default; any other run
writes bench/results/partial.json (untracked) unless ``--out`` says otherwise.
Exit code 0 when every selected benchmark produced its figures, 1 when one failed (the others'
figures are still written), 2 for a bad command line.
"""
from __future__ import annotations

import os

# pyjabber (the embedded XMPP server) hashes passwords in forked worker processes while gRPC
# threads run; the children never use gRPC. Must be set before gRPC is imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import argparse
import asyncio
import json
import logging
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench import agent_speed, container_scaling, idle, ingest, latency, memory, readers, telemetry_cost
from bench.context import BenchContext, Benchmark
from bench.machine import describe
from bench.report import Figure, table, write_json

BENCHMARKS: tuple[Benchmark, ...] = (
    ingest.BENCHMARK,
    latency.BENCHMARK,
    memory.BENCHMARK,
    readers.BENCHMARK,
    agent_speed.BENCHMARK,
    telemetry_cost.BENCHMARK,
    idle.BENCHMARK,
    container_scaling.BENCHMARK,
)
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "latest.json"
PARTIAL_OUT = DEFAULT_OUT.with_name("partial.json")


class _Arguments(argparse.ArgumentParser):
    """argparse whose usage errors are one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive_scale(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if not 0 < value <= 10:
        raise argparse.ArgumentTypeError(f"must be in (0, 10], got {text}")
    return value


def default_out(*, quick: bool, only: list[str] | None, scale: float) -> Path:
    """Where results go without ``--out``: quick, partial or rescaled figures must never
    replace the full run's tracked reference."""
    return DEFAULT_OUT if not quick and not only and scale == 1.0 else PARTIAL_OUT


def _parser() -> argparse.ArgumentParser:
    areas = ", ".join(b.area for b in BENCHMARKS)
    parser = _Arguments(prog="python -m bench", description=__doc__.split("\n\n")[1].replace("\n", " "))
    parser.add_argument("--quick", action="store_true", help="small sizes: the whole suite in under 3 minutes")
    parser.add_argument("--only", nargs="+", metavar="NAME",
                        help=f"run only these areas ({areas}) or figures (a figure name or a prefix of one)")
    parser.add_argument("--out", type=Path,
                        help=f"results file (default: {DEFAULT_OUT} for a full run, {PARTIAL_OUT} otherwise)")
    parser.add_argument("--scale", type=_positive_scale, default=1.0,
                        help="multiply every size by this (e.g. 0.1 with --quick to check the suite runs; "
                             "figures from tiny sizes are not meaningful)")
    return parser


async def _run_all(selected: list[Benchmark], ctx: BenchContext) -> tuple[list[Figure], list[str]]:
    figures: list[Figure] = []
    failures: list[str] = []
    try:
        for benchmark in selected:
            ctx.progress(f"{benchmark.area}: starting")
            try:
                figures += await benchmark.run(ctx)
            except Exception as err:  # one broken area must not hide the others' figures
                failures.append(f"{benchmark.area}: {type(err).__name__}: {err}")
                ctx.progress(f"{benchmark.area}: FAILED: {err}")
    finally:
        await ctx.close()
    return figures, failures


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.out is None:
        args.out = default_out(quick=args.quick, only=args.only, scale=args.scale)
    selected = list(BENCHMARKS)
    if args.only:
        unknown = [n for n in args.only if not any(b.selected_by([n]) for b in BENCHMARKS)]
        if unknown:
            known = ", ".join(b.area for b in BENCHMARKS) + "; figures: " + ", ".join(
                f for b in BENCHMARKS for f in b.figures)
            print(f"python -m bench: error: --only {' '.join(unknown)} matches no benchmark (areas: {known})",
                  file=sys.stderr)
            return 2
        selected = [b for b in BENCHMARKS if b.selected_by(args.only)]
    machine = describe()
    command = "python -m bench" + "".join(f" {shlex.quote(a)}" for a in (sys.argv[1:] if argv is None else argv))
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="mosaic-bench-"))
    # Warnings of the libraries in this process (slixmpp logs through the root logger) go to the
    # work folder with the daemons' and probes' logs, not between the progress lines.
    logging.basicConfig(filename=workdir / "bench.log", level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx = BenchContext(quick=args.quick, scale=args.scale, workdir=workdir)
    ctx.progress(f"{len(selected)} area(s) on {machine['nproc']} x {machine['cpu_model']}, "
                 f"load average {machine['load_average']}; work folder {workdir}")
    figures, failures = asyncio.run(_run_all(selected, ctx))
    logging.shutdown()
    if failures:
        ctx.progress(f"logs of the daemons, probes and this process are kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    machine["load_average_after"] = describe()["load_average"]
    machine["duration_s"] = round(time.monotonic() - started, 1)
    machine["command"] = command
    write_json(figures, args.out)
    args.out.with_name(f"{args.out.stem}.machine.json").write_text(json.dumps(machine, indent=2) + "\n")
    print(f"{command}: {machine['nproc']} x {machine['cpu_model']}, Python {machine['python']}, "
          f"commit {machine['commit']}, {machine['time']}, load average {machine['load_average']} "
          f"(after: {machine['load_average_after']}), {machine['duration_s']:g} s")
    print(table(figures))
    print(f"written to {args.out}")
    for failure in failures:
        print(f"python -m bench: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
