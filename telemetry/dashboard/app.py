"""The dashboard's aiohttp application: pages, JSON reads, export downloads, the event stream.

Routes (all GET):
  /                                   the run list (static page polling /api/runs)
  /runs/{run_id}                      one run, a tab per agent; 404 page when the run is unknown
  /api/runs                           {"runs": [run]}
  /api/runs/{run_id}                  {"run": run, "agents": [agent_id]}
  /api/runs/{run_id}/events           server-sent events, see telemetry.dashboard.live
  /api/runs/{run_id}/replay?agent_id=A&episode=N
                                      {"steps": [replay step], "render_hint": {...}}
  /api/runs/{run_id}/export?format=csv|jsonl[&kind=steps|episodes|messages][&agent_id=A]
                                      a download, written by telemetry.export as the CLI does
  /static/...                         the files in static/, shipped inside the package
"""

from __future__ import annotations

import asyncio
import html
import io
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import quote

from aiohttp import web

from telemetry.dashboard import records
from telemetry.dashboard.live import stream_run_events
from telemetry.dashboard.replay import episode_steps
from telemetry.export import ExportError, export_run
from telemetry.hub import LiveHub
from telemetry.store import RunRow, TelemetryStore

T = TypeVar("T")

STATIC_DIR = Path(__file__).parent / "static"
STORE = web.AppKey("store", TelemetryStore)
HUB = web.AppKey("hub", LiveHub)
OPEN_STREAMS = web.AppKey("open_streams", set)


def create_app(store: TelemetryStore, hub: LiveHub) -> web.Application:
    """The dashboard app reading ``store`` and fed live by ``hub``."""
    app = web.Application(middlewares=[_not_found_page])
    app[STORE] = store
    app[HUB] = hub
    app[OPEN_STREAMS] = set()
    app.router.add_get("/", _index)
    app.router.add_get("/runs/{run_id}", _run_page)
    app.router.add_get("/api/runs", _api_runs)
    app.router.add_get("/api/runs/{run_id}", _api_run)
    app.router.add_get("/api/runs/{run_id}/events", _api_events)
    app.router.add_get("/api/runs/{run_id}/replay", _api_replay)
    app.router.add_get("/api/runs/{run_id}/export", _api_export)
    app.router.add_static("/static/", STATIC_DIR)
    return app


def _page(name: str, **slots: str) -> str:
    text = (STATIC_DIR / name).read_text(encoding="utf-8")
    for key, value in slots.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def _not_found(title: str, detail: str) -> web.Response:
    body = _page("notfound.html", TITLE=html.escape(title), DETAIL=html.escape(detail))
    return web.Response(status=404, text=body, content_type="text/html")


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def _not_found_page(request: web.Request, handler):  # type: ignore[no-untyped-def]
    """Unknown paths get a page a person can read (API paths get JSON) instead of aiohttp's bare text."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        if request.path.startswith("/api/"):
            return _json_error(404, f"no such API path: {request.path}")
        return _not_found("Nothing here", f"The dashboard has no page at {request.path}.")


async def _index(request: web.Request) -> web.Response:
    return web.Response(text=_page("index.html"), content_type="text/html")


async def _run_page(request: web.Request) -> web.Response:
    run_id = request.match_info["run_id"]
    if await _read(request.app[STORE].get_run, run_id) is None:
        return _not_found(
            f"No run named “{run_id}”",
            f"This daemon holds no run “{run_id}”. Check the id, or pick a run from the list.",
        )
    body = _page("run.html", RUN_ID=html.escape(run_id), RUN_ID_URL=html.escape(quote(run_id, safe="")))
    return web.Response(text=body, content_type="text/html")


async def _read(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking store read off the event loop (reads are thread-safe, see TelemetryStore)."""
    return await asyncio.to_thread(fn, *args)


def _run_summary(store: TelemetryStore, run: RunRow) -> dict[str, Any]:
    return records.run_json(run, store.counts(run.run_id), len(store.agent_ids(run.run_id)))


