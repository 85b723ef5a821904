"""`SharingQLearner`: the Q-learner that also remembers what it needs to share.

Same learning as `agents.qlearning.QLearner` (it is one), plus:
- ``visits[s, a]``: how many of its own updates touched each entry (the ``visits`` merge rule
  weighs tables by it);
- ``last_episode``: the transitions of the last finished episode, as a
  ``wire.TRANSITION_DTYPE`` array, for experience sharing;
- ``learn_replayed``: a Q-update from a peer's transition, which changes the table but neither
  the visit counts nor the transitions to share (a peer's experience is not passed on again);
- ``greedy_action`` breaks ties between equally valued actions at random (its own seeded
  stream), as ``QLearner.choose`` does while learning. The agents' epsilon mode
  (agents.actions) exploits through ``greedy_action``, whose lowest-index ties make an
  untrained FrozenLake agent walk LEFT into the wall whenever it exploits: measured here, two
  learners on slippery 8x8 never reached the goal in 5,000 episodes that way. Ties only remain
  in states a table never updated, so greedy evaluation of a trained table is unaffected in
  practice (the pursuit's final evaluation uses argmax itself).
"""

from __future__ import annotations

import numpy as np

from agents.coordination.wire import TRANSITION_DTYPE
from agents.qlearning import LEARNER_STREAM, Hyperparameters, QLearner

#: Spawn key of the tie-breaking stream: distinct from the environment's and the learner's.
TIE_STREAM = LEARNER_STREAM + 1


class SharingQLearner(QLearner):
    def __init__(self, n_states: int, n_actions: int, hp: Hyperparameters | None = None) -> None:
        super().__init__(n_states, n_actions, hp)
        self.visits = np.zeros((self.n_states, self.n_actions), dtype=np.int64)
        self.last_episode = np.zeros(0, dtype=TRANSITION_DTYPE)
        self._episode: list[tuple[int, int, float, int, bool]] = []
        self.replayed = 0
        self._ties = np.random.default_rng(np.random.SeedSequence(self.hp.seed, spawn_key=(TIE_STREAM,)))

    def greedy_action(self, state: int) -> int:
        values = self.q[state]
        tied = np.flatnonzero(values == values.max())
        return int(tied[0]) if len(tied) == 1 else int(tied[self._ties.integers(len(tied))])

    def learn(self, state: int, action: int, reward: float, next_state: int, terminated: bool) -> float:
        self.visits[state, action] += 1
        self._episode.append((state, action, reward, next_state, terminated))
        return super().learn(state, action, reward, next_state, terminated)

    def learn_replayed(self, transitions: np.ndarray) -> int:
        """Q-updates from a peer's transitions (a TRANSITION_DTYPE array); how many were applied."""
        learn = super().learn
        n_states, n_actions = self.n_states, self.n_actions
        applied = 0
        for s, a, r, s2, t in transitions.tolist():
            if s < n_states and s2 < n_states and a < n_actions:
                learn(s, a, r, s2, bool(t))
                applied += 1
        self.replayed += applied
        return applied

    def end_episode(self) -> float:
        self.last_episode = np.array(self._episode, dtype=TRANSITION_DTYPE)
        self._episode = []
        return super().end_episode()
