"""Two hunters and a prey on a small torus: a joint task, capture needs both hunters.

The world (``PursuitWorld``) is an ``size`` x ``size`` grid whose edges wrap (a torus), with two
hunters and one prey. Each step both hunters move (stay, north, east, south, west; a hunter
cannot step onto the prey, it may share a cell with the other hunter), then the prey is
*captured* if both hunters stand next to it (one of its four neighbours each, distinct cells).
Otherwise the prey moves with probability ``prey_moves`` to a random free neighbouring cell,
and capture is checked again. A capture pays 1 to both hunters and ends the episode
(terminated); ``max_steps`` without one ends it by truncation. One hunter alone never
captures: the hunters must end up on two sides of the prey at the same time.

What a hunter perceives is local (Tan 1993, "sensation"): the prey's offset from itself,
``(dx, dy)`` on the torus, each in ``[-r, r]`` with ``r = size // 2`` (so ``size`` is odd).
``sensation_index`` turns it into a state index in ``range(size**2)``. A hunter that also knows
its partner's sensation knows where the partner is (partner offset = own prey offset - partner's
prey offset), and ``joint_state_index`` encodes both in ``range(size**4)``: that is what the
hunters gain by telling each other what they see.

Randomness: one ``numpy`` generator seeded by ``reset(seed)`` (Gymnasium semantics: later
resets continue the stream) draws the start cells and the prey's moves.

``PursuitHunterEnv`` (registered as ``MosaicPursuit-v0``) is one hunter's view of the world as a
Gymnasium environment, so the ordinary ``envs.make_env`` sizes a hunter's Q-table and validates
its options. Standalone, its partner acts uniformly at random in a world of its own; a hunter
agent taking part in a shared world attaches a *link* instead (``attach``), and the view then
returns what the environment agent answered (``agents.coordination.world_agent``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Protocol, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

#: stay, north, east, south, west as (row, column) moves.
MOVES: tuple[tuple[int, int], ...] = ((0, 0), (-1, 0), (0, 1), (1, 0), (0, -1))
N_ACTIONS = len(MOVES)
HUNTERS = 2
DEFAULT_SIZE = 5
DEFAULT_MAX_STEPS = 50
DEFAULT_PREY_MOVES = 0.5
CAPTURE_REWARD = 1.0

Cell = tuple[int, int]


def check_world_options(size: Any, max_steps: Any, prey_moves: Any) -> None:
    """Raise ValueError naming the option when a world cannot be built with these values."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 3 or size % 2 == 0 or size > 15:
        raise ValueError(f"size must be an odd integer in [3, 15] (the torus' side), got {size!r}")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps must be an integer >= 1, got {max_steps!r}")
    if isinstance(prey_moves, bool) or not isinstance(prey_moves, (int, float)) or not 0.0 <= prey_moves <= 1.0:
        raise ValueError(f"prey_moves must be a probability in [0, 1], got {prey_moves!r}")


def wrap_offset(delta: int, size: int) -> int:
    """A difference of coordinates on the torus, in [-size//2, size//2]."""
    radius = size // 2
    return (delta + radius) % size - radius


def sensation_index(offset: Sequence[int], size: int) -> int:
    """The state index of a prey offset (dx, dy), in range(size**2)."""
    radius = size // 2
    dx, dy = offset
    return (dy + radius) * size + (dx + radius)


def joint_state_index(own: Sequence[int], partner: Sequence[int], size: int) -> int:
    """The state index of a hunter that knows its own and its partner's prey offsets, in
    range(size**4): its own sensation and where the partner stands relative to it."""
    relative = (wrap_offset(own[0] - partner[0], size), wrap_offset(own[1] - partner[1], size))
    return sensation_index(own, size) * size * size + sensation_index(relative, size)


@dataclass(frozen=True)
class StepOutcome:
    """How a reset or a step of a shared world ended for its hunters: the reward, the end flags
    and the step count (a world's own result adds what each mover perceives)."""

    reward: float
    terminated: bool
    truncated: bool
    steps: int

    @property
    def captured(self) -> bool:
        return self.terminated


@dataclass(frozen=True)
class WorldStep(StepOutcome):
    """What one joint step produced: the outcome and each hunter's prey offset."""

    sensations: tuple[tuple[int, int], ...]


