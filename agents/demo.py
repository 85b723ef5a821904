"""`python -m agents demo` (and `make demo`): the whole system on embedded defaults, in one command.

It starts an XMPP server in this process on a free port and the telemetry daemon in this
process (on 127.0.0.1:50055 when that port is free, so `python -m telemetry tail` works from
another terminal without --target; on a free port otherwise) with its SQLite store under
./runs/ and its web dashboard (on 127.0.0.1:50056 when free). Three agents with their own agent_ids learn FrozenLake 4x4 in one container: one
taking every step through its AgentSpeak reasoning cycle, one running whole episodes in a
plan action, both on the non-slippery lake, and one on the slippery lake. Progress shows while
they learn; at the end come the per-agent summary, what the daemon stored for each agent, and
how to look at it. The daemon and its dashboard then stay up until Ctrl-C (``--exit-when-done``
ends the demo with its agents instead). The commands it prints name this interpreter (the
project's virtualenv when run by ``make demo``), so they work as printed from the project folder.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import socket
import sys
import time
from pathlib import Path
from typing import IO, Optional

from agents.bdi_agent import ASL_DIR
from agents.config import ContainerConfig, parse_container_config
from agents.container import EXIT_FAILED, ContainerRun, run_process, run_with_report, with_overrides
from agents.progress import say_on_stderr
from telemetry.daemon import DEFAULT_LISTEN, DaemonStartError, serve
from telemetry.dashboard import DEFAULT_PORT as DASHBOARD_PORT
from telemetry.store import TelemetryStore

DEFAULT_RUNS_DIR = Path("runs")
DB_NAME = "telemetry.db"

# Non-slippery 4x4 is learned in a few hundred episodes with a fast epsilon decay; the slippery
# lake needs a few thousand with the default (slow) decay, in the episode-level plans for speed.
_QUICK = {"alpha": 0.5, "gamma": 0.95, "epsilon_start": 1.0, "epsilon_min": 0.05, "epsilon_decay": 0.98}
_SLIPPERY = {"alpha": 0.1, "gamma": 0.99, "epsilon_start": 1.0, "epsilon_min": 0.01, "epsilon_decay": 0.999}


def demo_config(run_id: str, telemetry_target: str) -> ContainerConfig:
    """The demo's three agents, validated like any config file."""
    return parse_container_config(
        {
            "run_id": run_id,
            "xmpp": {"embedded": True},
            "telemetry": {"target": telemetry_target},
            "agent_defaults": {"env_id": "FrozenLake-v1"},
            "agents": [
                {
                    "agent_id": "stepper",
                    "env_kwargs": {"is_slippery": False},
                    "episodes": 300,
                    "hyperparameters": _QUICK,
                    "asl": str(ASL_DIR / "learner.asl"),
                    "seed": 1,
                },
                {
                    "agent_id": "sprinter",
                    "env_kwargs": {"is_slippery": False},
                    "episodes": 300,
                    "hyperparameters": _QUICK,
                    "asl": str(ASL_DIR / "learner_fast.asl"),
                    "seed": 2,
                },
                {
                    "agent_id": "slippery",
                    "env_kwargs": {"is_slippery": True},
                    "episodes": 4000,
                    "hyperparameters": _SLIPPERY,
                    "asl": str(ASL_DIR / "learner_fast.asl"),
                    "seed": 1,
                },
            ],
        }
    )


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def default_listen() -> str:
    """127.0.0.1:50055 (the address every tool defaults to) when free, else a free port."""
    host, port = DEFAULT_LISTEN.rsplit(":", 1)
    return DEFAULT_LISTEN if _port_free(host, int(port)) else f"{host}:0"


def default_dashboard_port() -> int:
    """The dashboard's usual port when free, else a free one."""
    return DASHBOARD_PORT if _port_free("127.0.0.1", DASHBOARD_PORT) else 0


def python_command() -> str:
    """How to name this interpreter in a command people copy: relative to the current folder
    when inside it (``.venv/bin/python``), else its full path."""
    executable = Path(sys.executable)
    try:
        return str(executable.relative_to(Path.cwd()))
    except ValueError:
        return str(executable)


