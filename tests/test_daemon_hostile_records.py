"""Hostile values at the daemon's door, sent by a raw client generated from the proto: NaN and
infinite rewards are stored exactly; integers the store cannot hold are refused record by
record (named, the neighbours stored); bytes that are not a message are INVALID_ARGUMENT."""
import asyncio
import csv
import json
import math

import grpc
import pytest

from telemetry.export import export_run
from telemetry.generated import trainer_pb2 as pb
from tests.fixtures_daemon import episodes, iterate, register, steps, stub_for

NON_FINITE = (math.nan, math.inf, -math.inf)
TOO_BIG = 2 ** 63


def _same_double(stored: float, sent: float) -> bool:
    return math.isnan(stored) if math.isnan(sent) else stored == sent


def _with_non_finite(records: list, field: str = "reward") -> list:
    """``records`` with ``field`` set to NaN, +inf, -inf in turn."""
    for record, value in zip(records, NON_FINITE):
        setattr(record, field, value)
    return records


def _step_block(agent_id: str, rewards: list[float], **extra) -> pb.StepColumns:
    """A StepColumns block of one step per reward, in episode 0."""
    n = len(rewards)
    return pb.StepColumns(agent_id=agent_id, backend="q", episode_index=[0] * n, step_index=list(range(n)),
                          action_json=["0"] * n, observation_json=["0"] * n, reward=rewards,
                          terminated=[False] * n, truncated=[False] * n, timestamp_ns=list(range(1, n + 1)),
                          policy_label=["p"] * n, **extra)


@pytest.mark.timeout(60)
async def test_nan_and_infinite_rewards_are_stored_exactly_on_every_publish_path(daemon) -> None:
    channel, stub = stub_for(daemon)
    async with channel:
        auth = await register(stub, "nan-run")
        first = await stub.PublishRunSteps(iterate(*_with_non_finite(steps("nan-run", "a", 3))), metadata=auth)
        eps = _with_non_finite(episodes("nan-run", "a", 3), "total_reward")
        second = await stub.PublishRunEpisodes(iterate(*eps), metadata=auth)
        as_messages = _with_non_finite(steps("nan-run", "b", 3))
        as_columns = _step_block("c", list(NON_FINITE))
        episode_columns = pb.EpisodeColumns(agent_id="c", episode_index=[0, 1, 2], total_reward=list(NON_FINITE),
                                            steps=[1, 1, 1], terminated=[True] * 3, truncated=[False] * 3,
                                            metadata_json=["{}"] * 3, timestamp_ns=[1, 2, 3])
        third = await stub.PublishTelemetryBatch(iterate(pb.TelemetryBatch(
            run_id="nan-run", steps=as_messages, step_columns=[as_columns], episode_columns=[episode_columns])),
            metadata=auth)
        assert (first.accepted, second.accepted, third.accepted) == (3, 3, 9)
        assert first.refused_count == second.refused_count == third.refused_count == 0

        stored = {(s.agent_id, s.step_index): s.reward for s in daemon.store.read_steps("nan-run")}
        for agent in ("a", "b", "c"):
            for index, sent in enumerate(NON_FINITE):
                assert _same_double(stored[(agent, index)], sent), (agent, index, stored[(agent, index)])
        totals = {(e.agent_id, e.episode_index): e.total_reward for e in daemon.store.read_episodes("nan-run")}
        for agent in ("a", "c"):
            for index, sent in enumerate(NON_FINITE):
                assert _same_double(totals[(agent, index)], sent)

        replayed = stub.StreamRunSteps(pb.StreamStepsRequest(run_id="nan-run", agent_id="c"))
        got = []
        async for step in replayed:
            got.append(step.reward)
            if len(got) == 3:
                break
        replayed.cancel()
        assert all(_same_double(g, s) for g, s in zip(got, NON_FINITE)), got


@pytest.mark.timeout(60)
async def test_non_finite_rewards_are_exported_by_name(daemon, tmp_path) -> None:
    channel, stub = stub_for(daemon)
    async with channel:
        auth = await register(stub, "nan-export")
        await stub.PublishRunSteps(iterate(*_with_non_finite(steps("nan-export", "a", 3))), metadata=auth)
    export_run(daemon.store, "nan-export", "jsonl", tmp_path / "steps.jsonl")
    export_run(daemon.store, "nan-export", "csv", tmp_path / "steps.csv")
    lines = (tmp_path / "steps.jsonl").read_text().splitlines()
    assert [json.loads(line)["reward"] for line in lines] == ["nan", "inf", "-inf"]
    with open(tmp_path / "steps.csv", newline="") as handle:
        assert [row["reward"] for row in csv.DictReader(handle)] == ["nan", "inf", "-inf"]


