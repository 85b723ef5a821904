"""StreamRunStepBatches (extension): StreamRunSteps with many steps per message, against the
real daemon; and ``python -m telemetry tail`` reading it, or StreamRunSteps from a daemon
that does not have it."""
import asyncio
import signal
import subprocess
import sys
from collections.abc import Sequence

import grpc
import pytest

from telemetry.daemon import STEP_BATCH_BYTES, STEP_BATCH_RECORDS
from telemetry.generated import trainer_pb2 as pb
from tests.fixtures_daemon import PROJECT_ROOT, iterate, register, steps, stub_for

SERVICE = "gymgui.trainer.TrainerService"


def interleaved(run_id: str, agents: Sequence[str], each: int, *, first: int = 0, size: int = 250) -> list[pb.TelemetryBatch]:
    """``each`` steps of every agent (step numbers from ``first``), the agents taking turns,
    in publish batches of ``size``."""
    per_agent = [steps(run_id, agent, each, first=first) for agent in agents]
    mixed = [step for row in zip(*per_agent) for step in row]
    return [pb.TelemetryBatch(run_id=run_id, steps=mixed[i:i + size]) for i in range(0, len(mixed), size)]


async def publish(stub, auth, batches: Sequence[pb.TelemetryBatch]) -> int:
    """Publish the batches in one stream; how many steps were accepted."""
    return (await stub.PublishTelemetryBatch(iterate(*batches), metadata=auth)).accepted


async def read_batches(call, count: int, timeout: float = 60) -> list[pb.TelemetryBatch]:
    """Read batches from a StreamRunStepBatches call until they hold ``count`` steps."""
    out: list[pb.TelemetryBatch] = []

    async def read() -> None:
        held = 0
        while held < count:
            batch = await call.read()
            assert batch is not grpc.aio.EOF, f"the stream ended after {held} of {count} steps"
            out.append(batch)
            held += len(batch.steps)

    await asyncio.wait_for(read(), timeout)
    return out


def check_batches(batches: Sequence[pb.TelemetryBatch], run_id: str) -> list[pb.RunStep]:
    """Every batch is a non-empty, bounded batch of the run's steps and nothing else; its steps."""
    for batch in batches:
        assert batch.run_id == run_id
        assert 0 < len(batch.steps) <= STEP_BATCH_RECORDS
        assert not batch.episodes and not batch.messages and not batch.step_columns
    return [step for batch in batches for step in batch.steps]


@pytest.mark.timeout(120)
async def test_replay_then_live_has_no_gap_and_no_duplicate(daemon) -> None:
    channel, stub = stub_for(daemon)
    async with channel:
        auth = await register(stub, "batches")
        assert await publish(stub, auth, interleaved("batches", ["a1", "a2"], 2_000)) == 4_000
        call = stub.StreamRunStepBatches(pb.StreamStepsRequest(run_id="batches"))
        # More is published while the viewer replays: the handoff to live must neither skip nor repeat.
        producer = asyncio.ensure_future(publish(stub, auth, interleaved("batches", ["a1", "a2"], 2_000, first=2_000)))
        got = check_batches(await read_batches(call, 8_000), "batches")
        assert await producer == 4_000
        later = asyncio.ensure_future(read_batches(call, 10))
        assert await publish(stub, auth, interleaved("batches", ["a3"], 10)) == 10
        got += check_batches(await later, "batches")
        call.cancel()
    assert [s.seq_id for s in got] == list(range(1, 8_011))
    assert [(s.agent_id, s.step_index) for s in got[-10:]] == [("a3", i) for i in range(10)]
    assert all(s.run_id == "batches" for s in got)


@pytest.mark.timeout(60)
async def test_many_steps_per_message(daemon) -> None:
    channel, stub = stub_for(daemon)
    async with channel:
        auth = await register(stub, "paged")
        assert await publish(stub, auth, interleaved("paged", ["a"], 3_000)) == 3_000
        call = stub.StreamRunStepBatches(pb.StreamStepsRequest(run_id="paged"))
        got = await read_batches(call, 3_000)
        call.cancel()
    assert len(got) < 10, [len(b.steps) for b in got]
    assert [s.seq_id for s in check_batches(got, "paged")] == list(range(1, 3_001))