class PursuitWorld:
    """The shared world. ``reset`` then ``step((a0, a1))`` until terminated or truncated."""

    def __init__(self, size: int = DEFAULT_SIZE, max_steps: int = DEFAULT_MAX_STEPS, prey_moves: float = DEFAULT_PREY_MOVES):
        check_world_options(size, max_steps, prey_moves)
        self.size = size
        self.max_steps = max_steps
        self.prey_moves = float(prey_moves)
        self.hunters: list[Cell] = []
        self.prey: Cell = (0, 0)
        self.steps = 0
        self._rng = np.random.default_rng()

    def reset(self, seed: Optional[int] = None) -> WorldStep:
        """Place the hunters and the prey on distinct random cells (never a capture already)."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        cells = self.size * self.size
        while True:
            picks = self._rng.choice(cells, size=HUNTERS + 1, replace=False)
            self.hunters = [divmod(int(c), self.size) for c in picks[:HUNTERS]]
            self.prey = divmod(int(picks[HUNTERS]), self.size)
            if not self._captured():
                break
        self.steps = 0
        return WorldStep(0.0, False, False, 0, sensations=self.sensations())

    def step(self, actions: Sequence[int]) -> WorldStep:
        if len(actions) != HUNTERS or any(not 0 <= a < N_ACTIONS for a in actions):
            raise ValueError(f"a joint action is {HUNTERS} actions in range({N_ACTIONS}), got {list(actions)!r}")
        self.steps += 1
        self.hunters = [self._moved(cell, action) for cell, action in zip(self.hunters, actions)]
        captured = self._captured()
        if not captured and self._rng.random() < self.prey_moves:
            free = [cell for cell in self._neighbours(self.prey) if cell not in self.hunters]
            if free:
                self.prey = free[int(self._rng.integers(len(free)))]
            captured = self._captured()
        truncated = not captured and self.steps >= self.max_steps
        return WorldStep(CAPTURE_REWARD if captured else 0.0, captured, truncated, self.steps, sensations=self.sensations())

    def sensations(self) -> tuple[tuple[int, int], ...]:
        """Each hunter's view of the prey: (dx, dy) on the torus."""
        py, px = self.prey
        return tuple((wrap_offset(px - hx, self.size), wrap_offset(py - hy, self.size)) for hy, hx in self.hunters)

    def _moved(self, cell: Cell, action: int) -> Cell:
        dy, dx = MOVES[action]
        target = ((cell[0] + dy) % self.size, (cell[1] + dx) % self.size)
        return cell if target == self.prey else target

    def _neighbours(self, cell: Cell) -> list[Cell]:
        return [((cell[0] + dy) % self.size, (cell[1] + dx) % self.size) for dy, dx in MOVES[1:]]

    def _captured(self) -> bool:
        around = self._neighbours(self.prey)
        first, second = self.hunters
        return first != second and first in around and second in around


class WorldLink(Protocol):
    """Where an attached hunter view gets its observations: the answers of the environment agent,
    fetched by the hunter's actions before the view is reset or stepped."""

    def take_reset(self) -> int: ...

    def take_step(self, action: int) -> tuple[int, float, bool, bool]: ...


class PursuitHunterEnv(gym.Env):
    """One hunter's view of a pursuit world, as a Gymnasium environment.

    Observation: ``Discrete(size**2)`` (its own sensation) or, with ``partner_sensation=True``,
    ``Discrete(size**4)`` (its own and its partner's). Actions: ``Discrete(5)``. Standalone the
    partner acts at random in a private world; attached (``attach(link)``) every reset and step
    returns what the link fetched from the shared world.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        size: int = DEFAULT_SIZE,
        max_steps: int = DEFAULT_MAX_STEPS,
        prey_moves: float = DEFAULT_PREY_MOVES,
        partner_sensation: bool = False,
    ):
        check_world_options(size, max_steps, prey_moves)
        self.size = size
        self.partner_sensation = bool(partner_sensation)
        self.observation_space = spaces.Discrete(size**4 if self.partner_sensation else size**2)
        self.action_space = spaces.Discrete(N_ACTIONS)
        self.world = PursuitWorld(size, max_steps, prey_moves)
        self._link: Optional[WorldLink] = None
        self._partner_rng = np.random.default_rng()

    def attach(self, link: WorldLink) -> None:
        """Take observations from `link` (a shared world) instead of the private one."""
        self._link = link

    @property
    def needs_report(self) -> bool:
        """Whether this view's state includes what the partner tells (its sensation)."""
        return self.partner_sensation

    def state_of(self, own: Sequence[int], partner: Sequence[int]) -> int:
        """This hunter's state index given both sensations (the partner's is ignored unless
        the view includes it)."""
        if self.partner_sensation:
            return joint_state_index(own, partner, self.size)
        return sensation_index(own, self.size)

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        super().reset(seed=seed)
        if self._link is not None:
            return self._link.take_reset(), {}
        if seed is not None:
            self._partner_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(7,)))
        start = self.world.reset(seed)
        return self.state_of(*start.sensations), {}

    def step(self, action: int):
        if self._link is not None:
            state, reward, terminated, truncated = self._link.take_step(int(action))
            return state, reward, terminated, truncated, {}
        partner = int(self._partner_rng.integers(N_ACTIONS))
        result = self.world.step((int(action), partner))
        return self.state_of(*result.sensations), result.reward, result.terminated, result.truncated, {}
