"""The experiment runner: conditions x seeds, each cell in a process of its own, resumable.

`run_experiment(spec, out_dir, ...)`:
- refuses an output folder that holds cells of a different experiment (its `experiment.json`
  records the spec's digest);
- skips the cells whose result file already exists in `out_dir/cells/` (each written
  atomically: a temporary file renamed into place), and runs the others in at most `jobs`
  worker processes, one cell per process (spawned fresh, never forked from a process running
  gRPC; each dies with the runner, so a killed runner leaves no half-finished cell running on);
- starts the telemetry daemon in this process with its SQLite store in `out_dir` (unless told
  to use another daemon, or none), so every cell streams to it;
- prints progress (each cell's start and end, and periodic episode counts from the cells) and
  appends the same to `out_dir/run.log`;
- aggregates every cell file into results.csv, summary.md and learning_curves.png
  (agents.experiment.report).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import json
import logging
import multiprocessing
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from agents.experiment.cell import CellError, CellTask, run_cell
from agents.experiment.report import write_reports
from agents.experiment.spec import ExperimentSpec

logger = logging.getLogger(__name__)

CELLS_DIR = "cells"
DB_NAME = "telemetry.db"
RUN_LOG = "run.log"
EMBEDDED = "embedded"


class ExperimentRunError(RuntimeError):
    """The experiment could not run or finish (a cell failed, the folder holds another experiment)."""


@dataclass(frozen=True)
class ExperimentRun:
    """What `run_experiment` did: cells run now, cells already done, and the files written."""

    ran: list[str]
    skipped: list[str]
    out_dir: Path
    telemetry_db: Optional[Path]


def _die_with_parent() -> None:
    """Worker initializer: ask Linux to kill this process when the runner dies (PR_SET_PDEATHSIG),
    and leave Ctrl-C to the runner, which stops the pool."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the runner died before prctl took effect
            os._exit(1)


def _say_in_cell(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class _StanzaNoise(logging.Filter):
    """slixmpp warns "Unknown stanza interface" (through the root logger) for every presence
    stanza SPADE builds when agents stop; it says nothing about the experiment."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Unknown stanza interface")


def run_cell_process(task: CellTask, cells_dir: str) -> str:
    """Worker entry: run one cell and write its result file atomically; returns the file path."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_StanzaNoise())
    result = asyncio.run(run_cell(task, say=_say_in_cell))
    path = Path(cells_dir) / task.file_name
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(result), encoding="utf-8")
    os.replace(partial, path)
    return str(path)


def _check_folder(spec: ExperimentSpec, out_dir: Path) -> None:
    marker = out_dir / "experiment.json"
    identity = {"name": spec.name, "digest": spec.digest(), "source": spec.source}
    if marker.exists():
        recorded = json.loads(marker.read_text(encoding="utf-8"))
        if recorded.get("digest") != identity["digest"]:
            raise ExperimentRunError(
                f"{out_dir} holds cells of another experiment ({recorded.get('name')} from {recorded.get('source')}, "
                f"digest {recorded.get('digest')}); {spec.source} now has digest {identity['digest']}. "
                f"Use another --out folder, or delete {out_dir} to start over."
            )
        return
    marker.write_text(json.dumps(identity, indent=2) + "\n", encoding="utf-8")


async def _run_cells(
    spec: ExperimentSpec, tasks: list[CellTask], cells_dir: Path, jobs: int, say: Callable[[str], None]
) -> list[str]:
    loop = asyncio.get_running_loop()
    context = multiprocessing.get_context("spawn")
    done: list[str] = []
    total = len(tasks)
    # One cell per process: pyjabber and SPADE's container are process-wide singletons bound to
    # the event loop of their first use, and every cell runs in a loop of its own.
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_die_with_parent, max_tasks_per_child=1)
    with pool:
        started = {}
        futures = {}
        for task in tasks:
            futures[loop.run_in_executor(pool, run_cell_process, task, str(cells_dir))] = task
            started[task.label] = time.monotonic()
        say(f"running {total} cells in up to {jobs} processes")
        try:
            for future in asyncio.as_completed(list(futures)):
                try:
                    path = await future
                except CellError as err:
                    raise ExperimentRunError(f"cell failed: {err}") from None
                except concurrent.futures.process.BrokenProcessPool as err:
                    raise ExperimentRunError(f"a cell process died: {err}") from None
                result = json.loads(Path(path).read_text(encoding="utf-8"))
                label = f"{result['condition']} seed {result['seed']}"
                done.append(label)
                say(f"[{len(done)}/{total}] {label} done in {result['elapsed_s']:.0f}s: " + _cell_line(result))
        except BaseException:
            for future in futures:
                future.cancel()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return done


def _cell_line(result: dict) -> str:
    parts = []
    for agent in result["agents"]:
        reached = agent["episodes_to_threshold"]
        success = agent["final_greedy_success"]
        parts.append(
            f"{agent['agent_id']} threshold at {reached if reached is not None else '-'} episodes, "
            f"final success {success if success is not None else float('nan'):.2f}, {agent['messages_sent']} messages sent"
        )
    return "; ".join(parts)


async def run_experiment(
    spec: ExperimentSpec,
    out_dir: Path,
    *,
    jobs: Optional[int] = None,
    telemetry: Optional[str] = EMBEDDED,
    say: Callable[[str], None] = logger.info,
) -> ExperimentRun:
    """Run what is left of the experiment and write its reports (see the module docstring).

    `telemetry`: EMBEDDED (a daemon in this process, store out_dir/telemetry.db), a daemon
    address "host:port", or None (no telemetry). Raises ExperimentRunError.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    cells_dir = out_dir / CELLS_DIR
    cells_dir.mkdir(exist_ok=True)
    _check_folder(spec, out_dir)
    log_file = open(out_dir / RUN_LOG, "a", encoding="utf-8")

    def tell(message: str) -> None:
        say(message)
        log_file.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {message}\n")
        log_file.flush()

    daemon = None
    db_path: Optional[Path] = None
    try:
        target = telemetry
        if telemetry == EMBEDDED:
            from telemetry.daemon import DaemonStartError, serve

            db_path = out_dir / DB_NAME
            try:
                daemon = await serve("127.0.0.1:0", db_path)
            except DaemonStartError as err:
                raise ExperimentRunError(f"the experiment's telemetry daemon cannot start: {err}") from None
            target = daemon.address
            tell(f"telemetry: daemon at {target}, store {db_path}")
        spool = str(out_dir / "spool") if target is not None else None
        pending, skipped = [], []
        for condition, seed in spec.cells():
            task = CellTask(spec, condition, seed, target, spool)
            (skipped if (cells_dir / task.file_name).exists() else pending).append(task)
        if skipped:
            tell(f"skipping {len(skipped)} finished cells: " + ", ".join(t.label for t in skipped))
        for task in pending:
            tell(f"cell {task.label}: queued")
        ran = await _run_cells(spec, pending, cells_dir, jobs or spec.jobs, tell) if pending else []
        files = write_reports(spec, out_dir, store_path=db_path)
        tell("wrote " + ", ".join(str(f) for f in files))
        return ExperimentRun(ran, [t.label for t in skipped], out_dir, db_path)
    finally:
        if daemon is not None:
            await daemon.stop()
        log_file.close()
