"""What coordination messages carry, and how it is packed into an XMPP message body.

Every body is one JSON object with ``"kind"`` first; numbers that come in bulk travel as
base64 of little-endian binary arrays rather than JSON lists of decimals, less than half the
size for a Q-table, so the byte counts in the telemetry measure a compact encoding:

- ``q_table``: the sender's Q-table as float32 (``"q"``), its per (state, action) update counts
  as uint32 (``"visits"``, for the visit-weighted merge), the shape and the sender's episode.
  float32 keeps 7 significant digits, far below the noise of a Q-value estimate.
- ``transitions``: one episode's transitions (state uint32, action uint8, reward float32,
  next state uint32, terminated uint8: 14 bytes each).
- pursuit world protocol (``world_reset``, ``world_action``, ``world_observation``), and what
  a partner reports each step: ``sensation`` (what it sees, and in Tan's world its cell) and
  ``location`` (its cell only): small JSON objects, one per step.

``encode`` returns the body text; ``decode`` returns the dict with arrays decoded, or raises
``PayloadError`` saying what is wrong (a peer speaking another protocol, a truncated body).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np

Q_TABLE = "q_table"
TRANSITIONS = "transitions"
WORLD_RESET = "world_reset"
WORLD_ACTION = "world_action"
WORLD_OBSERVATION = "world_observation"
SENSATION = "sensation"
LOCATION = "location"
KINDS = (Q_TABLE, TRANSITIONS, WORLD_RESET, WORLD_ACTION, WORLD_OBSERVATION, SENSATION, LOCATION)
#: What a partner reports about a step (a hunter whose view needs a report waits for one).
REPORT_KINDS = (SENSATION, LOCATION)

#: SPADE message metadata marking a coordination message (BDI messages use "BDI").
PERFORMATIVE = "coordination"

TRANSITION_DTYPE = np.dtype([("s", "<u4"), ("a", "u1"), ("r", "<f4"), ("s2", "<u4"), ("t", "u1")])


class PayloadError(ValueError):
    """A message body is not a coordination payload this agent understands."""


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def _unb64(text: Any, dtype: np.dtype | str, what: str) -> np.ndarray:
    if not isinstance(text, str):
        raise PayloadError(f"{what} must be base64 text")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as err:
        raise PayloadError(f"{what} is not valid base64: {err}") from None
    dtype = np.dtype(dtype)
    if len(raw) % dtype.itemsize:
        raise PayloadError(f"{what} holds {len(raw)} bytes, not a whole number of {dtype} items")
    return np.frombuffer(raw, dtype=dtype)


def encode(kind: str, **fields: Any) -> str:
    """The body of a `kind` message with plain JSON `fields`."""
    return json.dumps({"kind": kind, **fields}, separators=(",", ":"))


def encode_q_table(q: np.ndarray, visits: np.ndarray, episode: int) -> str:
    """A Q-table and its visit counts, float32 / uint32, base64."""
    return encode(
        Q_TABLE,
        episode=int(episode),
        shape=list(q.shape),
        q=_b64(q.astype("<f4")),
        visits=_b64(np.minimum(visits, np.iinfo(np.uint32).max).astype("<u4")),
    )


def encode_transitions(transitions: np.ndarray, episode: int) -> str:
    """One episode's transitions (a TRANSITION_DTYPE array)."""
    return encode(TRANSITIONS, episode=int(episode), n=int(len(transitions)), data=_b64(transitions.astype(TRANSITION_DTYPE)))


def q_table_bits(q: np.ndarray) -> int:
    """Information bits of a q_table message: its float32 values and uint32 visit counts."""
    return 64 * int(q.size)


def transitions_bits(transitions: np.ndarray) -> int:
    """Information bits of a transitions message: 14 bytes per transition."""
    return 8 * TRANSITION_DTYPE.itemsize * len(transitions)


def decode(body: str) -> dict[str, Any]:
    """The payload of a body: a dict with "kind"; q_table/transitions arrays decoded."""
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, TypeError) as err:
        raise PayloadError(f"the body is not JSON: {err}") from None
    if not isinstance(payload, dict) or payload.get("kind") not in KINDS:
        kind = payload.get("kind") if isinstance(payload, dict) else None
        raise PayloadError(f"unknown coordination kind {kind!r} (known: {', '.join(KINDS)})")
    kind = payload["kind"]
    if kind == Q_TABLE:
        shape = payload.get("shape")
        if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(n, int) and n > 0 for n in shape)):
            raise PayloadError(f"q_table shape must be [n_states, n_actions], got {shape!r}")
        size = shape[0] * shape[1]
        q = _unb64(payload.get("q"), "<f4", "q_table.q")
        visits = _unb64(payload.get("visits"), "<u4", "q_table.visits")
        if q.size != size or visits.size != size:
            raise PayloadError(f"q_table arrays hold {q.size} and {visits.size} values, shape {shape} needs {size}")
        payload["q"] = q.reshape(shape).astype(np.float64)
        payload["visits"] = visits.reshape(shape).astype(np.int64)
    elif kind == TRANSITIONS:
        data = _unb64(payload.get("data"), TRANSITION_DTYPE, "transitions.data")
        if data.size != payload.get("n"):
            raise PayloadError(f"transitions.data holds {data.size} transitions, n says {payload.get('n')!r}")
        payload["data"] = data
    return payload
