"""Steps and episodes as columns (`StepColumns`, `EpisodeColumns`: TelemetryBatch extensions):
encode, check, decode, expand.

A producer that streams many steps pays Python for every protobuf message it builds: about
3.5 us to build and serialize one RunStep, which is a tenth of an AgentSpeak-driven step.
`StepColumns` holds the steps of one agent as parallel arrays instead (a struct of arrays),
so encoding is a handful of list-wide operations in C, well under a microsecond a step, and
the daemon turns a column block into store rows with one `zip`. Episodes likewise (one per
few steps, and a RunEpisode costs more to build than a RunStep).

Used by the proxy (`encode_step_table` for steps already held as columns, as agents hold them;
`encode_steps` for step objects; `encode_episodes`; `expand` when the daemon cannot read
columns), the daemon's store (`row_values`) and whatever needs messages back (`expand`,
`step_message`, `episode_message`). Functions taking a `block` take either kind.
"""
from __future__ import annotations

from itertools import repeat
from operator import attrgetter
from types import SimpleNamespace
from typing import Any, Callable, Iterator, Protocol, Sequence, Union

from telemetry.generated import trainer_pb2

#: The per-step columns.
PER_STEP = ("episode_index", "step_index", "action_json", "observation_json", "reward",
            "terminated", "truncated", "timestamp_ns", "policy_label")
_GETTERS = tuple((name, attrgetter(name)) for name in PER_STEP)
_SHARED = attrgetter("backend", "payload_version")
#: The sparse step columns, as (rows that have a value, the values) pairs.
SPARSE_PAIRS = (("render_hint_rows", "render_hint_json"), ("episode_seed_rows", "episode_seed"))
SPARSE = tuple(name for pair in SPARSE_PAIRS for name in pair)
_TABLE_FIELDS = PER_STEP + SPARSE
_HINT = attrgetter("render_hint_json")
_SEED = attrgetter("episode_seed")
#: The per-episode columns but metadata_json (encoded from each episode's `metadata`).
PER_EPISODE = ("episode_index", "total_reward", "steps", "terminated", "truncated", "timestamp_ns")
_EPISODE_GETTERS = tuple((name, attrgetter(name)) for name in PER_EPISODE)
_METADATA = attrgetter("metadata")
Block = Union[trainer_pb2.StepColumns, trainer_pb2.EpisodeColumns]


class StepLike(Protocol):
    """What `encode_steps` reads from each step (e.g. `agents.records.StepRecord`)."""
    episode_index: int
    step_index: int
    action_json: str
    observation_json: str
    reward: float
    terminated: bool
    truncated: bool
    timestamp_ns: int
    policy_label: str
    backend: str
    payload_version: int
    render_hint_json: str | None
    episode_seed: int | None


class StepTableLike(Protocol):
    """What `encode_step_table` reads: steps as columns, named as `StepColumns`' fields (e.g.
    `agents.records.StepTable`)."""
    episode_index: Sequence[int]
    step_index: Sequence[int]
    action_json: Sequence[str]
    observation_json: Sequence[str]
    reward: Sequence[float]
    terminated: Sequence[bool]
    truncated: Sequence[bool]
    timestamp_ns: Sequence[int]
    policy_label: Sequence[str]
    render_hint_rows: Sequence[int]
    render_hint_json: Sequence[str]
    episode_seed_rows: Sequence[int]
    episode_seed: Sequence[int]
    backend: str
    payload_version: int


class EpisodeLike(Protocol):
    """What `encode_episodes` reads from each episode (e.g. `agents.records.EpisodeRecord`)."""
    episode_index: int
    total_reward: float
    steps: int
    terminated: bool
    truncated: bool
    timestamp_ns: int
    metadata: Any


class ColumnsError(ValueError):
    """A StepColumns block whose columns do not line up (a producer bug)."""


def encode_steps(agent_id: str, worker_id: str, steps: Sequence[StepLike]) -> list[trainer_pb2.StepColumns]:
    """The steps of one agent as column blocks: one block, or one per run of steps with equal
    (backend, payload_version), which a block holds once.

    Each column is filled straight from the steps' attributes (no tuple per step: that would
    cost time and wake the garbage collector). Raises TypeError (naming the field) when a
    step holds a value of the wrong type, e.g. a non-string `action_json`: columns take the
    wire types as they are.
    """
    if not steps:
        return []
    shared = list(map(_SHARED, steps))
    if len(set(shared)) == 1:
        return [_block(agent_id, worker_id, shared[0], steps)]
    blocks, start = [], 0
    for end in range(1, len(steps) + 1):
        if end == len(steps) or shared[end] != shared[start]:
            blocks.append(_block(agent_id, worker_id, shared[start], steps[start:end]))
            start = end
    return blocks


