"""Fixtures for tests that run agents next to a telemetry daemon in the test process.

``agents_xmpp``: the session's embedded XMPP server (``xmpp_server``). Like every embedded
server it hashes registrations in threads rather than in processes it forks
(``agents.xmpp_server.hash_passwords_in_threads`` says why).
"""

from __future__ import annotations

import pytest_asyncio

from agents.xmpp_server import EmbeddedXmppServer


@pytest_asyncio.fixture(scope="session")
async def agents_xmpp(xmpp_server: EmbeddedXmppServer) -> EmbeddedXmppServer:
    return xmpp_server
