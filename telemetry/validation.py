"""The daemon's door check: every record's values, before the store sees them.

Decisions (the store must hold exactly what producers measured, and a bad record must never be
mistaken for a daemon fault):

- Non-finite floats (a NaN or infinite reward or total_reward) are ordinary in RL code, so they
  are stored faithfully and come back as the same float: SQLite keeps infinities as REAL, and a
  NaN (which SQLite would turn into NULL) is stored as the text ``'nan'`` in the same column
  (see ``store_nan`` / ``TelemetryStore`` reads).
- Integers SQLite cannot hold (beyond a signed 64-bit value, e.g. a step index of 2**63) are
  refused: the whole batch is refused with INVALID_ARGUMENT and the message names the run,
  agent, episode, step and field of the first such record, so the producer can tell exactly
  what to fix; nothing of the batch is stored.
- Strings that are not UTF-8 never get this far: protobuf refuses them when the message is
  parsed.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# Positions in the store's row values (``telemetry.store``'s row builders and column blocks):
# integer fields to range-check, float fields that may hold NaN, and the fields that name a
# record in a message.
_INTEGERS = {
    "steps": ((1, "episode_index"), (2, "step_index"), (8, "timestamp"), (13, "payload_version"), (15, "episode_seed")),
    "episodes": ((1, "episode_index"), (3, "steps"), (7, "timestamp")),
    "messages": ((1, "message_index"), (5, "bytes"), (6, "episode_index"), (7, "timestamp")),
}
_FLOATS = {"steps": (5,), "episodes": (2,), "messages": ()}
_NAMES = {"steps": ((1, "episode"), (2, "step")), "episodes": ((1, "episode"),), "messages": ((1, "message"),)}


class RecordValueError(ValueError):
    """A record holds a value the store cannot keep; the message names the record and field."""


def describe(run_id: str, kind: str, row: tuple) -> str:
    """``run R, agent A, episode E, step S``: which record a row is, for messages."""
    parts = [f"run '{run_id}'", f"agent '{row[0]}'"] + [f"{name} {row[i]}" for i, name in _NAMES[kind]]
    return ", ".join(parts)


def check_rows(run_id: str, kind: str, rows: Sequence[tuple]) -> bool:
    """Raise RecordValueError for the first row with an integer out of SQLite's range; return
    whether any row holds a NaN (then store ``store_nan(kind, rows)`` instead of ``rows``)."""
    for i, name in _INTEGERS[kind]:
        column = [row[i] for row in rows]
        if max(column) > INT64_MAX or min(column) < INT64_MIN:
            row = next(r for r in rows if not INT64_MIN <= r[i] <= INT64_MAX)
            raise RecordValueError(
                f"{describe(run_id, kind, row)}: {name} = {row[i]} is out of range (the store keeps "
                f"integers from -2**63 to 2**63-1); the batch was not stored")
    return any(value != value for i in _FLOATS[kind] for value in (row[i] for row in rows))


def store_nan(kind: str, rows: Sequence[tuple]) -> list[tuple]:
    """``rows`` with every NaN float replaced by the text 'nan', which SQLite keeps as it is."""
    positions = _FLOATS[kind]

    def fixed(row: tuple) -> tuple:
        if not any(row[i] != row[i] for i in positions):
            return row
        return tuple("nan" if i in positions and value != value else value for i, value in enumerate(row))

    return [fixed(row) for row in rows]


def stored_float(value: float | str) -> float:
    """A float column as read back: the text 'nan' is the NaN that was stored."""
    return math.nan if isinstance(value, str) else value
