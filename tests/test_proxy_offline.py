"""The proxy where no daemon answers: wrong targets, a closed port, emit-time checks."""
from __future__ import annotations

import http.server
import json
import socket
import threading
from pathlib import Path
from typing import Iterator

import grpc
import grpc.aio
import pytest

from telemetry.errors import MessageTooLargeError, NotADaemonError, SessionClosedError
from telemetry.proxy import TelemetryGrpcProxy
from tests.fixtures_proxy import step_kwargs

pytestmark = pytest.mark.timeout(30)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def http_target() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("run_id", ["run-x", None])
async def test_http_server_is_not_a_daemon(http_target: str, tmp_path: Path,
                                           run_id: str | None) -> None:
    proxy = TelemetryGrpcProxy(http_target, spool_dir=tmp_path)
    with pytest.raises(NotADaemonError) as caught:
        async with proxy.session(run_id):
            pass
    message = str(caught.value)
    assert http_target in message and "does not speak gRPC" in message
    assert "python -m telemetry.daemon" in message


async def test_grpc_server_without_trainer_service_is_not_a_daemon(tmp_path: Path) -> None:
    server = grpc.aio.server()
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        proxy = TelemetryGrpcProxy(f"127.0.0.1:{port}", spool_dir=tmp_path)
        with pytest.raises(NotADaemonError, match="TrainerService/RegisterWorker"):
            async with proxy.session("run-x"):
                pass
    finally:
        await server.stop(None)


async def test_closed_port_spools_and_emit_never_blocks(tmp_path: Path) -> None:
    proxy = TelemetryGrpcProxy(f"127.0.0.1:{_closed_port()}", spool_dir=tmp_path,
                               buffer_max_records=5000, close_timeout_s=1.0)
    async with proxy.session("run-off") as tx:
        # 30,000 emits with the daemon down finish under the test's hard time limit: emit
        # does not wait on the network, and a full buffer spills to disk instead of blocking.
        for i in range(30_000):
            await tx.emit_step(**step_kwargs(i, run_id="run-off"))
        await tx.emit_episode(run_id="run-off", episode_index=0, total_reward=1.0, steps=100,
                              terminated=True, truncated=False, metadata={"seed": 1},
                              agent_id="a")
        await tx.flush()
        stats = tx.stats
        assert stats.accepted == 30_001 and stats.spooled == 30_001
        assert stats.delivered == 0 and stats.buffered == 0 and not stats.connected
        folder = tx.spool_folder
    assert folder is not None and any(folder.glob("*.spool")), "the spool stays after exit"
    with pytest.raises(SessionClosedError):
        await tx.emit_step(**step_kwargs(0, run_id="run-off"))


async def test_oversized_record_names_field_and_limit(tmp_path: Path) -> None:
    proxy = TelemetryGrpcProxy(f"127.0.0.1:{_closed_port()}", spool_dir=tmp_path,
                               max_message_bytes=64 * 1024, close_timeout_s=1.0)
    async with proxy.session("run-off") as tx:
        with pytest.raises(MessageTooLargeError) as caught:
            await tx.emit_step(**step_kwargs(0, run_id="run-off", observation_json="x" * 70_000))
        err = caught.value
        assert err.field == "observation_json" and err.limit < 64 * 1024
        assert "observation_json" in str(err) and str(err.limit) in str(err)
        with pytest.raises(MessageTooLargeError, match="metadata_json"):
            await tx.emit_episode(run_id="run-off", episode_index=0, total_reward=0.0, steps=1,
                                  terminated=True, truncated=False, agent_id="a",
                                  metadata={"blob": "y" * 70_000})
        await tx.emit_step(**step_kwargs(1, run_id="run-off", observation_json="x" * 60_000))   # fits: accepted
        assert tx.stats.accepted == 1


async def test_jsonl_stdout_mirrors_records(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    proxy = TelemetryGrpcProxy(f"127.0.0.1:{_closed_port()}", spool_dir=tmp_path,
                               jsonl_stdout=True, close_timeout_s=1.0)
    async with proxy.session() as tx:
        await tx.emit_step(**step_kwargs(3, run_id="run-off"))
        await tx.emit_episode(run_id="run-off", episode_index=0, total_reward=2.5, steps=4,
                              terminated=True, truncated=False, metadata={"k": 1},
                              agent_id="a", timestamp_ns=0)
        await tx.emit_message("run-off", "a", 1, "sent", "b", "q_table", 512, 0)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["type"] for line in lines] == ["step", "episode", "message"]
    assert lines[0]["step_index"] == 3 and lines[0]["agent_id"] == "a"
    assert lines[0]["observation_json"] == "3" and lines[0]["reward"] == 0.0
    assert lines[1]["metadata_json"] == '{"k":1}' and lines[1]["timestamp"].startswith("1970")
    assert lines[2]["bytes"] == 512 and lines[2]["direction"] == "sent"