@pytest.mark.timeout(60)
async def test_since_seq_n_gives_n_plus_1_onward(daemon) -> None:
    channel, stub = stub_for(daemon)
    async with channel:
        auth = await register(stub, "since")
        assert await publish(stub, auth, interleaved("since", ["a"], 300)) == 300
        call = stub.StreamRunStepBatches(pb.StreamStepsRequest(run_id="since", since_seq=120))
        got = check_batches(await read_batches(call, 180), "since")
        call.cancel()
    assert [s.seq_id for s in got] == list(range(121, 301))
    assert (got[0].episode_index, got[0].step_index) == (1, 20)


@pytest.mark.timeout(60)
async def test_agent_filter_in_replay_and_live(daemon) -> None:
    channel, stub = stub_for(daemon)
    async with channel:
        auth = await register(stub, "filtered")
        assert await publish(stub, auth, interleaved("filtered", ["a1", "a2"], 500)) == 1_000
        call = stub.StreamRunStepBatches(pb.StreamStepsRequest(run_id="filtered", agent_id="a2"))
        replayed = check_batches(await read_batches(call, 500), "filtered")
        live = asyncio.ensure_future(read_batches(call, 100))
        assert await publish(stub, auth, interleaved("filtered", ["a1", "a2"], 100, first=500)) == 200
        got = replayed + check_batches(await live, "filtered")
        call.cancel()
    assert {s.agent_id for s in got} == {"a2"}
    assert [s.episode_index * 100 + s.step_index for s in got] == list(range(600))
    # Interleaved with a1, a2's steps are every other seq.
    assert [s.seq_id for s in got] == list(range(2, 1_201, 2))


@pytest.mark.timeout(60)
async def test_unknown_run_is_not_found_like_stream_run_steps(daemon) -> None:
    channel, stub = stub_for(daemon)
    async with channel:
        codes = []
        for rpc in (stub.StreamRunStepBatches, stub.StreamRunSteps):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await rpc(pb.StreamStepsRequest(run_id="no-such-run")).read()
            codes.append(caught.value.code())
    assert codes == [grpc.StatusCode.NOT_FOUND, grpc.StatusCode.NOT_FOUND]


@pytest.mark.timeout(60)
async def test_large_steps_are_split_under_the_message_bound(daemon) -> None:
    payload = "x" * 100_000
    big = steps("big", "a", 30)
    for step in big:
        step.render_payload_json = f'"{payload}"'
    channel, stub = stub_for(daemon)
    async with channel:
        auth = await register(stub, "big")
        assert await publish(stub, auth, [pb.TelemetryBatch(run_id="big", steps=big[i:i + 10])
                                          for i in range(0, 30, 10)]) == 30
        call = stub.StreamRunStepBatches(pb.StreamStepsRequest(run_id="big"))
        got = await read_batches(call, 30)
        call.cancel()
    assert len(got) > 1 and all(batch.ByteSize() <= STEP_BATCH_BYTES for batch in got)
    assert [s.seq_id for s in check_batches(got, "big")] == list(range(1, 31))


@pytest.mark.timeout(60)
async def test_slow_viewer_catches_up_from_the_store(start_daemon) -> None:
    daemon = await start_daemon(live_queue_records=16)
    channel, stub = stub_for(daemon)
    async with channel:
        auth = await register(stub, "slow")
        call = stub.StreamRunStepBatches(pb.StreamStepsRequest(run_id="slow"))
        assert await publish(stub, auth, interleaved("slow", ["a"], 1)) == 1
        first = check_batches(await read_batches(call, 1), "slow")
        # The viewer reads nothing while 6,000 steps go in: its live queue overflows.
        assert await publish(stub, auth, interleaved("slow", ["a"], 5_999, first=1, size=300)) == 5_999
        assert daemon.hub.overflows >= 1
        rest = check_batches(await read_batches(call, 5_999), "slow")
        call.cancel()
    assert [s.seq_id for s in first + rest] == list(range(1, 6_001))


