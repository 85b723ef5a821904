"""Idle agents in a process of their own: ``python -m bench.idle_probe XMPP_PORT AGENTS SECONDS [--stock]``.

Starts AGENTS learning agents (each with the container's telemetry behaviour, records
discarded) whose plans run one episode and then have nothing left to do; the agents stay
logged in, waiting (``finish_when_idle=False``), as an agent waiting for messages does. Once
every agent has finished its episode, the process's own CPU time is measured over SECONDS of
wall time, and one JSON object is printed: ``{"cpu_percent_per_agent": ...}`` (percent of one
core). ``--stock`` uses stock spade-bdi's BDIBehaviour instead of ours.

A process of its own, so the CPU time read is the agents' and nothing else's.
"""
from __future__ import annotations

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from agents.bdi_agent import LearningAgent
from agents.config import AgentConfig
from agents.records import RecordBuffer
from agents.telemetry_behaviour import DiscardSink, TelemetryBehaviour
from bench.agent_speed import StockBdiAgent

ONE_EPISODE_ASL = "// One episode, then nothing to do: the agent waits.\n!go.\n+!go <- .rl_run_episode(epsilon).\n"
SETTLE_S = 0.5


async def idle_cpu_percent(xmpp_port: int, count: int, seconds: float, agent_class: type[LearningAgent]) -> float:
    """Percent of a core each of ``count`` idle agents uses, measured over ``seconds``."""
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as folder:
        asl = Path(folder) / "one_episode.asl"
        asl.write_text(ONE_EPISODE_ASL)
        agents = []
        for i in range(count):
            config = AgentConfig(agent_id=f"idle-{i}", run_id="bench-idle", env_id="FrozenLake-v1", asl=asl, seed=i)
            records = RecordBuffer()
            agent = agent_class(f"idle-{i}-{os.getpid()}@localhost", "bench", config, records=records,
                                port=xmpp_port, finish_when_idle=False, eval_episodes=0)
            TelemetryBehaviour(records, DiscardSink()).attach(agent)
            agents.append(agent)
        try:
            for agent in agents:
                await agent.start()
            deadline = time.monotonic() + 60
            while any(agent.episodes_done < 1 for agent in agents):
                if time.monotonic() > deadline:
                    raise TimeoutError("the idle agents did not finish their one episode within 60 s")
                await asyncio.sleep(0.05)
            await asyncio.sleep(SETTLE_S)
            wall, cpu = time.monotonic(), time.process_time()
            await asyncio.sleep(seconds)
            share = (time.process_time() - cpu) / (time.monotonic() - wall)
        finally:
            for agent in agents:
                await agent.stop()
    return 100 * share / count


def main(argv: list[str]) -> int:
    xmpp_port, count, seconds = int(argv[0]), int(argv[1]), float(argv[2])
    agent_class = StockBdiAgent if "--stock" in argv[3:] else LearningAgent
    percent = asyncio.run(idle_cpu_percent(xmpp_port, count, seconds, agent_class))
    print(json.dumps({"cpu_percent_per_agent": percent}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
