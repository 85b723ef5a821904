"""The experiment runner: conditions x seeds, each cell in a process of its own, resumable.

`run_experiment(spec, out_dir, ...)`:
- refuses an output folder that holds cells of a different experiment (its `experiment.json`
  records the spec's digest);
- skips the cells whose result file already exists in `out_dir/cells/` (each written
  atomically: a temporary file renamed into place), and runs the others, at most `jobs` at a
  time, one process per cell (spawned fresh, never forked from a process running gRPC; each
  dies with the runner, so a killed runner leaves no half-finished cell running on). A cell
  that fails is reported with its reason; the others still run, and a rerun retries it;
- starts the telemetry daemon in this process with its SQLite store in `out_dir` (unless told
  to use another daemon, or none), so every cell streams to it;
- prints progress (each cell's start and end, and periodic episode counts from the cells) and
  appends the same to `out_dir/run.log`;
- aggregates every cell file into results.csv, summary.md, summary.json and plots: Tan's
  measures for an experiment of Tan conditions (agents.experiment.tan_report), otherwise
  learning to a threshold (agents.experiment.report).
"""

from __future__ import annotations

import asyncio
import contextlib
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
from agents.experiment.tan_report import write_tan_reports

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
    files: list[Path]


def _die_with_parent() -> None:
    """In a cell process: make it the leader of a process group of its own (any process it
    starts joins it), have Linux send it SIGTERM when the runner dies (PR_SET_PDEATHSIG), and
    answer SIGTERM by killing the whole group, so a killed runner leaves nothing running. Ctrl-C
    is left to the runner, which kills its cells' groups itself."""
    os.setpgrp()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: os.killpg(0, signal.SIGKILL))
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the runner died before prctl took effect
        os.killpg(0, signal.SIGKILL)


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


def _cell_main(task: CellTask, cells_dir: str) -> None:
    """Cell process entry: run the cell; on failure leave the reason in a file for the runner."""
    _die_with_parent()
    try:
        run_cell_process(task, cells_dir)
    except Exception as err:  # noqa: BLE001 - reported by the runner, naming the cell
        reason = str(err) if isinstance(err, CellError) else f"{type(err).__name__}: {err}"
        _error_file(cells_dir, task).write_text(reason, encoding="utf-8")
        sys.exit(1)


def _error_file(cells_dir: str | Path, task: CellTask) -> Path:
    return Path(cells_dir) / f".{task.file_name}.error"


async def _run_process(process: multiprocessing.process.BaseProcess) -> int:
    """Start `process` and wait for its end without a thread (its sentinel becomes readable);
    killed if the wait is cancelled (the runner interrupted)."""
    loop = asyncio.get_running_loop()
    process.start()
    ended = loop.create_future()
    loop.add_reader(process.sentinel, lambda: ended.done() or ended.set_result(None))
    try:
        await ended
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the cell and the processes it started
        raise
    finally:
        loop.remove_reader(process.sentinel)
        process.join(5)
    return process.exitcode


async def _run_cells(tasks: list[CellTask], cells_dir: Path, jobs: int, say: Callable[[str], None]) -> tuple[list[str], list[str]]:
    """Run every task, at most `jobs` at a time, one process each (pyjabber and SPADE's container
    are process-wide singletons bound to their first event loop). Returns (done, failures)."""
    # Spawned, never forked from this process, which runs gRPC. Not daemonic: a daemonic
    # process may not start processes, and pyjabber's default password hashing does.
    context = multiprocessing.get_context("spawn")
    slots = asyncio.Semaphore(jobs)
    done: list[str] = []
    failures: list[str] = []
    total = len(tasks)

    async def run_one(task: CellTask) -> None:
        async with slots:
            say(f"cell {task.label}: started")
            _error_file(cells_dir, task).unlink(missing_ok=True)
            process = context.Process(target=_cell_main, args=(task, str(cells_dir)), name=f"cell {task.label}")
            code = await _run_process(process)
            if code != 0:
                error = _error_file(cells_dir, task)
                reason = error.read_text(encoding="utf-8") if error.exists() else f"its process ended with exit code {code}"
                failures.append(f"{task.label}: {reason}")
                say(f"cell {task.label}: FAILED: {reason}")
                return
            result = json.loads((cells_dir / task.file_name).read_text(encoding="utf-8"))
            done.append(task.label)
            say(f"[{len(done)}/{total}] {task.label} done in {result['elapsed_s']:.0f}s: " + _cell_line(result))

    say(f"running {total} cells in up to {jobs} processes")
    await asyncio.gather(*(run_one(task) for task in tasks))
    return done, failures


def _cell_line(result: dict) -> str:
    tan = result.get("tan")
    if tan:
        m = tan["metrics"]
        test = "-" if m["test"] is None else f"{m['test']:.1f}"
        return (f"steps per trial early {m['early']:.1f}, late {m['late']:.1f}, test {test} "
                f"({m['training_censored']} training and {m['test_censored']} test trials cut off); "
                f"{tan['messages']['coordination']['count']} coordination messages")
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
        ran, failures = await _run_cells(pending, cells_dir, jobs or spec.jobs, tell) if pending else ([], [])
        if any(c.tan for c in spec.conditions):
            files = write_tan_reports(spec, out_dir)
        else:
            files = write_reports(spec, out_dir, store_path=db_path)
        tell("wrote " + ", ".join(str(f) for f in files))
        if failures:
            raise ExperimentRunError(
                f"{len(failures)} cell(s) failed ({'; '.join(failures)}); the {len(ran) + len(skipped)} finished cells are kept "
                f"in {cells_dir}: rerun the same command to run the rest"
            )
        return ExperimentRun(ran, [t.label for t in skipped], out_dir, db_path, files)
    finally:
        if daemon is not None:
            await daemon.stop()
        log_file.close()
