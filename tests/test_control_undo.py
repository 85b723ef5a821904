"""Every control hold has an inverse that works, on a real daemon and a real agent, and a held
run says what holds it: grant then --unlimited, pause then resume, cap then uncap; the CLI's
own flags do the same."""

from __future__ import annotations

import asyncio

import pytest

from agents.bdi_agent import ASL_DIR, LearningAgent
from agents.config import parse_container_config
from agents.container import run_agents, with_overrides
from telemetry.daemon import run_record
from telemetry.flow import RunFlow
from telemetry.generated.trainer_pb2 import ControlEvent
from tests.fixtures_proxy import Operator
from tests.waiting import wait_for, wait_until_still


def hold(daemon, run_id: str) -> str:
    """What the run list says holds the run (RunRecord.control_hold)."""
    return run_record(daemon.registry.get(run_id)).control_hold


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_grant_pause_and_cap_each_undone_and_shown_while_they_hold(agents_xmpp, daemon, tmp_path):
    config = with_overrides(parse_container_config({
        "run_id": "undo-test",
        "telemetry": {"target": daemon.address},
        "agent_defaults": {"env_id": "FrozenLake-v1", "episodes": 10_000_000},
        "agents": [{"agent_id": "runner", "asl": str(ASL_DIR / "learner_fast.asl")}],
    }), xmpp_port=agents_xmpp.client_port)
    stop = asyncio.Event()
    agents: dict[str, LearningAgent] = {}
    container = asyncio.create_task(run_agents(config, stop=stop, on_started=agents.update, spool_dir=tmp_path / "spool"))
    try:
        await wait_for(lambda: "runner" in agents and agents["runner"].total_steps > 200, "the agent to learn")
        agent = agents["runner"]
        assert hold(daemon, "undo-test") == ""
        async with Operator(daemon.address, "undo-test") as operator:
            await operator.send(pause=True)
            paused_at = await wait_until_still(lambda: agent.total_steps, "the pause to hold")
            assert "paused (lift: --resume)" in hold(daemon, "undo-test")
            await operator.send(grant_steps=10)
            assert "step credits: 10 granted" in hold(daemon, "undo-test")
            await operator.send(resume=True)
            spent = await wait_until_still(lambda: agent.total_steps, "the credits to run out")
            assert spent == paused_at + 10, "ten credits, ten steps"
            # --resume lifts a pause, not credit mode: the run still waits for credits.
            assert "step credits" in hold(daemon, "undo-test") and "paused" not in hold(daemon, "undo-test")

            await operator.send(unlimited_steps=True)
            await wait_for(lambda: agent.total_steps > spent + 1000, "the agent to step freely again")
            assert hold(daemon, "undo-test") == ""

            await operator.send(max_rate_hz=2)
            assert "rate cap 2 Hz (lift: --rate 0)" in hold(daemon, "undo-test")
            capped_at = agent.total_steps
            await operator.send(max_rate_hz=0)
            await wait_for(lambda: agent.total_steps > capped_at + 1000, "the agent to run uncapped")
            assert hold(daemon, "undo-test") == ""
    finally:
        stop.set()
        run = await asyncio.wait_for(container, 60)
    assert [o.result.stop_reason for o in run.outcomes] == ["interrupted"]


def test_unlimited_ends_credit_mode_for_the_run_or_one_agent():
    flow = RunFlow("r")
    flow.apply(ControlEvent(run_id="r", grant_steps=1))
    flow.apply(ControlEvent(run_id="r", agent_id="a", grant_steps=1))
    assert flow.try_acquire("a") and not flow.try_acquire("a")
    flow.apply(ControlEvent(run_id="r", agent_id="a", unlimited_steps=True))
    assert flow.try_acquire("a") and not flow.try_acquire("a"), "a now spends the run-wide pool"
    flow.apply(ControlEvent(run_id="r", unlimited_steps=True))
    assert all(flow.try_acquire(agent) for agent in ("a", "b", None) for _ in range(100))
    assert flow.holds_nobody()
