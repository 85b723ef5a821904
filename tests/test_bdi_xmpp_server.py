"""The embedded XMPP server helper: free ports, readiness, busy ports, the reachability probe."""

from __future__ import annotations

import socket

import pytest

from agents.xmpp_server import (
    XmppServerError,
    free_port,
    start_xmpp_server,
    xmpp_reachable,
    xmpp_reachable_async,
)


async def test_session_server_accepts_clients(xmpp_server):
    assert xmpp_server.running
    assert xmpp_reachable(xmpp_server.host, xmpp_server.client_port, timeout=1.0)
    assert await xmpp_reachable_async(xmpp_server.host, xmpp_server.client_port, timeout=1.0)
    assert xmpp_server.client_port != xmpp_server.server_port


async def test_registrations_are_hashed_in_threads_not_forked_processes(xmpp_server):
    """A process forked while gRPC threads run can crash and hang every later registration."""
    from concurrent.futures import ThreadPoolExecutor

    from pyjabber import AppConfig

    assert isinstance(AppConfig.app_config.process_pool_exe, ThreadPoolExecutor)


async def test_admin_page_is_not_started(xmpp_server):
    # pyjabber's admin page always binds port 9090; ours is configured without it, so test runs
    # and embedded servers never fight over that port.
    assert xmpp_server._server._http_server is None


def test_probe_says_no_when_nothing_listens():
    assert not xmpp_reachable("localhost", free_port(), timeout=0.5)


@pytest.mark.timeout(30)
async def test_busy_client_port_is_a_clear_error(xmpp_server):
    with pytest.raises(XmppServerError) as caught:
        await start_xmpp_server(client_port=xmpp_server.client_port, server_port=free_port())
    message = str(caught.value)
    assert f"client port {xmpp_server.client_port}" in message
    assert "busy" in message
    assert xmpp_server.running  # the running server is untouched


@pytest.mark.timeout(30)
async def test_busy_server_port_is_a_clear_error(xmpp_server):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        with pytest.raises(XmppServerError, match=f"server-to-server port {taken}"):
            await start_xmpp_server(client_port=free_port(), server_port=taken)
