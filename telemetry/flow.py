"""Flow control of one run as a producing session sees it: pause, step credits, rate cap.

The daemon's ControlStream carries these as `ControlEvent`s; the proxy applies them here and
agents honour them before each environment step: `try_acquire` answers at once (and costs
next to nothing while nothing holds anyone back), `wait_until_allowed` waits when it must. Both
ask the same question (`_take`), so they never disagree. An event
with an `agent_id` concerns that agent only; without one it concerns every agent of the run.

- pause / resume: a run-wide pause holds every agent; an agent pause holds that agent. A
  run-wide resume lifts every pause, an agent resume lifts only that agent's own pause.
- grant_steps: adds credits. Credit mode starts with the first grant (run-wide or for an
  agent); from then on each allowed step spends a credit. An agent with its own grants
  spends its own credits, otherwise it spends the run-wide pool.
- unlimited_steps: ends credit mode (what credits are left are dropped). Run-wide it ends
  every account; for an agent, only that agent's own (it then spends the run-wide pool if
  there is one).
- max_rate_hz: caps each agent's step rate (an agent's own cap wins over the run-wide one);
  0 removes the cap. A cap spaces steps evenly instead of allowing bursts.

Reconnecting: a daemon answers a new subscription with the run's standing state (pauses,
caps) but cannot say "nothing is paused any more". So after a reconnect the standing state
is replaced by the first events that arrive, or cleared if none arrive within a short grace
period (`begin_resync` / `end_resync`). Until then the old state holds, so a paused agent
never slips a step through a reconnect, and a run resumed meanwhile does not stay paused.
Credits are deltas and are kept.
"""
from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Callable

from telemetry.generated import trainer_pb2

RUN_WIDE = ""   # the account / cap key that concerns every agent of the run
_TAKEN = 0.0            # `_take`: the steps were allowed and taken
_UNTIL_CHANGED = math.inf   # `_take`: nothing but a control event can allow them


@dataclass(frozen=True)
class FlowSnapshot:
    """What a run's control state is right now (for logs, stats and tests)."""
    paused: bool
    paused_agents: frozenset[str]
    credits: dict[str, int]
    rates_hz: dict[str, int]