def where_to_look(run: ContainerRun, *, db_path: Path, daemon_address: str, stored: dict[str, tuple[int, int]], dashboard_url: Optional[str], kept: bool) -> str:
    """The closing text: what the daemon stored per agent and the commands to browse it."""
    db = str(db_path)
    python = python_command()
    target = "" if daemon_address == DEFAULT_LISTEN else f" --target {daemon_address}"
    lines = [f"the daemon at {daemon_address} stored run {run.run_id} in {db}:"]
    lines += [f"  {agent_id}: {steps} steps, {episodes} episodes" for agent_id, (steps, episodes) in stored.items()]
    lines.append("look at it with:")
    lines.append(f"  {python} -m telemetry runs --db {db}")
    lines.append(f"  {python} -m telemetry export {run.run_id} --db {db} --format csv --out {run.run_id}.csv")
    if kept:
        lines.append(f"  {python} -m telemetry tail {run.run_id}{target}")
        if dashboard_url:
            lines.append(f"  the dashboard: {dashboard_url}")
        lines.append("the daemon and its dashboard keep running until Ctrl-C")
    else:
        lines.append(f"  {python} -m telemetry.daemon --db {db}   (serves it again, with its dashboard), then:")
        lines.append(f"  {python} -m telemetry tail {run.run_id}")
    return "\n".join(lines)


def stored_counts(store: TelemetryStore, run_id: str, agent_ids: list[str]) -> dict[str, tuple[int, int]]:
    """(steps, episodes) the store holds for each agent of the run."""
    counts = {}
    for agent_id in agent_ids:
        totals = []
        for read in (store.read_steps, store.read_episodes):
            total, since = 0, 0
            while page := read(run_id, since_seq=since, agent_id=agent_id, limit=50_000):
                total += len(page)
                since = page[-1].seq_id
            totals.append(total)
        counts[agent_id] = (totals[0], totals[1])
    return counts


async def run_demo(
    stop: asyncio.Event,
    *,
    runs_dir: Path = DEFAULT_RUNS_DIR,
    keep_daemon: bool = False,
    listen: Optional[str] = None,
    dashboard_port: Optional[int] = None,
    dashboard: bool = True,
    stream: IO[str] = sys.stdout,
) -> int:
    """Run the demo; the exit code (0 when every agent finished). `listen` (default
    `default_listen()`) and `dashboard_port` (default `default_dashboard_port()`) place the
    daemon; `keep_daemon` keeps it (and its dashboard) serving after the agents finish, until
    `stop` is set."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    db_path = runs_dir / DB_NAME
    if dashboard and dashboard_port is None:
        dashboard_port = default_dashboard_port()
    try:
        daemon = await serve(listen or default_listen(), db_path, dashboard_port=dashboard_port if dashboard else None)
    except DaemonStartError as err:
        say_on_stderr(f"error: the demo's telemetry daemon cannot start: {err}")
        return EXIT_FAILED
    try:
        run_id = f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
        container = with_overrides(demo_config(run_id, daemon.address), xmpp_port=0)
        dashboard_url = daemon.dashboard.url if daemon.dashboard is not None else None
        print(
            f"demo run {run_id}: {len(container.agents)} agents learning FrozenLake 4x4; telemetry to the daemon at "
            f"{daemon.address} (store {db_path})" + (f"; watch live at {dashboard_url}" if dashboard_url else ""),
            file=stream,
            flush=True,
        )
        finished: list[ContainerRun] = []
        code = await run_with_report(container, stop, stream=stream, after=finished.append)
        if finished:
            run = finished[0]
            stored = stored_counts(daemon.store, run_id, [a.agent_id for a in container.agents])
            keep = keep_daemon and not stop.is_set()
            text = where_to_look(run, db_path=db_path, daemon_address=daemon.address, stored=stored, dashboard_url=dashboard_url, kept=keep)
            print(text, file=stream, flush=True)
            if keep:
                await stop.wait()
        return code
    finally:
        await daemon.stop()


def add_demo_command(commands: argparse._SubParsersAction) -> None:
    """Register `demo` on `python -m agents`."""
    parser = commands.add_parser(
        "demo",
        help="three agents learning FrozenLake with an embedded XMPP server and telemetry daemon",
        description="Run three learning agents on embedded defaults and show where their telemetry went.",
    )
    parser.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR, help=f"where the SQLite store goes (default ./{DEFAULT_RUNS_DIR})")
    parser.add_argument("--exit-when-done", action="store_true",
                        help="stop the daemon and its dashboard when the agents finish (default: they keep running until Ctrl-C)")
    parser.add_argument("--listen", metavar="HOST:PORT", help=f"the daemon's address (default {DEFAULT_LISTEN} when free, else a free port)")
    parser.add_argument("--dashboard-port", type=int, metavar="PORT", help=f"the dashboard's port (default {DASHBOARD_PORT} when free, else a free one)")
    parser.add_argument("--no-dashboard", action="store_true", help="do not serve the daemon's web dashboard")
    parser.add_argument("--log-level", default="WARNING", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.set_defaults(handler=_demo_command)


def _demo_command(args: argparse.Namespace) -> int:
    demo = functools.partial(
        run_demo,
        runs_dir=args.runs_dir,
        keep_daemon=not args.exit_when_done,
        listen=args.listen,
        dashboard_port=args.dashboard_port,
        dashboard=not args.no_dashboard,
    )
    return run_process(demo, log_level=args.log_level)
