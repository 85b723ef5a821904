"""The embedded XMPP server serves a client for the whole session, not only through login.

Each test shows one pyjabber 0.4.5 bug that `agents.xmpp_server` works around, on the session's
real server, and fails without that workaround:
- every session's stanza handler died right after login (roster, presence, messages ignored);
- a client that left while the server was in the middle of a database query wiped every
  account of the in-memory database, so the next agent's login hung;
- a stream restart arriving right after the STARTTLS handshake was lost, so that login hung.
"""

from __future__ import annotations

import asyncio
import socket
import ssl

import pytest

from tests.plain_agents import log_in, plain_agent

STREAM_HEADER = (
    "<stream:stream to='{host}' xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
)
REPLY_TIMEOUT_S = 15.0


@pytest.mark.timeout(60)
async def test_a_logged_in_client_gets_answers_to_its_requests(xmpp_server, unique_jid):
    agent = plain_agent(unique_jid("asker"), xmpp_server.client_port)
    await log_in(agent)
    try:
        roster = await agent.client.get_roster(timeout=REPLY_TIMEOUT_S)
        assert roster["type"] == "result", roster
    finally:
        await agent.stop()


@pytest.mark.timeout(120)
async def test_clients_leaving_mid_request_do_not_wipe_the_accounts(xmpp_server, unique_jid):
    # Each agent asks for its roster and leaves at once: the server is cancelled in the middle
    # of that query. Every next agent must still be able to register and log in.
    for _ in range(4):
        agent = plain_agent(unique_jid("leaver"), xmpp_server.client_port)
        await log_in(agent)
        agent.client.get_roster()
        await agent.stop()
    last = plain_agent(unique_jid("after"), xmpp_server.client_port)
    await log_in(last)
    await last.stop()


@pytest.mark.timeout(60)
async def test_a_stream_restart_sent_with_the_tls_handshake_is_answered(xmpp_server):
    # The client's new stream header travels in the same TCP segment as its last handshake
    # message, so the server reads it before its STARTTLS step has finished.
    features = await asyncio.to_thread(_restart_right_after_starttls, xmpp_server.host, xmpp_server.client_port)
    assert b"<stream:features" in features and b"mechanisms" in features, features


def _restart_right_after_starttls(host: str, port: int) -> bytes:
    """Open a stream, upgrade it with STARTTLS, and return what the server says to the restart."""
    header = STREAM_HEADER.format(host=host).encode()
    with socket.create_connection((host, port), timeout=REPLY_TIMEOUT_S) as sock:
        sock.sendall(header)
        _receive_until(sock, b"</stream:features>")
        sock.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        _receive_until(sock, b"proceed")  # <ns0:proceed xmlns:ns0=...tls/>
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # pyjabber's self-signed certificate
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(incoming, outgoing, server_hostname=host)
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                incoming.write(_receive(sock))
        tls.write(header)
        sock.sendall(outgoing.read())  # the handshake's last message and the restart, together
        reply = b""
        while b"</stream:features>" not in reply:
            incoming.write(_receive(sock))
            reply += _read_decrypted(tls)
        return reply


def _receive(sock: socket.socket) -> bytes:
    try:
        data = sock.recv(65536)
    except socket.timeout:
        raise AssertionError(f"the server said nothing for {REPLY_TIMEOUT_S:g}s") from None
    if not data:
        raise AssertionError("the server closed the connection")
    return data


def _receive_until(sock: socket.socket, marker: bytes) -> bytes:
    received = b""
    while marker not in received:
        received += _receive(sock)
    return received


def _read_decrypted(tls: ssl.SSLObject) -> bytes:
    data = b""
    while True:
        try:
            data += tls.read(65536)
        except ssl.SSLWantReadError:
            return data
