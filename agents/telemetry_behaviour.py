"""`TelemetryBehaviour`: a SPADE periodic behaviour that ships one agent's records out.

Every `period` seconds it drains the agent's `RecordBuffer` into a sink: a telemetry session
(`TelemetryGrpcProxy`; the container opens one session per run and shares it between its
agents, each record tagged with its agent's agent_id), JSON lines on stdout, or nowhere
(telemetry off). The learning loop only ever appends to the buffer; it never waits on
the network. The buffer is bounded: if the sink falls behind, the agent waits for space, and
nothing is dropped.

Backpressure from the daemon (pause, step credits, rate caps) reaches the agent's plans through
its gate: `attach` installs the session's gate (`Gate.of_session`: its `try_acquire`, checked
synchronously before every environment step unless `holds_nobody` says nothing holds anyone
back, and `wait_until_allowed`, awaited only when the check says no; agents.actions).

Each drain hands the sink a `RecordChunk`: the agent's steps as columns (`StepTable`) and its
episodes, which a telemetry session takes as they are (`emit_step_table`, `emit_episodes`).

When the behaviour ends (the agent stops, or `kill()`), `on_end` drains until nothing is left
and then sets `drained`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
import time
from typing import IO, Optional, Protocol

from spade.behaviour import PeriodicBehaviour

from agents.actions import GateLike, as_gate
from agents.bdi_agent import LearningAgent
from agents.records import EpisodeRecord, RecordBuffer, RecordChunk, StepRecord

logger = logging.getLogger(__name__)

#: How often the behaviour drains: small enough that records flow while the agent learns, large
#: enough that an idle agent costs nothing.
DEFAULT_PERIOD_S = 0.05
#: Most steps handed to the sink at once. A drain normally takes everything the period
#: gathered in one go (one column block); yielding between small chunks instead gave the agent
#: a whole time slice per chunk, so a fast agent outran its drain and lived with a full buffer.
#: A fuller buffer takes several turns of the loop, so the session's sender ships in between
#: and its own buffer never overflows.
_DRAIN_RECORDS = 16_000


class RecordSink(Protocol):
    """Where drained records go. `write` may await (a session yields to its sender)."""

    async def write(self, chunk: RecordChunk) -> None: ...


class SessionSink:
    """Records into a `TelemetrySession` (emitting never waits on the network).

    Steps go in as the columns they already are (`emit_step_table`: the session copies each
    list into the wire message in C; this runs on the agent's own thread, so it has to be
    cheap), episodes through `emit_episodes`.
    """

    def __init__(self, session) -> None:
        self.session = session

    async def write(self, chunk: RecordChunk) -> None:
        if chunk.steps:
            await self.session.emit_step_table(chunk.run_id, chunk.agent_id, chunk.steps)
        if chunk.episodes:
            await self.session.emit_episodes(chunk.run_id, chunk.agent_id, chunk.episodes)


def default_worker_id() -> str:
    """The producer id records carry: the proxy's default, `<hostname>-<pid>`."""
    return f"{socket.gethostname()}-{os.getpid()}"


_COMPACT = json.JSONEncoder(separators=(",", ":"))  # one encoder: json.dumps with options builds one per call
_second_cache: list = [None, ""]  # the last whole second formatted, and its text


def _timestamp_json(timestamp_ns: int) -> str:
    """`google.protobuf.Timestamp`'s JSON form (RFC 3339, UTC, 0/3/6/9 fraction digits), without
    building a Timestamp per record: records of one second share the formatted date."""
    seconds, nanos = divmod(timestamp_ns, 1_000_000_000)
    if _second_cache[0] != seconds:
        _second_cache[0], _second_cache[1] = seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    base = _second_cache[1]
    if nanos == 0:
        return base + "Z"
    if nanos % 1_000_000 == 0:
        return f"{base}.{nanos // 1_000_000:03d}Z"
    if nanos % 1_000 == 0:
        return f"{base}.{nanos // 1_000:06d}Z"
    return f"{base}.{nanos:09d}Z"


def step_json(record: StepRecord, worker_id: str) -> dict:
    """A step as the RunStep message's fields (proto names and order, seq_id left out: only the
    daemon assigns it), with `"type": "step"`; unset strings are "" and unset numbers 0, as in
    the proto."""
    return {
        "type": "step",
        "run_id": record.run_id,
        "episode_index": record.episode_index,
        "step_index": record.step_index,
        "action_json": record.action_json,
        "observation_json": record.observation_json,
        "reward": record.reward,
        "terminated": record.terminated,
        "truncated": record.truncated,
        "timestamp": _timestamp_json(record.timestamp_ns),
        "policy_label": record.policy_label,
        "backend": record.backend,
        "agent_id": record.agent_id,
        "render_hint_json": record.render_hint_json or "",
        "frame_ref": "",
        "payload_version": record.payload_version,
        "render_payload_json": "",
        "episode_seed": record.episode_seed or 0,
        "worker_id": worker_id,
    }