@pytest.mark.timeout(60)
async def test_out_of_range_integers_are_refused_alone_and_named(daemon) -> None:
    channel, stub = stub_for(daemon)
    async with channel:
        auth = await register(stub, "big-run")
        good = steps("big-run", "a", 4)
        bad_step = pb.RunStep(run_id="big-run", agent_id="a", episode_index=7, step_index=TOO_BIG)
        bad_episode = pb.RunEpisode(run_id="big-run", agent_id="a", episode_index=TOO_BIG, total_reward=1.0)
        bad_message = pb.CoordinationMessage(run_id="big-run", agent_id="a", message_index=2 ** 64 - 1,
                                             direction="sent", peer="b", kind="q_table")
        good_message = pb.CoordinationMessage(run_id="big-run", agent_id="a", message_index=0,
                                              direction="sent", peer="b", kind="q_table")
        block = _step_block("c", [0.5, 0.5], episode_seed_rows=[1], episode_seed=[TOO_BIG])
        batch = pb.TelemetryBatch(run_id="big-run", steps=[good[0], bad_step, good[1]],
                                  episodes=[bad_episode, *episodes("big-run", "a", 1)],
                                  messages=[bad_message, good_message], step_columns=[block])
        response = await stub.PublishTelemetryBatch(iterate(batch), metadata=auth)
        per_record = await stub.PublishRunSteps(iterate(good[2], bad_step, good[3]), metadata=auth)

        assert (response.accepted, response.refused_count) == (5, 4)
        refused = {(r.kind, r.field): r for r in response.refused}
        assert set(refused) == {("step", "step_index"), ("episode", "episode_index"),
                                ("message", "message_index"), ("step", "episode_seed")}
        step_reason = refused[("step", "step_index")].reason
        for part in ("'big-run'", "'a'", "episode 7", f"step {TOO_BIG}", "step_index"):
            assert part in step_reason, step_reason
        assert refused[("step", "episode_seed")].agent_id == "c"
        assert refused[("step", "episode_seed")].index == 1
        assert (per_record.accepted, per_record.refused_count) == (2, 1)
        assert per_record.refused[0].field == "step_index"

        stored = [(s.agent_id, s.step_index) for s in daemon.store.read_steps("big-run")]
        assert sorted(stored) == [("a", 0), ("a", 1), ("a", 2), ("a", 3), ("c", 0)]
        assert [e.episode_index for e in daemon.store.read_episodes("big-run")] == [0]
        assert [m.message_index for m in daemon.store.read_messages("big-run")] == [0]


def _raw_publish(channel: grpc.aio.Channel, method: str):
    """A publish call that sends bytes as they are (no serializer): what a broken client sends."""
    return channel.stream_unary(f"/gymgui.trainer.TrainerService/{method}",
                                request_serializer=lambda raw: raw,
                                response_deserializer=pb.PublishTelemetryResponse.FromString)


def _with_invalid_utf8(record: pb.RunStep) -> bytes:
    """``record`` serialized with its action_json bytes replaced by a lone 0xff byte."""
    marker = "\x01MARK\x01"
    record.action_json = marker
    return record.SerializeToString().replace(marker.encode(), b"\xff" + b"x" * (len(marker) - 1))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["PublishRunSteps", "PublishTelemetryBatch"])
async def test_undecodable_messages_are_invalid_argument_and_earlier_records_stay(daemon, method) -> None:
    channel, stub = stub_for(daemon)
    async with channel:
        auth = await register(stub, "raw-run")
        good = steps("raw-run", "a", 2)
        if method == "PublishRunSteps":
            first = good[0].SerializeToString()
            broken = _with_invalid_utf8(good[1])
        else:
            first = pb.TelemetryBatch(run_id="raw-run", steps=[good[0]]).SerializeToString()
            inner = _with_invalid_utf8(good[1])
            broken = pb.TelemetryBatch(run_id="raw-run").SerializeToString() + b"\x12" + bytes([len(inner)]) + inner
        for payload in (broken, b"\xff\xff\xff\xff not a protobuf message"):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _raw_publish(channel, method)(iterate(first, payload), metadata=auth)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
            assert "cannot be decoded" in refused.value.details()
        assert [s.step_index for s in daemon.store.read_steps("raw-run")] == [0]


@pytest.mark.timeout(60)
async def test_watch_runs_past_the_newest_change_is_refused_naming_it(daemon) -> None:
    channel, stub = stub_for(daemon)
    async with channel:
        await register(stub, "before")
        last = daemon.store.last_run_change_seq()
        assert last > 0
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.WatchRuns(pb.WatchRunsRequest(since_seq=2 ** 64 - 1)).read()
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"newest run change ({last})" in refused.value.details()
        watch = stub.WatchRuns(pb.WatchRunsRequest(since_seq=last))
        await register(stub, "after")
        first = await asyncio.wait_for(watch.read(), 10)
        watch.cancel()
    assert first.run_id == "after"


@pytest.mark.timeout(60)
async def test_undecodable_unary_requests_are_invalid_argument(daemon) -> None:
    channel, _ = stub_for(daemon)
    async with channel:
        register_call = channel.unary_unary("/gymgui.trainer.TrainerService/RegisterWorker",
                                            request_serializer=lambda raw: raw,
                                            response_deserializer=pb.RegisterWorkerResponse.FromString)
        watch_call = channel.unary_stream("/gymgui.trainer.TrainerService/WatchRuns",
                                          request_serializer=lambda raw: raw,
                                          response_deserializer=pb.RunRecord.FromString)
        bad_utf8 = pb.RegisterWorkerRequest(run_id="\x01R\x01").SerializeToString().replace(b"\x01R\x01", b"\xff\xfe\xfd")
        for payload in (bad_utf8, b"\xff\xff\xff not a protobuf message"):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await register_call(payload)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "RegisterWorker request cannot be decoded" in refused.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await watch_call(b"\xff\xff\xff not a protobuf message").read()
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