async def _api_runs(request: web.Request) -> web.Response:
    store = request.app[STORE]

    def summaries() -> list[dict[str, Any]]:
        return [_run_summary(store, run) for run in reversed(store.list_runs())]

    return web.json_response({"runs": await _read(summaries)})


async def _api_run(request: web.Request) -> web.Response:
    store = request.app[STORE]
    run_id = request.match_info["run_id"]
    run = await _read(store.get_run, run_id)
    if run is None:
        return _unknown_run(run_id)
    summary = await _read(_run_summary, store, run)
    return web.json_response({"run": summary, "agents": await _read(store.agent_ids, run_id)})


async def _api_events(request: web.Request) -> web.StreamResponse:
    store = request.app[STORE]
    run_id = request.match_info["run_id"]
    if await _read(store.get_run, run_id) is None:
        return _unknown_run(run_id)
    return await stream_run_events(request, store, request.app[HUB], run_id, request.app[OPEN_STREAMS])


async def _api_replay(request: web.Request) -> web.Response:
    store = request.app[STORE]
    run_id = request.match_info["run_id"]
    if await _read(store.get_run, run_id) is None:
        return _unknown_run(run_id)
    agent_id = request.query.get("agent_id", "")
    episode = request.query.get("episode", "")
    if not agent_id or not episode.isdigit():
        return _json_error(400, "replay needs ?agent_id=AGENT&episode=N (N a whole number)")
    steps = await _read(episode_steps, store, run_id, agent_id, int(episode))
    rows = [records.replay_step_json(s) for s in steps]
    hint = next((row["render_hint"] for row in rows if row["render_hint"]), None)
    return web.json_response({"agent_id": agent_id, "episode": int(episode), "steps": rows, "render_hint": hint})


_CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson; charset=utf-8"}


async def _api_export(request: web.Request) -> web.StreamResponse:
    """The run as ``telemetry.export.export_run`` writes it (the CLI's code), as a download.

    The export goes to an anonymous temporary file first (memory stays flat for long runs,
    and an error is still a clean JSON answer), then streams out.
    """
    store = request.app[STORE]
    run_id = request.match_info["run_id"]
    fmt = request.query.get("format", "csv")
    kind = request.query.get("kind", "steps")
    agent_id = request.query.get("agent_id") or None
    try:
        exported = await _read(_export_to_temporary_file, store, run_id, fmt, kind, agent_id)
    except ExportError as exc:
        status = 404 if await _read(store.get_run, run_id) is None else 400
        return _json_error(status, str(exc))
    with exported:
        size = exported.seek(0, io.SEEK_END)
        exported.seek(0)
        name = _download_name(run_id, kind, agent_id, fmt)
        response = web.StreamResponse(headers={
            "Content-Type": _CONTENT_TYPES[fmt],
            "Content-Disposition": f"attachment; filename=\"{name}\"",
        })
        response.content_length = size
        await response.prepare(request)
        while chunk := await asyncio.to_thread(exported.read, 256 * 1024):
            await response.write(chunk)
        await response.write_eof()
    return response


def _export_to_temporary_file(store: TelemetryStore, run_id: str, fmt: str, kind: str,
                              agent_id: str | None) -> BinaryIO:
    binary = tempfile.TemporaryFile()
    text = io.TextIOWrapper(binary, encoding="utf-8", newline="")
    try:
        export_run(store, run_id, fmt, text, kind=kind, agent_id=agent_id)
        text.flush()
    except BaseException:
        text.close()
        raise
    return text.detach()


def _download_name(run_id: str, kind: str, agent_id: str | None, fmt: str) -> str:
    parts = [run_id, agent_id, kind] if agent_id else [run_id, kind]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(parts)) + f".{fmt}"


def _unknown_run(run_id: str) -> web.Response:
    return _json_error(404, f"no run '{run_id}' on this daemon")
