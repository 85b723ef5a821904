"""The live web dashboard the telemetry daemon serves: runs, a tab per agent, curves, replay.

``start_dashboard(store, hub, host=..., port=...)`` serves it in the running event loop
(the daemon does this; see ``telemetry.daemon``). Pages, scripts and styles are plain
files in ``static/`` shipped inside the package: no CDN, no JavaScript build step.
"""

from telemetry.dashboard.server import DEFAULT_HOST, DEFAULT_PORT, DashboardServer, DashboardStartError, start_dashboard

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "DashboardServer", "DashboardStartError", "start_dashboard"]
