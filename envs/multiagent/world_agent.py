"""`WorldAgent`: the SPADE agent that hosts a pursuit world and that the hunters talk to.

Protocol (bodies in agents.coordination.wire; every message is accounted in the world's own
MessageLedger, under agent_id "world" by default):

- each hunter sends ``world_reset {episode}``; once both asked for the same episode the world
  is reset (seeded at the first episode, then continuing its stream) and each hunter gets
  ``world_observation {episode, step: 0, offset, reward: 0, terminated: false, truncated: false}``
  with its own sensation (the prey's offset from it);
- each hunter sends ``world_action {episode, step, action}``; once both actions of that step are
  in, the world steps and each hunter gets ``world_observation {episode, step + 1, offset,
  reward, terminated, truncated}``.

The world never moves on with one hunter's action alone: the hunters act together, in step.
Messages are handled as they are dispatched; answers leave through one behaviour, in order.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Optional, Sequence

from spade.agent import Agent
from spade.behaviour import CyclicBehaviour
from spade.message import Message

from agents.coordination import wire
from agents.coordination.ledger import RECEIVED, SENT, MessageLedger
from envs.multiagent.pursuit import HUNTERS, PursuitWorld, WorldStep

logger = logging.getLogger(__name__)


class _Outbox(CyclicBehaviour):
    """Sends the world's answers, in the order they were produced."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: asyncio.Queue[Message] = asyncio.Queue()

    async def run(self) -> None:
        await self.send(await self.messages.get())


class WorldAgent(Agent):
    """Hosts one `PursuitWorld` for two hunters (their JIDs, in world order)."""

    def __init__(
        self,
        jid: str,
        password: str,
        *,
        run_id: str,
        hunters: Sequence[str],
        hunter_ids: Sequence[str],
        world: PursuitWorld,
        seed: Optional[int],
        agent_id: str = "world",
        port: int = 5222,
        start_timeout: float = 10.0,
    ):
        if len(hunters) != HUNTERS or len(hunter_ids) != HUNTERS:
            raise ValueError(f"a pursuit world needs {HUNTERS} hunters, got {list(hunters)!r}")
        policy = asyncio.get_event_loop_policy()
        try:
            super().__init__(jid, password, port=port)
        finally:
            asyncio.set_event_loop_policy(policy)  # SPADE installs uvloop's process-wide (see agents.bdi_agent)
        self.agent_id = agent_id
        self.run_id = run_id
        self.world = world
        self.seed = seed
        self.start_timeout = start_timeout
        self.hunters = [str(h).split("/", 1)[0] for h in hunters]
        self.hunter_ids = list(hunter_ids)
        self.episode = -1
        self.episodes_started = 0
        self.captures = 0
        self.ledger = MessageLedger(run_id, agent_id, episode_of=lambda: self.episode)
        self._resets: dict[int, set[int]] = {}
        self._actions: dict[tuple[int, int], dict[int, int]] = {}
        self.outbox = _Outbox()

    async def setup(self) -> None:
        self.presence.set_available()  # SPADE-NOTES pitfall 3
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
        if len(waiting) < HUNTERS:
            return
        del self._resets[episode]
        self.episode = episode
        self.episodes_started += 1
        start = self.world.reset(self.seed if self.episodes_started == 1 else None)
        self._answer(episode, start)

    def _on_action(self, hunter: int, episode: int, step: int, action: int) -> None:
        if episode != self.episode or step != self.world.steps:
            raise ValueError(f"action for episode {episode} step {step}, the world is at episode {self.episode} step {self.world.steps}")
        actions = self._actions.setdefault((episode, step), {})
        actions[hunter] = action
        if len(actions) < HUNTERS:
            return
        del self._actions[(episode, step)]
        result = self.world.step([actions[i] for i in range(HUNTERS)])
        self.captures += result.captured
        self._answer(episode, result)

    def _answer(self, episode: int, result: WorldStep) -> None:
        for hunter, (jid, offset) in enumerate(zip(self.hunters, result.sensations)):
            body = wire.encode(
                wire.WORLD_OBSERVATION,
                episode=episode,
                step=result.steps,
                offset=list(offset),
                reward=result.reward,
                terminated=result.terminated,
                truncated=result.truncated,
            )
            self.ledger.record(SENT, self.hunter_ids[hunter], wire.WORLD_OBSERVATION, len(body.encode()))
            self.outbox.messages.put_nowait(
                Message(to=jid, body=body, metadata={"performative": wire.PERFORMATIVE, "kind": wire.WORLD_OBSERVATION})
            )
