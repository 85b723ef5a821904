"""Readers cannot make the daemon hold unbounded memory, and every reader can read back what
the daemon stored: byte-bounded replay pages, byte-bounded live queues (each and all), a cap
on open streams, and records larger than gRPC's default 4 MiB limit readable by `tail` and the
dashboard. A real daemon on a real port with a real SQLite file throughout."""
from __future__ import annotations

import asyncio

import aiohttp
import grpc
import pytest

from telemetry.generated import trainer_pb2 as pb
from telemetry.generated import trainer_pb2_grpc
from telemetry.hub import OVERFLOWED, LiveHub, records_bytes
from telemetry.readers import ReaderBudget, TooManyReaders
from telemetry.store import ROW_OVERHEAD_BYTES
from tests.fixtures_browser import DashboardDaemon
from tests.fixtures_daemon import iterate, register, steps, stub_for, wait_until
from tests.test_cli import cli

OBSERVATION = '"' + "o" * 998 + '"'   # a 1 KB observation


def big_steps(run_id: str, count: int, *, first: int = 0) -> list[pb.RunStep]:
    """``count`` steps of agent "a" with 1 KB observations."""
    out = steps(run_id, "a", count, first=first)
    for step in out:
        step.observation_json = OBSERVATION
    return out


async def publish(stub, auth, run_id: str, records: list[pb.RunStep], per_batch: int = 200) -> None:
    for start in range(0, len(records), per_batch):
        batch = pb.TelemetryBatch(run_id=run_id, steps=records[start:start + per_batch])
        response = await stub.PublishTelemetryBatch(iterate(batch), metadata=auth)
        assert response.accepted == len(batch.steps)


# -- pieces ------------------------------------------------------------------------------

async def test_store_pages_are_cut_by_bytes_and_never_empty(daemon) -> None:
    channel, stub = stub_for(daemon)
    async with channel:
        auth = await register(stub, "paged")
        records = big_steps("paged", 50)
        records[20].observation_json = '"' + "h" * 100_000 + '"'
        await publish(stub, auth, "paged", records)
    store = daemon.store
    page = await asyncio.to_thread(store.read_steps, "paged", 0, None, 1000, 5000)
    assert 1 < len(page) < 20
    row_size = len(OBSERVATION) + ROW_OVERHEAD_BYTES
    assert (len(page) - 1) * row_size < 5000 <= len(page) * row_size + 200
    # The 100 KB step alone is bigger than the bound: it still comes, alone.
    alone = await asyncio.to_thread(store.read_steps, "paged", 20, None, 1000, 5000)
    assert [s.seq_id for s in alone] == [21] and len(alone[0].observation_json) == 100_002
    # Page after page, the bound loses and repeats nothing.
    seen, after = [], 0
    while page := await asyncio.to_thread(store.read_steps, "paged", after, None, 1000, 5000):
        seen += [s.seq_id for s in page]
        after = page[-1].seq_id
    assert seen == list(range(1, 51))


def test_the_page_budget_is_shared_by_the_readers_open_now() -> None:
    budget = ReaderBudget(max_readers=3, total_page_bytes=300_000, max_page_bytes=200_000, min_page_bytes=50_000)
    assert budget.page_bytes() == 200_000           # alone: the ceiling
    budget.admit()
    budget.admit()
    assert budget.page_bytes() == 150_000           # two share the total
    budget.admit()
    assert budget.page_bytes() == 100_000
    with pytest.raises(TooManyReaders, match="--max-readers"):
        budget.admit()
    budget.leave()
    budget.admit()
    assert budget.active == 3
    tight = ReaderBudget(max_readers=100, total_page_bytes=1000, max_page_bytes=200_000, min_page_bytes=50_000)
    for _ in range(10):
        tight.admit()
    assert tight.page_bytes() == 50_000             # never under the floor: every reader progresses


async def test_live_queues_are_bounded_in_bytes_each_and_together() -> None:
    chunk = big_steps("q", 10)
    size = records_bytes(chunk)
    assert size > 10 * len(OBSERVATION)
    # One subscriber's own bound: two chunks fit, the third overflows it.
    hub = LiveHub(queue_records=10_000, queue_bytes=2 * size, total_queue_bytes=100 * size)
    alone = hub.subscribe(("steps", "q"))
    for _ in range(3):
        hub.publish(("steps", "q"), chunk)
    assert await alone.next() is OVERFLOWED and hub.queued_bytes == 0
    alone.close()
    # All subscribers together: 3 x 2 chunks would be 6; the total allows 5, so one overflows.
    hub = LiveHub(queue_records=10_000, queue_bytes=100 * size, total_queue_bytes=5 * size)
    subs = [hub.subscribe(("steps", "q")) for _ in range(3)]
    for _ in range(2):
        hub.publish(("steps", "q"), chunk)
    assert hub.queued_bytes == 4 * size
    results = [await sub.next() for sub in subs]
    assert sum(result is OVERFLOWED for result in results) == 1
    assert all(len(result) == 10 for result in results if result is not OVERFLOWED)
    for sub in subs:
        sub.close()
    assert hub.queued_bytes == 0