def episode_json(record: EpisodeRecord, worker_id: str) -> dict:
    """An episode as the RunEpisode message's fields (see `step_json`), `"type": "episode"`."""
    return {
        "type": "episode",
        "run_id": record.run_id,
        "episode_index": record.episode_index,
        "total_reward": record.total_reward,
        "steps": record.steps,
        "terminated": record.terminated,
        "truncated": record.truncated,
        "metadata_json": _COMPACT.encode(record.metadata),
        "timestamp": _timestamp_json(record.timestamp_ns),
        "agent_id": record.agent_id,
        "worker_id": worker_id,
    }


class JsonlSink:
    """One JSON line per step and per episode on `stream` (default stdout), the integration
    guide's `"use_grpc_telemetry": false` mode."""

    def __init__(self, stream: Optional[IO[str]] = None, worker_id: Optional[str] = None) -> None:
        self.stream = stream
        self.worker_id = worker_id or default_worker_id()

    async def write(self, chunk: RecordChunk) -> None:
        worker_id = self.worker_id
        encode = _COMPACT.encode
        lines = [encode(step_json(r, worker_id) if type(r) is StepRecord else episode_json(r, worker_id))
                 for r in chunk.records()]
        stream = self.stream or sys.stdout  # looked up late: tests and callers may swap stdout
        stream.write("\n".join(lines) + "\n")
        stream.flush()


class DiscardSink:
    """Telemetry off: records are counted by the behaviour and let go."""

    async def write(self, chunk: RecordChunk) -> None:
        return None


class TelemetryBehaviour(PeriodicBehaviour):
    """Drains one agent's record buffer into a sink every `period` seconds.

    `gate` (typically `Gate.of_session(session)`; a bare coroutine function is awaited before
    every step) is installed on the agent by `attach`. `steps_sent` / `episodes_sent` count
    what reached the sink. If the sink fails (e.g. the daemon refused this worker for good), the behaviour stops draining, keeps
    the error in `failure` and sets `failed`, so its owner can stop the agent and report it
    instead of letting the agent block on a full buffer.
    """

    def __init__(
        self,
        records: RecordBuffer,
        sink: RecordSink,
        *,
        gate: Optional[GateLike] = None,
        period: float = DEFAULT_PERIOD_S,
    ) -> None:
        super().__init__(period=period)
        self.records = records
        self.sink = sink
        self.gate = as_gate(gate)
        self.steps_sent = 0
        self.episodes_sent = 0
        self.failure: Optional[BaseException] = None
        self.failed = asyncio.Event()
        self.drained = asyncio.Event()

    def attach(self, agent: LearningAgent) -> None:
        """Install the gate on `agent` and add this behaviour to it (before or after start).

        The gate is set here rather than in on_start so that not even the agent's first step
        can slip past a pause that is already in force.
        """
        if self.gate is not None:
            agent.set_gate(self.gate)
        agent.add_behaviour(self)

    async def run(self) -> None:
        await self._drain()

    async def on_end(self) -> None:
        """Drain until the agent has nothing left to hand over, then signal `drained`."""
        try:
            while self.failure is None and len(self.records):
                await self._drain()
        finally:
            self.drained.set()

    async def wait_drained(self, timeout: float) -> bool:
        """Wait until on_end has drained everything; False if `timeout` seconds pass first."""
        try:
            await asyncio.wait_for(self.drained.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def _drain(self) -> None:
        if self.failure is not None:
            return
        records = self.records
        while True:
            chunk = records.drain(_DRAIN_RECORDS)
            if not len(chunk):
                return
            try:
                await self.sink.write(chunk)
            except Exception as error:  # noqa: BLE001 - any sink failure must reach the owner
                self.failure = error
                self.failed.set()
                agent = self.agent
                logger.error("agent %s (run %s): telemetry stopped: %s", agent.agent_id, agent.run_id, error)
                return
            self.steps_sent += len(chunk.steps)
            self.episodes_sent += len(chunk.episodes)
            if len(chunk.steps) < _DRAIN_RECORDS:
                return  # all that the period gathered; what came in meanwhile waits for the next
            await asyncio.sleep(0)  # let the agent and the session's sender run between chunks
