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

With ``--schedule on,off,...`` (needs ``--telemetry``) the probe measures telemetry on against
off inside this one process: it prints "ready" once the agents learn, waits for one line (any)
and ``--warmup`` seconds more, then, for each mode of the schedule in turn, switches every
agent's telemetry behaviour to it and measures one window of ``--window`` seconds. "on" is the
container as started: the behaviour's sink is the session, the agent passes the session's gate
before every step. "off" is what ``use_grpc_telemetry: false`` builds: a ``DiscardSink`` and no
gate. After a switch to off the window waits until the session holds nothing (every record
accepted before is delivered), so that off does not pay for sending what on produced; before an
on window it waits until the record buffers stop growing (as ``--settle``; with telemetry off
nothing fills them). The result then has ``windows``: per window ``mode``, ``steps`` (per
agent), ``wall_s``, ``cpu_s``, ``buffered`` (at start and end, per agent), ``quiet_s`` and
``settle_s`` (the waits before it), ``load`` (1-minute load average at its end); and
``delivered``. With ``--idle-session HOST:PORT`` instead of ``--telemetry`` (telemetry off
throughout), "on" means an extra session to that daemon is open and idle
(``bench.telemetry_noise``'s idle-session study).
"""
from __future__ import annotations

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import argparse
import asyncio
import json
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.bdi_agent import ASL_DIR, LearningAgent
from agents.config import AgentConfig, ContainerConfig, TelemetryConfig, XmppConfig
from agents.container import run_agents
from agents.telemetry_behaviour import DiscardSink, TelemetryBehaviour
from telemetry.proxy import TelemetryGrpcProxy

#: Each container is a run of its own (a finished run_id is not reused): this and a suffix.
RUN_ID_PREFIX = "bench-container"
IDLE_RUN_ID = "bench-idle-session"
#: More than any window can use up, so agents are still learning when it closes.
EPISODES = 10_000_000
SETTLE_STEP_S = 1.0
SETTLE_SAMPLE_S = 0.05
#: Growth (share of the buffer's capacity per second) below which a buffer counts as settled.
SETTLE_GROWTH = 0.02
SETTLE_MAX_S = 30.0
#: How often the switch polls the telemetry behaviours' counters.
POLL_S = 0.01
QUIET_MAX_S = 60.0


def _container(xmpp_port: int, agents: int, asl: str, telemetry: str | None) -> ContainerConfig:
    xmpp = XmppConfig(host="localhost", port=xmpp_port)
    sink = (TelemetryConfig(target=telemetry, use_grpc_telemetry=True, jsonl_stdout=False) if telemetry
            else TelemetryConfig(use_grpc_telemetry=False, jsonl_stdout=False))
    run_id = f"{RUN_ID_PREFIX}-{uuid.uuid4().hex[:8]}"
    configs = [AgentConfig(agent_id=f"agent-{i}", run_id=run_id, env_id="FrozenLake-v1", episodes=EPISODES,
                           asl=ASL_DIR / asl, seed=i, telemetry=sink, xmpp=xmpp) for i in range(agents)]
    return ContainerConfig(run_id=run_id, agents=configs, xmpp=xmpp, telemetry=sink)


async def _sleep_until(epoch_s: float) -> None:
    await asyncio.sleep(max(0.0, epoch_s - time.time()))


async def _mean_levels(agents: list[LearningAgent], seconds: float) -> list[float]:
    """Each agent's mean record-buffer level over the next `seconds`, sampled every SETTLE_SAMPLE_S
    (the buffer is a sawtooth, filling between the behaviour's drains: one sample says little)."""
    end = time.monotonic() + seconds
    samples: list[list[int]] = []
    while not samples or time.monotonic() < end:
        await asyncio.sleep(SETTLE_SAMPLE_S)
        samples.append([len(a.records) for a in agents])
    return [sum(levels) / len(samples) for levels in zip(*samples)]


async def _settle(agents: list[LearningAgent]) -> float:
    """Wait until no agent's record buffer grows any more, full or not (at most SETTLE_MAX_S): its
    mean level over two successive half-steps rose by less than SETTLE_GROWTH of its capacity per
    second; the seconds waited."""
    start = time.monotonic()
    half = SETTLE_STEP_S / 2
    while time.monotonic() - start < SETTLE_MAX_S:
        first, second = await _mean_levels(agents, half), await _mean_levels(agents, half)
        if all(b >= a.records.capacity * 0.95 or b - f <= a.records.capacity * SETTLE_GROWTH * half
               for a, f, b in zip(agents, first, second)):
            break
    return time.monotonic() - start


async def _window(agents: list[LearningAgent], start: float, end: float) -> dict[str, Any]:
    """Count every agent's steps between the wall-clock epochs `start` and `end`."""
    await _sleep_until(start)
    buffered = [len(a.records) for a in agents]
    steps0 = [a.total_steps for a in agents]
    wall0, cpu0 = time.perf_counter(), time.process_time()
    await _sleep_until(end)
    steps1 = [a.total_steps for a in agents]
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"steps": [b - a for a, b in zip(steps0, steps1)], "wall_s": wall, "cpu_s": cpu,
            "buffered": [buffered, [len(a.records) for a in agents]]}


@dataclass
class _Switch:
    """One agent's telemetry, switchable between on (the container's session sink and gate, as
    started) and off (a DiscardSink and no gate, what telemetry off builds)."""
    agent: LearningAgent
    behaviour: TelemetryBehaviour
    on_sink: Any
    on_gate: Any

    @classmethod
    def of(cls, agent: LearningAgent) -> "_Switch":
        behaviour = next(b for b in agent.behaviours if isinstance(b, TelemetryBehaviour))
        return cls(agent, behaviour, behaviour.sink, behaviour.gate)

    @property
    def session(self) -> Any:
        """The telemetry session the on sink writes to."""
        return self.on_sink.session

    def set(self, on: bool) -> None:
        self.behaviour.sink = self.on_sink if on else DiscardSink()
        self.agent.set_gate(self.on_gate if on else None)

    def sent(self) -> int:
        return self.behaviour.steps_sent + self.behaviour.episodes_sent


async def _drained_twice(switches: list[_Switch]) -> None:
    """Return once every behaviour finished two drains after now: the first may have been
    under way with the sink it had before, the second began after it, so with the sink it has now."""
    seen = [[s.sent()] for s in switches]
    while any(len(values) < 3 for values in seen):
        await asyncio.sleep(POLL_S)
        for switch, values in zip(switches, seen):
            if switch.sent() != values[-1]:
                values.append(switch.sent())


async def _quiet(switches: list[_Switch]) -> float:
    """After a switch to off: wait until no behaviour writes to the session any more and the
    session has delivered everything it accepted; the seconds waited."""
    start = time.monotonic()
    await asyncio.wait_for(_drained_twice(switches), QUIET_MAX_S)
    for session in {id(s.session): s.session for s in switches}.values():
        while True:
            accepted = session.stats.accepted
            await asyncio.wait_for(session.flush(), QUIET_MAX_S)
            if session.stats.accepted == accepted and session.stats.buffered == 0:
                break
    return time.monotonic() - start


class _TelemetrySwitch:
    """Every agent's telemetry, on or off (see the module doc); `set` returns the seconds waited."""

    def __init__(self, agents: list[LearningAgent]) -> None:
        self.switches = [_Switch.of(a) for a in agents]

    async def set(self, mode: str) -> float:
        for switch in self.switches:
            switch.set(mode == "on")
        return await _quiet(self.switches) if mode == "off" else 0.0

    async def close(self) -> None:
        await self.set("on")


class _IdleSession:
    """A telemetry session of its own, open in "on" windows and closed in "off" ones, to a daemon
    at `target`, with its run registered (one episode: the control stream and heartbeats run as
    in a streaming session) and nothing streamed while open: what the telemetry switch's off
    windows keep over telemetry really off. For ``bench.telemetry_noise``'s idle-session study."""

    def __init__(self, target: str, spool: Path | None) -> None:
        self.target, self.spool = target, spool
        self.session: Any = None

    async def set(self, mode: str) -> float:
        start = time.monotonic()
        if mode == "on" and self.session is None:
            session = TelemetryGrpcProxy(self.target, spool_dir=self.spool).session(IDLE_RUN_ID)
            await session.__aenter__()
            self.session = session
            await session.emit_episode(run_id=IDLE_RUN_ID, episode_index=0, total_reward=0.0, steps=0,
                                       terminated=True, truncated=False, agent_id="idle")
            await session.flush()
        elif mode == "off":
            await self.close()
        return time.monotonic() - start

    async def close(self) -> None:
        if self.session is not None:
            session, self.session = self.session, None
            await session.__aexit__(None, None, None)


async def _alternate(agents: list[LearningAgent], schedule: list[str], seconds: float,
                     switch: _TelemetrySwitch | _IdleSession) -> list[dict[str, Any]]:
    """One window per mode of `schedule`, `switch` set to each in turn (see the module doc)."""
    windows = []
    try:
        for mode in schedule:
            quiet_s = await switch.set(mode)
            settle_s = await _settle(agents) if mode == "on" else 0.0
            start = time.time()
            window = await _window(agents, start, start + seconds)
            windows.append({"mode": mode, **window, "quiet_s": quiet_s, "settle_s": settle_s,
                            "load": os.getloadavg()[0]})
    finally:
        await switch.close()
    return windows


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
    settle_s = await _settle(agents) if args.settle and not args.schedule else 0.0
    print("ready", flush=True)
    line = await asyncio.to_thread(sys.stdin.readline)
    if args.schedule:
        await asyncio.sleep(args.warmup)  # the agent's first seconds run slower than the rest
        switch = (_IdleSession(args.idle_session, args.spool) if args.idle_session
                  else _TelemetrySwitch(agents))
        result: dict[str, Any] = {"windows": await _alternate(agents, args.schedule, args.window, switch)}
    else:
        start, end = map(float, line.split())
        window = await _window(agents, start, end)
        result = {"steps_per_s": [n / window["wall_s"] for n in window["steps"]], "steps": window["steps"],
                  "cpu_s": window["cpu_s"], "buffered": window["buffered"], "settle_s": settle_s}
    stop.set()
    outcome = await run
    failures = [o.error for o in outcome.failures]
    if failures:
        raise RuntimeError("; ".join(failures))
    return {**result, "delivered": outcome.telemetry.delivered}


def _schedule(text: str) -> list[str]:
    modes = text.split(",")
    if not modes or any(m not in ("on", "off") for m in modes):
        raise argparse.ArgumentTypeError(f"expected modes 'on' and 'off' separated by commas, got '{text}'")
    return modes


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.container_probe")
    parser.add_argument("xmpp_port", type=int)
    parser.add_argument("agents", type=int)
    parser.add_argument("asl")
    parser.add_argument("--telemetry", metavar="HOST:PORT")
    parser.add_argument("--spool", type=Path)
    parser.add_argument("--settle", action="store_true", help="wait for the record buffers to stop growing")
    parser.add_argument("--schedule", type=_schedule, metavar="MODES",
                        help="measure telemetry on/off in this process: one window per mode (needs --telemetry)")
    parser.add_argument("--window", type=float, default=3.0, help="seconds per window of --schedule")
    parser.add_argument("--warmup", type=float, default=0.0, help="seconds the agents run before --schedule starts")
    parser.add_argument("--idle-session", metavar="HOST:PORT",
                        help="with --schedule and without --telemetry: on windows hold an idle session to this daemon")
    args = parser.parse_args(argv)
    if args.schedule and not (args.telemetry or args.idle_session):
        parser.error("--schedule needs --telemetry or --idle-session")
    if args.idle_session and (args.telemetry or not args.schedule):
        parser.error("--idle-session needs --schedule and no --telemetry")
    result = asyncio.run(measure(args))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