class RunFlow:
    """Control state of one run, fed by ControlEvents, checked and awaited by producers.

    `clock` (seconds, monotonic) spaces capped steps; tests may pass their own.
    """

    def __init__(self, run_id: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.run_id = run_id
        self._clock = clock
        self.events_applied = 0
        self._paused_run = False
        self._paused_agents: set[str] = set()
        self._credits: dict[str, int] = {}      # present key = credit mode on for it
        self._rates: dict[str, int] = {}
        self._next_slot: dict[str, float] = {}
        self._changed = asyncio.Event()
        self._released = False
        self._holds_nobody = True   # cached: no pause, no credit mode, no cap (or released)
        self._resync_generation = 0
        self._resync_pending = False

    # -- fed by the ControlStream ------------------------------------------------------
    def apply(self, event: trainer_pb2.ControlEvent) -> None:
        """Apply one control event (events for other runs are ignored)."""
        if event.run_id and event.run_id != self.run_id:
            return
        which = event.WhichOneof("event")
        if which in (None, "subscribe"):
            return   # subscribe acknowledgements and unknown future events carry no command
        if self._resync_pending:
            self._clear_standing_state()
        key = event.agent_id or RUN_WIDE
        if which == "pause":
            self._set_paused(key, event.pause)
        elif which == "resume":
            if event.resume:
                self._set_paused(key, False)
        elif which == "grant_steps":
            self._credits[key] = self._credits.get(key, 0) + event.grant_steps
        elif which == "unlimited_steps":
            if key == RUN_WIDE:
                self._credits.clear()
            else:
                self._credits.pop(key, None)
        elif which == "max_rate_hz":
            if event.max_rate_hz:
                self._rates[key] = event.max_rate_hz
            else:
                self._rates.pop(key, None)
            if key == RUN_WIDE:
                self._next_slot.clear()
            else:
                self._next_slot.pop(key, None)
        self.events_applied += 1
        self._notify()

    def begin_resync(self) -> int:
        """A new subscription starts: its first events replace the standing state."""
        self._resync_generation += 1
        self._resync_pending = True
        return self._resync_generation

    def end_resync(self, generation: int) -> None:
        """Grace period over: no standing state arrived, so nothing is paused or capped."""
        if self._resync_pending and generation == self._resync_generation:
            self._clear_standing_state()
            self._notify()

    def _clear_standing_state(self) -> None:
        self._resync_pending = False
        self._paused_run = False
        self._paused_agents.clear()
        self._rates.clear()
        self._next_slot.clear()

    def release(self) -> None:
        """Let every waiter through from now on (the session is closing)."""
        self._released = True
        self._notify()

    def _set_paused(self, key: str, paused: bool) -> None:
        if key == RUN_WIDE:
            self._paused_run = paused
            if not paused:
                self._paused_agents.clear()
        elif paused:
            self._paused_agents.add(key)
        else:
            self._paused_agents.discard(key)

    def _notify(self) -> None:
        """The state changed: refresh the fast path's flag and wake every waiter to look again."""
        self._holds_nobody = self._released or not (
            self._paused_run or self._paused_agents or self._credits or self._rates)
        self._changed.set()
        self._changed = asyncio.Event()

    # -- read by producers -------------------------------------------------------------
    def holds_nobody(self) -> bool:
        """True when nothing holds any producer back: no pause, no credit mode, no rate cap (or
        released). Only control events change it, and those are applied between turns of the
        event loop, so a producer stepping synchronously may ask once for a whole run of steps."""
        return self._holds_nobody

    def is_paused(self, agent_id: str | None = None) -> bool:
        """Whether the run (or, given an agent, that agent) is paused."""
        return self._paused_run or (agent_id is not None and agent_id in self._paused_agents)

    def snapshot(self) -> FlowSnapshot:
        return FlowSnapshot(self._paused_run, frozenset(self._paused_agents),
                            dict(self._credits), dict(self._rates))

    def try_acquire(self, agent_id: str | None = None, steps: int = 1) -> bool:
        """Take `steps` steps for `agent_id` now if nothing holds it back: True when taken
        (credits spent in credit mode, a rate slot used under a cap), False when it would have
        to wait, and then nothing is spent. Always True after `release`."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        return self._holds_nobody or self._take(agent_id, steps) == _TAKEN

    async def wait_until_allowed(self, agent_id: str | None = None, steps: int = 1) -> None:
        """Return once `agent_id` may take `steps` steps, taking them (see `try_acquire`)."""
        if self.try_acquire(agent_id, steps):
            return
        while (wait_s := self._take(agent_id, steps)) != _TAKEN:
            changed = self._changed
            if wait_s == _UNTIL_CHANGED:
                await changed.wait()
                continue
            try:
                await asyncio.wait_for(changed.wait(), wait_s)
            except TimeoutError:
                pass

    def _take(self, agent_id: str | None, steps: int) -> float:
        """The one rule deciding whether `agent_id` may take `steps` steps now.

        Returns `_TAKEN` when it may, having spent the credits and used the rate slot;
        otherwise how many seconds to wait before asking again (`_UNTIL_CHANGED`: until a
        control event arrives), having spent nothing.
        """
        if self._released:
            return _TAKEN
        if self.is_paused(agent_id):
            return _UNTIL_CHANGED
        key = agent_id or RUN_WIDE
        credits = self._credits
        account = key if key in credits else (RUN_WIDE if RUN_WIDE in credits else None)
        if account is not None and credits[account] < steps:
            return _UNTIL_CHANGED
        rate = self._rates.get(key) or self._rates.get(RUN_WIDE)
        if rate:
            # Not the loop's clock: try_acquire needs no running loop, and waits only ever hand
            # durations to asyncio.
            now = self._clock()
            slot = self._next_slot.get(key, now)
            if slot > now:
                return slot - now
            self._next_slot[key] = now + steps / rate
        if account is not None:
            credits[account] -= steps
        return _TAKEN
