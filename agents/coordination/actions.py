"""The AgentSpeak actions through which plans coordinate learners, and the beliefs they keep.

The plans decide when and what to share; these actions only do it. Messages go to the agent's
peers (the other learners of its group) as SPADE messages with the "coordination"
performative (agents.coordination.wire); what arrives is stored until a plan uses it and
announced as beliefs:

  .share_q_table              send the own Q-table and visit counts to every peer  (kind q_table)
  .merge_q_tables(Rule)       merge the tables received since the last merge into the own
                                one; Rule = average | visits (agents.coordination.merge)
  .share_transitions          send the last finished episode's transitions to every peer
                                                                                    (kind transitions)
  .share_last_transition      send the last transition learned from to every peer: two agents that
                                each learn from their own and the other's every step update their
                                tables alike (one shared policy, distributed)        (kind transitions)
  .learn_shared_transitions   apply a Q-update for every transition received since the last call
  .evaluate_progress(N)       N greedy episodes (as .rl_evaluate) and a point on the agent's
                                greedy-evaluation curve (episodes to a threshold are read from it)

Beliefs (numbers): peer_count(N); q_tables_pending(N) (peers whose table arrived since the last
merge); q_tables_received(N); merges_done(N); transitions_pending(N); shared_transitions_learned(N);
greedy_success_rate(X), greedy_return(R) after .evaluate_progress. The experiment's settings
for the condition arrive as beliefs too (e.g. share_every(F), eval_every(K), merge_rule(R)).

Every message sent or received goes through the agent's MessageLedger (agents.coordination.ledger).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import agentspeak
import numpy as np

from agents.actions import PlanError, _integer, _term_value
from agents.coordination import wire
from agents.coordination.merge import RULES, merge_q_tables

if TYPE_CHECKING:
    from agents.coordination.agent import CoordinatingAgent

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluationPoint:
    """One `.evaluate_progress` result: after `episodes` episodes and `steps` steps, the sampled
    greedy success rate and return, and the exact success probability where the environment
    publishes its transition model (else None)."""

    episodes: int
    steps: int
    success_rate: float
    mean_return: float
    exact_success: Optional[float] = None


class CoordinationActions:
    """One agent's coordination state (inboxes, counters, evaluation curve) and its plan actions."""

    def __init__(self, agent: "CoordinatingAgent"):
        self.agent = agent
        self.q_inbox: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.q_tables_received = 0
        self.merges_done = 0
        self.transition_inbox: list[np.ndarray] = []
        self.transitions_pending = 0
        self.shared_transitions_learned = 0
        self.evaluations: list[EvaluationPoint] = []

    def register(self, actions: agentspeak.Actions) -> None:
        add = actions.add
        add(".share_q_table", 0, self._a_share_q_table)
        add(".merge_q_tables", 1, self._a_merge_q_tables)
        add(".share_transitions", 0, self._a_share_transitions)
        add(".share_last_transition", 0, self._a_share_last_transition)
        add(".learn_shared_transitions", 0, self._a_learn_shared_transitions)
        add(".evaluate_progress", 1, self._a_evaluate_progress)

    def publish_initial(self) -> None:
        beliefs = self.agent.learning.beliefs
        beliefs.set("peer_count", len(self.agent.peers))
        beliefs.set("q_tables_pending", 0)
        beliefs.set("q_tables_received", 0)
        beliefs.set("merges_done", 0)
        beliefs.set("transitions_pending", 0)
        beliefs.set("shared_transitions_learned", 0)

    # ------------------------------------------------------------------ receiving

    def receive(self, peer: str, payload: dict[str, Any]) -> None:
        """A decoded q_table or transitions payload from `peer`: store it, update the beliefs."""
        beliefs = self.agent.learning.beliefs
        if payload["kind"] == wire.Q_TABLE:
            self.q_inbox[peer] = (payload["q"], payload["visits"])
            self.q_tables_received += 1
            beliefs.set("q_tables_pending", len(self.q_inbox))
            beliefs.set("q_tables_received", self.q_tables_received)
        else:
            data = payload["data"]
            self.transition_inbox.append(data)
            self.transitions_pending += len(data)
            beliefs.set("transitions_pending", self.transitions_pending)

    # ------------------------------------------------------------------- actions

    @property
    def _learner(self):
        return self.agent.learning.learner

    def _a_share_q_table(self, agent, term, intention):
        learner = self._learner
        body = wire.encode_q_table(learner.q, learner.visits, self.agent.learning.episode_index)
        self.agent.post_to_peers(wire.Q_TABLE, body, wire.q_table_bits(learner.q))
        yield

    def _a_merge_q_tables(self, agent, term, intention):
        rule = _term_value(term.args[0], intention)
        if rule not in RULES:
            raise PlanError(f".merge_q_tables/1: unknown rule {agentspeak.asl_str(rule)}: use one of {', '.join(RULES)}")
        if self.q_inbox:
            learner = self._learner
            learner.q[:] = merge_q_tables(rule, learner.q, learner.visits, list(self.q_inbox.values()))
            self.q_inbox.clear()
            self.merges_done += 1
            beliefs = self.agent.learning.beliefs
            beliefs.set("q_tables_pending", 0)
            beliefs.set("merges_done", self.merges_done)
        yield

    def _a_share_transitions(self, agent, term, intention):
        episode = self._learner.last_episode
        if len(episode):
            body = wire.encode_transitions(episode, self.agent.learning.episode_index)
            self.agent.post_to_peers(wire.TRANSITIONS, body, wire.transitions_bits(episode))
        yield

    def _a_share_last_transition(self, agent, term, intention):
        transition = self._learner.last_transition
        if len(transition):
            body = wire.encode_transitions(transition, self.agent.learning.episode_index)
            self.agent.post_to_peers(wire.TRANSITIONS, body, wire.transitions_bits(transition))
        yield

    def _a_learn_shared_transitions(self, agent, term, intention):
        if self.transition_inbox:
            learner = self._learner
            for batch in self.transition_inbox:
                self.shared_transitions_learned += learner.learn_replayed(batch)
            self.transition_inbox.clear()
            self.transitions_pending = 0
            beliefs = self.agent.learning.beliefs
            beliefs.set("transitions_pending", 0)
            beliefs.set("shared_transitions_learned", self.shared_transitions_learned)
        yield

    def _a_evaluate_progress(self, agent, term, intention):
        episodes = _integer(term.args[0], intention)
        if type(episodes) is not int or episodes < 1:
            raise PlanError(f".evaluate_progress/1: the number of episodes must be a positive integer, got {agentspeak.asl_str(episodes)}")
        learning = self.agent.learning
        learning.evaluate(episodes)
        self.evaluations.append(
            EvaluationPoint(learning.episodes_done, learning.total_steps, learning.greedy_success_rate, learning.greedy_return,
                            learning.exact_greedy_success())
        )
        learning.beliefs.set("greedy_success_rate", learning.greedy_success_rate)
        learning.beliefs.set("greedy_return", learning.greedy_return)
        yield