# -- the daemon --------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_stalled_readers_are_bounded_and_later_read_everything_in_order(start_daemon) -> None:
    total_bytes = 256 * 1024
    daemon = await start_daemon(live_queue_bytes=64 * 1024, live_total_bytes=total_bytes)
    channel, stub = stub_for(daemon)
    readers: list[tuple[grpc.aio.Channel, object, bool]] = []
    try:
        auth = await register(stub, "stalled")
        await publish(stub, auth, "stalled", big_steps("stalled", 1000))
        for index in range(20):
            reader_channel = grpc.aio.insecure_channel(daemon.address, options=[("grpc.use_local_subchannel_pool", 1)])
            reader = trainer_pb2_grpc.TrainerServiceStub(reader_channel)
            batches = index % 2 == 0
            rpc = reader.StreamRunStepBatches if batches else reader.StreamRunSteps
            call = rpc(pb.StreamStepsRequest(run_id="stalled", since_seq=0))
            await call.wait_for_connection()
            readers.append((reader_channel, call, batches))
        await wait_until(lambda: daemon.readers.active == 20, what="20 open streams")
        # Nobody reads; the producer keeps publishing, and the daemon keeps answering.
        for block in range(1, 5):
            await publish(stub, auth, "stalled", big_steps("stalled", 1000, first=1000 * block))
            assert daemon.hub.queued_bytes <= total_bytes
            health = await stub.GetHealth(pb.HealthCheckRequest(), timeout=30)
            assert health.healthy
        assert daemon.hub.overflows > 0          # the bounds were reached, not just never tested
        # Now every stalled reader reads: each gets all 5000 steps, in order, once.
        for reader_channel, call, batches in readers:
            seqs: list[int] = []
            async for message in call:
                seqs.extend(s.seq_id for s in message.steps) if batches else seqs.append(message.seq_id)
                if len(seqs) >= 5000:
                    break
            assert seqs == list(range(1, 5001))
            call.cancel()
    finally:
        for reader_channel, call, _ in readers:
            call.cancel()
            await reader_channel.close()
        await channel.close()
    await wait_until(lambda: daemon.readers.active == 0, what="the streams to be counted out")


@pytest.mark.timeout(60)
async def test_streams_past_the_limit_are_refused_with_what_to_do(start_daemon) -> None:
    daemon = await start_daemon(max_readers=2)
    channel, stub = stub_for(daemon)
    async with channel:
        auth = await register(stub, "capped")
        await publish(stub, auth, "capped", steps("capped", "a", 5))
        first = stub.StreamRunSteps(pb.StreamStepsRequest(run_id="capped"))
        second = stub.StreamRunEpisodes(pb.StreamEpisodesRequest(run_id="capped"))
        assert (await first.read()).seq_id == 1
        await wait_until(lambda: daemon.readers.active == 2, what="two open streams")
        third = stub.WatchRuns(pb.WatchRunsRequest())
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await third.read()
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max-readers" in refused.value.details()
        first.cancel()
        await wait_until(lambda: daemon.readers.active == 1, what="a stream to end")
        again = stub.StreamRunSteps(pb.StreamStepsRequest(run_id="capped", since_seq=3))
        assert (await again.read()).seq_id == 4
        again.cancel()
        second.cancel()


@pytest.mark.timeout(120)
async def test_a_10_mb_observation_is_read_back_by_tail_and_the_dashboard(dashboard_daemon: DashboardDaemon) -> None:
    daemon = dashboard_daemon.daemon
    huge = '"' + "x" * (10 * 1024 * 1024) + '"'
    records = steps("huge", "a", 3)
    records[1].observation_json = huge
    channel, stub = stub_for(daemon)
    async with channel:
        auth = await register(stub, "huge")
        for record in records:   # one per call: the 10 MB step fits the daemon's 16 MiB limit alone
            await publish(stub, auth, "huge", [record])
        await stub.FinishRun(pb.FinishRunRequest(run_id="huge"), metadata=auth)
        # gRPC's default 4 MiB receive limit cannot take the stored step back: why tail raises it.
        with pytest.raises(grpc.aio.AioRpcError) as too_big:
            async for _ in stub.StreamRunSteps(pb.StreamStepsRequest(run_id="huge")):
                pass
        assert too_big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    code, out, err = await cli("tail", "huge", "--kind", "steps", "--target", daemon.address)
    assert code == 0, err
    lines = out.splitlines()
    assert [line.split()[1] for line in lines[:3]] == ["#1", "#2", "#3"]
    assert lines[-1].startswith("run huge ended TERM: 3 steps")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{dashboard_daemon.url}/api/runs/huge/replay",
                            params={"agent_id": "a", "episode": "0"}) as api:
            body = await api.json()
    assert [row["step"] for row in body["steps"]] == [0, 1, 2]
    assert len(body["steps"][1]["observation"]) == 10 * 1024 * 1024
