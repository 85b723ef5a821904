"""What a learning agent produced: one record per environment step and per episode, and the
bounded buffer the telemetry behaviour drains them from.

The record fields are the keyword arguments of the telemetry session's `emit_step` /
`emit_episode` (DESIGN.md), so a record is sent with `session.emit_step(**record.emit_kwargs())`.
StepRecord also carries `episode_seed` (RunStep field 18): the seed the environment was reset
with at the start of that episode (the run's seed for episode 0; later episodes continue the
seeded stream, so it is None there).

The buffer applies backpressure instead of dropping: when it is full the producing agent awaits
space (`put`), which pauses its plans until the consumer drains.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Union


@dataclass(slots=True)
class StepRecord:
    """One environment step of one agent."""

    run_id: str
    agent_id: str
    episode_index: int
    step_index: int
    action_json: str
    observation_json: str
    reward: float
    terminated: bool
    truncated: bool
    policy_label: str  # "explore" (random action) or "greedy" (argmax of the Q-table)
    backend: str
    timestamp_ns: int
    render_hint_json: str | None = None
    payload_version: int = 1
    episode_seed: int | None = None

    def emit_kwargs(self) -> dict[str, Any]:
        """The record as keyword arguments for `TelemetrySession.emit_step` (all but episode_seed,
        which the session does not take yet)."""
        kwargs = {f.name: getattr(self, f.name) for f in _STEP_FIELDS}
        del kwargs["episode_seed"]
        return kwargs


@dataclass(slots=True)
class EpisodeRecord:
    """One finished episode of one agent."""

    run_id: str
    agent_id: str
    episode_index: int
    total_reward: float
    steps: int
    terminated: bool
    truncated: bool
    timestamp_ns: int
    metadata: dict[str, Any] = field(default_factory=dict)

    def emit_kwargs(self) -> dict[str, Any]:
        """The record as keyword arguments for `TelemetrySession.emit_episode`."""
        return {f.name: getattr(self, f.name) for f in _EPISODE_FIELDS}


_STEP_FIELDS = dataclasses.fields(StepRecord)
_EPISODE_FIELDS = dataclasses.fields(EpisodeRecord)


Record = Union[StepRecord, EpisodeRecord]


class RecordBuffer:
    """A bounded FIFO of records between one producing agent and one consumer, on one event loop.

    The producer calls `try_put` (never waits) and, when that returns False, `await put` (waits
    for space). The consumer calls `drain`. Nothing is ever dropped. Counters say how many records
    of each kind went in, for progress displays and for checking telemetry counts.
    """

    def __init__(self, capacity: int = 65536):
        if capacity < 1:
            raise ValueError(f"RecordBuffer capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._items: deque[Record] = deque()
        self._space = asyncio.Event()
        self._space.set()
        self._data = asyncio.Event()
        self.steps_put = 0
        self.episodes_put = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def free(self) -> int:
        """How many more records fit right now."""
        return self.capacity - len(self._items)

    def try_put(self, record: Record) -> bool:
        """Append without waiting; False (and nothing appended) when the buffer is full."""
        if len(self._items) >= self.capacity:
            self._space.clear()
            return False
        self._items.append(record)
        if type(record) is StepRecord:
            self.steps_put += 1
        else:
            self.episodes_put += 1
        self._data.set()
        return True

    async def put(self, record: Record) -> None:
        """Append, waiting for the consumer to make room when the buffer is full."""
        while not self.try_put(record):
            await self._space.wait()

    def drain(self, max_records: int | None = None) -> list[Record]:
        """Remove and return the oldest records, at most `max_records` (all when None)."""
        items = self._items
        count = len(items) if max_records is None else min(max_records, len(items))
        out = [items.popleft() for _ in range(count)]
        if not items:
            self._data.clear()
        if count:
            self._space.set()
        return out

    async def wait_for_records(self, timeout: float | None = None) -> bool:
        """Wait until at least one record is buffered (True) or `timeout` passes (False)."""
        if self._items:
            return True
        try:
            await asyncio.wait_for(self._data.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True
