"""RecordBuffer: steps as columns, episodes among them in order, bounded without dropping (the
agent waits for space), one agent per buffer; records carry the telemetry kwargs."""

from __future__ import annotations

import asyncio
import inspect

import pytest

from agents.records import EpisodeRecord, RecordBuffer, StepRecord
from tests.fixtures_proxy import chunk_of

# The keyword arguments of emit_step / emit_episode (the proxy's public face).
EMIT_STEP = {"run_id", "episode_index", "step_index", "action_json", "observation_json", "reward", "terminated",
             "truncated", "policy_label", "backend", "agent_id", "render_hint_json", "payload_version", "timestamp_ns"}
EMIT_EPISODE = {"run_id", "episode_index", "total_reward", "steps", "terminated", "truncated", "metadata",
                "agent_id", "timestamp_ns"}



def step(i: int, episode_index: int = 0, hint: str | None = None, seed: int | None = 7) -> StepRecord:
    return StepRecord("run", "a1", episode_index, i, str(i % 4), str(i), 0.5 * i, i % 5 == 4, False,
                      "greedy" if i % 2 else "explore", "spade-bdi", 1000 + i, hint, 1, seed)


def episode(i: int) -> EpisodeRecord:
    return EpisodeRecord("run", "a1", i, 1.0, 6, True, False, 456, {"success": True})


def test_records_carry_exactly_the_emit_kwargs():
    assert set(step(0).emit_kwargs()) == EMIT_STEP
    assert set(episode(0).emit_kwargs()) == EMIT_EPISODE
    assert step(0).episode_seed == 7


def test_emit_kwargs_match_the_proxy_signatures():
    session = pytest.importorskip("telemetry.proxy").TelemetrySession
    assert set(step(0).emit_kwargs()) <= set(inspect.signature(session.emit_step).parameters)
    assert set(episode(0).emit_kwargs()) <= set(inspect.signature(session.emit_episode).parameters)


def test_steps_come_back_exactly_with_episodes_in_their_place():
    records = [step(0, 0, hint='{"grid": 4}'), step(1, 0), episode(0), step(0, 1, hint='{"grid": 4}', seed=None),
               episode(1), episode(2), step(0, 3, seed=None)]
    chunk = chunk_of(records)
    assert chunk.records() == records
    assert (len(chunk.steps), len(chunk.episodes), chunk.episode_after) == (4, 3, [2, 3, 3])
    # Sparse fields: hints and seeds only on the rows that have them.
    assert (chunk.steps.render_hint_rows, chunk.steps.episode_seed_rows) == ([0, 2], [0, 1])


def test_a_partial_drain_splits_steps_and_episodes_where_they_were():
    buffer = RecordBuffer()
    records = [step(i, i // 3) if i % 4 != 3 else episode(i) for i in range(20)]
    for record in records:
        buffer.add(record)
    assert (buffer.steps_put, buffer.episodes_put, len(buffer)) == (15, 5, 20)
    received = []
    while len(buffer):
        received += buffer.drain(4).records()
    assert received == records
    assert buffer.steps_put == 15 and len(buffer.drain()) == 0


def test_the_buffer_fills_up_and_draining_makes_room():
    buffer = RecordBuffer(capacity=3)
    for i in range(3):
        assert not buffer.full
        buffer.add(step(i))
    assert buffer.full and buffer.free == 0
    buffer.add(episode(0))  # adding never fails: the agent checks `full` before stepping
    assert len(buffer) == 4
    assert [r.step_index for r in buffer.drain(2).records()] == [0, 1]
    assert not buffer.full and buffer.free == 1


async def test_an_agent_waiting_for_space_resumes_once_drained_and_nothing_is_lost():
    buffer = RecordBuffer(capacity=3)

    async def produce():
        for i in range(10):
            await buffer.wait_for_space()
            buffer.add(step(i))

    producer = asyncio.create_task(produce())
    received = []
    while len(received) < 10:
        await asyncio.sleep(0)  # one loop turn: the producer runs until the buffer is full
        assert len(buffer) <= 3
        received += buffer.drain(2).records()
    await producer
    assert [r.step_index for r in received] == list(range(10))


def test_a_buffer_holds_one_agents_records():
    buffer = RecordBuffer()
    buffer.bind("run", "a1", "spade-bdi")
    buffer.bind("run", "a1", "spade-bdi")  # the same agent again is fine
    with pytest.raises(ValueError, match="already holds the records of agent 'a1'"):
        buffer.bind("run", "a2")
    other = StepRecord("run", "a2", 0, 0, "1", "4", 0.0, False, False, "greedy", "spade-bdi", 1, None, 1, None)
    with pytest.raises(ValueError, match="cannot go into the buffer of agent 'a1'"):
        buffer.add(other)


def test_capacity_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        RecordBuffer(0)
