"""Tabular Q-learning with epsilon-greedy exploration (numpy).

Choices, stated once:

- Exploration draws from the learner's own ``numpy.random.Generator`` seeded from ``hp.seed``, so
  the same seed and the same environment stream give the same Q-table bit for bit, and nothing
  else (the environment, other agents) shares or disturbs that stream. The generator is seeded
  with ``SeedSequence(seed, spawn_key=(1,))``, not ``default_rng(seed)``: Gymnasium seeds an
  environment with ``SeedSequence(seed)``, so an agent that uses one seed for both would
  otherwise explore with the very numbers that decide the lake's slips.
- Ties between equally valued actions are broken two ways, on purpose:
  * while learning (``choose(state)``), the exploit branch picks uniformly among the tied best
    actions with the learner's seeded RNG. With a zero-initialised table, "greedy" in a state
    never rewarded is then a random walk rather than always action 0; on sparse-reward
    FrozenLake, always-0 (LEFT) means bumping into the west wall until the time limit, and
    learning non-slippery 4x4 failed outright (measured: epsilon_decay 0.99, 3,000 episodes:
    0 of 5 seeds learned with lowest-index ties; with random ties 8 of 8 learned in 200).
  * for evaluation (``greedy_action``, ``choose(state, greedy=True)``, ``policy``), the lowest
    index wins (``numpy.argmax``): the greedy policy is a pure function of the table, so greedy
    evaluation and a saved policy replay identically and draw nothing from the RNG.
- Epsilon decays multiplicatively once per episode (``end_episode``):
  ``epsilon = max(epsilon_min, epsilon * epsilon_decay)``, starting at ``epsilon_start``.
- The step size may decay the same way, ``alpha = max(alpha_min, alpha * alpha_decay)`` per
  episode (``alpha_decay = 1``: constant, the textbook rule). A constant step size keeps the
  Q-values jittering by about ``sqrt(alpha / 2)`` times the spread of the TD target. Slippery
  FrozenLake has near-tied actions whose wrong pick is costly: at the start the best two differ
  by 0.018 (gamma 0.98) and the second drops the 100-step success rate from 0.74 to 0.55; next
  to the goal they differ by 0.04 against targets spread between 0 and 1. With constant alpha
  0.1, about one seed in eight held such a bad greedy policy at any episode count we looked at
  (3,000 to 10,000). Decaying alpha from 0.3 by x0.999 per episode to 0.002 gave 120 of 120 seeds
  a policy within 0.012 of the optimum at 3,000 episodes (tests/test_qlearning_slippery.py).
- The TD target bootstraps unless the episode *terminated*: a terminal state has no future, but a
  time-limit *truncation* cuts an episode whose next state still has value
  (``target = r`` if terminated else ``r + gamma * max_a Q[s2, a]``).

Saved Q-tables are JSON, ``"format": "q_table/v1"``::

    {"format": "q_table/v1", "n_states": 16, "n_actions": 4, "epsilon": 0.05, "alpha": 0.01,
     "metadata": {"env": "FrozenLake-v1", "agent": "a1", "episodes": 3000,
                  "hyperparameters": {"alpha": ..., "gamma": ..., ...}, ...},
     "q": [[...n_actions floats...], ...n_states rows...]}

Floats round-trip exactly through JSON (Python writes the shortest repr that reads back equal).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np

Q_TABLE_FORMAT = "q_table/v1"

#: Spawn key of the learner's RNG stream, distinct from the environment's ``SeedSequence(seed)``.
LEARNER_STREAM = 1


class HyperparameterError(ValueError):
    """A hyperparameter is out of range; ``field``, ``value`` and ``allowed`` say which and why."""

    def __init__(self, field: str, value: Any, allowed: str, message: str | None = None) -> None:
        super().__init__(message or f"{field} must be {allowed}, got {value!r}")
        self.field = field
        self.value = value
        self.allowed = allowed


class QTableFormatError(ValueError):
    """A saved Q-table cannot be loaded: wrong format tag, wrong shape, or malformed content."""


def _number(field: str, value: Any, allowed: str, low: float, high: float, *, open_low: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise HyperparameterError(field, value, allowed)
    if value > high or value < low or (open_low and value == low):
        raise HyperparameterError(field, value, allowed)
    return float(value)


@dataclass(frozen=True)
class Hyperparameters:
    """Everything that shapes learning; defaults learn slippery FrozenLake-v1 (see tests).

    ``alpha`` learning rate at the first episode, in (0, 1]; ``gamma`` discount in [0, 1];
    ``epsilon_start`` and ``epsilon_min`` exploration rate at the first episode and its floor, in
    [0, 1] with ``epsilon_min <= epsilon_start``; ``epsilon_decay`` per-episode multiplier in
    (0, 1] (1 = constant epsilon); ``seed`` for the learner's exploration RNG, an integer >= 0;
    ``alpha_min`` and ``alpha_decay`` the learning rate's floor in [0, alpha] and its per-episode
    multiplier in (0, 1] (1 = constant alpha). ``seed`` stays sixth so positional use keeps working.

    The defaults are the ones measured to learn slippery FrozenLake-v1 in 3,000 episodes. gamma
    is 0.98 rather than 0.99: both make the same greedy policy optimal, and 0.98 leaves the
    near-tied actions further apart relative to their values (30 of 30 seeds against 29 of 30).
    """

    alpha: float = 0.3
    gamma: float = 0.98
    epsilon_start: float = 1.0
    epsilon_min: float = 0.01
    epsilon_decay: float = 0.999
    seed: int = 0
    alpha_min: float = 0.002
    alpha_decay: float = 0.999

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise ints such as gamma = 1 to floats once, here
        set_(self, "alpha", _number("alpha", self.alpha, "in (0, 1]", 0.0, 1.0, open_low=True))
        set_(self, "gamma", _number("gamma", self.gamma, "in [0, 1]", 0.0, 1.0))
        set_(self, "epsilon_start", _number("epsilon_start", self.epsilon_start, "in [0, 1]", 0.0, 1.0))
        set_(
            self,
            "epsilon_min",
            _number(
                "epsilon_min",
                self.epsilon_min,
                f"in [0, epsilon_start] = [0, {self.epsilon_start}]",
                0.0,
                self.epsilon_start,
            ),
        )
        set_(
            self,
            "epsilon_decay",
            _number("epsilon_decay", self.epsilon_decay, "in (0, 1]", 0.0, 1.0, open_low=True),
        )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise HyperparameterError("seed", self.seed, "an integer >= 0")
        set_(
            self,
            "alpha_min",
            _number("alpha_min", self.alpha_min, f"in [0, alpha] = [0, {self.alpha}]", 0.0, self.alpha),
        )
        set_(self, "alpha_decay", _number("alpha_decay", self.alpha_decay, "in (0, 1]", 0.0, 1.0, open_low=True))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Hyperparameters:
        """Build from a mapping; an unknown key is a ``HyperparameterError`` naming it."""
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:
            allowed = ", ".join(cls.names())
            raise HyperparameterError(
                unknown[0], values[unknown[0]], allowed, f"unknown hyperparameter {unknown[0]!r} (known: {allowed})"
            )
        return cls(**values)


class QLearner:
    """A Q-table with epsilon-greedy action choice and the one-step Q-learning update.

    ``q`` is a float64 array of shape ``(n_states, n_actions)`` initialised to zero; ``epsilon``
    and ``alpha`` are the current exploration rate and step size (both decay per episode);
    ``episodes`` counts ``end_episode`` calls. The other hyperparameters are copied to attributes
    (``gamma``, ``epsilon_min``, ``epsilon_decay``, ``alpha_min``, ``alpha_decay``) for the hot
    path; ``hp`` keeps the object they came from.
    """

    def __init__(self, n_states: int, n_actions: int, hp: Hyperparameters | None = None) -> None:
        if n_states < 1 or n_actions < 1:
            raise ValueError(f"a Q-table needs at least one state and one action, got {n_states}x{n_actions}")
        self.hp = hp if hp is not None else Hyperparameters()
        self.n_states = int(n_states)
        self.n_actions = int(n_actions)
        self.q = np.zeros((self.n_states, self.n_actions), dtype=np.float64)
        self.alpha = self.hp.alpha
        self.gamma = self.hp.gamma
        self.epsilon = self.hp.epsilon_start
        self.epsilon_min = self.hp.epsilon_min
        self.epsilon_decay = self.hp.epsilon_decay
        self.alpha_min = self.hp.alpha_min
        self.alpha_decay = self.hp.alpha_decay
        self.episodes = 0
        self.metadata: dict[str, Any] = {}
        self._rng = np.random.default_rng(np.random.SeedSequence(self.hp.seed, spawn_key=(LEARNER_STREAM,)))
        self._uniform = self._rng.random
        self._integers = self._rng.integers

    def choose(self, state: int, greedy: bool = False) -> int:
        """Epsilon-greedy action for ``state``, ties among the best broken by the learner's RNG.

        ``greedy=True`` never explores and is ``greedy_action`` (lowest index on ties, no RNG).
        """
        if greedy:
            return int(self.q[state].argmax())
        return self.choose_explained(state)[0]

    def choose_explained(self, state: int) -> tuple[int, bool]:
        """The epsilon-greedy ``choose``, also saying whether it explored (for telemetry labels).

        Draws exactly what ``choose`` draws, so an agent that labels its actions learns the
        same Q-table as the plain loop for the same seed.
        """
        if self._uniform() < self.epsilon:
            return int(self._integers(self.n_actions)), True
        return self._best_action_tie_broken(state), False

    def _best_action_tie_broken(self, state: int) -> int:
        values = self.q[state].tolist()
        best = max(values)
        if values.count(best) == 1:
            return values.index(best)
        tied = [action for action, value in enumerate(values) if value == best]
        return tied[int(self._integers(len(tied)))]

    def greedy_action(self, state: int) -> int:
        """The highest-valued action in ``state``; ties go to the lowest index."""
        return int(self.q[state].argmax())

    def random_action(self) -> int:
        """A uniformly random action from the learner's own RNG."""
        return int(self._integers(self.n_actions))

    def learn(self, state: int, action: int, reward: float, next_state: int, terminated: bool) -> float:
        """One Q-learning update; returns the TD error (before the step size is applied).

        Pass ``terminated`` only; a truncated (time-limited) step is not terminal and bootstraps.
        """
        q = self.q
        target = reward if terminated else reward + self.gamma * q[next_state].max()
        td_error = float(target - q[state, action])
        q[state, action] += self.alpha * td_error
        return td_error

    def end_episode(self) -> float:
        """Count an episode and decay epsilon and alpha toward their floors; returns the new epsilon."""
        self.episodes += 1
        self.epsilon = max(self.epsilon_min, self.epsilon * self.epsilon_decay)
        self.alpha = max(self.alpha_min, self.alpha * self.alpha_decay)
        return self.epsilon

    def policy(self) -> list[int]:
        """The greedy action of every state."""
        return [int(a) for a in self.q.argmax(axis=1)]

    def to_json(self, metadata: Mapping[str, Any]) -> dict[str, Any]:
        """The ``q_table/v1`` document. ``metadata`` must name ``env`` and ``agent``; ``episodes``
        defaults to the learner's count and ``hyperparameters`` is always the learner's own."""
        missing = [k for k in ("env", "agent") if k not in metadata]
        if missing:
            raise ValueError(f"Q-table metadata needs {' and '.join(missing)} (got keys {sorted(metadata)})")
        meta = dict(metadata)
        meta.setdefault("episodes", self.episodes)
        meta["hyperparameters"] = self.hp.to_dict()
        return {
            "format": Q_TABLE_FORMAT,
            "n_states": self.n_states,
            "n_actions": self.n_actions,
            "epsilon": self.epsilon,
            "alpha": self.alpha,
            "metadata": meta,
            "q": self.q.tolist(),
        }

    @classmethod
    def from_json(
        cls, document: Mapping[str, Any], *, n_states: int | None = None, n_actions: int | None = None
    ) -> QLearner:
        """Rebuild a learner from a ``q_table/v1`` document.

        ``n_states``/``n_actions``, when given, must match (pass the environment's to refuse a
        table saved for another one). The exploration RNG restarts from the saved seed.
        """
        return _parse_q_table(cls, document, n_states, n_actions)

    def save(self, path: str | os.PathLike[str], metadata: Mapping[str, Any]) -> Path:
        """Write ``to_json(metadata)`` to ``path`` atomically (parent directories are created)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_json(metadata), allow_nan=False)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
        return path

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, n_states: int | None = None, n_actions: int | None = None
    ) -> QLearner:
        """Read a file written by ``save``; errors name the file and what is wrong with it."""
        path = Path(path)
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except OSError as error:
            raise QTableFormatError(f"cannot read Q-table {path}: {error.strerror or error}") from error
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise QTableFormatError(f"{path} is not a JSON Q-table: {error}") from error
        try:
            return cls.from_json(document, n_states=n_states, n_actions=n_actions)
        except QTableFormatError as error:
            raise QTableFormatError(f"{path}: {error}") from None


def _parse_q_table(
    cls: type[QLearner], document: Any, n_states: int | None, n_actions: int | None
) -> QLearner:
    if not isinstance(document, Mapping):
        raise QTableFormatError(f"a Q-table document is a JSON object, got {type(document).__name__}")
    tag = document.get("format")
    if tag != Q_TABLE_FORMAT:
        raise QTableFormatError(f"expected \"format\": \"{Q_TABLE_FORMAT}\", got {tag!r}")
    rows = document.get("q")
    if not isinstance(rows, list) or not rows or not all(isinstance(row, list) for row in rows):
        raise QTableFormatError("\"q\" must be a non-empty list of rows (one list of action values per state)")
    widths = {len(row) for row in rows}
    if len(widths) != 1 or 0 in widths:
        raise QTableFormatError(f"\"q\" rows must all have the same non-zero length, got lengths {sorted(widths)}")
    bad = next((v for row in rows for v in row if isinstance(v, bool) or not isinstance(v, (int, float))), None)
    if bad is not None:
        raise QTableFormatError(f"\"q\" must hold only numbers, found {bad!r}")
    q = np.array(rows, dtype=np.float64)
    if not np.all(np.isfinite(q)):
        raise QTableFormatError("\"q\" holds a non-finite value")
    shape = q.shape
    declared = (document.get("n_states"), document.get("n_actions"))
    if declared != shape:
        raise QTableFormatError(f"\"q\" has shape {shape[0]}x{shape[1]} but declares n_states x n_actions = {declared[0]}x{declared[1]}")
    expected = (n_states if n_states is not None else shape[0], n_actions if n_actions is not None else shape[1])
    if expected != shape:
        raise QTableFormatError(
            f"the table is {shape[0]} states x {shape[1]} actions but the environment has "
            f"{expected[0]} states x {expected[1]} actions"
        )
    metadata = document.get("metadata")
    if not isinstance(metadata, Mapping) or not isinstance(metadata.get("hyperparameters"), Mapping):
        raise QTableFormatError("\"metadata.hyperparameters\" is missing")
    try:
        hp = Hyperparameters.from_dict(metadata["hyperparameters"])
    except (HyperparameterError, TypeError) as error:
        raise QTableFormatError(f"metadata.hyperparameters: {error}") from None
    episodes = metadata.get("episodes", 0)
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 0:
        raise QTableFormatError(f"metadata.episodes must be an integer >= 0, got {episodes!r}")
    epsilon = document.get("epsilon", hp.epsilon_start)
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not 0.0 <= epsilon <= 1.0:
        raise QTableFormatError(f"\"epsilon\" must be a number in [0, 1], got {epsilon!r}")
    alpha = document.get("alpha", hp.alpha)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise QTableFormatError(f"\"alpha\" must be a number in [0, 1], got {alpha!r}")
    learner = cls(shape[0], shape[1], hp)
    learner.q[:] = q
    learner.epsilon = float(epsilon)
    learner.alpha = float(alpha)
    learner.episodes = episodes
    learner.metadata = dict(metadata)
    return learner
