"""Message accounting: every coordination message an agent sends or receives, counted and kept
for telemetry, so the cost of coordination is measured rather than guessed.

An agent's `MessageLedger` gets one `record` call per XMPP message it sends or receives (the
body's size in UTF-8 bytes, the peer's agent id, the kind). It keeps running totals (for the
experiment's results) and a queue of `MessageRecord`s that `MessageTelemetryBehaviour`
(agents.coordination.telemetry) hands to the telemetry session's `emit_message`. The totals and
the records come from the same calls, so results and the daemon's telemetry agree by
construction; the tests check that they do.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, fields
from typing import Any, Callable

SENT = "sent"
RECEIVED = "received"


@dataclass(slots=True)
class MessageRecord:
    """One message as `TelemetrySession.emit_message` takes it (``message_index`` from 1)."""

    run_id: str
    agent_id: str
    message_index: int
    direction: str
    peer: str
    kind: str
    bytes: int
    episode_index: int
    timestamp_ns: int

    def emit_kwargs(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in _FIELDS}


_FIELDS = fields(MessageRecord)


@dataclass(frozen=True)
class MessageTotals:
    """Counts and bytes of one agent's messages, by direction (and kind, for the sent ones)."""

    sent: int
    sent_bytes: int
    received: int
    received_bytes: int
    sent_by_kind: dict[str, int]
    sent_bytes_by_kind: dict[str, int]


class MessageLedger:
    """One agent's message log. `episode_of()` tells the episode a message belongs to."""

    def __init__(self, run_id: str, agent_id: str, episode_of: Callable[[], int] = lambda: 0):
        self.run_id = run_id
        self.agent_id = agent_id
        self.episode_of = episode_of
        self._pending: deque[MessageRecord] = deque()
        self._index = 0
        self._count = Counter()
        self._bytes = Counter()
        self._sent_kinds = Counter()
        self._sent_kind_bytes = Counter()

    def record(self, direction: str, peer: str, kind: str, size: int) -> MessageRecord:
        """Account one message (`size`: body bytes) and queue it for telemetry."""
        self._index += 1
        record = MessageRecord(
            self.run_id, self.agent_id, self._index, direction, peer, kind, size, max(0, self.episode_of()), time.time_ns()
        )
        self._pending.append(record)
        self._count[direction] += 1
        self._bytes[direction] += size
        if direction == SENT:
            self._sent_kinds[kind] += 1
            self._sent_kind_bytes[kind] += size
        return record

    def drain(self) -> list[MessageRecord]:
        """Every record not yet handed to telemetry, oldest first."""
        pending = self._pending
        out = list(pending)
        pending.clear()
        return out

    @property
    def pending(self) -> int:
        return len(self._pending)

    def totals(self) -> MessageTotals:
        return MessageTotals(
            sent=self._count[SENT],
            sent_bytes=self._bytes[SENT],
            received=self._count[RECEIVED],
            received_bytes=self._bytes[RECEIVED],
            sent_by_kind=dict(self._sent_kinds),
            sent_bytes_by_kind=dict(self._sent_kind_bytes),
        )
