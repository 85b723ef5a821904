"""Fixtures for tests that run agents next to a telemetry daemon in the test process.

``agents_xmpp``: the session's embedded XMPP server (``xmpp_server``) with its password hashing
moved from a process pool to a thread pool. pyjabber hashes registrations in worker processes
it forks lazily; once gRPC has run in this process (any daemon or proxy test), a forked child
can crash in gRPC's fork handlers (GRPC_ENABLE_FORK_SUPPORT=false avoids that, but only when
set before gRPC loads, as the agents' entry points do), and every later registration hangs.
The hashing (hashlib.pbkdf2_hmac) releases the GIL, so threads hash just as concurrently.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ThreadPoolExecutor

import attrs
import pytest_asyncio
from pyjabber import AppConfig

from agents.xmpp_server import EmbeddedXmppServer


@pytest_asyncio.fixture(scope="session")
async def agents_xmpp(xmpp_server: EmbeddedXmppServer) -> EmbeddedXmppServer:
    config = AppConfig.app_config
    if not isinstance(config.process_pool_exe, ThreadPoolExecutor):
        forking_pool = config.process_pool_exe
        hashing_threads = ThreadPoolExecutor(multiprocessing.cpu_count(), thread_name_prefix="xmpp-hash")
        AppConfig.app_config = attrs.evolve(config, process_pool_exe=hashing_threads)
        forking_pool.shutdown(wait=False, cancel_futures=True)
    return xmpp_server
