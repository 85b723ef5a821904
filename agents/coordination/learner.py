"""`SharingQLearner`: the Q-learner that also remembers what it needs to share.

Same learning as `agents.qlearning.QLearner` (it is one), plus:
- ``visits[s, a]``: how many of its own updates touched each entry (the ``visits`` merge rule
  weighs tables by it);
- ``last_episode``: the transitions of the last finished episode, as a
  ``wire.TRANSITION_DTYPE`` array, for experience sharing;
- ``learn_replayed``: a Q-update from a peer's transition, which changes the table but neither
  the visit counts nor the transitions to share (a peer's experience is not passed on again);
- ``last_transition``: the last transition it learned from (one shared policy: sent every step);
- ``choose_boltzmann``: Tan's exploration, P(a) proportional to exp(Q(s, a) / T).
"""

from __future__ import annotations

import numpy as np

from agents.coordination.wire import TRANSITION_DTYPE
from agents.qlearning import Hyperparameters, QLearner


class SharingQLearner(QLearner):
    def __init__(self, n_states: int, n_actions: int, hp: Hyperparameters | None = None) -> None:
        super().__init__(n_states, n_actions, hp)
        self.visits = np.zeros((self.n_states, self.n_actions), dtype=np.int64)
        self.last_episode = np.zeros(0, dtype=TRANSITION_DTYPE)
        self._episode: list[tuple[int, int, float, int, bool]] = []
        self.replayed = 0

    def learn(self, state: int, action: int, reward: float, next_state: int, terminated: bool) -> float:
        self.visits[state, action] += 1
        self._episode.append((state, action, reward, next_state, terminated))
        return super().learn(state, action, reward, next_state, terminated)

    @property
    def last_transition(self) -> np.ndarray:
        """The last transition learned from in the open episode (empty at its start)."""
        return np.array(self._episode[-1:], dtype=TRANSITION_DTYPE)

    def choose_boltzmann(self, state: int, temperature: float) -> int:
        """An action drawn with probability proportional to exp(Q(state, a) / temperature)."""
        values = self.q[state] / temperature
        weights = np.exp(values - values.max())
        cumulative = np.cumsum(weights)
        return int(np.searchsorted(cumulative, self._uniform() * cumulative[-1], side="right"))

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
