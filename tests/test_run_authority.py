"""Who may act on a run, against a real daemon: a run protected by its secret admits only
those who give it (or the daemon's operator token) to publish, control or cancel; operator
sessions never publish; open runs keep MOSAIC/1.0's behaviour."""

from __future__ import annotations

import grpc
import pytest

from telemetry.auth import bearer_metadata
from telemetry.daemon import PROTO_VERSION
from telemetry.generated import trainer_pb2 as pb
from telemetry.runs import RunStatus
from tests.fixtures_daemon import iterate, steps, stub_for


async def join(stub, run_id: str, *, secret: str = "", kind: str = "producer", worker: str = "w",
               metadata=None) -> tuple:
    response = await stub.RegisterWorker(pb.RegisterWorkerRequest(
        run_id=run_id, worker_id=worker, worker_kind=kind, proto_version=PROTO_VERSION, run_secret=secret),
        metadata=metadata)
    return bearer_metadata(response.session_token)


async def refused(call) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code()


@pytest.mark.timeout(60)
async def test_a_stranger_cannot_publish_control_or_cancel_a_protected_run_the_owner_can(start_daemon) -> None:
    daemon = await start_daemon()
    channel, stub = stub_for(daemon)
    async with channel:
        owner = await join(stub, "guarded", secret="s3cret", worker="owner")
        assert (await stub.PublishRunSteps(iterate(*steps("guarded", "a", 5)), metadata=owner)).accepted == 5
        # A second producer of the same run, with the secret: admitted (parallel workers).
        partner = await join(stub, "guarded", secret="s3cret", worker="partner")
        assert (await stub.PublishRunSteps(iterate(*steps("guarded", "b", 3)), metadata=partner)).accepted == 3

        for secret in ("", "guess"):
            assert await refused(join(stub, "guarded", secret=secret, worker="stranger")) == grpc.StatusCode.PERMISSION_DENIED
            assert await refused(join(stub, "guarded", secret=secret, kind="operator")) == grpc.StatusCode.PERMISSION_DENIED
        assert await refused(stub.CancelRun(pb.CancelRunRequest(run_id="guarded"))) == grpc.StatusCode.PERMISSION_DENIED
        someone_else = await join(stub, "elsewhere", worker="stranger")
        assert await refused(stub.CancelRun(pb.CancelRunRequest(run_id="guarded"), metadata=someone_else)) \
            == grpc.StatusCode.PERMISSION_DENIED
        assert await refused(stub.PublishRunSteps(iterate(*steps("guarded", "x", 1)), metadata=someone_else)) \
            == grpc.StatusCode.UNAUTHENTICATED
        assert daemon.store.counts("guarded").steps == 8 and daemon.registry.get("guarded").status is RunStatus.EXEC

        await stub.CancelRun(pb.CancelRunRequest(run_id="guarded"), metadata=owner)
    run = daemon.registry.get("guarded")
    assert run.status is RunStatus.TERM and run.failure_reason.startswith("cancelled")


@pytest.mark.timeout(60)
async def test_the_operator_token_controls_and_cancels_any_run_but_never_publishes(start_daemon) -> None:
    daemon = await start_daemon(operator_token="op-token")
    channel, stub = stub_for(daemon)
    async with channel:
        await join(stub, "watched", secret="s3cret", worker="owner")
        operator = await join(stub, "watched", kind="operator", metadata=bearer_metadata("op-token"))
        assert await refused(stub.PublishRunSteps(iterate(*steps("watched", "a", 1)), metadata=operator)) \
            == grpc.StatusCode.PERMISSION_DENIED
        # A producer registration does not borrow the operator's authority.
        assert await refused(join(stub, "watched", worker="intruder", metadata=bearer_metadata("op-token"))) \
            == grpc.StatusCode.PERMISSION_DENIED
        await stub.CancelRun(pb.CancelRunRequest(run_id="watched"), metadata=bearer_metadata("op-token"))
    assert daemon.registry.get("watched").status is RunStatus.TERM
    assert daemon.store.counts("watched").steps == 0


@pytest.mark.timeout(60)
async def test_an_open_run_keeps_the_mosaic_behaviour(start_daemon) -> None:
    daemon = await start_daemon()
    channel, stub = stub_for(daemon)
    async with channel:
        await stub.SubmitRun(pb.SubmitRunRequest(run_id="open", config_json="{}"))
        producer = await join(stub, "open")
        assert (await stub.PublishRunSteps(iterate(*steps("open", "a", 2)), metadata=producer)).accepted == 2
        await stub.CancelRun(pb.CancelRunRequest(run_id="open"))
    assert daemon.registry.get("open").status is RunStatus.TERM


@pytest.mark.timeout(60)
async def test_a_containers_run_secret_keeps_other_producers_out(start_daemon, tmp_path) -> None:
    from agents.config import parse_container_config
    from telemetry import TelemetryGrpcProxy
    from telemetry.errors import TelemetryError

    daemon = await start_daemon()
    config = parse_container_config({"telemetry": {"target": daemon.address, "run_secret": "s3cret"},
                                     "agents": [{"agent_id": "a", "env_id": "FrozenLake-v1"}]})
    assert config.telemetry.run_secret == "s3cret"
    owner = TelemetryGrpcProxy(daemon.address, run_secret=config.telemetry.run_secret, spool_dir=tmp_path / "a")
    async with owner.session(config.run_id):
        with pytest.raises(TelemetryError, match="protected by a secret"):
            async with TelemetryGrpcProxy(daemon.address, spool_dir=tmp_path / "b", worker_id="other").session(config.run_id):
                pass
        async with TelemetryGrpcProxy(daemon.address, run_secret="s3cret", spool_dir=tmp_path / "c",
                                      worker_id="partner").session(config.run_id):
            pass
