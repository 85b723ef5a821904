"""`python -m agents experiment FILE --out DIR [--quick]`: run an experiment (conditions x
seeds) and write DIR/results.csv, DIR/summary.md, DIR/summary.json and its plots.

Exit codes: 0 done, 1 a cell failed (the finished cells are kept: rerun to go on), 2 a bad
experiment file (the message names the key) or bad options, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from agents.experiment.runner import EMBEDDED, ExperimentRunError, run_experiment
from agents.experiment.spec import ExperimentError, load_experiment
from agents.progress import say_on_stderr

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


def add_experiment_command(commands: argparse._SubParsersAction) -> None:
    """Register `experiment FILE --out DIR` on `python -m agents`."""
    parser = commands.add_parser(
        "experiment",
        help="run a coordination experiment (conditions x seeds) and write its results",
        description="Run every cell (condition x seed) of an experiment file that has no result yet in DIR, "
        "then write DIR/results.csv, DIR/summary.md and DIR/learning_curves.png.",
    )
    configure_parser(parser)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="the experiment file (TOML), e.g. experiments/frozenlake8x8_sharing.toml")
    parser.add_argument("--out", required=True, type=Path, help="folder for the cells and the reports (reused to resume)")
    parser.add_argument("--quick", action="store_true",
                        help="run the file's [quick] sizes (fewer seeds and trials): a check of direction in minutes, not a result")
    parser.add_argument("--jobs", type=int, help="cells run in parallel processes (default: the file's jobs, else 2)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--telemetry-target", metavar="HOST:PORT", help="stream to this daemon instead of one started for the experiment")
    where.add_argument("--no-telemetry", action="store_true", help="run without telemetry")
    parser.add_argument("--log-level", default="WARNING", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.set_defaults(handler=experiment_command)


def experiment_command(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.jobs is not None and args.jobs < 1:
        say_on_stderr(f"error: --jobs must be at least 1, got {args.jobs}")
        return EXIT_BAD_INPUT
    try:
        spec = load_experiment(args.file, quick=args.quick)
    except ExperimentError as err:
        say_on_stderr(f"error: {err}")
        return EXIT_BAD_INPUT
    telemetry = None if args.no_telemetry else (args.telemetry_target or EMBEDDED)
    try:
        run = asyncio.run(run_experiment(spec, args.out, jobs=args.jobs, telemetry=telemetry, say=say_on_stderr))
    except ExperimentRunError as err:
        say_on_stderr(f"error: {err}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        say_on_stderr("interrupted: finished cells are kept in the cells folder; rerun the same command to go on")
        return 130
    print(f"{spec.name}{' (quick)' if spec.quick else ''}: {len(run.ran)} cells run, {len(run.skipped)} already done; "
          f"wrote {', '.join(str(f) for f in run.files)}")
    return 0
