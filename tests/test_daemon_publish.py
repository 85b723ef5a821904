"""Publishing into the real daemon and streaming back out: counts, order, replay, live, slow viewers."""
import asyncio
import contextlib
from collections import Counter

import grpc
import pytest

from telemetry.generated import trainer_pb2 as pb
from telemetry.hub import steps_topic
from tests.fixtures_daemon import episodes, iterate, register, steps, stub_for, wait_until


def batches(run_id: str, agent_id: str, count: int, size: int, *, n_episodes: int = 0) -> list[pb.TelemetryBatch]:
    """``count`` steps of one agent in batches of ``size``; episode summaries ride along."""
    all_steps = steps(run_id, agent_id, count)
    all_episodes = episodes(run_id, agent_id, n_episodes)
    per_batch = -(-len(all_episodes) // max(1, count // size))
    out = []
    for k, start in enumerate(range(0, count, size)):
        out.append(pb.TelemetryBatch(run_id=run_id, steps=all_steps[start:start + size],
                                     episodes=all_episodes[k * per_batch:(k + 1) * per_batch]))
    return out


async def collect(call, count: int, timeout: float = 60) -> list:
    """Read exactly ``count`` records from a server stream."""
    out = []

    async def read() -> None:
        async for record in call:
            out.append(record)
            if len(out) == count:
                return

    await asyncio.wait_for(read(), timeout)
    return out


@pytest.mark.timeout(60)
async def test_accepted_and_dropped_are_true_on_every_publish_path(daemon) -> None:
    channel, stub = stub_for(daemon)
    async with channel:
        auth = await register(stub, "dedup")
        first = await stub.PublishRunSteps(iterate(*steps("dedup", "a", 30)), metadata=auth)
        assert (first.accepted, first.dropped) == (30, 0)
        # Retry of 20 already stored, 10 new, and one repeated inside the stream.
        retry = steps("dedup", "a", 30, first=10) + steps("dedup", "a", 1, first=39)
        second = await stub.PublishRunSteps(iterate(*retry), metadata=auth)
        assert (second.accepted, second.dropped) == (10, 21)

        eps = await stub.PublishRunEpisodes(iterate(*episodes("dedup", "a", 3), *episodes("dedup", "a", 4)),
                                            metadata=auth)
        assert (eps.accepted, eps.dropped) == (4, 3)

        batch = pb.TelemetryBatch(run_id="dedup", steps=steps("dedup", "a", 5, first=38),
                                  episodes=episodes("dedup", "b", 2),
                                  messages=[pb.CoordinationMessage(agent_id="a", message_index=i, direction="sent",
                                                                   peer="b", kind="q_table", bytes=100)
                                            for i in (0, 1, 1)])
        third = await stub.PublishTelemetryBatch(iterate(batch, batch), metadata=auth)
        # steps 38, 39 stored already; 40..42 new; 2 episodes; messages 0, 1 (1 repeated); then all again.
        assert (third.accepted, third.dropped) == (3 + 2 + 2, 2 + 1 + 10)
        assert daemon.store.counts("dedup") == type(daemon.store.counts("dedup"))(43, 6, 2)


@pytest.mark.timeout(120)
async def test_two_producers_stream_back_in_store_order_with_agent_ids(daemon) -> None:
    """The issue's scenario: 2 agents x 10,000 steps + 100 episodes into one run."""
    channel, stub = stub_for(daemon)
    async with channel:
        auth = {agent: await register(stub, "pair", worker_id=agent) for agent in ("alice", "bob")}

        async def produce(agent: str) -> pb.PublishTelemetryResponse:
            return await stub.PublishTelemetryBatch(
                iterate(*batches("pair", agent, 10_000, 500, n_episodes=100)), metadata=auth[agent])

        results = await asyncio.gather(produce("alice"), produce("bob"))
        assert [(r.accepted, r.dropped) for r in results] == [(10_100, 0), (10_100, 0)]

        call = stub.StreamRunSteps(pb.StreamStepsRequest(run_id="pair"))
        seen = await collect(call, 20_000)
        call.cancel()
        assert [s.seq_id for s in seen] == list(range(1, 20_001))
        assert Counter(s.agent_id for s in seen) == {"alice": 10_000, "bob": 10_000}
        for agent in ("alice", "bob"):
            mine = [(s.episode_index, s.step_index) for s in seen if s.agent_id == agent]
            assert mine == [(i // 100, i % 100) for i in range(10_000)]
        stored = daemon.store.read_steps("pair", since_seq=12_344, limit=1)[0]
        assert (seen[12_344].agent_id, seen[12_344].step_index) == (stored.agent_id, stored.step_index)

        call = stub.StreamRunEpisodes(pb.StreamEpisodesRequest(run_id="pair", agent_id="bob"))
        bob = await collect(call, 100)
        call.cancel()
        assert [e.episode_index for e in bob] == list(range(100)) and {e.agent_id for e in bob} == {"bob"}


@pytest.mark.timeout(60)
async def test_since_seq_gives_exactly_the_rest_then_live_without_gap(daemon) -> None:
    channel, stub = stub_for(daemon)
    async with channel:
        auth = await register(stub, "resume")
        await stub.PublishTelemetryBatch(iterate(*batches("resume", "a", 300, 100)), metadata=auth)

        call = stub.StreamRunSteps(pb.StreamStepsRequest(run_id="resume", since_seq=120))
        replayed = await collect(call, 180)
        assert [s.seq_id for s in replayed] == list(range(121, 301))
        # Still subscribed: new records arrive live, continuing the sequence.
        await stub.PublishRunSteps(iterate(*steps("resume", "a", 50, first=300)), metadata=auth)
        await stub.PublishTelemetryBatch(iterate(*batches("resume", "b", 200, 100)), metadata=auth)
        live = await collect(call, 250)
        call.cancel()
        assert [s.seq_id for s in live] == list(range(301, 551))
        assert [s.agent_id for s in live] == ["a"] * 50 + ["b"] * 200

        only_b = stub.StreamRunSteps(pb.StreamStepsRequest(run_id="resume", since_seq=400, agent_id="b"))
        got = await collect(only_b, 150)
        only_b.cancel()
        assert [s.seq_id for s in got] == list(range(401, 551)) and {s.agent_id for s in got} == {"b"}


@pytest.mark.timeout(60)
async def test_replay_handoff_while_ingest_runs_has_no_gap_or_duplicate(daemon) -> None:
    """Viewers that join mid-ingest see every record once, whatever the timing."""
    channel, stub = stub_for(daemon)
    async with channel:
        auth = await register(stub, "race")
        producer = asyncio.ensure_future(stub.PublishTelemetryBatch(
            iterate(*batches("race", "a", 6_000, 200)), metadata=auth))
        viewers = []
        for since in (0, 0, 50, 1000):
            viewers.append((since, stub.StreamRunSteps(pb.StreamStepsRequest(run_id="race", since_seq=since))))
            await asyncio.sleep(0)
        assert (await producer).accepted == 6_000
        for since, call in viewers:
            got = await collect(call, 6_000 - since)
            call.cancel()
            assert [s.seq_id for s in got] == list(range(since + 1, 6_001))


@pytest.mark.timeout(60)
async def test_slow_viewer_catches_up_from_the_store_without_slowing_ingest(start_daemon) -> None:
    daemon = await start_daemon(live_queue_records=16)
    channel, stub = stub_for(daemon)
    async with channel:
        auth = await register(stub, "slow")
        viewer = stub.StreamRunSteps(pb.StreamStepsRequest(run_id="slow"))
        await stub.PublishRunSteps(iterate(*steps("slow", "a", 1)), metadata=auth)
        first = await collect(viewer, 1)
        # The viewer now reads nothing while 20 batches go in: ingest must complete anyway.
        result = await stub.PublishTelemetryBatch(iterate(*batches("slow", "a", 6_000, 300)), metadata=auth)
        assert result.accepted == 5_999
        assert daemon.hub.overflows >= 1
        rest = await collect(viewer, 5_999)
        viewer.cancel()
        assert [s.seq_id for s in first + rest] == list(range(1, 6_001))
        assert [s.step_index for s in rest[:3]] == [1, 2, 3]


@pytest.mark.timeout(60)
async def test_coordination_messages_stream_back(daemon) -> None:
    channel, stub = stub_for(daemon)
    async with channel:
        auth = await register(stub, "coord")
        messages = [pb.CoordinationMessage(agent_id=f"a{i % 2}", message_index=i // 2, direction="sent",
                                           peer=f"a{(i + 1) % 2}", kind="transition", bytes=64 + i, episode_index=0)
                    for i in range(20)]
        result = await stub.PublishTelemetryBatch(iterate(pb.TelemetryBatch(run_id="coord", messages=messages)),
                                                  metadata=auth)
        assert result.accepted == 20
        call = stub.StreamRunMessages(pb.StreamMessagesRequest(run_id="coord", agent_id="a1"))
        got = await collect(call, 10)
        call.cancel()
        assert [(m.message_index, m.bytes, m.run_id) for m in got] == [(i, 65 + 2 * i, "coord") for i in range(10)]


async def test_streaming_an_unknown_run_is_not_found(daemon) -> None:
    channel, stub = stub_for(daemon)
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in stub.StreamRunSteps(pb.StreamStepsRequest(run_id="nobody")):
                pass
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_stop_ends_live_streams(start_daemon) -> None:
    daemon = await start_daemon()
    channel, stub = stub_for(daemon)
    async with channel:
        await register(stub, "ending")
        call = stub.StreamRunSteps(pb.StreamStepsRequest(run_id="ending"))
        reader = asyncio.ensure_future(collect(call, 1))
        await wait_until(lambda: daemon.hub.has_subscribers(steps_topic("ending")), what="the viewer")
        await daemon.stop(grace=5)
        with contextlib.suppress(grpc.aio.AioRpcError):
            await asyncio.wait_for(reader, 10)
        assert call.done()
