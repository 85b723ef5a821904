"""Steps sent as columns (`TelemetrySession.emit_steps`, `StepColumns`): the daemon stores
exactly what one `emit_step` per step would have stored, live viewers see RunSteps, and the
proxy still reaches daemons that cannot read columns. Real daemons on free ports."""
from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import grpc
import grpc.aio
import pytest

from agents.records import StepRecord
from telemetry import columns
from telemetry.daemon import TrainerService, serve
from telemetry.errors import MessageTooLargeError
from telemetry.generated import trainer_pb2 as pb
from telemetry.hub import episodes_topic, steps_topic
from telemetry.proxy import TelemetryGrpcProxy
from tests.fixtures_daemon import free_port, register, stub_for, wait_until, without_extension
from tests.fixtures_proxy import chunk_of, stored_steps

HINT = '{"kind":"grid","rows":4,"cols":4}'


def records(count: int, run_id: str, agent_id: str = "a", per_episode: int = 10) -> list[StepRecord]:
    """An agent's steps as the agents build them: a hint on each episode's first step, the
    seed on episode 0's steps, the backend changing halfway (so two column blocks)."""
    out = []
    for i in range(count):
        episode, step = divmod(i, per_episode)
        out.append(StepRecord(
            run_id, agent_id, episode, step, str(i % 4), str(i % 16), float(i % 7 == 0),
            step == per_episode - 1, False, "explore" if i % 3 else "greedy",
            "spade-bdi" if i < count // 2 else "other-backend", 1_700_000_000_123_456_789 + i,
            HINT if step == 0 else None, 1, 42 if episode == 0 else None))
    return out


def episode_records(count: int, run_id: str, agent_id: str = "a") -> list:
    from agents.records import EpisodeRecord
    return [EpisodeRecord(run_id, agent_id, e, float(e % 3), 10 + e, e % 2 == 0, e % 2 == 1,
                          1_700_000_000_000_000_000 + e, {"success": e % 2 == 0, "epsilon": 0.5 / (e + 1),
                                                          "outcome": "goal", "seed": None})
            for e in range(count)]


def comparable(row) -> dict:
    """A stored step without what differs between two runs of the same steps."""
    fields = dataclasses.asdict(row)
    for name in ("run_id", "seq_id", "id", "run_key"):
        fields.pop(name, None)
    return fields


async def test_columns_store_exactly_what_emit_step_stores(daemon, tmp_path: Path) -> None:
    steps_a = records(250, "run-one-by-one")
    steps_b = records(250, "run-columns")
    proxy = TelemetryGrpcProxy(daemon.address, spool_dir=tmp_path / "spool")
    async with proxy.session() as tx:
        for r in steps_a:
            await tx.emit_step(**r.emit_kwargs())
        await tx.emit_steps("run-columns", "a", steps_b)
        assert tx.stats.accepted == 500
    assert tx.stats.delivered == 500
    one_by_one = stored_steps(daemon.store.path, "run-one-by-one")
    by_columns = stored_steps(daemon.store.path, "run-columns")
    assert [s.seq_id for s in by_columns] == list(range(1, 251))
    # emit_step takes no episode_seed (its public signature); columns carry it.
    assert [s.episode_seed for s in by_columns] == [42] * 10 + [0] * 240
    assert [dict(comparable(s), episode_seed=0) for s in by_columns] == [comparable(s) for s in one_by_one]
    assert [s.render_hint_json for s in by_columns[:11]] == [HINT] + [""] * 9 + [HINT]
    assert {s.backend for s in by_columns} == {"spade-bdi", "other-backend"}


async def test_a_step_table_stores_exactly_what_its_step_records_store(daemon, tmp_path: Path) -> None:
    """What agents send (`emit_step_table`, the steps already held as columns) and the same
    steps as objects (`emit_steps`) end up the same in the store."""
    same_backend = records(250, "run-objects")[:125]
    table = chunk_of([dataclasses.replace(r, run_id="run-table") for r in same_backend]).steps
    proxy = TelemetryGrpcProxy(daemon.address, spool_dir=tmp_path / "spool")
    async with proxy.session() as tx:
        await tx.emit_steps("run-objects", "a", same_backend)
        await tx.emit_step_table("run-table", "a", table)
    assert tx.stats.delivered == 250
    by_objects = stored_steps(daemon.store.path, "run-objects")
    by_table = stored_steps(daemon.store.path, "run-table")
    assert [comparable(s) for s in by_table] == [comparable(s) for s in by_objects]
    assert [s.episode_seed for s in by_table[:11]] == [42] * 10 + [0]
    assert [s.render_hint_json for s in by_table[:11]] == [HINT] + [""] * 9 + [HINT]


