"""An in-process XMPP server (pyjabber) for tests, on free ports, shared by the whole session.

Started inside the session's event loop (pytest-asyncio runs every test and fixture in one
session-scoped loop here), so agents started by tests connect to it with
`port=xmpp_server.client_port` and JIDs `name@localhost`. Give each agent a JID of its own
(`unique_jid`): pyjabber keeps stale sessions of a JID that disconnected (docs/spade-traps.md, trap 3).
"""

from __future__ import annotations

import itertools
import os

import pytest
import pytest_asyncio

from agents.xmpp_server import EmbeddedXmppServer, start_xmpp_server

_serial = itertools.count(1)


@pytest_asyncio.fixture(scope="session")
async def xmpp_server() -> EmbeddedXmppServer:
    """The running embedded server (admin page disabled, loopback only, throwaway accounts)."""
    server = await start_xmpp_server(client_port=0, server_port=0)
    yield server
    await server.stop()


@pytest.fixture
def unique_jid(xmpp_server: EmbeddedXmppServer):
    """`unique_jid("alice")` -> a JID never used before in this session, e.g. alice-4123-7@localhost."""

    def make(name: str) -> str:
        return f"{name}-{os.getpid()}-{next(_serial)}@{xmpp_server.host}"

    return make
