"""`CoordinatingAgent`: a `LearningAgent` whose plans can also talk to other agents.

It adds to D's learning agent (agents.bdi_agent), without changing how learning works:

- peers (the other learners of its group, agent_id -> JID) and the coordination actions of
  agents.coordination.actions (.share_q_table, .merge_q_tables, .share_transitions, ...);
- optionally a shared world: the environment agent's JID and a partner, and the hunter actions
  of agents.coordination.hunting (.world_reset, .world_act, .tell_sensation, .world_observe);
- a `SharingQLearner` in place of the plain one (visit counts and episode transitions);
- a `MessageLedger` that accounts for every message the agent sends or receives: the
  coordination messages, and also spade-bdi's own `.send(Receiver, tell|achieve, Content)`
  (wrapped here) and whatever BDI message arrives (`dispatch`);
- `settings`: numbers or atoms the plans read as beliefs (share_every(F), eval_every(K),
  merge_rule(visits), ...), so one plan file serves every setting of an experiment.

Coordination messages are handled as they are dispatched (decoded, accounted, stored, turned
into beliefs, the reasoning woken), not through a behaviour's queue: one task hop less per
message, which matters for the per-step messages of the pursuit world. Agents in one container
reach each other through SPADE's in-process dispatch (docs/spade-traps.md, trap 12), agents in other
processes through the XMPP server; both paths arrive here.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Mapping, Optional, Union

import agentspeak
import agentspeak.stdlib
from agentspeak import Literal
from spade.message import Message

from agents.bdi_agent import LearningAgent
from agents.config import AgentConfig
from agents.coordination import wire
from agents.coordination.actions import CoordinationActions
from agents.coordination.hunting import HunterActions, HunterLink
from agents.coordination.learner import SharingQLearner
from agents.coordination.ledger import RECEIVED, SENT, MessageLedger
from agents.coordination.stanza import StanzaSizer

logger = logging.getLogger(__name__)

Setting = Union[int, float, str]


def bare_jid(jid: Any) -> str:
    return str(jid).split("/", 1)[0]


class CoordinatingAgent(LearningAgent):
    """A learning agent with peers, message accounting and coordination actions.

    `peers`: agent_id -> JID of the agents it shares with (or hunts with). `directory`: JID ->
    agent_id of every agent it may hear from (peers are added automatically), to name peers in
    the accounting. `world_jid` and `partner`: the environment agent and the partner hunter, for
    a hunter in a shared world. `settings` become beliefs (strings as atoms). Other keyword
    arguments go to LearningAgent.
    """

    # Its beliefs also come from its settings, its peers and the world: not known in advance.
    PLAN_BELIEFS = None

    def __init__(
        self,
        jid: str,
        password: str,
        config: AgentConfig,
        *,
        peers: Optional[Mapping[str, str]] = None,
        directory: Optional[Mapping[str, str]] = None,
        world_jid: Optional[str] = None,
        partner: Optional[str] = None,
        settings: Optional[Mapping[str, Setting]] = None,
        **kwargs: Any,
    ):
        self.peers = dict(peers or {})
        self.directory = {bare_jid(j): a for j, a in (directory or {}).items()}
        self.directory.update({bare_jid(j): a for a, j in self.peers.items()})
        self.coordination = CoordinationActions(self)
        self.hunting = HunterActions(self)
        super().__init__(jid, password, config, **kwargs)
        env = self.learning.env
        self.learning.learner = SharingQLearner(env.n_states, env.n_actions, config.hyperparameters)
        self.ledger = MessageLedger(self.run_id, self.agent_id, episode_of=lambda: self.learning.episode_index)
        self.stanzas = StanzaSizer()
        if world_jid is not None:
            if partner is not None and partner not in self.peers:
                raise ValueError(f"agent {self.agent_id}: partner {partner!r} must be one of its peers {sorted(self.peers)}")
            self.directory.setdefault(bare_jid(world_jid), "world")
            self.hunting.link = HunterLink(self, world_jid, partner)
            link = self.hunting.link
            # A message belongs to the world's episode the hunter is in (a reset request and the
            # report that follows it already belong to the new one).
            self.ledger.episode_of = lambda: link.episode
        self.coordination.publish_initial()
        for name, value in (settings or {}).items():
            self.learning.beliefs.set(name, Literal(value) if isinstance(value, str) else value)

    # ------------------------------------------------------------------ wiring

    def add_custom_actions(self, actions: agentspeak.Actions) -> None:
        super().add_custom_actions(actions)
        self.coordination.register(actions)
        self.hunting.register(actions)
        self._wrap_bdi_send(actions)

    def _wrap_bdi_send(self, actions: agentspeak.Actions) -> None:
        """Account spade-bdi's `.send(Receiver, Ilf, Content)` messages, then send as it does."""
        send = actions.lookup(".send", 3)

        def accounted_send(agent, term, intention):
            receivers = agentspeak.grounded(term.args[0], intention.scope)
            if isinstance(receivers, (str, Literal)):
                receivers = (receivers,)
            ilf = agentspeak.grounded(term.args[1], intention.scope)
            # The body exactly as spade-bdi builds it, to count its bytes.
            body = agentspeak.asl_str(agentspeak.freeze(term.args[2], intention.scope, {}))
            ilf_name = str(getattr(ilf, "functor", ilf))
            size = len(body.encode())
            for receiver in receivers:
                to = self.peer_jid(str(receiver))
                stanza = self.stanzas.size(str(self.jid), to, body, {"performative": "BDI", "ilf_type": ilf_name})
                # No compact encoding is known for a BDI literal: its text is its information.
                self.ledger.record(SENT, self.peer_name(to), f"bdi_{ilf_name}", size, stanza, 8 * size)
            return send(agent, term, intention)

        # Actions.add refuses to replace an action; the registry's table is where it lives.
        actions.actions[(".send", 3)] = accounted_send

    def peer_jid(self, receiver: str) -> str:
        """The JID a spade-bdi receiver names: a peer's agent id, or a JID as it is."""
        return self.peers.get(receiver, receiver)

    def peer_name(self, jid: Any) -> str:
        """The agent id behind a JID (its local part if the agent is unknown)."""
        bare = bare_jid(jid)
        return self.directory.get(bare, bare.split("@", 1)[0])

    def defer_work(self, action: str, work: Awaitable) -> None:
        """Have the reasoning cycle await `work` before the plan's next instruction."""
        self.bdi.defer(action, work)

    # --------------------------------------------------------------- sending

    def _message(self, jid: str, kind: str, body: str, bits: Optional[float]) -> Message:
        """The message, accounted: body bytes, stanza bytes and information bits (`bits`; None:
        the body's own bits, for a message with no more compact encoding)."""
        metadata = {"performative": wire.PERFORMATIVE, "kind": kind}
        size = len(body.encode())
        stanza = self.stanzas.size(str(self.jid), jid, body, metadata)
        self.ledger.record(SENT, self.peer_name(jid), kind, size, stanza, 8 * size if bits is None else bits)
        return Message(to=jid, body=body, metadata=metadata)

    async def send_coordination(self, jid: str, kind: str, body: str, bits: Optional[float] = None) -> None:
        """Send a message now (accounted)."""
        await self.bdi.send(self._message(jid, kind, body, bits))

    def post(self, jid: str, kind: str, body: str, bits: Optional[float] = None) -> None:
        """Send a message from a synchronous action (accounted; sent by a task)."""
        self.submit(self.bdi.send(self._message(jid, kind, body, bits)))

    def post_to_peers(self, kind: str, body: str, bits: Optional[float] = None) -> None:
        for jid in self.peers.values():
            self.post(jid, kind, body, bits)

    # -------------------------------------------------------------- receiving

    def dispatch(self, msg: Message) -> list:
        """Every incoming message: account it; handle coordination messages here, pass the rest
        (spade-bdi's tell/achieve...) to the behaviours as SPADE does."""
        coordination = msg.get_metadata("performative") == wire.PERFORMATIVE
        body = msg.body or ""
        kind = msg.get_metadata("kind") if coordination else f"bdi_{msg.get_metadata('ilf_type') or 'other'}"
        peer = self.peer_name(msg.sender)
        self.ledger.record(RECEIVED, peer, kind or "unknown", len(body.encode()))
        if not coordination:
            return super().dispatch(msg)
        try:
            payload = wire.decode(body)
        except wire.PayloadError as err:
            logger.warning("agent %s (run %s): ignored a message from %s: %s", self.agent_id, self.run_id, peer, err)
            return []
        if payload["kind"] in (wire.Q_TABLE, wire.TRANSITIONS):
            self.coordination.receive(peer, payload)
        elif self.hunting.link is not None and payload["kind"] in (wire.WORLD_OBSERVATION, *wire.REPORT_KINDS):
            try:
                self.hunting.link.receive(peer, payload)
            except wire.PayloadError as err:
                logger.warning("agent %s (run %s): ignored a message: %s", self.agent_id, self.run_id, err)
        else:
            logger.warning("agent %s (run %s): ignored a %s message from %s", self.agent_id, self.run_id, payload["kind"], peer)
        if self.bdi is not None:
            self.bdi.wake()
        return []


def plan_actions() -> agentspeak.Actions:
    """The actions a CoordinatingAgent's plans can call (stdlib, spade-bdi's .send, the .rl_*
    learning actions, the coordination and hunter actions), for checking a plan file with
    agents.asl_check before any agent starts. The registry is for checking only: its actions
    are bound to no agent."""
    from agents.actions import LearningActions

    actions = agentspeak.Actions(agentspeak.stdlib.actions)
    actions.add(".send", 3, lambda agent, term, intention: iter(()))
    LearningActions.register(object.__new__(LearningActions), actions)
    CoordinationActions(None).register(actions)  # type: ignore[arg-type]
    HunterActions(None).register(actions)  # type: ignore[arg-type]
    return actions