async def test_one_publish_call_carries_many_column_blocks(start_daemon, monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    """A call's budget counts a column block as one message: three blocks of 8,000 steps go in
    one call (counted in records, a call stopped at 16,000, and the sender, which waits on one
    call at a time, paced a fast agent)."""
    calls = []
    publish = TrainerService.PublishTelemetryBatch

    async def counting(self, request_iterator, context):
        calls.append(1)
        return await publish(self, request_iterator, context)

    monkeypatch.setattr(TrainerService, "PublishTelemetryBatch", counting)
    daemon = await start_daemon()
    steps = records(24_000, "run-big", per_episode=100)
    backends = ["first", "second", "third"]
    steps = [dataclasses.replace(r, backend=backends[i // 8_000]) for i, r in enumerate(steps)]
    proxy = TelemetryGrpcProxy(daemon.address, spool_dir=tmp_path / "spool")
    async with proxy.session("run-big") as tx:
        await tx.emit_steps("run-big", "a", steps)  # one block per backend, buffered at once
    assert tx.stats.delivered == 24_000
    assert len(calls) == 1
    assert daemon.store.counts("run-big").steps == 24_000


async def test_a_big_column_block_stays_in_memory_while_the_buffer_has_room(daemon, tmp_path: Path) -> None:
    """The buffer's record bound counts a column block as one message (its bytes are bounded
    by buffer_max_bytes): 5,000 steps in one block do not spill a 2,000-message buffer."""
    proxy = TelemetryGrpcProxy(daemon.address, spool_dir=tmp_path / "spool", buffer_max_records=2_000)
    async with proxy.session("run-burst") as tx:
        await tx.emit_steps("run-burst", "a", records(5_000, "run-burst")[:2_500])
        await tx.emit_steps("run-burst", "a", records(5_000, "run-burst")[2_500:])
    assert (tx.stats.spooled, tx.stats.delivered) == (0, 5_000)
    assert daemon.store.counts("run-burst").steps == 5_000


async def test_a_live_viewer_receives_column_steps_as_run_steps(daemon, tmp_path: Path) -> None:
    channel, stub = stub_for(daemon)
    await register(stub, "run-live")
    received: list[pb.RunStep] = []
    episodes: list[pb.RunEpisode] = []
    call = stub.StreamRunSteps(pb.StreamStepsRequest(run_id="run-live", since_seq=0))
    episode_call = stub.StreamRunEpisodes(pb.StreamEpisodesRequest(run_id="run-live", since_seq=0))

    async def read(stream, into: list) -> None:
        async for record in stream:
            into.append(record)

    readers = [asyncio.create_task(read(call, received)), asyncio.create_task(read(episode_call, episodes))]
    # Subscribed before anything is stored, so what follows reaches them live, not from the store.
    await wait_until(lambda: daemon.hub.has_subscribers(steps_topic("run-live"))
                     and daemon.hub.has_subscribers(episodes_topic("run-live")), 10, "both viewers")
    proxy = TelemetryGrpcProxy(daemon.address, spool_dir=tmp_path / "spool")
    async with proxy.session("run-live") as tx:
        await tx.emit_steps("run-live", "a", records(100, "run-live"))
        await tx.emit_episodes("run-live", "a", episode_records(10, "run-live"))
    await wait_until(lambda: len(received) == 100 and len(episodes) == 10, 10, "100 live steps, 10 episodes")
    call.cancel()
    episode_call.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    await channel.close()
    assert [e.seq_id for e in episodes] == list(range(1, 11))
    assert (episodes[3].run_id, episodes[3].agent_id, episodes[3].steps) == ("run-live", "a", 13)
    assert episodes[3].metadata_json == '{"success":false,"epsilon":0.125,"outcome":"goal","seed":null}'
    assert [s.seq_id for s in received] == list(range(1, 101))
    first = received[0]
    assert (first.run_id, first.agent_id, first.render_hint_json, first.episode_seed) == ("run-live", "a", HINT, 42)
    assert first.timestamp.seconds * 1_000_000_000 + first.timestamp.nanos == 1_700_000_000_123_456_789


async def test_daemon_that_does_not_read_columns_gets_run_steps(
        start_daemon, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A daemon that does not say `accepts_columns` (an older one would ignore the
    field, losing the steps) gets every step as a RunStep."""
    register_worker = TrainerService.RegisterWorker

    async def without_columns(self, request, context):
        response = await register_worker(self, request, context)
        response.accepts_columns = False
        return response

    monkeypatch.setattr(TrainerService, "RegisterWorker", without_columns)
    daemon = await start_daemon()
    proxy = TelemetryGrpcProxy(daemon.address, spool_dir=tmp_path / "spool")
    async with proxy.session("run-old") as tx:
        await tx.emit_steps("run-old", "a", records(300, "run-old"))
        await tx.emit_episodes("run-old", "a", episode_records(30, "run-old"))
    rows = stored_steps(daemon.store.path, "run-old")
    assert len(rows) == 300 and rows[0].render_hint_json == HINT and rows[0].episode_seed == 42
    assert daemon.store.counts("run-old").episodes == 30


async def test_reference_daemon_path_expands_columns(start_daemon, monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    without_extension(monkeypatch, "PublishTelemetryBatch")
    daemon = await start_daemon()
    proxy = TelemetryGrpcProxy(daemon.address, spool_dir=tmp_path / "spool")
    async with proxy.session("run-ref") as tx:
        await tx.emit_steps("run-ref", "a", records(120, "run-ref"))
        await tx.emit_episodes("run-ref", "a", episode_records(12, "run-ref"))
    assert tx.stats.delivered == 132
    counts = daemon.store.counts("run-ref")
    assert (counts.steps, counts.episodes) == (120, 12)


async def test_blocks_split_to_fit_small_messages_and_a_huge_step_is_refused(daemon, tmp_path: Path) -> None:
    proxy = TelemetryGrpcProxy(daemon.address, spool_dir=tmp_path / "spool", max_message_bytes=4096)
    async with proxy.session("run-small") as tx:
        await tx.emit_steps("run-small", "a", records(2_000, "run-small"))
        huge = dataclasses.replace(records(1, "run-small")[0], step_index=99, observation_json="x" * 10_000)
        with pytest.raises(MessageTooLargeError, match="observation_json"):
            await tx.emit_steps("run-small", "a", [huge])
    assert tx.stats.delivered == 2_000
    assert daemon.store.counts("run-small").steps == 2_000


async def test_spooled_columns_replay_exactly_once(tmp_path: Path) -> None:
    """Columns spooled while the daemon is away are replayed once it is back; sending the
    same steps again adds nothing (dedup on the natural key)."""
    port = free_port()
    spool = tmp_path / "spool"
    down = TelemetryGrpcProxy(f"127.0.0.1:{port}", spool_dir=spool, connect_timeout_s=0.5,
                              close_timeout_s=1.0)
    async with down.session("run-spool") as tx:
        await tx.emit_steps("run-spool", "a", records(500, "run-spool"))
    assert tx.stats.spooled == 500
    daemon = await serve(f"127.0.0.1:{port}", tmp_path / "later.db")
    try:
        up = TelemetryGrpcProxy(daemon.address, spool_dir=spool)
        async with up.session("run-spool") as tx:
            await tx.emit_steps("run-spool", "a", records(500, "run-spool"))
        assert tx.stats.replayed == 500
        assert daemon.store.counts("run-spool").steps == 500
    finally:
        await daemon.stop(grace=None)


def test_misaligned_columns_are_refused_with_a_reason() -> None:
    block, = columns.encode_steps("a", "w", records(10, "r")[5:])
    del block.reward[-1]
    with pytest.raises(columns.ColumnsError, match="4 values of reward for 5 steps"):
        columns.row_values(block)
    block, = columns.encode_steps("a", "w", records(10, "r")[5:])
    episodes = columns.encode_episodes("a", "w", episode_records(3, "r"), str)
    del episodes.metadata_json[0]
    with pytest.raises(columns.ColumnsError, match="2 values of metadata_json for 3 episodes"):
        columns.row_values(episodes)
    block.render_hint_rows.append(9)
    block.render_hint_json.append(HINT)
    with pytest.raises(columns.ColumnsError, match="row 9 of 5"):
        columns.row_values(block)


async def test_daemon_answers_misaligned_columns_with_invalid_argument(daemon) -> None:
    channel, stub = stub_for(daemon)
    metadata = await register(stub, "run-bad")
    block, = columns.encode_steps("a", "w", records(10, "run-bad")[5:])
    del block.step_index[0]
    batch = pb.TelemetryBatch(run_id="run-bad", step_columns=[block])

    async def one():
        yield batch

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.PublishTelemetryBatch(one(), metadata=metadata)
    await channel.close()
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "step_index" in refused.value.details()
    assert daemon.store.counts("run-bad").steps == 0


async def test_emit_episodes_stores_what_emit_episode_stores(daemon, tmp_path: Path) -> None:
    episodes = episode_records(40, "run-x")
    proxy = TelemetryGrpcProxy(daemon.address, spool_dir=tmp_path / "spool")
    async with proxy.session() as tx:
        for e in episodes:
            await tx.emit_episode(**dict(e.emit_kwargs(), run_id="run-one-by-one"))
        await tx.emit_episodes("run-batch", "a", [dataclasses.replace(e, run_id="run-batch") for e in episodes])
    one = [comparable(e) for e in daemon.store.read_episodes("run-one-by-one", limit=100)]
    batch = [comparable(e) for e in daemon.store.read_episodes("run-batch", limit=100)]
    assert len(batch) == 40 and batch == one
    assert batch[1]["metadata_json"] == '{"success":false,"epsilon":0.25,"outcome":"goal","seed":null}'


def test_the_compact_json_encoder_matches_json_dumps() -> None:
    import json
    import math

    from telemetry.proxy import _as_json_text
    for value in ({"a": [1, 2.5, None, True], "é": "ü\n"}, [math.nan, math.inf], 3, "text", {"nested": {"x": []}}):
        expected = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        assert _as_json_text(value, "metadata") == expected
    with pytest.raises(ValueError, match="metadata must be JSON text or a JSON-serialisable value.*set"):
        _as_json_text({"a": {1, 2}}, "metadata")
    loop: dict = {}
    loop["self"] = loop
    with pytest.raises(ValueError, match="metadata must be JSON"):
        _as_json_text(loop, "metadata")
