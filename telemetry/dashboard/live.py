"""Server-sent events for one run, fed by the daemon's live hub, safe for slow browsers.

``GET /api/runs/{run_id}/events`` (``text/event-stream``). Every event's data is one JSON
object; the shapes of its records are in ``telemetry.dashboard.records``.

  hello     {"run": run, "agents": [agent_id, ...]}              first, on every (re)connect
  steps     {"agents": {agent_id: {"rows": [step, ...], "count": n, "skipped": k,
                                   "render_hint": {...}?}}}
            the newest steps (at most TABLE_ROWS per agent) since the last steps event;
            ``count`` steps arrived in that time, ``skipped`` of them are not in ``rows``
            (thinned); ``render_hint`` is present when the agent's hint is new or changed
  episodes  {"rows": [episode, ...]}    every episode, in seq order, never thinned
  messages  {"rows": [message, ...]}    every coordination message, in seq order
  run       run                         the run's status changed

Each event carries ``id: <last episode seq>.<last message seq>``: a browser's EventSource
sends it back as Last-Event-ID when it reconnects, and the stream resumes exactly after
those (from the store). Steps are not resumed: the table only ever shows the newest.

Backpressure, so that a slow browser never slows ingest and loses nothing that matters:
* The hub never waits for anyone (bounded per-subscriber queues, see telemetry.hub).
* Steps: a pump folds every step into a per-agent ring of the newest TABLE_ROWS plus a
  counter, as fast as they come (live from the hub; from the store by seq if the hub ever
  cut it off); whatever the browser did not take is replaced by newer steps. Memory stays
  bounded whatever the browser does.
* Episodes and messages go through ``LiveHub.replay_then_live`` into a bounded outbox.
  When the browser falls behind, the outbox fills, the pump stops pulling, the hub marks
  the subscription overflowed, and the pump later re-reads what it missed from the store
  by seq. Nothing is lost; nothing waits on the ingest path.
* At most one flush per FLUSH_INTERVAL_S, each one write per kind, so a fast run costs the
  browser a handful of events per second, not one per step.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from telemetry.dashboard import records
from telemetry.hub import OVERFLOWED, RUNS_TOPIC, LiveHub, episodes_topic, messages_topic, steps_topic
from telemetry.store import TelemetryStore

FLUSH_INTERVAL_S = 0.1
TABLE_ROWS = 20
TAIL_WINDOW = 2000       # run steps read at connect to fill each agent's table
PAGE_RECORDS = 1000      # store page size when catching up
PAGE_BYTES = 1024 * 1024  # ... and its bound in bytes (a page of huge observations stays small)
SNAPSHOT_BYTES = 16 * 1024 * 1024  # bound of the read that fills the tables at connect
EVENT_RECORDS = 1000     # episodes or messages per event
OUTBOX_RECORDS = 4000    # episodes or messages held for one browser before its pump waits
KEEPALIVE_S = 15.0

log = logging.getLogger(__name__)


def parse_last_event_id(value: str | None) -> tuple[int, int]:
    """(episode seq, message seq) from a Last-Event-ID header; (0, 0) when absent or malformed."""
    try:
        episodes, messages = (int(part) for part in (value or "").split("."))
    except ValueError:
        return 0, 0
    return max(episodes, 0), max(messages, 0)


@dataclass
class _AgentSteps:
    """Steps of one agent waiting for the next flush: the newest few and how many came."""
    rows: deque = field(default_factory=lambda: deque(maxlen=TABLE_ROWS))
    count: int = 0
    hint_json: str = ""
    hint_sent: str = ""


class RunEventStream:
    """One browser's event stream for one run."""

    def __init__(self, store: TelemetryStore, hub: LiveHub, run_id: str,
                 episodes_since: int = 0, messages_since: int = 0) -> None:
        self.store = store
        self.hub = hub
        self.run_id = run_id
        self.episodes_sent = episodes_since
        self.messages_sent = messages_since
        self._steps: dict[str, _AgentSteps] = {}
        self._episodes: asyncio.Queue = asyncio.Queue(OUTBOX_RECORDS)
        self._messages: asyncio.Queue = asyncio.Queue(OUTBOX_RECORDS)
        self._run_row: Any = None
        self._wake = asyncio.Event()
        self._ended = False

    async def run(self, request: web.Request) -> web.StreamResponse:
        """Serve the stream until the browser leaves or the daemon stops."""
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        })
        runs_sub = self.hub.subscribe(RUNS_TOPIC)
        tasks: list[asyncio.Task] = []
        try:
            last_step_seq = await self._snapshot_steps()
            await response.prepare(request)
            await response.write(b"retry: 2000\n\n")
            await self._send(response, "hello", await asyncio.to_thread(self._hello))
            tasks = [
                asyncio.create_task(self._pump_steps(last_step_seq)),
                asyncio.create_task(self._pump_runs(runs_sub)),
                asyncio.create_task(self._pump_complete(
                    episodes_topic(self.run_id), self.store.read_episodes, self.episodes_sent, self._episodes)),
                asyncio.create_task(self._pump_complete(
                    messages_topic(self.run_id), self.store.read_messages, self.messages_sent, self._messages)),
            ]
            for task in tasks:
                task.add_done_callback(self._pump_ended)
            await self._write_loop(response)
        except ConnectionResetError:
            log.debug("run %s: a dashboard page left", self.run_id)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            runs_sub.close()
        return response

    def close(self) -> None:
        """End the stream at its next flush (the dashboard is stopping)."""
        self._ended = True
        self._wake.set()

    def _pump_ended(self, task: asyncio.Task) -> None:
        """A pump ends when the hub closes (the daemon stops) or a read fails: either way this
        stream is over, and the browser's EventSource reconnects and resumes by Last-Event-ID."""
        if not task.cancelled() and task.exception() is not None:
            log.error("run %s: a dashboard event stream failed: %s", self.run_id, task.exception(),
                      exc_info=task.exception())
        self._ended = True
        self._wake.set()

    def _hello(self) -> dict[str, Any]:
        run = self.store.get_run(self.run_id)
        agents = self.store.agent_ids(self.run_id)
        return {"run": records.run_json(run, self.store.counts(self.run_id), len(agents)), "agents": agents}

    async def _snapshot_steps(self) -> int:
        """Fill each agent's table with its newest stored steps; return the last seq read."""
        last = (await asyncio.to_thread(self.store.counts, self.run_id)).steps
        tail = await asyncio.to_thread(self.store.read_steps, self.run_id, max(0, last - TAIL_WINDOW), None,
                                       TAIL_WINDOW, SNAPSHOT_BYTES)
        for step in tail:
            self._fold_step(step, counted=False)
        first_seq = tail[0].seq_id if tail else 0
        for agent_id, agent in self._steps.items():
            if not agent.hint_json:   # the tail starts after this agent's episode began
                agent.hint_json = await asyncio.to_thread(self.store.latest_render_hint, self.run_id,
                                                          agent_id, first_seq)
        if tail:
            self._wake.set()
        return max(last, tail[-1].seq_id if tail else 0)

    def _fold_step(self, step: Any, *, counted: bool = True) -> None:
        agent = self._steps.get(step.agent_id)
        if agent is None:
            agent = self._steps[step.agent_id] = _AgentSteps()
        agent.rows.append(step)
        if counted:
            agent.count += 1
        if step.render_hint_json:
            agent.hint_json = step.render_hint_json

    async def _pump_steps(self, last_seq: int) -> None:
        """Fold every step after ``last_seq`` into the per-agent rings, live from the hub; after
        an overflow the hub's replay reads what was missed from the store. Never waits on the
        browser, so this keeps up and the rings always hold the newest steps."""
        async def read_page(after: int) -> Sequence[Any]:
            return await asyncio.to_thread(self.store.read_steps, self.run_id, after, None, PAGE_RECORDS, PAGE_BYTES)

        async with contextlib.aclosing(
                self.hub.replay_then_live(steps_topic(self.run_id), read_page, last_seq)) as stream:
            async for step in stream:
                self._fold_step(step)
                self._wake.set()

    async def _pump_runs(self, sub: Any) -> None:
        while True:
            chunk = await sub.next()
            if chunk is None:
                return
            if chunk is OVERFLOWED:
                sub.reset()
                chunk = [await asyncio.to_thread(self.store.get_run, self.run_id)]
            for run in chunk:
                if run is not None and run.run_id == self.run_id:
                    self._run_row = run
                    self._wake.set()

    async def _pump_complete(self, topic: Any, read: Callable[..., Sequence[Any]], since: int,
                             outbox: asyncio.Queue) -> None:
        """Every record of ``topic`` after ``since`` into ``outbox``, from the store then live."""
        async def read_page(after: int) -> Sequence[Any]:
            return await asyncio.to_thread(read, self.run_id, after, None, PAGE_RECORDS, PAGE_BYTES)

        async with contextlib.aclosing(self.hub.replay_then_live(topic, read_page, since)) as stream:
            async for record in stream:
                await outbox.put(record)
                self._wake.set()

    async def _write_loop(self, response: web.StreamResponse) -> None:
        loop = asyncio.get_running_loop()
        last_flush = 0.0
        while not self._ended:
            try:
                await asyncio.wait_for(self._wake.wait(), KEEPALIVE_S)
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            pause = last_flush + FLUSH_INTERVAL_S - loop.time()
            if pause > 0:
                await asyncio.sleep(pause)  # coalesce: at most one flush per interval
            self._wake.clear()
            await self._flush(response)
            last_flush = loop.time()
            if not (self._episodes.empty() and self._messages.empty()):
                self._wake.set()

    async def _flush(self, response: web.StreamResponse) -> None:
        if self._run_row is not None:
            run, self._run_row = self._run_row, None
            counts = await asyncio.to_thread(self.store.counts, self.run_id)
            agents = await asyncio.to_thread(self.store.agent_ids, self.run_id)
            await self._send(response, "run", records.run_json(run, counts, len(agents)))
        episodes = _drain(self._episodes)
        if episodes:
            self.episodes_sent = episodes[-1].seq_id
            await self._send(response, "episodes", {"rows": [records.episode_json(e) for e in episodes]})
        messages = _drain(self._messages)
        if messages:
            self.messages_sent = messages[-1].seq_id
            await self._send(response, "messages", {"rows": [records.message_json(m) for m in messages]})
        steps = self._take_steps()
        if steps:
            await self._send(response, "steps", {"agents": steps})

    def _take_steps(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for agent_id, agent in self._steps.items():
            if not agent.rows and not agent.count:
                continue
            entry: dict[str, Any] = {
                "rows": [records.step_json(s) for s in agent.rows],
                "count": agent.count,
                "skipped": max(0, agent.count - len(agent.rows)),
            }
            if agent.hint_json != agent.hint_sent:
                entry["render_hint"] = records.parse_json(agent.hint_json)
                agent.hint_sent = agent.hint_json
            agent.rows.clear()
            agent.count = 0
            out[agent_id] = entry
        return out

    async def _send(self, response: web.StreamResponse, event: str, data: dict[str, Any]) -> None:
        body = json.dumps(data, separators=(",", ":"), allow_nan=False)
        frame = f"id: {self.episodes_sent}.{self.messages_sent}\nevent: {event}\ndata: {body}\n\n"
        await response.write(frame.encode())


def _drain(queue: asyncio.Queue) -> list[Any]:
    """Up to EVENT_RECORDS records from ``queue`` without waiting."""
    out = []
    while len(out) < EVENT_RECORDS and not queue.empty():
        out.append(queue.get_nowait())
    return out


async def stream_run_events(request: web.Request, store: TelemetryStore, hub: LiveHub, run_id: str,
                            open_streams: set[RunEventStream]) -> web.StreamResponse:
    """The ``/events`` handler body: resume after Last-Event-ID (or ?since=E.M) and stream.
    The stream is in ``open_streams`` while it runs, so a stopping dashboard can end it."""
    episodes_since, messages_since = parse_last_event_id(
        request.headers.get("Last-Event-ID") or request.query.get("since"))
    stream = RunEventStream(store, hub, run_id, episodes_since, messages_since)
    open_streams.add(stream)
    try:
        return await stream.run(request)
    finally:
        open_streams.discard(stream)
