"""Run the dashboard's HTTP server beside the daemon, in the daemon's own event loop.

The dashboard only reads: it serves pages and JSON from the daemon's store and pushes live
updates from the daemon's hub. Loopback is the default bind address because the dashboard has
no authentication; binding elsewhere is an explicit choice of whoever starts the daemon.
"""

from __future__ import annotations

import logging
import os

from aiohttp import web

from telemetry.dashboard.app import OPEN_STREAMS, create_app
from telemetry.hub import LiveHub
from telemetry.store import TelemetryStore

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 50056

log = logging.getLogger(__name__)


class DashboardStartError(Exception):
    """The dashboard cannot listen where it was asked to (the message says what to do)."""


class DashboardServer:
    """A started dashboard: where it listens and how to stop it."""

    def __init__(self, runner: web.AppRunner, site: web.TCPSite, host: str) -> None:
        self._runner = runner
        self._site = site
        self.host = host
        self.port: int = self.bound_addresses[0][1]

    @property
    def url(self) -> str:
        """The address to open in a browser."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    @property
    def bound_addresses(self) -> list[tuple[str, int]]:
        """(address, port) of every listening socket, so callers can check what is exposed."""
        server = self._site._server  # aiohttp keeps the asyncio server here and offers no accessor
        return [sock.getsockname()[:2] for sock in (server.sockets if server else ())]

    async def stop(self) -> None:
        """End open pages' event streams, then stop listening."""
        for stream in list(self._runner.app[OPEN_STREAMS]):
            stream.close()
        await self._runner.cleanup()


async def start_dashboard(
    store: TelemetryStore,
    hub: LiveHub,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
) -> DashboardServer:
    """Serve the dashboard for ``store``/``hub`` on ``host:port`` (port 0: a free one).
    Raises ``DashboardStartError`` when it cannot listen there."""
    runner = web.AppRunner(create_app(store, hub), access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise DashboardStartError(
            f"the dashboard cannot listen on {host}:{port} ({reason}); "
            "choose another --dashboard-port, or pass --no-dashboard"
        ) from None
    server = DashboardServer(runner, site, host)
    log.info("dashboard at %s", server.url)
    return server
