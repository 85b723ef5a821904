"""Runs: state machine through WatchRuns, SubmitRun/CancelRun/Heartbeat/ListRuns/GetHealth,
FAULT on silence, and control events reaching producers."""
import asyncio
import hashlib
import os

import grpc
import pytest

from telemetry.generated import trainer_pb2 as pb
from telemetry.runs import RunStatus
from tests.fixtures_daemon import iterate, register, steps, stub_for, wait_until

S = RunStatus


async def refused(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def control(stub, auth, event: pb.ControlEvent) -> pb.ControlEvent:
    """Send one command on an operator ControlStream; return the daemon's acknowledgement."""
    call = stub.ControlStream(iterate(event), metadata=auth)
    ack = await asyncio.wait_for(call.read(), 10)
    call.cancel()
    return ack


async def statuses(stub, run_id: str) -> S:
    runs = (await stub.ListRuns(pb.ListRunsRequest())).runs
    return S({r.run_id: r.status for r in runs}[run_id])


@pytest.mark.timeout(60)
async def test_state_machine_seen_through_watch_runs(daemon) -> None:
    channel, stub = stub_for(daemon)
    async with channel:
        watch = stub.WatchRuns(pb.WatchRunsRequest())
        config = '{"env_id": "FrozenLake-v1", "episodes": 10}'
        submitted = await stub.SubmitRun(pb.SubmitRunRequest(run_id="sm", config_json=config))
        assert submitted.digest == hashlib.sha256(config.encode()).hexdigest()
        auth = await register(stub, "sm", worker_kind="spade-bdi")
        await stub.PublishRunSteps(iterate(*steps("sm", "a", 5)), metadata=auth)
        operator = await register(stub, "sm", worker_kind="operator")
        assert (await control(stub, operator, pb.ControlEvent(run_id="sm", pause=True))).pause
        assert await statuses(stub, "sm") is S.PAUSE
        # Telemetry still in flight while paused is stored; the run stays PAUSE.
        await stub.PublishRunSteps(iterate(*steps("sm", "a", 2, first=5)), metadata=auth)
        assert await statuses(stub, "sm") is S.PAUSE
        await control(stub, operator, pb.ControlEvent(run_id="sm", resume=True))
        await stub.CancelRun(pb.CancelRunRequest(run_id="sm"))
        await stub.CancelRun(pb.CancelRunRequest(run_id="sm"))

        seen = []
        async for record in watch:
            seen.append(record)
            if record.status == S.TERM:
                break
        watch.cancel()
        assert [S(r.status) for r in seen] == [S.INIT, S.RDY, S.EXEC, S.PAUSE, S.EXEC, S.TERM]
        seqs = [r.seq_id for r in seen]
        assert seqs == list(range(1, 7))
        assert all(r.digest == submitted.digest for r in seen)

        # A late watcher replays the same history; since_seq=N gives the changes after N.
        replay = stub.WatchRuns(pb.WatchRunsRequest(since_seq=2))
        assert [S((await asyncio.wait_for(replay.read(), 10)).status) for _ in range(4)] == [
            S.EXEC, S.PAUSE, S.EXEC, S.TERM]
        replay.cancel()
        await stub.SubmitRun(pb.SubmitRunRequest(run_id="later", config_json="{}"))
        watch = stub.WatchRuns(pb.WatchRunsRequest(since_seq=seqs[-1]))
        record = await asyncio.wait_for(watch.read(), 10)
        watch.cancel()
        assert (record.run_id, S(record.status)) == ("later", S.INIT) and record.seq_id > seqs[-1]

        # TERM is terminal: control is refused; late telemetry is still stored.
        error = await refused(control(stub, operator, pb.ControlEvent(run_id="sm", resume=True)))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "TERM" in error.details()
        late = await stub.PublishRunSteps(iterate(*steps("sm", "a", 1, first=7)), metadata=auth)
        assert late.accepted == 1 and await statuses(stub, "sm") is S.TERM


async def test_submit_run_is_idempotent_and_refuses_a_different_config(daemon) -> None:
    channel, stub = stub_for(daemon)
    async with channel:
        first = await stub.SubmitRun(pb.SubmitRunRequest(run_id="cfg", config_json='{"a": 1}'))
        again = await stub.SubmitRun(pb.SubmitRunRequest(run_id="cfg", config_json='{"a": 1}'))
        assert first == again
        error = await refused(stub.SubmitRun(pb.SubmitRunRequest(run_id="cfg", config_json='{"a": 2}')))
        assert error.code() == grpc.StatusCode.ALREADY_EXISTS
        error = await refused(stub.SubmitRun(pb.SubmitRunRequest(run_id="bad", config_json="{nope")))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        generated = await stub.SubmitRun(pb.SubmitRunRequest(config_json="{}"))
        assert generated.run_id.startswith("run-")
        # A run created by a worker gets its config from a later SubmitRun.
        await register(stub, "adopted")
        adopted = await stub.SubmitRun(pb.SubmitRunRequest(run_id="adopted", config_json='{"b": 2}'))
        assert adopted.digest and daemon.store.get_run("adopted").config_json == '{"b": 2}'
        assert await statuses(stub, "adopted") is S.RDY


async def test_unknown_runs_and_health(daemon) -> None:
    channel, stub = stub_for(daemon)
    async with channel:
        for call in (stub.Heartbeat(pb.HeartbeatRequest(run_id="ghost")),
                     stub.CancelRun(pb.CancelRunRequest(run_id="ghost")),
                     stub.RegisterWorker(pb.RegisterWorkerRequest(run_id="ghost", worker_kind="operator",
                                                                  proto_version="MOSAIC/1.0"))):
            assert (await refused(call)).code() == grpc.StatusCode.NOT_FOUND
        assert daemon.registry.get("ghost") is None
        health = await stub.GetHealth(pb.HealthCheckRequest())
        assert health.healthy and health.pid == os.getpid() and health.listen_address == daemon.address

        await register(stub, "beating")
        await stub.Heartbeat(pb.HeartbeatRequest(run_id="beating"))
        await stub.SubmitRun(pb.SubmitRunRequest(run_id="waiting", config_json="{}"))
        listed = await stub.ListRuns(pb.ListRunsRequest(status_filter=[S.RDY]))
        assert [r.run_id for r in listed.runs] == ["beating"] and listed.runs[0].HasField("last_heartbeat")
        listed = await stub.ListRuns(pb.ListRunsRequest(status_filter=[S.INIT, S.RDY]))
        assert {r.run_id for r in listed.runs} == {"beating", "waiting"}


@pytest.mark.timeout(60)
async def test_silent_runs_fault_and_recover(start_daemon) -> None:
    daemon = await start_daemon(fault_after_s=0.3)
    channel, stub = stub_for(daemon)
    async with channel:
        quiet = await register(stub, "quiet")
        await stub.PublishRunSteps(iterate(*steps("quiet", "a", 3)), metadata=quiet)
        # "held" keeps a producer control stream open: it is alive however long it is silent.
        held_auth = await register(stub, "held")
        held = stub.ControlStream(iterate(pb.ControlEvent(run_id="held", subscribe=True)), metadata=held_auth)
        await wait_until(lambda: daemon.relay.subscribers("held") == 1, what="the control subscription")

        await wait_until(lambda: daemon.registry.get("quiet").status is S.FAULT, what="FAULT")
        record = [r for r in (await stub.ListRuns(pb.ListRunsRequest())).runs if r.run_id == "quiet"][0]
        assert "no heartbeat" in record.failure_reason
        assert daemon.registry.get("held").status is S.RDY

        await stub.PublishRunSteps(iterate(*steps("quiet", "a", 3, first=3)), metadata=quiet)
        assert await statuses(stub, "quiet") is S.EXEC
        held.cancel()
        await wait_until(lambda: daemon.registry.get("held").status is S.FAULT, what="FAULT after the stream closed")
        await stub.Heartbeat(pb.HeartbeatRequest(run_id="held"))
        assert await statuses(stub, "held") is S.RDY


@pytest.mark.timeout(60)
async def test_control_events_reach_subscribed_producers(daemon) -> None:
    channel, stub = stub_for(daemon)
    async with channel:
        auth = {a: await register(stub, "ctl", worker_id=a) for a in ("a1", "a2", "all")}
        await stub.PublishRunSteps(iterate(*steps("ctl", "a1", 1)), metadata=auth["a1"])
        producers = {a: stub.ControlStream(iterate(pb.ControlEvent(run_id="ctl", subscribe=True,
                                                                   agent_id="" if a == "all" else a)),
                                           metadata=auth[a])
                     for a in ("a1", "a2", "all")}
        await wait_until(lambda: daemon.relay.subscribers("ctl") == 3, what="3 subscriptions")
        operator = await register(stub, "ctl", worker_kind="operator")

        await control(stub, operator, pb.ControlEvent(run_id="ctl", pause=True))
        await control(stub, operator, pb.ControlEvent(run_id="ctl", agent_id="a1", grant_steps=5))
        await control(stub, operator, pb.ControlEvent(run_id="ctl", max_rate_hz=50))
        await control(stub, operator, pb.ControlEvent(run_id="ctl", resume=True))

        async def received(agent: str, n: int) -> list[tuple[str, str, object]]:
            events = [await asyncio.wait_for(producers[agent].read(), 10) for _ in range(n)]
            return [(e.WhichOneof("event"), e.agent_id, getattr(e, e.WhichOneof("event"))) for e in events]

        everything = [("pause", "", True), ("grant_steps", "a1", 5), ("max_rate_hz", "", 50), ("resume", "", True)]
        assert await received("a1", 4) == everything
        assert await received("a2", 3) == [e for e in everything if e[0] != "grant_steps"]
        # Subscribed without an agent: every event of the run, targeted ones included.
        assert await received("all", 4) == everything
        assert await statuses(stub, "ctl") is S.EXEC

        # A producer that subscribes late learns the standing state (paused agent, rate cap).
        await control(stub, operator, pb.ControlEvent(run_id="ctl", agent_id="a2", pause=True))
        late = stub.ControlStream(iterate(pb.ControlEvent(run_id="ctl", subscribe=True, agent_id="a2")),
                                  metadata=auth["a2"])
        events = [await asyncio.wait_for(late.read(), 10) for _ in range(2)]
        assert [(e.WhichOneof("event"), e.agent_id) for e in events] == [("pause", "a2"), ("max_rate_hz", "")]
        for call in (*producers.values(), late):
            call.cancel()

        error = await refused(control(stub, operator, pb.ControlEvent(run_id="ctl")))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_pause_needs_a_live_run(daemon) -> None:
    channel, stub = stub_for(daemon)
    async with channel:
        await stub.SubmitRun(pb.SubmitRunRequest(run_id="idle", config_json="{}"))
        worker = await register(stub, "other-run")
        operator = await register(stub, "idle", worker_kind="operator")
        error = await refused(control(stub, operator, pb.ControlEvent(run_id="idle", pause=True)))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "INIT" in error.details()
        assert await statuses(stub, "idle") is S.INIT
        error = await refused(control(stub, worker, pb.ControlEvent(run_id="idle", pause=True)))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def finish(stub, run_id: str, auth, failure_reason: str = "") -> pb.FinishRunResponse:
    return await stub.FinishRun(pb.FinishRunRequest(run_id=run_id, failure_reason=failure_reason), metadata=auth)


@pytest.mark.timeout(60)
async def test_finished_runs_end_term_or_fault_and_stay_so(start_daemon) -> None:
    daemon = await start_daemon(fault_after_s=0.3)
    channel, stub = stub_for(daemon)
    async with channel:
        watch = stub.WatchRuns(pb.WatchRunsRequest(status_filter=[S.TERM, S.FAULT]))
        clean = await register(stub, "clean")
        await stub.PublishRunSteps(iterate(*steps("clean", "a", 3)), metadata=clean)
        assert (await finish(stub, "clean", clean)).status == S.TERM
        failed = await register(stub, "failed")
        await stub.PublishRunSteps(iterate(*steps("failed", "a", 3)), metadata=failed)
        answer = await finish(stub, "failed", failed, "agent a failed: boom")
        assert answer.status == S.FAULT

        seen = {}
        async for record in watch:
            seen[record.run_id] = record
            if len(seen) == 2:
                break
        watch.cancel()
        assert seen["clean"].status == S.TERM and not seen["clean"].HasField("failure_reason")
        assert seen["failed"].status == S.FAULT and seen["failed"].failure_reason == "agent a failed: boom"

        # A run registered now goes silent and FAULTs after fault_after_s: by then the finished
        # runs have been through the FAULT watch too, and nothing moved them.
        await register(stub, "witness")
        await wait_until(lambda: daemon.registry.get("witness").status is S.FAULT, what="the witness FAULT")
        # Late telemetry, heartbeats and a second finish are stored or answered, but change nothing.
        await stub.PublishRunSteps(iterate(*steps("failed", "a", 2, first=3)), metadata=failed)
        await stub.Heartbeat(pb.HeartbeatRequest(run_id="failed"))
        with pytest.raises(grpc.aio.AioRpcError) as refused:   # one run_id, one run
            await register(stub, "failed")
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert (await finish(stub, "clean", clean, "too late")).status == S.TERM
        assert (await finish(stub, "failed", failed)).status == S.FAULT
        runs = {r.run_id: r for r in (await stub.ListRuns(pb.ListRunsRequest())).runs}
        assert runs["clean"].status == S.TERM
        assert runs["failed"].status == S.FAULT and runs["failed"].failure_reason == "agent a failed: boom"
        assert daemon.store.counts("failed").steps == 5


@pytest.mark.timeout(60)
async def test_a_run_of_several_producers_ends_when_the_last_one_finishes(start_daemon, tmp_path) -> None:
    """Workers that share a run_id (e.g. one `python -m agents.worker` per agent): the first to
    finish does not end the run for the others; the last one does, and a restarted daemon
    still knows who it waits for. A failure ends the run at once."""
    daemon = await start_daemon(db_path=tmp_path / "shared.db")
    channel, stub = stub_for(daemon)
    async with channel:
        first = await register(stub, "shared", worker_id="worker-1")
        second = await register(stub, "shared", worker_id="worker-2")
        await register(stub, "shared", worker_id="worker-1")   # registering again counts once
        await stub.PublishRunSteps(iterate(*steps("shared", "a", 3)), metadata=first)
        assert (await finish(stub, "shared", first)).status == S.EXEC
    await daemon.stop()
    daemon = await start_daemon(db_path=tmp_path / "shared.db")
    channel, stub = stub_for(daemon)
    async with channel:
        assert (await finish(stub, "shared", second)).status == S.TERM
        one = await register(stub, "failing", worker_id="worker-1")
        await register(stub, "failing", worker_id="worker-2")
        assert (await finish(stub, "failing", one, "agent a failed")).status == S.FAULT


@pytest.mark.timeout(60)
async def test_finish_commits_what_open_streams_buffered_first(start_daemon, monkeypatch) -> None:
    from telemetry.daemon import _PublishStream
    monkeypatch.setattr(_PublishStream, "FLUSH_DELAY_S", 3600.0)   # records stay buffered until finish
    daemon = await start_daemon()
    channel, stub = stub_for(daemon)
    async with channel:
        auth = await register(stub, "buffered")
        hold = asyncio.Event()

        async def held_open():
            for step in steps("buffered", "a", 5):
                yield step
            await hold.wait()

        call = stub.PublishRunSteps(held_open(), metadata=auth)
        await wait_until(lambda: any(s.run is not None and s.run.run_id == "buffered" and s._pending_count == 5
                                     for s in daemon.open_publish_streams), what="5 buffered steps")
        assert daemon.store.counts("buffered").steps == 0
        assert (await finish(stub, "buffered", auth)).status == S.TERM
        assert daemon.store.counts("buffered").steps == 5
        assert daemon.store.get_run("buffered").status == S.TERM
        hold.set()
        assert (await call).accepted == 5


async def test_finish_run_needs_a_producer_token_of_the_run(daemon) -> None:
    channel, stub = stub_for(daemon)
    async with channel:
        await register(stub, "mine")   # the run, with its own producer
        other = await register(stub, "other")
        operator = await register(stub, "mine", worker_kind="operator")
        for auth in ((), (("authorization", "Bearer not-a-token"),), other):
            error = await refused(finish(stub, "mine", auth))
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert (await refused(finish(stub, "mine", operator))).code() == grpc.StatusCode.PERMISSION_DENIED
        assert await statuses(stub, "mine") is S.RDY
