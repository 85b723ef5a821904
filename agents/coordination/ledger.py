"""Message accounting: every coordination message an agent sends or receives, counted and kept
for telemetry, so the cost of coordination is measured rather than guessed.

An agent's `MessageLedger` gets one `record` call per XMPP message it sends or receives (the
body's size in UTF-8 bytes, the peer's agent id, the kind). It keeps running totals (for the
experiment's results) and a queue of `MessageRecord`s that `MessageTelemetryBehaviour`
(agents.coordination.telemetry) hands to the telemetry session's `emit_message`. The totals and
the records come from the same calls, so results and the daemon's telemetry agree by
construction; the tests check that they do.

Each sent message is also sized as an XMPP stanza (agents.coordination.stanza) and given its
information content in bits (the fixed-width encoding of what it says: agents.coordination.wire
and the world agent compute it), and every kind belongs to a *channel*: ``environment`` for the
world protocol (a hunter's actions and the world's observations: the environment's I/O, which a
single-process simulation would not send at all) and ``coordination`` for everything agents tell
each other. The cost of coordinating is the coordination channel alone.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, fields
from typing import Any, Callable, Optional

SENT = "sent"
RECEIVED = "received"
ENVIRONMENT = "environment"
COORDINATION = "coordination"
#: Kinds of the environment protocol (agents.coordination.wire's world_* kinds).
ENVIRONMENT_KINDS = frozenset({"world_reset", "world_action", "world_observation"})


def channel_of(kind: str) -> str:
    """The channel a message kind belongs to: environment I/O or coordination."""
    return ENVIRONMENT if kind in ENVIRONMENT_KINDS else COORDINATION


@dataclass(frozen=True)
class KindCost:
    """What one agent sent of one kind: messages, body bytes, stanza bytes, information bits."""

    count: int
    body_bytes: int
    stanza_bytes: int
    bits: float

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count, "body_bytes": self.body_bytes, "stanza_bytes": self.stanza_bytes, "bits": round(self.bits, 3)}


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
    sent_cost_by_kind: dict[str, KindCost]

    def channel_cost(self, channel: str) -> KindCost:
        """The sent messages of one channel, summed over its kinds."""
        costs = [c for kind, c in self.sent_cost_by_kind.items() if channel_of(kind) == channel]
        return KindCost(sum(c.count for c in costs), sum(c.body_bytes for c in costs), sum(c.stanza_bytes for c in costs), sum(c.bits for c in costs))


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
        self._sent_kind_stanza = Counter()
        self._sent_kind_bits: Counter = Counter()
        #: Episodes from this index on are a later phase (Tan's test trials): their sent messages
        #: are also counted apart (`phase_costs`), so a phase's cost is exact.
        self.phase_from: Optional[int] = None
        self._phase: dict[str, list] = {}

    def record(self, direction: str, peer: str, kind: str, size: int, stanza_bytes: int = 0, bits: float = 0.0) -> MessageRecord:
        """Account one message (`size`: body bytes; for a sent one also its stanza bytes and
        information bits) and queue it for telemetry."""
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
            self._sent_kind_stanza[kind] += stanza_bytes
            self._sent_kind_bits[kind] += bits
            if self.phase_from is not None and record.episode_index >= self.phase_from:
                cost = self._phase.setdefault(kind, [0, 0, 0, 0.0])
                cost[0] += 1
                cost[1] += size
                cost[2] += stanza_bytes
                cost[3] += bits
        return record

    def phase_costs(self) -> dict[str, KindCost]:
        """The sent messages of episodes from `phase_from` on, by kind."""
        return {kind: KindCost(*cost) for kind, cost in self._phase.items()}

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
            sent_cost_by_kind={
                kind: KindCost(n, self._sent_kind_bytes[kind], self._sent_kind_stanza[kind], self._sent_kind_bits[kind])
                for kind, n in self._sent_kinds.items()
            },
        )
