"""TelemetryBehaviour on real agents, a real XMPP server and a real daemon: it drains every record,
JSON lines carry the proto's fields, a failing sink is reported instead of blocking the agent,
and the daemon's pause / resume reach one agent's plans without dropping a record."""

from __future__ import annotations

import asyncio
import json

import pytest

from agents.bdi_agent import ASL_DIR, LearningAgent
from agents.config import AgentConfig, parse_container_config
from agents.container import run_agents, with_overrides
from agents.demo import stored_counts
from agents.qlearning import Hyperparameters
from agents.records import EpisodeRecord, RecordBuffer, StepRecord
from agents.telemetry_behaviour import TelemetryBehaviour, episode_json, step_json
from telemetry.generated import trainer_pb2 as pb
from telemetry.proxy import _record_json
from tests.fixtures_proxy import Operator
from tests.waiting import wait_for, wait_until_still

QUICK = Hyperparameters(alpha=0.5, gamma=0.95, epsilon_start=1.0, epsilon_min=0.05, epsilon_decay=0.98)


class RecordingSink:
    def __init__(self, fail_after: int | None = None):
        self.records: list = []
        self.fail_after = fail_after

    async def write(self, chunk) -> None:
        if self.fail_after is not None and len(self.records) + len(chunk) > self.fail_after:
            raise RuntimeError("the sink broke")
        self.records.extend(chunk.records())


def agent(jid: str, port: int, records: RecordBuffer, *, episodes: int = 50) -> LearningAgent:
    config = AgentConfig(
        agent_id="drained",
        run_id="behaviour-test",
        env_id="FrozenLake-v1",
        env_kwargs={"is_slippery": False},
        episodes=episodes,
        hyperparameters=QUICK,
        seed=3,
    )
    return LearningAgent(jid, "pw", config, records=records, port=port, asl_path=ASL_DIR / "learner.asl")


@pytest.mark.timeout(60)
async def test_every_record_reaches_the_sink_in_order(agents_xmpp, unique_jid):
    records = RecordBuffer(capacity=64)  # small: the agent has to wait for the behaviour to drain
    learner = agent(unique_jid("drained"), agents_xmpp.client_port, records, episodes=60)
    sink = RecordingSink()
    behaviour = TelemetryBehaviour(records, sink, period=0.01)
    behaviour.attach(learner)
    await learner.start()
    result = await learner.finished(30)
    await learner.stop()
    assert await behaviour.wait_drained(10)

    steps = [r for r in sink.records if isinstance(r, StepRecord)]
    episodes = [r for r in sink.records if isinstance(r, EpisodeRecord)]
    assert (len(steps), len(episodes)) == (result.steps, result.episodes) == (behaviour.steps_sent, behaviour.episodes_sent)
    assert [e.episode_index for e in episodes] == list(range(60))
    assert [(s.episode_index, s.step_index) for s in steps] == sorted((s.episode_index, s.step_index) for s in steps)


@pytest.mark.timeout(60)
async def test_a_failing_sink_is_reported_not_left_to_block_the_agent(agents_xmpp, unique_jid):
    records = RecordBuffer(capacity=64)
    learner = agent(unique_jid("failing"), agents_xmpp.client_port, records, episodes=10_000)
    behaviour = TelemetryBehaviour(records, RecordingSink(fail_after=100), period=0.01)
    behaviour.attach(learner)
    await learner.start()
    try:
        await asyncio.wait_for(behaviour.failed.wait(), 30)
        assert str(behaviour.failure) == "the sink broke"
    finally:
        await learner.stop()
    assert await behaviour.wait_drained(10)


def test_json_lines_match_what_the_proxy_writes_for_the_same_record():
    step = StepRecord("run-j", "agent-j", 3, 7, "2", "14", 1.0, True, False, "greedy", "spade-bdi", 1_700_000_000_123_456_789, '{"kind": "grid"}', 1, 5)
    episode = EpisodeRecord("run-j", "agent-j", 3, 1.0, 8, True, False, 1_700_000_000_120_000_000, {"success": True})
    proto_step = pb.RunStep(
        run_id="run-j", episode_index=3, step_index=7, action_json="2", observation_json="14", reward=1.0, terminated=True,
        truncated=False, timestamp={"seconds": 1_700_000_000, "nanos": 123_456_789}, policy_label="greedy", backend="spade-bdi",
        agent_id="agent-j", render_hint_json='{"kind": "grid"}', payload_version=1, episode_seed=5, worker_id="w",
    )  # fmt: skip
    proto_episode = pb.RunEpisode(
        run_id="run-j", episode_index=3, total_reward=1.0, steps=8, terminated=True, truncated=False,
        metadata_json='{"success":true}', timestamp={"seconds": 1_700_000_000, "nanos": 120_000_000}, agent_id="agent-j",
        worker_id="w",
    )  # fmt: skip
    assert step_json(step, "w") == json.loads(_record_json("step", proto_step))
    assert episode_json(episode, "w") == json.loads(_record_json("episode", proto_episode))


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_pause_from_the_daemon_stops_one_agents_steps_and_resume_continues_them(agents_xmpp, daemon, tmp_path):
    config = with_overrides(
        parse_container_config(
            {
                "run_id": "pause-test",
                "telemetry": {"target": daemon.address},
                "agent_defaults": {"env_id": "FrozenLake-v1", "episodes": 10_000_000},
                "agents": [
                    {"agent_id": "paused", "asl": str(ASL_DIR / "learner.asl")},
                    {"agent_id": "free", "asl": str(ASL_DIR / "learner_fast.asl")},
                ],
            }
        ),
        xmpp_port=agents_xmpp.client_port,
    )
    stop = asyncio.Event()
    agents: dict[str, LearningAgent] = {}
    container = asyncio.create_task(run_agents(config, stop=stop, on_started=agents.update, spool_dir=tmp_path / "spool"))
    try:
        await wait_for(lambda: agents and agents["paused"].total_steps > 200, "the agents to learn")
        async with Operator(daemon.address, "pause-test") as operator:
            await operator.send(pause=True, agent_id="paused")
            held = await wait_until_still(lambda: agents["paused"].total_steps, "the paused agent to stop stepping")
            free_before = agents["free"].total_steps
            await wait_for(lambda: agents["free"].total_steps > free_before + 2000, "the other agent to keep learning")
            assert agents["paused"].total_steps == held  # not one step while paused

            await operator.send(resume=True, agent_id="paused")
            await wait_for(lambda: agents["paused"].total_steps > held + 500, "the resumed agent to step again")
    finally:
        stop.set()
        run = await asyncio.wait_for(container, 60)

    assert [o.result.stop_reason for o in run.outcomes] == ["interrupted", "interrupted"]
    assert run.telemetry.pending_in_spool == 0
    stored = stored_counts(daemon.store, "pause-test", ["paused", "free"])
    for outcome in run.outcomes:
        assert stored[outcome.agent_id] == (outcome.result.steps, outcome.result.episodes)  # nothing dropped
