"""Record checks at the daemon's door: which rows of a publish job the store can hold.

The store keeps integers as SQLite INTEGER (signed 64-bit), so a uint64 index of 2**63 or
more, or a timestamp past year 2262 in nanoseconds, cannot be stored: such a record is
refused on its own, named by run, agent, episode, step (or message) and field, and its
neighbours are stored. Non-finite rewards are not refused: NaN and the infinities are what
the agent saw, and the store keeps them exactly (see ``telemetry.store``). Strings need no
check here: protobuf refuses a message with invalid UTF-8 before it is decoded.

Rows are the store's value tuples (``telemetry.store`` column order), so records that came
as messages and as column blocks take the same path. The common case (every value fits) is
a few C-level passes per column; only a failing column is looked at row by row.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from operator import itemgetter
from typing import Sequence

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

#: Per kind: (position, field name) of every integer column after the natural key's text.
_INTEGERS: dict[str, tuple[tuple[int, str], ...]] = {
    "steps": ((1, "episode_index"), (2, "step_index"), (8, "timestamp"), (15, "episode_seed")),
    "episodes": ((1, "episode_index"), (3, "steps"), (7, "timestamp")),
    "messages": ((1, "message_index"), (5, "bytes"), (6, "episode_index"), (7, "timestamp")),
}
#: Per kind: position of the reward column (None: the kind has none).
REWARD_POSITION: dict[str, int | None] = {"steps": 5, "episodes": 2, "messages": None}


@dataclass(frozen=True, slots=True)
class Refusal:
    """One record the store cannot hold, and why (``reason`` names run, agent, record, field)."""
    kind: str           # "step", "episode" or "message"
    agent_id: str
    episode_index: int
    index: int          # step_index, message_index, or 0 for an episode
    field: str
    reason: str


def _fits(values: Sequence[tuple], position: int) -> bool:
    column = list(map(itemgetter(position), values))
    return max(column) <= INT64_MAX and min(column) >= INT64_MIN


def _describe(kind: str, run_id: str, row: tuple) -> tuple[str, int, int, str]:
    """(agent, episode, index, "run 'r', agent 'a', episode 3, step 7") of a row."""
    agent = row[0]
    if kind == "steps":
        episode, index = row[1], row[2]
        where = f"episode {episode}, step {index}"
    elif kind == "episodes":
        episode, index = row[1], 0
        where = f"episode {episode}"
    else:
        episode, index = row[6], row[1]
        where = f"message {index}"
    return agent, episode, index, f"run {run_id!r}, agent {agent!r}, {where}"


def screen(kind: str, run_id: str, values: list[tuple]) -> tuple[list[int] | None, list[Refusal]]:
    """Check the rows of one kind: (positions of the rows to store, None meaning all of
    them; the refusals of the others, one per refused row, in row order)."""
    if not values:
        return None, []
    bad_columns = [(p, name) for p, name in _INTEGERS[kind] if not _fits(values, p)]
    if not bad_columns:
        return None, []
    keep: list[int] = []
    refusals: list[Refusal] = []
    for i, row in enumerate(values):
        bad = next(((p, name) for p, name in bad_columns if not INT64_MIN <= row[p] <= INT64_MAX), None)
        if bad is None:
            keep.append(i)
            continue
        position, name = bad
        agent, episode, index, where = _describe(kind, run_id, row)
        unit = " (nanoseconds since the epoch)" if name == "timestamp" else ""
        refusals.append(Refusal(
            kind[:-1], agent, _clamp_uint64(episode), _clamp_uint64(index), name,
            f"{where}: {name} = {row[position]}{unit} is outside the signed 64-bit range the "
            f"store holds ({INT64_MIN} to {INT64_MAX}); the record was not stored, fix the "
            "value at its source"))
    return keep, refusals


def _clamp_uint64(value: int) -> int:
    """A value for a uint64 wire field (the refused value itself may be what is out of range)."""
    return min(max(value, 0), (1 << 64) - 1)


def has_nan(values: list[tuple], kind: str) -> bool:
    """Whether any row's reward is NaN (the store encodes it, see ``telemetry.store``)."""
    position = REWARD_POSITION[kind]
    if position is None or not values:
        return False
    return any(map(math.isnan, map(itemgetter(position), values)))


#: The uint64 fields of each wire message, which may hold values the store cannot.
_WIRE_UINT64 = {
    "RunStep": ("episode_index", "step_index", "episode_seed"),
    "StepColumns": ("episode_index", "step_index", "episode_seed"),
    "RunEpisode": ("episode_index", "steps"),
    "EpisodeColumns": ("episode_index", "steps"),
    "CoordinationMessage": ("message_index", "bytes", "episode_index"),
}


def exceeds_int64(message: object) -> bool:
    """Whether a RunStep, RunEpisode, CoordinationMessage or column block holds an unsigned
    index the store cannot hold (a quick check; ``screen`` its rows for the details)."""
    for name in _WIRE_UINT64[type(message).__name__]:
        value = getattr(message, name)
        if (value if isinstance(value, int) else max(value, default=0)) > INT64_MAX:
            return True
    return False
