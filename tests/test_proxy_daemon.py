"""The proxy against the real daemon (workstream A's `serve()` and `python -m telemetry.daemon`).

Daemons run on free ports with SQLite files in tmp_path; a subprocess daemon where the test
needs SIGKILL. Conditions are polled with deadlines (`wait_until`), never slept on.
"""
from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import grpc
import grpc.aio
import pytest

from telemetry.daemon import serve
from telemetry.errors import MessageTooLargeError, TlsHandshakeError
from telemetry.generated import trainer_pb2 as pb
from telemetry.generated import trainer_pb2_grpc
from telemetry.proxy import TelemetryGrpcProxy
from tests.fixtures_daemon import PROJECT_ROOT, free_port, run_env, wait_until, without_extension
from tests.fixtures_proxy import Operator, episode_kwargs, step_count, step_kwargs, stored_steps

FAST_RECONNECT = dict(reconnect_max_backoff_s=0.3)


async def _stream(stub: trainer_pb2_grpc.TrainerServiceStub, method: str, run_id: str,
                  count: int) -> list:
    """The first `count` records a StreamRun* client receives from since_seq=0."""
    request = (pb.StreamStepsRequest if method == "StreamRunSteps"
               else pb.StreamEpisodesRequest)(run_id=run_id, since_seq=0)
    received: list = []
    call = getattr(stub, method)(request)
    async for record in call:
        received.append(record)
        if len(received) == count:
            break
    call.cancel()
    return received


