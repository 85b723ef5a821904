"""Fixtures for tests that run agents next to a telemetry daemon in the test process.

``agents_xmpp``: the session's embedded XMPP server (``xmpp_server``), hashing registrations in
threads rather than in processes it forks (``agents.container.hash_passwords_in_threads``
says why: a fork while gRPC threads are busy can leave every later registration hanging).
"""

from __future__ import annotations

import pytest_asyncio

from agents.container import hash_passwords_in_threads
from agents.xmpp_server import EmbeddedXmppServer


@pytest_asyncio.fixture(scope="session")
async def agents_xmpp(xmpp_server: EmbeddedXmppServer) -> EmbeddedXmppServer:
    hash_passwords_in_threads()
    return xmpp_server
