"""What a learning agent produced, and the bounded buffer the telemetry behaviour drains it from.

Steps are kept as columns (`StepTable`: one list per field, named as `StepColumns`' fields),
not as one object per step. An object per step cost the agent more than a microsecond to build
and queue, woke the garbage collector every 700 steps (each one a tracked object), and the
telemetry encoder then had to read every field back out of every object. With columns the
agent appends plain values to lists, and a drain hands whole lists to the encoder, which
extends the wire message's repeated fields from them in C. Episodes, one per many steps, stay
`EpisodeRecord` objects.

`StepRecord` is the one-step view of a table row (`StepTable.records`), for whatever reads
steps one at a time: JSON lines, tests. A record's fields are the keyword arguments of the
telemetry session's `emit_step` / `emit_episode` (`telemetry.proxy.TelemetrySession`), so it can be sent with
`session.emit_step(**record.emit_kwargs())`. Steps carry `episode_seed` (RunStep field 18): the
seed the environment was reset with at the start of that episode (the run's seed for episode
0; later episodes continue the seeded stream, so it is None there).

The buffer holds one agent's records and applies backpressure instead of dropping: adding
never fails, and the agent checks `full` before each step and awaits `wait_for_space` when it
is (so the buffer exceeds its capacity by at most the records of the one action that filled
it).
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from telemetry.columns import PER_STEP, SPARSE, SPARSE_PAIRS


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


class StepTable:
    """Steps of one agent as parallel lists, one per field of `telemetry.columns.PER_STEP`
    (episode_index, step_index, action_json, observation_json, reward, terminated, truncated,
    timestamp_ns, policy_label), with the rare fields kept sparse: `render_hint_rows` /
    `render_hint_json` and `episode_seed_rows` / `episode_seed` name the rows that have one.
    `backend` and `payload_version` are the same for every step of an agent. The attribute names
    are those of the `StepColumns` wire message, so `telemetry.columns.encode_step_table` copies
    each list into its field as it is."""

    __slots__ = PER_STEP + SPARSE + ("backend", "payload_version")

    def __init__(self, backend: str = "", payload_version: int = 1) -> None:
        for name in PER_STEP + SPARSE:
            setattr(self, name, [])
        self.backend = backend
        self.payload_version = payload_version

    def __len__(self) -> int:
        return len(self.episode_index)

    def append(self, episode_index: int, step_index: int, action_json: str, observation_json: str,
               reward: float, terminated: bool, truncated: bool, timestamp_ns: int, policy_label: str,
               render_hint_json: Optional[str] = None, episode_seed: Optional[int] = None) -> None:
        """Add one step (arguments in `PER_STEP` order; `*_json` already JSON text)."""
        if render_hint_json or episode_seed is not None:
            self._add_sparse(len(self.episode_index), render_hint_json, episode_seed)
        self.episode_index.append(episode_index)
        self.step_index.append(step_index)
        self.action_json.append(action_json)
        self.observation_json.append(observation_json)
        self.reward.append(reward)
        self.terminated.append(terminated)
        self.truncated.append(truncated)
        self.timestamp_ns.append(timestamp_ns)
        self.policy_label.append(policy_label)

    def _add_sparse(self, row: int, render_hint_json: Optional[str], episode_seed: Optional[int]) -> None:
        if render_hint_json:
            self.render_hint_rows.append(row)
            self.render_hint_json.append(render_hint_json)
        if episode_seed is not None:
            self.episode_seed_rows.append(row)
            self.episode_seed.append(episode_seed)

    def take(self, count: int) -> StepTable:
        """Remove the first `count` steps and return them as a table of their own (all of them
        without copying a list when `count` covers the table)."""
        out = StepTable(self.backend, self.payload_version)
        if count >= len(self):
            for name in PER_STEP + SPARSE:
                fresh = getattr(out, name)
                setattr(out, name, getattr(self, name))
                setattr(self, name, fresh)
            return out
        for name in PER_STEP:
            column = getattr(self, name)
            setattr(out, name, column[:count])
            del column[:count]
        for rows_name, values_name in SPARSE_PAIRS:
            rows, values = getattr(self, rows_name), getattr(self, values_name)
            cut = next((i for i, row in enumerate(rows) if row >= count), len(rows))
            setattr(out, rows_name, rows[:cut])
            setattr(out, values_name, values[:cut])
            setattr(self, rows_name, [row - count for row in rows[cut:]])
            setattr(self, values_name, values[cut:])
        return out

    def records(self, run_id: str, agent_id: str) -> list[StepRecord]:
        """The steps as StepRecords (one object per step: for readers of single steps)."""
        hints = dict(zip(self.render_hint_rows, self.render_hint_json))
        seeds = dict(zip(self.episode_seed_rows, self.episode_seed))
        backend, version = self.backend, self.payload_version
        return [StepRecord(run_id, agent_id, episode_index, step_index, action_json, observation_json, reward,
                           terminated, truncated, policy_label, backend, timestamp_ns, hints.get(row), version,
                           seeds.get(row))
                for row, (episode_index, step_index, action_json, observation_json, reward, terminated, truncated,
                          timestamp_ns, policy_label)
                in enumerate(zip(*(getattr(self, name) for name in PER_STEP)))]


@dataclass
class RecordChunk:
    """Records drained from one agent's buffer, oldest first: its steps as a `StepTable`, its
    episodes as records, and where each episode falls among the steps (`episode_after[i]`:
    how many of the chunk's steps came before episode i), so the original order can be told."""

    run_id: str
    agent_id: str
    steps: StepTable
    episodes: list[EpisodeRecord]
    episode_after: list[int]

    def __len__(self) -> int:
        return len(self.steps) + len(self.episodes)

    def without_steps(self) -> RecordChunk:
        """The same chunk with its episodes only."""
        return RecordChunk(self.run_id, self.agent_id, StepTable(self.steps.backend, self.steps.payload_version),
                           self.episodes, [0] * len(self.episodes))

    def records(self) -> list[Record]:
        """Every record in the order the agent produced them (steps as StepRecords)."""
        steps = self.steps.records(self.run_id, self.agent_id)
        out: list[Record] = []
        done = 0
        for after, episode in zip(self.episode_after, self.episodes):
            out += steps[done:after]
            out.append(episode)
            done = after
        out += steps[done:]
        return out


class RecordBuffer:
    """The records of one agent between the agent (producer) and its telemetry behaviour
    (consumer), on one event loop.

    The agent adds steps (`add_step`) and episodes (`add_episode`); adding never waits and never
    fails. Before each step it checks `full`, and when the buffer is full it awaits
    `wait_for_space` instead of stepping: nothing is ever dropped. The consumer calls `drain`.
    `bind` names the agent (run_id, agent_id, backend) whose records these are. `steps_put` and
    `episodes_put` count what went in, for progress displays and for checking telemetry counts.
    """

    def __init__(self, capacity: int = 65536):
        if capacity < 1:
            raise ValueError(f"RecordBuffer capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.run_id = ""
        self.agent_id = ""
        self._steps = StepTable()
        self._episodes: list[EpisodeRecord] = []
        self._episode_after: list[int] = []
        self._steps_drained = 0
        self._episodes_drained = 0
        self._space = asyncio.Event()
        self._space.set()
        #: Add one step (arguments as `StepTable.append`). The table's own method, so that a
        #: step costs the agent one call: the table object stays, drains move its lists out.
        self.add_step = self._steps.append

    def bind(self, run_id: str, agent_id: str, backend: str = "", payload_version: int = 1) -> None:
        """Make this the buffer of agent `agent_id` in run `run_id` (steps of `backend`).
        ValueError if it already holds another agent's records: a buffer has one producer."""
        if self.agent_id and (self.run_id, self.agent_id) != (run_id, agent_id):
            raise ValueError(f"this RecordBuffer already holds the records of agent {self.agent_id!r} "
                             f"(run {self.run_id!r}); give agent {agent_id!r} a buffer of its own")
        self.run_id, self.agent_id = run_id, agent_id
        self._steps.backend, self._steps.payload_version = backend, payload_version

    def __len__(self) -> int:
        return len(self._steps) + len(self._episodes)

    @property
    def full(self) -> bool:
        """True when the buffer holds `capacity` records or more: the agent must wait for space."""
        return len(self._steps) + len(self._episodes) >= self.capacity

    @property
    def free(self) -> int:
        """How many more records fit right now (0 when full)."""
        return max(0, self.capacity - len(self))

    @property
    def steps_put(self) -> int:
        """Steps added so far."""
        return self._steps_drained + len(self._steps)

    @property
    def episodes_put(self) -> int:
        """Episodes added so far."""
        return self._episodes_drained + len(self._episodes)

    def add_episode(self, record: EpisodeRecord) -> None:
        """Add one finished episode, after the steps added so far."""
        self._episodes.append(record)
        self._episode_after.append(len(self._steps))

    def add(self, record: Record) -> None:
        """Add a record of either kind (binding the buffer to its agent if it is not yet)."""
        if not self.agent_id:
            self.bind(record.run_id, record.agent_id, getattr(record, "backend", ""))
        elif (record.run_id, record.agent_id) != (self.run_id, self.agent_id):
            raise ValueError(f"a record of agent {record.agent_id!r} (run {record.run_id!r}) cannot go into the "
                             f"buffer of agent {self.agent_id!r} (run {self.run_id!r})")
        if type(record) is EpisodeRecord:
            self.add_episode(record)
            return
        if (record.backend, record.payload_version) != (self._steps.backend, self._steps.payload_version):
            raise ValueError(f"a step of backend {record.backend!r} (payload version {record.payload_version}) "
                             f"cannot go into a buffer of backend {self._steps.backend!r} (payload version "
                             f"{self._steps.payload_version}): one agent's steps share both")
        self.add_step(record.episode_index, record.step_index, record.action_json, record.observation_json,
                      record.reward, record.terminated, record.truncated, record.timestamp_ns,
                      record.policy_label, record.render_hint_json, record.episode_seed)

    async def wait_for_space(self) -> None:
        """Return once the buffer is below its capacity."""
        while self.full:
            self._space.clear()
            await self._space.wait()

    def drain(self, max_records: Optional[int] = None) -> RecordChunk:
        """Remove and return the oldest records: all of them, or about `max_records` (whole
        steps up to that many, with the episodes that came among them)."""
        steps = len(self._steps)
        take = steps if max_records is None else min(max_records, steps)
        if take == steps:
            episodes, after = self._episodes, self._episode_after
            self._episodes, self._episode_after = [], []
        else:
            cut = next((i for i, position in enumerate(self._episode_after) if position > take), len(self._episodes))
            episodes, after = self._episodes[:cut], self._episode_after[:cut]
            del self._episodes[:cut]
            self._episode_after = [position - take for position in self._episode_after[cut:]]
        chunk = RecordChunk(self.run_id, self.agent_id, self._steps.take(take), episodes, after)
        self._steps_drained += len(chunk.steps)
        self._episodes_drained += len(episodes)
        if len(chunk):
            self._space.set()
        return chunk

