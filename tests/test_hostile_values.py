"""Values that used to poison the pipeline, against a real daemon: non-finite rewards are stored
faithfully on every publish path (and a following session delivers everything), integers the
store cannot hold are refused naming the record and field, and nothing after them is blocked."""

from __future__ import annotations

import math
import time

import grpc
import pytest

from agents.records import EpisodeRecord, StepRecord
from telemetry import TelemetryGrpcProxy
from telemetry.generated import trainer_pb2 as pb
from tests.fixtures_daemon import episodes, iterate, register, steps, stub_for

ODD = [math.nan, math.inf, -math.inf, 0.5]


def same_floats(got: list[float], want: list[float]) -> bool:
    return len(got) == len(want) and all((math.isnan(a) and math.isnan(b)) or a == b for a, b in zip(got, want))


@pytest.mark.timeout(60)
async def test_non_finite_rewards_are_stored_and_replayed_faithfully_on_the_per_record_paths(daemon) -> None:
    channel, stub = stub_for(daemon)
    async with channel:
        auth = await register(stub, "odd")
        sent = steps("odd", "a", len(ODD))
        for step, reward in zip(sent, ODD):
            step.reward = reward
        done = await stub.PublishRunSteps(iterate(*sent), metadata=auth)
        assert (done.accepted, done.dropped) == (len(ODD), 0)
        eps = episodes("odd", "a", 2)
        eps[0].total_reward = math.nan
        assert (await stub.PublishRunEpisodes(iterate(*eps), metadata=auth)).accepted == 2
        # A retry of the same records is still recognised as a duplicate.
        again = await stub.PublishRunSteps(iterate(*sent), metadata=auth)
        assert (again.accepted, again.dropped) == (0, len(ODD))

        replayed = []
        async for step in stub.StreamRunSteps(pb.StreamStepsRequest(run_id="odd")):
            replayed.append(step.reward)
            if len(replayed) == len(ODD):
                break
    assert same_floats([s.reward for s in daemon.store.read_steps("odd")], ODD)
    assert same_floats(replayed, ODD)
    assert math.isnan(daemon.store.read_episodes("odd")[0].total_reward)


@pytest.mark.timeout(60)
async def test_a_proxy_session_delivers_nan_rewards_as_columns_and_the_next_session_still_delivers(daemon, tmp_path) -> None:
    proxy = TelemetryGrpcProxy(daemon.address, spool_dir=tmp_path / "spool")
    records = [StepRecord("nan-run", "a", 0, i, "0", "0", r, False, False, "p", "b", time.time_ns())
               for i, r in enumerate(ODD)]
    async with proxy.session("nan-run") as session:
        await session.emit_steps("nan-run", "a", records)
        await session.emit_episodes("nan-run", "a", [EpisodeRecord("nan-run", "a", 0, math.nan, 4, True, False,
                                                                   time.time_ns())])
        await session.flush()
        assert session.stats.delivered == 5
    async with proxy.session("good-run") as session:
        await session.emit_step(run_id="good-run", episode_index=0, step_index=0, action_json="1", observation_json="0",
                                reward=1.0, terminated=True, truncated=False, policy_label="p", backend="b",
                                agent_id="a", render_hint_json=None, payload_version=1, timestamp_ns=time.time_ns())
        await session.flush()
        assert session.stats.delivered == 1
    assert same_floats([s.reward for s in daemon.store.read_steps("nan-run")], ODD)
    assert math.isnan(daemon.store.read_episodes("nan-run")[0].total_reward)
    assert daemon.store.counts("good-run").steps == 1


@pytest.mark.timeout(60)
async def test_an_index_beyond_the_stores_range_is_refused_naming_record_and_field(daemon) -> None:
    channel, stub = stub_for(daemon)
    async with channel:
        auth = await register(stub, "huge")
        batch = steps("huge", "a", 3)
        batch[1].step_index = 2**63
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.PublishRunSteps(iterate(*batch), metadata=auth)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "run 'huge', agent 'a', episode 0, step 9223372036854775808: step_index" in refused.value.details()
        columns = pb.TelemetryBatch(run_id="huge", episodes=episodes("huge", "a", 1))
        columns.episodes[0].steps = 2**64 - 1
        with pytest.raises(grpc.aio.AioRpcError) as refused_episode:
            await stub.PublishTelemetryBatch(iterate(columns), metadata=auth)
        assert "episode 0: steps = 18446744073709551615 is out of range" in refused_episode.value.details()
        # What follows is not blocked.
        assert (await stub.PublishRunSteps(iterate(*steps("huge", "a", 3)), metadata=auth)).accepted == 3
    assert [s.step_index for s in daemon.store.read_steps("huge")] == [0, 1, 2]


@pytest.mark.timeout(60)
async def test_a_refused_batch_is_kept_aside_and_what_follows_is_still_delivered(daemon, tmp_path) -> None:
    from telemetry.errors import RecordsRejectedError

    def step(index: int) -> dict:
        return dict(run_id="mixed", episode_index=0, step_index=index, action_json="0", observation_json="0",
                    reward=0.0, terminated=False, truncated=False, policy_label="p", backend="b", agent_id="a",
                    render_hint_json=None, payload_version=1, timestamp_ns=time.time_ns())

    spool = tmp_path / "spool"
    with pytest.raises(RecordsRejectedError) as refused:
        async with TelemetryGrpcProxy(daemon.address, spool_dir=spool).session("mixed") as session:
            await session.emit_step(**step(2**63))
            await session.flush()
            for i in range(1, 4):
                await session.emit_step(**step(i))
            await session.flush()
    assert "step_index = 9223372036854775808 is out of range" in str(refused.value)
    assert [s.step_index for s in daemon.store.read_steps("mixed")] == [1, 2, 3]
    assert list((spool / daemon.address.replace(":", "_") / "rejected").glob("*.spool"))
