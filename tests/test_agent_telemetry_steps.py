"""What telemetry asks of an agent's steps, on real agents: an open gate is passed without a
deferred coroutine per step, a closed one holds the agent (a RunFlow, and a real daemon's pause
and step credits), and the render hint travels once per episode yet every replay still has it."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from agents.actions import Gate
from agents.bdi_agent import ASL_DIR, LearningAgent
from agents.config import AgentConfig, parse_container_config
from agents.container import run_agents, with_overrides
from agents.qlearning import Hyperparameters
from agents.records import RecordBuffer
from telemetry.flow import RunFlow
from telemetry.generated.trainer_pb2 import ControlEvent
from tests.fixtures_proxy import Operator
from tests.waiting import wait_for, wait_until_still

QUICK = Hyperparameters(alpha=0.5, gamma=0.95, epsilon_start=1.0, epsilon_min=0.05, epsilon_decay=0.98)
PLANS = {"step by step": "learner.asl", "an episode per action": "learner_fast.asl"}
CREDITS = 10**6


def learner(jid: str, port: int, asl: str, flow: RunFlow, records: RecordBuffer, episodes: int) -> LearningAgent:
    config = AgentConfig(agent_id="gated", run_id=flow.run_id, env_id="FrozenLake-v1", env_kwargs={"is_slippery": False},
                         episodes=episodes, hyperparameters=QUICK, seed=4)
    return LearningAgent(jid, "pw", config, asl_path=ASL_DIR / asl, records=records, port=port,
                         gate=Gate.of_session(flow), eval_episodes=0)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("asl", PLANS.values(), ids=PLANS.keys())
async def test_an_open_gate_is_passed_at_every_step_without_deferring_one(xmpp_server, unique_jid, asl):
    flow = RunFlow("open-gate")
    flow.apply(ControlEvent(run_id="open-gate", grant_steps=CREDITS))   # credit mode: every pass is counted
    records = RecordBuffer(capacity=1_000_000)   # never full: a full buffer defers too
    agent = learner(unique_jid("open"), xmpp_server.client_port, asl, flow, records, episodes=40)
    await agent.start()
    try:
        result = await agent.finished(30)
    finally:
        await agent.stop()
    assert result.ok and result.steps > 40
    assert flow.snapshot().credits == {"": CREDITS - result.steps}, "one credit per step"
    assert agent.bdi.deferrals == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("asl", PLANS.values(), ids=PLANS.keys())
async def test_a_closed_gate_holds_the_agent_until_it_opens(xmpp_server, unique_jid, asl):
    flow = RunFlow("closed-gate")
    flow.apply(ControlEvent(run_id="closed-gate", pause=True))
    records = RecordBuffer(capacity=1_000_000)
    agent = learner(unique_jid("closed"), xmpp_server.client_port, asl, flow, records, episodes=40)
    await agent.start()
    try:
        await wait_for(lambda: agent.bdi.deferrals == 1, "the first step to wait at the gate")
        for _ in range(20):
            await asyncio.sleep(0)
        assert agent.total_steps == 0 and agent.learning.in_episode
        flow.apply(ControlEvent(run_id="closed-gate", resume=True))
        result = await agent.finished(30)
    finally:
        await agent.stop()
    assert result.ok and result.episodes == 40
    assert agent.bdi.deferrals == 1, "once open, no step waits again"
    steps = records.drain().steps
    assert len(steps) == result.steps


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_daemons_pause_and_credits_hold_both_kinds_of_agent_to_the_step(agents_xmpp, daemon, tmp_path):
    config = with_overrides(parse_container_config({
        "run_id": "credit-test",
        "telemetry": {"target": daemon.address},
        "agent_defaults": {"env_id": "FrozenLake-v1", "episodes": 10_000_000},
        "agents": [{"agent_id": "stepper", "asl": str(ASL_DIR / "learner.asl")},
                   {"agent_id": "sprinter", "asl": str(ASL_DIR / "learner_fast.asl")}],
    }), xmpp_port=agents_xmpp.client_port)
    grants = {"stepper": 37, "sprinter": 173}
    stop = asyncio.Event()
    agents: dict[str, LearningAgent] = {}
    container = asyncio.create_task(run_agents(config, stop=stop, on_started=agents.update, spool_dir=tmp_path / "spool"))
    try:
        await wait_for(lambda: len(agents) == 2 and all(a.total_steps > 200 for a in agents.values()),
                       "the agents to learn")
        async with Operator(daemon.address, "credit-test") as operator:
            await operator.send(pause=True)
            held = {name: await wait_until_still(lambda a=a: a.total_steps, f"{name} to stop stepping")
                    for name, a in agents.items()}
            for name, steps in grants.items():
                await operator.send(grant_steps=steps, agent_id=name)
            await operator.send(resume=True)
            for name, a in agents.items():
                spent = await wait_until_still(lambda a=a: a.total_steps, f"{name} to spend its credits")
                assert spent == held[name] + grants[name], name
    finally:
        stop.set()
        run = await asyncio.wait_for(container, 60)
    assert [o.result.stop_reason for o in run.outcomes] == ["interrupted", "interrupted"]


@pytest.mark.timeout(120)
async def test_the_render_hint_comes_once_per_episode_and_replay_still_has_it(agents_xmpp, dashboard_daemon, tmp_path):
    env = dashboard_daemon
    config = with_overrides(parse_container_config({
        "run_id": "hint-test",
        "telemetry": {"target": env.daemon.address},
        "agent_defaults": {"env_id": "FrozenLake-v1", "episodes": 30},
        "agents": [{"agent_id": "hinted", "asl": str(ASL_DIR / "learner.asl")}],
    }), xmpp_port=agents_xmpp.client_port)
    run = await asyncio.wait_for(run_agents(config, spool_dir=tmp_path / "spool"), 90)
    assert run.ok, run.failures
    async with aiohttp.ClientSession() as http:
        for episode in (0, 17, 29):
            async with http.get(f"{env.url}/api/runs/hint-test/replay",
                                params={"agent_id": "hinted", "episode": str(episode)}) as api:
                body = await api.json()
            rows = body["steps"]
            assert rows and [row["step"] for row in rows] == list(range(len(rows)))
            assert [row["render_hint"] is not None for row in rows] == [True] + [False] * (len(rows) - 1)
            assert body["render_hint"]["kind"] == "grid"
            assert body["render_hint"] == rows[0]["render_hint"]