def _block(agent_id: str, worker_id: str, shared: tuple[str, int],
           steps: Sequence[StepLike]) -> trainer_pb2.StepColumns:
    """One block of steps that share `shared` = (backend, payload_version)."""
    table = _Columns(backend=shared[0], payload_version=shared[1])
    for name, get in _GETTERS:
        setattr(table, name, list(map(get, steps)))
    hints = [(row, hint) for row, hint in enumerate(map(_HINT, steps)) if hint]
    table.render_hint_rows = [row for row, _ in hints]
    table.render_hint_json = [hint for _, hint in hints]
    seeds = [(row, seed) for row, seed in enumerate(map(_SEED, steps)) if seed is not None]
    table.episode_seed_rows = [row for row, _ in seeds]
    table.episode_seed = [seed for _, seed in seeds]
    return encode_step_table(agent_id, worker_id, table)


class _Columns(SimpleNamespace):
    """A StepTableLike put together from StepLike objects."""


def encode_step_table(agent_id: str, worker_id: str, table: StepTableLike) -> trainer_pb2.StepColumns:
    """The steps of one agent, already held as columns (e.g. `agents.records.StepTable`), as
    one block: each list is copied into its field as it is, in C. TypeError (naming the field)
    for a value of the wrong type."""
    block = trainer_pb2.StepColumns(agent_id=agent_id, worker_id=worker_id, backend=table.backend or "",
                                    payload_version=table.payload_version)
    for name in _TABLE_FIELDS:
        try:
            getattr(block, name).extend(getattr(table, name))
        except (TypeError, ValueError) as err:
            raise TypeError(f"step field {name} of agent {agent_id!r}: {err}") from None
    return block


def encode_episodes(agent_id: str, worker_id: str, episodes: Sequence[EpisodeLike],
                    encode_metadata: Callable[[Any], str]) -> trainer_pb2.EpisodeColumns:
    """The episodes of one agent as one column block; `encode_metadata` turns an episode's
    `metadata` into its metadata_json. TypeError (naming the field) for a wrong type."""
    block = trainer_pb2.EpisodeColumns(agent_id=agent_id, worker_id=worker_id)
    for name, get in _EPISODE_GETTERS:
        try:
            getattr(block, name).extend(map(get, episodes))
        except (TypeError, ValueError) as err:
            raise TypeError(f"episode field {name} of agent {agent_id!r}: {err}") from None
    block.metadata_json.extend(map(encode_metadata, map(_METADATA, episodes)))
    return block


def _per_row(block: Block) -> tuple[str, ...]:
    return PER_STEP if type(block) is trainer_pb2.StepColumns else PER_EPISODE + ("metadata_json",)


def count(block: Block) -> int:
    """How many steps (or episodes) a block holds."""
    return len(block.episode_index)


def split(block: Block) -> tuple[Block, Block]:
    """The block's first and second halves (for blocks above a message size limit)."""
    n = count(block)
    if n < 2:
        raise ValueError("a block of one row cannot be split")
    middle = n // 2
    return _slice(block, 0, middle), _slice(block, middle, n)


def _slice(block: Block, start: int, stop: int) -> Block:
    if type(block) is trainer_pb2.EpisodeColumns:
        out = trainer_pb2.EpisodeColumns(agent_id=block.agent_id, worker_id=block.worker_id)
        for name in _per_row(block):
            getattr(out, name).extend(getattr(block, name)[start:stop])
        return out
    out = trainer_pb2.StepColumns(agent_id=block.agent_id, worker_id=block.worker_id,
                                  backend=block.backend, payload_version=block.payload_version)
    for name in PER_STEP:
        getattr(out, name).extend(getattr(block, name)[start:stop])
    for rows_name, values_name in SPARSE_PAIRS:
        for row, value in zip(getattr(block, rows_name), getattr(block, values_name)):
            if start <= row < stop:
                getattr(out, rows_name).append(row - start)
                getattr(out, values_name).append(value)
    return out


