"""How the daemon serves its dashboard: the serve() option, the command-line flags, loopback
by default, and a dashboard port that cannot be had never stopping telemetry."""

from __future__ import annotations

import ipaddress
import logging
import socket
import urllib.request
from pathlib import Path

import aiohttp
import grpc
import pytest

from telemetry.generated import trainer_pb2 as pb
from telemetry.generated import trainer_pb2_grpc
from tests.fixtures_daemon import free_port, stub_for

pytestmark = pytest.mark.timeout(120)


async def test_serve_starts_the_dashboard_on_loopback_by_default(start_daemon) -> None:
    daemon = await start_daemon(dashboard_port=0)
    assert daemon.dashboard is not None
    assert all(ipaddress.ip_address(host).is_loopback for host, _ in daemon.dashboard.bound_addresses)
    async with aiohttp.ClientSession() as http:
        async with http.get(daemon.dashboard.url) as page:
            assert page.status == 200
            assert "Runs" in await page.text()
    url = daemon.dashboard.url
    await daemon.stop(grace=None)
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as http:
            await http.get(url)


async def test_serve_without_a_dashboard_port_serves_none(start_daemon) -> None:
    daemon = await start_daemon()
    assert daemon.dashboard is None


async def test_a_taken_dashboard_port_is_logged_and_telemetry_carries_on(
        start_daemon, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with caplog.at_level(logging.ERROR, logger="telemetry.daemon"):
            daemon = await start_daemon(dashboard_port=taken.getsockname()[1])
    assert daemon.dashboard is None
    assert "without a dashboard" in caplog.text and "--dashboard-port" in caplog.text
    channel, stub = stub_for(daemon)
    try:
        assert (await stub.GetHealth(pb.HealthCheckRequest())).healthy
    finally:
        await channel.close()


def _next_line(process) -> str:  # type: ignore[no-untyped-def]
    return process.process.stdout.readline().strip()


def _loop_is_serving(process) -> None:  # type: ignore[no-untyped-def]
    """Return once the daemon's event loop answered an RPC, so it is past installing its
    signal handlers (it prints its address before it installs them)."""
    with grpc.insecure_channel(process.address) as channel:
        stub = trainer_pb2_grpc.TrainerServiceStub(channel)
        assert stub.GetHealth(pb.HealthCheckRequest(), timeout=30).healthy


def test_daemon_command_serves_the_dashboard_where_its_flags_say(daemon_process, tmp_path: Path) -> None:
    port = free_port()
    daemon = daemon_process(db_path=tmp_path / "a.db", extra_args=("--dashboard-port", str(port))).start()
    try:
        assert _next_line(daemon) == f"dashboard at http://127.0.0.1:{port}/"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/runs", timeout=10) as answer:
            assert answer.status == 200
        _loop_is_serving(daemon)
    finally:
        assert daemon.terminate() == 0


def test_daemon_command_with_no_dashboard_listens_for_none(daemon_process, tmp_path: Path) -> None:
    port = free_port()
    daemon = daemon_process(db_path=tmp_path / "b.db",
                            extra_args=("--dashboard-port", str(port), "--no-dashboard")).start()
    try:
        with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
            probe.connect(("127.0.0.1", port))
        _loop_is_serving(daemon)
    finally:
        assert daemon.terminate() == 0
    assert "dashboard at" not in daemon.process.stdout.read()
