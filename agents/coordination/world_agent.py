"""`WorldAgent`: the SPADE agent that hosts a shared world and that its movers talk to.

The world is a pursuit world (envs.multiagent.pursuit, two hunters) or Tan's world
(envs.multiagent.tan: hunters and a scout), wrapped by `PursuitHost` / `TanHost`, which say
what each mover is told. Protocol (bodies in agents.coordination.wire; every message is
accounted in the world's own MessageLedger, under agent_id "world" by default):

- each mover sends ``world_reset {episode}``; once all asked for the same episode the world
  is reset (seeded at the first episode, then continuing its stream) and each mover gets
  ``world_observation {episode, step: 0, reward: 0, terminated: false, truncated: false, ...}``
  with what it perceives (pursuit: ``offset``, the prey's offset; Tan: ``cell``, ``prey``,
  ``partner``);
- each mover sends ``world_action {episode, step, action}``; once every action of that step is
  in, the world steps and each mover gets ``world_observation {episode, step + 1, ...}``.

The world never moves on with one mover's action alone: they act together, in step. Every
trial's length and whether it ended in a capture are kept (`trials`): the authoritative steps
per trial. Messages are handled as they are dispatched; answers leave through one behaviour,
in order.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any, Optional, Protocol, Sequence

from spade.agent import Agent
from spade.behaviour import CyclicBehaviour
from spade.message import Message

from agents.coordination import wire
from agents.coordination.ledger import RECEIVED, SENT, MessageLedger
from agents.coordination.stanza import StanzaSizer
from envs.multiagent.pursuit import HUNTERS, PursuitWorld, StepOutcome
from envs.multiagent.tan import TanWorld, offset_states

logger = logging.getLogger(__name__)


class _Outbox(CyclicBehaviour):
    """Sends the world's answers, in the order they were produced."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: asyncio.Queue[Message] = asyncio.Queue()

    async def run(self) -> None:
        await self.send(await self.messages.get())


Answer = StepOutcome


class HostedWorld(Protocol):
    """A world the agent hosts: how many movers, reset/step, and what each mover is told."""

    movers: int
    steps: int

    def reset(self, seed: Optional[int]) -> Answer: ...

    def step(self, actions: Sequence[int]) -> Answer: ...

    def told(self, result: Answer) -> list[dict[str, Any]]: ...

    def observation_bits(self) -> float: ...


class _Host:
    """Hands resets and steps to the hosted world; subclasses say what each mover is told."""

    def __init__(self, world: Any, movers: int):
        self.world = world
        self.movers = movers

    @property
    def steps(self) -> int:
        return self.world.steps

    def reset(self, seed: Optional[int]) -> Answer:
        return self.world.reset(seed)

    def step(self, actions: Sequence[int]) -> Answer:
        return self.world.step(actions)


class PursuitHost(_Host):
    """The two-hunter pursuit world: each hunter is told the prey's offset."""

    def __init__(self, world: PursuitWorld):
        super().__init__(world, HUNTERS)

    def told(self, result: Any) -> list[dict[str, Any]]:
        return [{"offset": list(offset)} for offset in result.sensations]

    def observation_bits(self) -> float:
        # The offset (one of size**2) and how the step ended (going on, captured, cut off).
        return math.log2(self.world.size**2) + math.log2(3)


class TanHost(_Host):
    """Tan's world: each mover is told its cell, the prey's offset and its partner's (or null)."""

    def __init__(self, world: TanWorld):
        super().__init__(world, world.options.movers)

    def told(self, result: Any) -> list[dict[str, Any]]:
        return [
            {"cell": list(p.cell), "prey": None if p.prey is None else list(p.prey), "partner": None if p.partner is None else list(p.partner)}
            for p in result.percepts
        ]

    def observation_bits(self) -> float:
        # A hunter's answer: its cell, the prey (within depth or unseen), the partner (if any),
        # and how the step ended (going on, captured, cut off); the reward follows from that.
        options = self.world.options
        bits = math.log2(options.size**2) + math.log2(offset_states(options.depth)) + math.log2(3)
        return bits + (math.log2(offset_states(options.depth)) if options.hunters == 2 else 0.0)