# -- the CLI's tail -------------------------------------------------------------------------

class Relay:
    """A gRPC server offering only some of the daemon's server-streaming read RPCs, passing
    them on to the real daemon and noting which were called. What it does not offer gets
    UNIMPLEMENTED, as from a daemon that lacks them (the reference daemon lacks
    StreamRunStepBatches)."""

    MESSAGES = {"StreamRunSteps": (pb.StreamStepsRequest, pb.RunStep),
                "StreamRunStepBatches": (pb.StreamStepsRequest, pb.TelemetryBatch),
                "StreamRunEpisodes": (pb.StreamEpisodesRequest, pb.RunEpisode)}

    def __init__(self, upstream: str, offered: Sequence[str]) -> None:
        self.called: list[str] = []
        self._channel = grpc.aio.insecure_channel(upstream)
        self.server = grpc.aio.server()
        handlers = {name: self._handler(name) for name in offered}
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"

    def _handler(self, name: str) -> grpc.RpcMethodHandler:
        request_type, response_type = self.MESSAGES[name]
        upstream = self._channel.unary_stream(f"/{SERVICE}/{name}", request_serializer=request_type.SerializeToString,
                                              response_deserializer=response_type.FromString)

        async def relay(request, context):
            self.called.append(name)
            async for message in upstream(request):
                yield message

        return grpc.unary_stream_rpc_method_handler(relay, request_deserializer=request_type.FromString,
                                                    response_serializer=response_type.SerializeToString)

    async def stop(self) -> None:
        await self.server.stop(None)
        await self._channel.close()


async def tail_lines(target: str, run_id: str, count: int, *args: str) -> list[str]:
    """Run ``python -m telemetry tail`` until it printed ``count`` lines; those lines."""
    process = subprocess.Popen([sys.executable, "-m", "telemetry", "tail", run_id, "--target", target, *args],
                               cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        while len(lines) < count:
            line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 30)
            assert line, f"tail ended after {len(lines)} lines: {process.stderr.read()}"
            lines.append(line)
    finally:
        process.send_signal(signal.SIGINT)
        await asyncio.to_thread(process.wait, 30)
    return lines


async def seed_tail_run(daemon) -> None:
    channel, stub = stub_for(daemon)
    async with channel:
        auth = await register(stub, "tailed")
        assert await publish(stub, auth, interleaved("tailed", ["a1", "a2"], 100)) == 200


def step_numbers(lines: Sequence[str]) -> list[str]:
    """The '#seq' of every step line."""
    return [line.split()[1] for line in lines if line.startswith("step")]


@pytest.mark.timeout(120)
async def test_tail_reads_step_batches(daemon) -> None:
    await seed_tail_run(daemon)
    relay = Relay(daemon.address, ["StreamRunStepBatches", "StreamRunEpisodes"])
    await relay.server.start()
    try:
        lines = await tail_lines(relay.address, "tailed", 50, "--since", "100", "--agent", "a2")
    finally:
        await relay.stop()
    assert step_numbers(lines) == [f"#{seq}" for seq in range(102, 201, 2)]
    assert all("agent=a2 " in line for line in lines)
    assert "StreamRunStepBatches" in relay.called and "StreamRunSteps" not in relay.called


@pytest.mark.timeout(120)
async def test_tail_falls_back_to_stream_run_steps_when_batches_are_unimplemented(daemon) -> None:
    await seed_tail_run(daemon)
    relay = Relay(daemon.address, ["StreamRunSteps", "StreamRunEpisodes"])
    await relay.server.start()
    try:
        lines = await tail_lines(relay.address, "tailed", 200, "--kind", "steps")
    finally:
        await relay.stop()
    assert step_numbers(lines) == [f"#{seq}" for seq in range(1, 201)]
    assert relay.called == ["StreamRunSteps"]
