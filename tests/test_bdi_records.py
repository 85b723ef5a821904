"""RecordBuffer: bounded, never drops, waits for space; records carry the telemetry kwargs."""

from __future__ import annotations

import asyncio
import inspect

import pytest

from agents.records import EpisodeRecord, RecordBuffer, StepRecord

# The keyword arguments of emit_step / emit_episode in DESIGN.md (the proxy's public face).
EMIT_STEP = {"run_id", "episode_index", "step_index", "action_json", "observation_json", "reward", "terminated",
             "truncated", "policy_label", "backend", "agent_id", "render_hint_json", "payload_version", "timestamp_ns"}
EMIT_EPISODE = {"run_id", "episode_index", "total_reward", "steps", "terminated", "truncated", "metadata",
                "agent_id", "timestamp_ns"}


def step(i: int) -> StepRecord:
    return StepRecord("run", "a1", 0, i, "1", "4", 0.0, False, False, "greedy", "spade-bdi", 123, None, 1, 7)


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


def test_try_put_refuses_when_full_and_drain_makes_room():
    buffer = RecordBuffer(capacity=2)
    assert buffer.try_put(step(0)) and buffer.try_put(episode(0))
    assert not buffer.try_put(step(1))
    assert (len(buffer), buffer.free, buffer.steps_put, buffer.episodes_put) == (2, 0, 1, 1)
    assert buffer.drain(1) == [step(0)]
    assert buffer.try_put(step(1))
    assert buffer.drain() == [episode(0), step(1)]
    assert buffer.drain() == []


async def test_put_waits_for_space_and_keeps_order():
    buffer = RecordBuffer(capacity=3)

    async def produce():
        for i in range(10):
            await buffer.put(step(i))

    producer = asyncio.create_task(produce())
    received = []
    while len(received) < 10:
        assert await buffer.wait_for_records(timeout=5)
        assert len(buffer) <= 3
        received += buffer.drain(2)
    await producer
    assert [r.step_index for r in received] == list(range(10))


async def test_wait_for_records_times_out_when_empty():
    assert not await RecordBuffer().wait_for_records(timeout=0.01)


def test_capacity_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        RecordBuffer(0)
