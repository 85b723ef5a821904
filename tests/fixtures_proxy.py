"""Helpers for the proxy tests: record arguments, an operator that sends control events,
readers of what a daemon's store holds, and the chunk a record buffer drains."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from agents.records import Record, RecordBuffer, RecordChunk
from telemetry.auth import bearer_metadata
from telemetry.generated import trainer_pb2 as pb
from telemetry.generated import trainer_pb2_grpc
from telemetry.store import TelemetryStore


def step_kwargs(i: int, agent_id: str = "a", run_id: str = "run-1", per_episode: int = 100,
                **extra: Any) -> dict[str, Any]:
    """The emit_step keyword arguments of an agent's i-th step."""
    fields: dict[str, Any] = dict(
        run_id=run_id, episode_index=i // per_episode, step_index=i % per_episode,
        action_json=str(i % 4), observation_json=str(i % 16), reward=float(i % 7 == 0),
        terminated=i % per_episode == per_episode - 1, truncated=False,
        policy_label="eps-greedy", backend="qlearning", agent_id=agent_id,
        render_hint_json=None, payload_version=1, timestamp_ns=1_700_000_000_000_000_000 + i)
    fields.update(extra)
    return fields


def episode_kwargs(e: int, agent_id: str = "a", run_id: str = "run-1",
                   steps: int = 100) -> dict[str, Any]:
    """The emit_episode keyword arguments of an agent's e-th episode."""
    return dict(run_id=run_id, episode_index=e, total_reward=float(e % 3), steps=steps,
                terminated=True, truncated=False, metadata={"epsilon": 0.5}, agent_id=agent_id,
                timestamp_ns=1_700_000_000_000_000_000 + e)


def stored_steps(db_path: Path, run_id: str) -> list[Any]:
    """Every step row of a run, in store order (reads the SQLite file directly)."""
    store = TelemetryStore(db_path, create=False)
    try:
        rows: list[Any] = []
        while page := store.read_steps(run_id, since_seq=rows[-1].seq_id if rows else 0,
                                       limit=5000):
            rows.extend(page)
        return rows
    finally:
        store.close()


def step_count(db_path: Path, run_id: str) -> int:
    store = TelemetryStore(db_path, create=False)
    try:
        return store.counts(run_id).steps
    finally:
        store.close()


class Operator:
    """A controller on the daemon's ControlStream: sends commands, awaits their echo."""

    def __init__(self, address: str, run_id: str) -> None:
        self.address = address
        self.run_id = run_id
        self._outgoing: asyncio.Queue[pb.ControlEvent | None] = asyncio.Queue()
        self._echoes: asyncio.Queue[pb.ControlEvent] = asyncio.Queue()

    async def __aenter__(self) -> "Operator":
        self._channel = grpc.aio.insecure_channel(self.address)
        stub = trainer_pb2_grpc.TrainerServiceStub(self._channel)
        response = await stub.RegisterWorker(pb.RegisterWorkerRequest(
            run_id=self.run_id, worker_id="test-operator", worker_kind="operator",
            proto_version="MOSAIC/1.0"))
        self._call = stub.ControlStream(self._requests(),
                                        metadata=bearer_metadata(response.session_token))
        self._reader = asyncio.create_task(self._read())
        return self

    async def _requests(self) -> Any:
        while (event := await self._outgoing.get()) is not None:
            yield event

    async def _read(self) -> None:
        async for event in self._call:
            await self._echoes.put(event)

    async def send(self, **command: Any) -> None:
        """Send one command (e.g. pause=True, grant_steps=3, agent_id="a") and await its echo,
        which the daemon sends after fanning the command out to the run's producers."""
        await self._outgoing.put(pb.ControlEvent(run_id=self.run_id, **command))
        await asyncio.wait_for(self._echoes.get(), 10)

    async def __aexit__(self, *exc: Any) -> None:
        await self._outgoing.put(None)
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        await self._channel.close()


def chunk_of(records: list[Record]) -> RecordChunk:
    """The chunk a buffer would drain after `records` (all of one agent) were added to it."""
    buffer = RecordBuffer(max(1, len(records)))
    for record in records:
        buffer.add(record)
    return buffer.drain()
