"""`MessageTelemetryBehaviour`: streams an agent's message ledger to the telemetry session.

The message-side twin of agents.telemetry_behaviour.TelemetryBehaviour (which streams steps
and episodes): every `period` seconds it hands the agent's new `MessageRecord`s to the
session's `emit_message`, tagged with the agent's agent_id, in the same session as the
agent's steps and episodes. `emit_message` never waits on the network. `drain_ledger` is the
same hand-over for a final drain after the agents have stopped (a message may arrive between
an agent's last periodic drain and its disconnection).
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from spade.behaviour import PeriodicBehaviour

from agents.coordination.ledger import MessageLedger

logger = logging.getLogger(__name__)

DEFAULT_PERIOD_S = 0.1


async def drain_ledger(ledger: MessageLedger, session: Optional[Any]) -> int:
    """Hand every pending record of `ledger` to `session.emit_message` (None: telemetry off);
    how many were handed over."""
    records = ledger.drain()
    if session is not None:
        emit = session.emit_message
        for record in records:
            await emit(**record.emit_kwargs())
    return len(records)


class MessageTelemetryBehaviour(PeriodicBehaviour):
    """Drains `ledger` into `session` (None: counts only) every `period` seconds, and once more
    when the agent stops. `failure` keeps the error if the session refused a record."""

    def __init__(self, ledger: MessageLedger, session: Optional[Any], period: float = DEFAULT_PERIOD_S):
        super().__init__(period=period)
        self.ledger = ledger
        self.session = session
        self.sent = 0
        self.failure: Optional[BaseException] = None

    async def run(self) -> None:
        await self._drain()

    async def on_end(self) -> None:
        await self._drain()

    async def _drain(self) -> None:
        if self.failure is not None:
            return
        try:
            self.sent += await drain_ledger(self.ledger, self.session)
        except Exception as error:  # noqa: BLE001 - reported by the owner, never silently lost
            self.failure = error
            logger.error("message telemetry of agent %s (run %s) stopped: %s", self.ledger.agent_id, self.ledger.run_id, error)