def _sparse(block: trainer_pb2.StepColumns, rows_name: str, values_name: str, n: int,
            default: Any) -> list:
    rows, values = getattr(block, rows_name), getattr(block, values_name)
    if len(rows) != len(values):
        raise ColumnsError(f"step columns of agent {block.agent_id!r}: {len(rows)} {rows_name} "
                           f"but {len(values)} {values_name}")
    out = [default] * n
    for row, value in zip(rows, values):
        if row >= n:
            raise ColumnsError(f"step columns of agent {block.agent_id!r}: {rows_name} names row "
                               f"{row} of {n}")
        out[row] = value
    return out


def check(block: Block) -> int:
    """The block's row count; ColumnsError when its columns differ in length."""
    n = count(block)
    kind = "step" if type(block) is trainer_pb2.StepColumns else "episode"
    for name in _per_row(block)[1:]:
        if len(getattr(block, name)) != n:
            raise ColumnsError(f"{kind} columns of agent {block.agent_id!r}: {len(getattr(block, name))} "
                               f"values of {name} for {n} {kind}s")
    return n


def row_values(block: Block) -> list[tuple]:
    """The block's rows as the store's rows after (id, run_key, seq_id), in the order of
    `telemetry.store`'s columns. Steps: agent_id, episode_index, step_index, action_json,
    observation_json, reward, terminated, truncated, timestamp_ns, policy_label, backend,
    render_hint_json, frame_ref, payload_version, render_payload_json, episode_seed,
    worker_id. Episodes: agent_id, episode_index, total_reward, steps, terminated, truncated,
    metadata_json, timestamp_ns, worker_id."""
    n = check(block)
    b = block
    if type(block) is trainer_pb2.EpisodeColumns:
        return list(zip(repeat(b.agent_id, n), b.episode_index, b.total_reward, b.steps, b.terminated,
                        b.truncated, b.metadata_json, b.timestamp_ns, repeat(b.worker_id, n)))
    hints = _sparse(block, "render_hint_rows", "render_hint_json", n, "")
    seeds = _sparse(block, "episode_seed_rows", "episode_seed", n, 0)
    return list(zip(repeat(b.agent_id, n), b.episode_index, b.step_index, b.action_json,
                    b.observation_json, b.reward, b.terminated, b.truncated, b.timestamp_ns,
                    b.policy_label, repeat(b.backend, n), hints, repeat("", n),
                    repeat(b.payload_version, n), repeat("", n), seeds, repeat(b.worker_id, n)))


def step_message(run_id: str, values: tuple, seq_id: int = 0) -> trainer_pb2.RunStep:
    """One store step row (the `row_values` order) as a RunStep."""
    (agent_id, episode_index, step_index, action_json, observation_json, reward, terminated,
     truncated, timestamp_ns, policy_label, backend, render_hint_json, frame_ref, payload_version,
     render_payload_json, episode_seed, worker_id) = values
    msg = trainer_pb2.RunStep(
        run_id=run_id, episode_index=episode_index, step_index=step_index, action_json=action_json,
        observation_json=observation_json, reward=reward, terminated=terminated,
        truncated=truncated, policy_label=policy_label, backend=backend, seq_id=seq_id,
        agent_id=agent_id, render_hint_json=render_hint_json, frame_ref=frame_ref,
        payload_version=payload_version, render_payload_json=render_payload_json,
        episode_seed=episode_seed, worker_id=worker_id)
    if timestamp_ns:
        msg.timestamp.seconds, msg.timestamp.nanos = divmod(timestamp_ns, 1_000_000_000)
    return msg


def episode_message(run_id: str, values: tuple, seq_id: int = 0) -> trainer_pb2.RunEpisode:
    """One store episode row (the `row_values` order) as a RunEpisode."""
    (agent_id, episode_index, total_reward, steps, terminated, truncated, metadata_json,
     timestamp_ns, worker_id) = values
    msg = trainer_pb2.RunEpisode(
        run_id=run_id, episode_index=episode_index, total_reward=total_reward, steps=steps,
        terminated=terminated, truncated=truncated, metadata_json=metadata_json, seq_id=seq_id,
        agent_id=agent_id, worker_id=worker_id)
    if timestamp_ns:
        msg.timestamp.seconds, msg.timestamp.nanos = divmod(timestamp_ns, 1_000_000_000)
    return msg


def expand(run_id: str, block: Block) -> Iterator[trainer_pb2.RunStep | trainer_pb2.RunEpisode]:
    """The block's rows as RunStep (or RunEpisode) messages, for daemons and sinks that read
    only those."""
    message = step_message if type(block) is trainer_pb2.StepColumns else episode_message
    for values in row_values(block):
        yield message(run_id, values)