@pytest.mark.timeout(120)
async def test_two_agents_stream_into_one_run_and_a_viewer_sees_all(daemon, tmp_path: Path) -> None:
    run_id = "run-two"

    async def agent(agent_id: str) -> None:
        proxy = TelemetryGrpcProxy(daemon.address, spool_dir=tmp_path / "spool",
                                   worker_id=f"worker-{agent_id}")
        async with proxy.session(run_id) as tx:
            for e in range(100):
                for s in range(100):
                    await tx.emit_step(**step_kwargs(e * 100 + s, agent_id, run_id))
                await tx.emit_episode(**episode_kwargs(e, agent_id, run_id))
        assert tx.stats.delivered == tx.stats.accepted == 10_100
        assert tx.stats.spooled == 0

    await asyncio.gather(agent("alice"), agent("bob"))

    channel = grpc.aio.insecure_channel(daemon.address)
    stub = trainer_pb2_grpc.TrainerServiceStub(channel)
    try:
        steps = await asyncio.wait_for(_stream(stub, "StreamRunSteps", run_id, 20_000), 60)
        episodes = await asyncio.wait_for(_stream(stub, "StreamRunEpisodes", run_id, 200), 30)
    finally:
        await channel.close()
    assert [s.seq_id for s in steps] == list(range(1, 20_001)), "store order, gap-free"
    assert Counter(s.agent_id for s in steps) == {"alice": 10_000, "bob": 10_000}
    assert len({(s.agent_id, s.episode_index, s.step_index) for s in steps}) == 20_000
    for agent_id in ("alice", "bob"):
        mine = [(s.episode_index, s.step_index) for s in steps if s.agent_id == agent_id]
        assert mine == [(i // 100, i % 100) for i in range(10_000)], "each agent's own order"
    assert {s.worker_id for s in steps} == {"worker-alice", "worker-bob"}
    assert Counter(e.agent_id for e in episodes) == {"alice": 100, "bob": 100}


@pytest.mark.timeout(120)
async def test_sigkill_mid_stream_then_restart_stores_every_step_once(daemon_process,
                                                                      tmp_path: Path) -> None:
    run_id, total = "run-kill", 20_000
    first = daemon_process().start()
    proxy = TelemetryGrpcProxy(first.address, spool_dir=tmp_path / "spool", **FAST_RECONNECT)
    async with proxy.session(run_id) as tx:
        for i in range(total):
            await tx.emit_step(**step_kwargs(i, "a", run_id))
            if i == 6_000:
                await wait_until(lambda: tx.stats.delivered >= 2_000, 30, "first deliveries")
                first.kill()                       # SIGKILL, with batches in flight
            elif i == 12_000:
                await wait_until(lambda: not tx.stats.connected, 30, "the proxy to notice")
                restarted = daemon_process(db_path=first.db_path, port=first.port)
                await asyncio.to_thread(restarted.start)
        await wait_until(lambda: tx.stats.delivered == total, 60, "replay after the restart")
    stats = tx.stats
    assert stats.accepted == stats.delivered == total
    assert stats.spooled > 0 and stats.replayed == stats.spooled, "the outage went via the spool"
    rows = stored_steps(first.db_path, run_id)
    assert len(rows) == total, "every step exactly once"
    assert [r.seq_id for r in rows] == list(range(1, total + 1))
    assert {(r.episode_index, r.step_index) for r in rows} == {(i // 100, i % 100)
                                                               for i in range(total)}
    restarted.terminate()


@pytest.mark.timeout(60)
async def test_daemon_down_at_start_comes_up_later(tmp_path: Path) -> None:
    run_id, port = "run-late", free_port()
    proxy = TelemetryGrpcProxy(f"127.0.0.1:{port}", spool_dir=tmp_path / "spool",
                               **FAST_RECONNECT)
    async with proxy.session(run_id) as tx:
        for i in range(3_000):
            await tx.emit_step(**step_kwargs(i, "a", run_id))
        await tx.emit_episode(**episode_kwargs(0, "a", run_id))
        await tx.flush()                                  # durable in the spool
        assert tx.stats.spooled == 3_001 and tx.stats.delivered == 0
        daemon = await serve(f"127.0.0.1:{port}", tmp_path / "late.db")
        for i in range(3_000, 5_000):
            await tx.emit_step(**step_kwargs(i, "a", run_id))
        await wait_until(lambda: tx.stats.delivered == 5_001, 30, "delivery after start")
        await wait_until(lambda: daemon.relay.subscribers(run_id) == 1, 10,
                         "the control subscription")
    try:
        counts = daemon.store.counts(run_id)
        assert (counts.steps, counts.episodes) == (5_000, 1), "nothing lost, nothing doubled"
        assert tx.spool_folder is None or not tx.spool_folder.exists()
    finally:
        await daemon.stop()


_PRODUCER = textwrap.dedent("""
    import asyncio, sys
    from telemetry.proxy import TelemetryGrpcProxy
    from tests.fixtures_proxy import step_kwargs

    async def main(target, spool_dir):
        proxy = TelemetryGrpcProxy(target, spool_dir=spool_dir, close_timeout_s=1.0)
        async with proxy.session("run-spool") as tx:
            for i in range(2_500):
                await tx.emit_step(**step_kwargs(i, "a", "run-spool"))
        print(tx.stats.spooled)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
""")


@pytest.mark.timeout(60)
async def test_spool_survives_process_exit_and_a_later_session_replays_it(tmp_path: Path) -> None:
    port, spool = free_port(), tmp_path / "spool"
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", _PRODUCER, f"127.0.0.1:{port}", str(spool)],
        cwd=PROJECT_ROOT, env=run_env(), capture_output=True, text=True, timeout=40)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2500", "the producer exited with everything spooled"
    target_dir = spool / f"127.0.0.1_{port}"
    assert any(target_dir.glob("*/*.spool"))

    daemon = await serve(f"127.0.0.1:{port}", tmp_path / "replay.db")
    try:
        proxy = TelemetryGrpcProxy(daemon.address, spool_dir=spool, worker_id="later")
        async with proxy.session() as tx:
            await wait_until(lambda: tx.stats.replayed == 2_500, 30, "the replay")
        assert daemon.store.counts("run-spool").steps == 2_500
        assert not any(target_dir.glob("*/*.spool")), "replayed spool is deleted"
        async with proxy.session() as again:            # nothing left to replay twice
            await again.flush()
        assert again.stats.replayed == 0
        assert daemon.store.counts("run-spool").steps == 2_500
    finally:
        await daemon.stop()


@pytest.mark.timeout(60)
async def test_daemon_limit_splits_batches_and_refuses_oversized_records(start_daemon,
                                                                        tmp_path: Path) -> None:
    daemon = await start_daemon(max_message_bytes=64 * 1024)
    proxy = TelemetryGrpcProxy(daemon.address, spool_dir=tmp_path / "spool")   # 4 MiB option
    async with proxy.session("run-big") as tx:
        with pytest.raises(MessageTooLargeError) as caught:
            await tx.emit_step(**step_kwargs(0, run_id="run-big", observation_json="o" * 70_000))
        assert caught.value.field == "observation_json"
        assert caught.value.limit <= 64 * 1024 and "observation_json" in str(caught.value)
        # 10 KB observations: a batch of 2,000 would be 20 MB, so batches must be split.
        for i in range(60):
            await tx.emit_step(**step_kwargs(i, run_id="run-big", observation_json="o" * 10_000))
        await tx.flush()
        assert tx.stats.delivered == 60 and tx.stats.spooled == 0
    assert daemon.store.counts("run-big").steps == 60


@pytest.mark.timeout(60)
async def test_pause_credits_and_rate_are_honoured(daemon, tmp_path: Path) -> None:
    run_id = "run-ctl"
    proxy = TelemetryGrpcProxy(daemon.address, spool_dir=tmp_path / "spool")
    async with proxy.session(run_id) as tx, Operator(daemon.address, run_id) as operator:
        await wait_until(lambda: daemon.relay.subscribers(run_id) == 1, 10, "the subscription")
        await tx.wait_until_allowed("a")                            # no control yet

        await operator.send(pause=True)
        await wait_until(lambda: tx.paused, 10, "the pause")
        held = asyncio.create_task(tx.wait_until_allowed("a"))
        await operator.send(resume=True, agent_id="b")              # another agent: still held
        await wait_until(lambda: tx.flow().events_applied >= 2, 10, "the agent resume")
        assert not held.done()
        await operator.send(resume=True)
        await asyncio.wait_for(held, 10)
        assert not tx.paused

        await operator.send(grant_steps=3)                          # credit mode from here on
        await wait_until(lambda: tx.flow().snapshot().credits.get("") == 3, 10, "the credits")
        for _ in range(3):
            await asyncio.wait_for(tx.wait_until_allowed("a"), 10)
        starved = asyncio.create_task(tx.wait_until_allowed("a", steps=2))
        await operator.send(grant_steps=1)
        await wait_until(lambda: tx.flow().snapshot().credits.get("") == 1, 10, "one credit")
        assert not starved.done(), "2 steps need 2 credits"
        await operator.send(grant_steps=1)
        await asyncio.wait_for(starved, 10)

        await operator.send(grant_steps=1_000)
        await operator.send(max_rate_hz=40, agent_id="a")
        await wait_until(lambda: tx.flow().snapshot().rates_hz == {"a": 40}, 10, "the rate cap")
        loop = asyncio.get_running_loop()
        start = loop.time()
        for _ in range(5):
            await asyncio.wait_for(tx.wait_until_allowed("a"), 10)
        assert loop.time() - start >= 4 / 40 - 0.005, "steps spaced by the cap (lower bound)"


@pytest.mark.timeout(60)
async def test_replacement_daemon_gets_a_new_registration_and_control_reconnects(
        tmp_path: Path) -> None:
    """A daemon restarted on a fresh database does not know the old token: the proxy
    registers again, delivers, and its ControlStream subscribes to the new daemon, whose
    standing state (nothing paused) replaces the old daemon's pause."""
    run_id, port = "run-swap", free_port()
    first = await serve(f"127.0.0.1:{port}", tmp_path / "first.db")
    proxy = TelemetryGrpcProxy(first.address, spool_dir=tmp_path / "spool", **FAST_RECONNECT)
    async with proxy.session(run_id) as tx:
        for i in range(500):
            await tx.emit_step(**step_kwargs(i, "a", run_id))
        await tx.flush()
        await wait_until(lambda: first.relay.subscribers(run_id) == 1, 10, "the subscription")
        async with Operator(first.address, run_id) as operator:
            await operator.send(pause=True)
            await wait_until(lambda: tx.paused, 10, "the pause from the first daemon")
        await first.stop()
        second = await serve(f"127.0.0.1:{port}", tmp_path / "second.db")
        for i in range(500, 1_000):
            await tx.emit_step(**step_kwargs(i, "a", run_id))
        await wait_until(lambda: tx.stats.delivered == 1_000, 30, "delivery to the new daemon")
        await wait_until(lambda: second.relay.subscribers(run_id) == 1, 30, "re-subscription")
        await wait_until(lambda: not tx.paused, 10, "the new daemon's state to replace the pause")
        await asyncio.wait_for(tx.wait_until_allowed("a"), 10)
        async with Operator(second.address, run_id) as operator:
            await operator.send(pause=True)
            await wait_until(lambda: tx.paused, 10, "the pause from the new daemon")
    try:
        assert second.store.counts(run_id).steps == 500
        assert step_count(tmp_path / "first.db", run_id) == 500
    finally:
        await second.stop()


@pytest.mark.timeout(30)
async def test_not_found_on_register_submits_the_run_first(daemon, tmp_path: Path) -> None:
    """The reference daemon answers RegisterWorker NOT_FOUND for a run it was not given; ours
    does that for operators, which is how this test reaches the SubmitRun path for real."""
    proxy = TelemetryGrpcProxy(daemon.address, spool_dir=tmp_path / "spool",
                               worker_kind="operator", run_config={"env_id": "FrozenLake-v1"})
    async with proxy.session("run-submitted"):
        pass   # the handshake registers; an operator session publishes nothing (it may not)
    run = daemon.store.get_run("run-submitted")
    assert run is not None and '"FrozenLake-v1"' in run.config_json and run.digest


@pytest.mark.timeout(60)
@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_tls_daemon_with_its_certificate_and_a_clear_error_without(start_daemon,
                                                                       tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = await asyncio.to_thread(subprocess.run, [
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], capture_output=True, timeout=30)
    assert made.returncode == 0, made.stderr
    daemon = await start_daemon(tls_cert=str(cert), tls_key=str(key))
    trusted = TelemetryGrpcProxy(daemon.address, spool_dir=tmp_path / "spool", tls=True,
                                 root_certificates=cert)
    async with trusted.session("run-tls") as tx:
        await tx.emit_step(**step_kwargs(0, run_id="run-tls"))
    assert daemon.store.counts("run-tls").steps == 1
    untrusted = TelemetryGrpcProxy(daemon.address, spool_dir=tmp_path / "spool", tls=True)
    with pytest.raises(TlsHandshakeError, match="root_certificates"):
        async with untrusted.session("run-tls"):
            pass


@pytest.mark.timeout(60)
async def test_daemon_without_the_batch_extension_gets_per_record_streams(
        start_daemon, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Against a daemon that speaks only MOSAIC/1.0 (like the reference daemon), the proxy
    falls back to PublishRunSteps / PublishRunEpisodes."""
    without_extension(monkeypatch, "PublishTelemetryBatch")
    daemon = await start_daemon()
    proxy = TelemetryGrpcProxy(daemon.address, spool_dir=tmp_path / "spool")
    async with proxy.session("run-ref") as tx:
        for i in range(1_000):
            await tx.emit_step(**step_kwargs(i, "a", "run-ref"))
        await tx.emit_episode(**episode_kwargs(0, "a", "run-ref"))
    assert tx.stats.delivered == 1_001 and tx.stats.spooled == 0
    counts = daemon.store.counts("run-ref")
    assert (counts.steps, counts.episodes) == (1_000, 1)


@pytest.mark.timeout(60)
async def test_finish_run_flushes_then_ends_the_run(daemon, tmp_path: Path) -> None:
    proxy = TelemetryGrpcProxy(daemon.address, spool_dir=tmp_path / "spool", flush_interval_s=60.0)
    async with proxy.session("run-done") as tx:
        for i in range(500):
            await tx.emit_step(**step_kwargs(i, "a", "run-done"))
        assert await tx.finish_run() is True
        # The run ended only after the records sent before the call were stored.
        assert daemon.store.counts("run-done").steps == 500
        assert daemon.registry.get("run-done").status.name == "TERM"
    async with proxy.session("run-failed") as tx:
        await tx.emit_step(**step_kwargs(0, "a", "run-failed"))
        assert await tx.finish_run("run-failed", failure_reason="agent a failed") is True
    run = daemon.store.get_run("run-failed")
    assert (run.status, run.failure_reason) == (pb.RUN_STATUS_FAULT, "agent a failed")


@pytest.mark.timeout(60)
async def test_finish_run_without_a_daemon_that_finishes_returns_false(
        start_daemon, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The reference daemon has no FinishRun, and a daemon may be down: logged, never raised."""
    without_extension(monkeypatch, "FinishRun")
    daemon = await start_daemon()
    proxy = TelemetryGrpcProxy(daemon.address, spool_dir=tmp_path / "spool")
    async with proxy.session("run-ref") as tx:
        await tx.emit_step(**step_kwargs(0, "a", "run-ref"))
        assert await tx.finish_run() is False
    assert daemon.store.counts("run-ref").steps == 1
    assert daemon.registry.get("run-ref").status.name == "EXEC"

    down = TelemetryGrpcProxy(f"127.0.0.1:{free_port()}", spool_dir=tmp_path / "spool-down",
                              connect_timeout_s=0.5, close_timeout_s=0.5, **FAST_RECONNECT)
    async with down.session("run-down") as tx:
        assert await tx.finish_run() is False        # nothing spooled: the call itself fails
        await tx.emit_step(**step_kwargs(0, "a", "run-down"))
        assert await tx.finish_run() is False        # a spooled record: not finished before it lands
