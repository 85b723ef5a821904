"""An agent container in a process of its own, measured over a window it is told:
``python -m bench.container_probe XMPP_PORT AGENTS ASL [--telemetry HOST:PORT --spool DIR]``.

Runs AGENTS learning agents (slippery FrozenLake-v1, plan library ASL from asl/, seeds 0..N-1,
episodes enough to outlast the window) through ``agents.container.run_agents``, exactly as
``python -m agents run`` does: one process, one event loop, each agent with its telemetry
behaviour; with ``--telemetry`` the records stream through one proxy session to the daemon at
that address, otherwise telemetry is off (records discarded).

Protocol (``bench.probe``): prints "ready" once every agent is learning (with ``--settle``, only
once every agent's record buffer has stopped growing: full, or drained as fast as it fills, so
that the window sees the steady state of a long run rather than a buffer still filling up),
reads one line "START END" (wall-clock epoch seconds), counts each agent's steps between START
and END, stops the agents, and prints one JSON object: ``steps_per_s`` (per agent, wall clock),
``cpu_s`` (this process's CPU seconds in the window), ``steps`` (per agent, in the window),
``buffered`` (records waiting in each agent's buffer at START and at END), ``settle_s`` and
``delivered`` (records the daemon acknowledged over the whole run; 0 with telemetry off).
"""
from __future__ import annotations

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from agents.bdi_agent import ASL_DIR, LearningAgent
from agents.config import AgentConfig, ContainerConfig, TelemetryConfig, XmppConfig
from agents.container import run_agents

RUN_ID = "bench-container"
#: More than any window can use up, so agents are still learning when it closes.
EPISODES = 10_000_000
SETTLE_STEP_S = 1.0
SETTLE_MAX_S = 30.0


def _container(xmpp_port: int, agents: int, asl: str, telemetry: str | None) -> ContainerConfig:
    xmpp = XmppConfig(host="localhost", port=xmpp_port)
    sink = (TelemetryConfig(target=telemetry, use_grpc_telemetry=True, jsonl_stdout=False) if telemetry
            else TelemetryConfig(use_grpc_telemetry=False, jsonl_stdout=False))
    configs = [AgentConfig(agent_id=f"agent-{i}", run_id=RUN_ID, env_id="FrozenLake-v1", episodes=EPISODES,
                           asl=ASL_DIR / asl, seed=i, telemetry=sink, xmpp=xmpp) for i in range(agents)]
    return ContainerConfig(run_id=RUN_ID, agents=configs, xmpp=xmpp, telemetry=sink)


async def _sleep_until(epoch_s: float) -> None:
    await asyncio.sleep(max(0.0, epoch_s - time.time()))


async def _settle(agents: list[LearningAgent]) -> float:
    """Wait until no agent's record buffer grows any more (at most SETTLE_MAX_S); the seconds waited."""
    start = time.monotonic()
    levels = [len(a.records) for a in agents]
    while time.monotonic() - start < SETTLE_MAX_S:
        await asyncio.sleep(SETTLE_STEP_S)
        now = [len(a.records) for a in agents]
        if all(n >= a.records.capacity * 0.95 or n <= before + a.records.capacity * 0.01
               for a, n, before in zip(agents, now, levels)):
            break
        levels = now
    return time.monotonic() - start


async def measure(args: argparse.Namespace) -> dict:
    started: dict[str, LearningAgent] = {}
    ready = asyncio.Event()
    stop = asyncio.Event()

    def on_started(agents: dict[str, LearningAgent]) -> None:
        started.update(agents)
        ready.set()

    run = asyncio.create_task(run_agents(
        _container(args.xmpp_port, args.agents, args.asl, args.telemetry), stop=stop, on_started=on_started,
        spool_dir=args.spool, say=lambda message: print(message, file=sys.stderr)))
    await asyncio.wait({run, asyncio.create_task(ready.wait())}, return_when=asyncio.FIRST_COMPLETED)
    if run.done():
        run.result()  # raises what stopped the container from starting
        raise RuntimeError("the container ended before its agents started")
    agents = list(started.values())
    settle_s = await _settle(agents) if args.settle else 0.0
    print("ready", flush=True)
    line = await asyncio.to_thread(sys.stdin.readline)
    start, end = map(float, line.split())
    await _sleep_until(start)
    buffered = [len(a.records) for a in agents]
    steps0 = [a.total_steps for a in agents]
    wall0, cpu0 = time.perf_counter(), time.process_time()
    await _sleep_until(end)
    steps1 = [a.total_steps for a in agents]
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    buffered_end = [len(a.records) for a in agents]
    stop.set()
    outcome = await run
    failures = [o.error for o in outcome.failures]
    if failures:
        raise RuntimeError("; ".join(failures))
    steps = [b - a for a, b in zip(steps0, steps1)]
    return {"steps_per_s": [n / wall for n in steps], "steps": steps, "cpu_s": cpu,
            "buffered": [buffered, buffered_end], "settle_s": settle_s, "delivered": outcome.telemetry.delivered}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.container_probe")
    parser.add_argument("xmpp_port", type=int)
    parser.add_argument("agents", type=int)
    parser.add_argument("asl")
    parser.add_argument("--telemetry", metavar="HOST:PORT")
    parser.add_argument("--spool", type=Path)
    parser.add_argument("--settle", action="store_true", help="wait for the record buffers to stop growing")
    result = asyncio.run(measure(parser.parse_args(argv)))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
