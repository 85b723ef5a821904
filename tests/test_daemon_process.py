"""``python -m telemetry.daemon`` as a process: SIGTERM flushes, SIGKILL keeps what was
committed, restarts continue, and bad start-up input is one readable line."""
import asyncio
import signal
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from telemetry.generated import trainer_pb2 as pb
from telemetry.store import TelemetryStore
from tests.fixtures_daemon import PROJECT_ROOT, iterate, register, steps, stub_for, wait_until


def batch_of(run_id: str, agent: str, first: int, size: int) -> pb.TelemetryBatch:
    return pb.TelemetryBatch(run_id=run_id, steps=steps(run_id, agent, size, first=first))


def stored_steps(db: Path, run_id: str) -> list:
    store = TelemetryStore(db, create=False)
    try:
        return store.read_steps(run_id, limit=1_000_000)
    finally:
        store.close()


@pytest.mark.timeout(120)
async def test_sigterm_commits_what_was_received_and_a_restart_continues(daemon_process, tmp_path) -> None:
    db = tmp_path / "term.db"
    process = daemon_process(db).start()
    channel, stub = stub_for(process.address)
    async with channel:
        auth = await register(stub, "term")
        acked = await stub.PublishTelemetryBatch(iterate(*(batch_of("term", "a", i, 500) for i in range(0, 3000, 500))),
                                                 metadata=auth)
        assert acked.accepted == 3000

        async def interrupted_stream():
            for step in steps("term", "b", 500):
                yield step
            # The daemon is committing this stream as it arrives: SIGTERM it mid-stream.
            await wait_until(lambda: len(stored_steps(db, "term")) >= 3500, what="the first half committed")
            for step in steps("term", "b", 500, first=500):
                yield step
            process.signal(signal.SIGTERM)

        result = await stub.PublishRunSteps(interrupted_stream(), metadata=auth)
        assert (result.accepted, result.dropped) == (1000, 0)
    assert await asyncio.to_thread(process.process.wait, 30) == 0
    assert "stopped after" in process.log()
    assert [s.seq_id for s in stored_steps(db, "term")] == list(range(1, 4001))

    restarted = daemon_process(db, port=process.port).start()
    channel, stub = stub_for(restarted.address)
    async with channel:
        runs = (await stub.ListRuns(pb.ListRunsRequest())).runs
        assert [(r.run_id, r.status) for r in runs] == [("term", pb.RUN_STATUS_EXEC)]
        more = await stub.PublishRunSteps(iterate(*steps("term", "c", 10)), metadata=auth)
        assert more.accepted == 10
        call = stub.StreamRunSteps(pb.StreamStepsRequest(run_id="term", since_seq=3995))
        tail = [await asyncio.wait_for(call.read(), 10) for _ in range(15)]
        call.cancel()
        assert [s.seq_id for s in tail] == list(range(3996, 4011))
        assert [s.agent_id for s in tail] == ["b"] * 5 + ["c"] * 10
    assert restarted.terminate() == 0


@pytest.mark.timeout(120)
async def test_sigkill_mid_stream_keeps_every_committed_step_exactly_once(daemon_process, tmp_path) -> None:
    db = tmp_path / "kill.db"
    process = daemon_process(db).start()
    all_batches = [batch_of("kill", "a", i, 500) for i in range(0, 15_000, 500)]
    channel, stub = stub_for(process.address)
    async with channel:
        auth = await register(stub, "kill")
        acked = await stub.PublishTelemetryBatch(iterate(*all_batches[:10]), metadata=auth)
        assert acked.accepted == 5000

        async def killed_mid_stream():
            for i, batch in enumerate(all_batches[10:]):
                yield batch
                if i == 8:
                    process.kill()

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.PublishTelemetryBatch(killed_mid_stream(), metadata=auth)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE

    survived = stored_steps(db, "kill")
    assert len(survived) >= 5000
    assert [s.seq_id for s in survived] == list(range(1, len(survived) + 1))
    keys = [(s.episode_index, s.step_index) for s in survived]
    assert keys == [(i // 100, i % 100) for i in range(len(survived))]

    # Restart on the same db; the producer replays everything (as a proxy's spool would).
    restarted = daemon_process(db, port=process.port).start()
    channel, stub = stub_for(restarted.address)
    async with channel:
        replay = await stub.PublishTelemetryBatch(iterate(*all_batches), metadata=auth)
        assert (replay.accepted, replay.dropped) == (15_000 - len(survived), len(survived))
    final = stored_steps(db, "kill")
    assert [s.seq_id for s in final] == list(range(1, 15_001))
    assert sorted((s.episode_index, s.step_index) for s in final) == [(i // 100, i % 100) for i in range(15_000)]
    assert restarted.terminate() == 0


def run_daemon_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "telemetry.daemon", *args], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_bad_start_up_input_is_one_clear_line(tmp_path) -> None:
    not_a_store = tmp_path / "notes.db"
    not_a_store.write_text("these are my notes, not a database\n" * 200)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        cases = [
            (("--bogus",), 2, "unrecognized arguments"),
            (("--fault-after", "0"), 2, "--fault-after"),
            (("--log-level", "LOUD"), 2, "--log-level"),
            (("--listen", "nowhere"), 1, "HOST:PORT"),
            (("--listen", busy, "--db", str(tmp_path / "a.db")), 1, "in use"),
            (("--db", str(tmp_path / "missing" / "t.db")), 1, "does not exist"),
            (("--db", str(not_a_store)), 1, str(not_a_store)),
            (("--tls-cert", str(tmp_path / "cert.pem")), 1, "--tls-key"),
        ]
        for args, code, needle in cases:
            done = run_daemon_cli(*args)
            lines = done.stderr.strip().splitlines()
            assert done.returncode == code, (args, done.stderr)
            assert len(lines) == 1 and needle in lines[0], (args, done.stderr)
            assert "Traceback" not in done.stderr and done.stdout == ""
