"""Refusals: tokens, run_id changes, oversized messages, protocol version; the daemon keeps serving."""
import asyncio

import grpc
import pytest

from telemetry.auth import bearer_metadata
from telemetry.generated import trainer_pb2 as pb
from tests.fixtures_daemon import iterate, register, steps, stub_for


async def refused(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


@pytest.mark.timeout(60)
async def test_bad_tokens_are_unauthenticated_while_others_keep_publishing(daemon) -> None:
    channel, stub = stub_for(daemon)
    async with channel:
        good = await register(stub, "good")
        other = await register(stub, "other")
        started = asyncio.Event()

        async def slow_stream():
            for i, step in enumerate(steps("good", "a", 2_000)):
                yield step
                if i == 10:
                    started.set()
                if i % 100 == 0:
                    await asyncio.sleep(0)

        producer = asyncio.ensure_future(stub.PublishRunSteps(slow_stream(), metadata=good))
        await started.wait()

        cases = {
            "missing": None,
            "wrong": bearer_metadata("not-a-token"),
            "other run's": other,
            "not bearer": (("authorization", "Basic abc"),),
        }
        for name, metadata in cases.items():
            for publish, record in ((stub.PublishRunSteps, steps("good", "a", 1)[0]),
                                    (stub.PublishTelemetryBatch, pb.TelemetryBatch(run_id="good"))):
                error = await refused(publish(iterate(record), metadata=metadata))
                assert error.code() == grpc.StatusCode.UNAUTHENTICATED, (name, error.details())
                assert "token" in error.details()
        control = stub.ControlStream(iterate(pb.ControlEvent(run_id="good", subscribe=True)), metadata=other)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in control:
                pass
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED

        result = await producer
        assert (result.accepted, result.dropped) == (2_000, 0)
        assert daemon.store.counts("good").steps == 2_000
        assert daemon.store.counts("other").steps == 0


async def test_run_id_changed_mid_stream_is_invalid_argument(daemon) -> None:
    channel, stub = stub_for(daemon)
    async with channel:
        auth = await register(stub, "steady")
        await register(stub, "elsewhere")
        error = await refused(stub.PublishRunSteps(
            iterate(*steps("steady", "a", 3), *steps("elsewhere", "a", 1, first=3)), metadata=auth))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "changed mid-stream" in error.details()
        error = await refused(stub.PublishTelemetryBatch(
            iterate(pb.TelemetryBatch(run_id="steady"), pb.TelemetryBatch(run_id="elsewhere")), metadata=auth))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        mixed = pb.TelemetryBatch(run_id="steady", steps=steps("steady", "b", 2) + steps("elsewhere", "b", 1))
        error = await refused(stub.PublishTelemetryBatch(iterate(mixed), metadata=auth))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "elsewhere" in error.details()
        # What came before the change is kept; nothing of the mixed batch is.
        assert [s.agent_id for s in daemon.store.read_steps("steady")] == ["a", "a", "a"]
        ok = await stub.PublishRunSteps(iterate(*steps("steady", "a", 5)), metadata=auth)
        assert (ok.accepted, ok.dropped) == (2, 3)


@pytest.mark.timeout(60)
async def test_oversized_message_gets_a_clear_error_and_the_limit_is_advertised(start_daemon) -> None:
    daemon = await start_daemon(max_message_bytes=64 * 1024)
    channel, stub = stub_for(daemon)
    async with channel:
        response = await stub.RegisterWorker(pb.RegisterWorkerRequest(
            run_id="big", worker_id="w", proto_version="MOSAIC/1.0"))
        assert response.max_message_bytes == 64 * 1024
        auth = bearer_metadata(response.session_token)
        big = steps("big", "a", 1)[0]
        big.observation_json = "[" + "0," * 50_000 + "0]"
        error = await refused(stub.PublishRunSteps(iterate(big), metadata=auth))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "larger than max" in error.details() and str(64 * 1024) in error.details()
        ok = await stub.PublishRunSteps(iterate(*steps("big", "a", 3)), metadata=auth)
        assert ok.accepted == 3


async def test_wrong_protocol_version_is_failed_precondition(daemon) -> None:
    channel, stub = stub_for(daemon)
    async with channel:
        for version in ("MOSAIC/2.0", ""):
            error = await refused(stub.RegisterWorker(pb.RegisterWorkerRequest(run_id="v", proto_version=version)))
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "MOSAIC/1.0" in error.details()
        assert daemon.registry.get("v") is None
        error = await refused(stub.RegisterWorker(pb.RegisterWorkerRequest(run_id="", proto_version="MOSAIC/1.0")))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_tokens_of_live_sessions_survive_a_daemon_restart(start_daemon, tmp_path) -> None:
    db = tmp_path / "restart.db"
    first = await start_daemon(db_path=db)
    channel, stub = stub_for(first)
    async with channel:
        auth = await register(stub, "kept")
        assert (await stub.PublishRunSteps(iterate(*steps("kept", "a", 10)), metadata=auth)).accepted == 10
    await first.stop()

    second = await start_daemon(db_path=db)
    channel, stub = stub_for(second)
    async with channel:
        result = await stub.PublishRunSteps(iterate(*steps("kept", "a", 15)), metadata=auth)
        assert (result.accepted, result.dropped) == (5, 10)
        assert [s.seq_id for s in second.store.read_steps("kept")] == list(range(1, 16))