class WorldAgent(Agent):
    """Hosts one world (`PursuitHost` or `TanHost`) for its movers (their JIDs, in world order)."""

    def __init__(
        self,
        jid: str,
        password: str,
        *,
        run_id: str,
        hunters: Sequence[str],
        hunter_ids: Sequence[str],
        world: HostedWorld,
        seed: Optional[int],
        reseed_at: Optional[tuple[int, int]] = None,
        agent_id: str = "world",
        port: int = 5222,
        start_timeout: float = 10.0,
    ):
        if len(hunters) != world.movers or len(hunter_ids) != world.movers:
            raise ValueError(f"this world needs {world.movers} movers, got {list(hunters)!r}")
        policy = asyncio.get_event_loop_policy()
        try:
            super().__init__(jid, password, port=port)
        finally:
            asyncio.set_event_loop_policy(policy)  # SPADE installs uvloop's process-wide (see agents.bdi_agent)
        self.agent_id = agent_id
        self.run_id = run_id
        self.world = world
        self.seed = seed
        self.reseed_at = reseed_at  # (episode, seed): from that episode on, a fresh stream (test trials)
        self.start_timeout = start_timeout
        self.hunters = [str(h).split("/", 1)[0] for h in hunters]
        self.hunter_ids = list(hunter_ids)
        self.episode = -1
        self.episodes_started = 0
        self.captures = 0
        self.trials: list[tuple[int, bool]] = []  # (steps, captured) of every finished trial
        self.stanzas = StanzaSizer()
        self.ledger = MessageLedger(run_id, agent_id, episode_of=lambda: self.episode)
        self._resets: dict[int, set[int]] = {}
        self._actions: dict[tuple[int, int], dict[int, int]] = {}
        self.outbox = _Outbox()

    async def setup(self) -> None:
        self.presence.set_available()  # docs/spade-traps.md, trap 3
        self.add_behaviour(self.outbox)

    async def start(self, auto_register: bool = True) -> None:
        try:
            await asyncio.wait_for(super().start(auto_register=auto_register), self.start_timeout)
        except asyncio.TimeoutError:
            raise RuntimeError(f"environment agent {self.jid} could not connect to the XMPP server within {self.start_timeout:g}s") from None

    # ------------------------------------------------------------------ messages

    def dispatch(self, msg: Message) -> list:
        sender = str(msg.sender).split("/", 1)[0]
        body = msg.body or ""
        kind = msg.get_metadata("kind") or "unknown"
        index = self.hunters.index(sender) if sender in self.hunters else None
        self.ledger.record(RECEIVED, self.hunter_ids[index] if index is not None else sender.split("@")[0], kind, len(body.encode()))
        if index is None or msg.get_metadata("performative") != wire.PERFORMATIVE:
            logger.warning("world %s (run %s): ignored a message from %s", self.agent_id, self.run_id, sender)
            return []
        try:
            payload = wire.decode(body)
            if payload["kind"] == wire.WORLD_RESET:
                self._on_reset(index, int(payload["episode"]))
            elif payload["kind"] == wire.WORLD_ACTION:
                self._on_action(index, int(payload["episode"]), int(payload["step"]), int(payload["action"]))
            else:
                raise wire.PayloadError(f"the world takes world_reset and world_action, not {payload['kind']}")
        except (wire.PayloadError, KeyError, TypeError, ValueError) as err:
            logger.warning("world %s (run %s): ignored a message from %s: %s", self.agent_id, self.run_id, sender, err)
        return []

    def _on_reset(self, hunter: int, episode: int) -> None:
        waiting = self._resets.setdefault(episode, set())
        waiting.add(hunter)
        if len(waiting) < self.world.movers:
            return
        del self._resets[episode]
        self.episode = episode
        self.episodes_started += 1
        seed = self.seed if self.episodes_started == 1 else None
        if self.reseed_at is not None and episode == self.reseed_at[0]:
            seed = self.reseed_at[1]
        start = self.world.reset(seed)
        self._answer(episode, start)

    def _on_action(self, hunter: int, episode: int, step: int, action: int) -> None:
        if episode != self.episode or step != self.world.steps:
            raise ValueError(f"action for episode {episode} step {step}, the world is at episode {self.episode} step {self.world.steps}")
        actions = self._actions.setdefault((episode, step), {})
        actions[hunter] = action
        if len(actions) < self.world.movers:
            return
        del self._actions[(episode, step)]
        result = self.world.step([actions[i] for i in range(self.world.movers)])
        self.captures += result.terminated
        if result.terminated or result.truncated:
            self.trials.append((result.steps, result.terminated))
        self._answer(episode, result)

    def _answer(self, episode: int, result: Answer) -> None:
        bits = self.world.observation_bits()
        sender = str(self.jid)
        metadata = {"performative": wire.PERFORMATIVE, "kind": wire.WORLD_OBSERVATION}
        for mover, (jid, told) in enumerate(zip(self.hunters, self.world.told(result))):
            body = wire.encode(
                wire.WORLD_OBSERVATION,
                episode=episode,
                step=result.steps,
                **told,
                reward=result.reward,
                terminated=result.terminated,
                truncated=result.truncated,
            )
            stanza = self.stanzas.size(sender, jid, body, metadata)
            self.ledger.record(SENT, self.hunter_ids[mover], wire.WORLD_OBSERVATION, len(body.encode()), stanza, bits)
            self.outbox.messages.put_nowait(Message(to=jid, body=body, metadata=dict(metadata)))
