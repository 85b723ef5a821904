"""Tan (1993)'s pursuit world: hunters, an optional scout and one prey on a bounded grid.

The world (``TanWorld``) is a ``size`` x ``size`` grid; a move that would leave it keeps the
mover in place (``torus=True`` wraps the edges instead). Cells may be shared by anyone,
hunters may step onto the prey. Its movers are ``hunters`` hunters (1 or 2) then ``scouts``
scouts (0 or 1), each acting every step (stay, north, east, south, west). A step: every mover
moves; the capture rule is checked; if not captured, the prey moves uniformly among stay and
the four moves (bounded like everyone), and the rule is checked again.

Capture rules (``capture``): ``single``, a hunter on the prey's cell; ``joint``, both hunters on
the prey's cell or one of its four neighbours (Tan's joint task). A scout never captures.
Reward (to every hunter): +1 on the capturing step, -0.1 on every other step. ``max_steps``
steps without a capture truncate the trial (a censored trial: it counts as ``max_steps``).

Perception is local (Tan's "sensation"): an agent sees the prey's offset ``(dx, dy)`` (columns,
rows) from itself when both are within its visual depth (``depth`` for hunters,
``scout_depth`` for the scout: ``max(|dx|, |dy|) <= depth``), otherwise nothing (the "unseen"
state). A hunter of a two-hunter world sees its partner the same way (passive observation).
Every agent also knows its own cell: a scout's report (its cell and what it sees) lets a hunter
place the prey relative to itself, which dead reckoning cannot do on a bounded grid (a move
into a wall is not observed).

States (``view_state``), one per kind of hunter:

- ``own``: its own sensation, ``(2d+1)**2 + 1`` states (d=2: 26, as in Tan);
- ``scouted``: the prey's offset from its own sensation or, if it sees nothing, from the
  partner's report, any offset within the grid: ``(2(size-1)+1)**2 + 1`` states;
- ``passive``: its own sensation and its partner's offset (both within depth);
- ``mutual``: ``scouted`` and the partner's offset (within depth).

Randomness: one ``numpy`` generator seeded by ``reset(seed)`` (later resets continue the stream)
draws the start cells and the prey's moves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from envs.multiagent.pursuit import MOVES, N_ACTIONS, StepOutcome

CAPTURE_RULES = ("single", "joint")
VIEWS = ("own", "scouted", "passive", "mutual")
STEP_REWARD = -0.1
CAPTURE_REWARD = 1.0

Cell = tuple[int, int]
Offset = tuple[int, int]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class TanOptions:
    """The world's options; ValueError naming the option for a value it cannot take."""

    size: int = 10
    hunters: int = 1
    scouts: int = 0
    depth: int = 2
    scout_depth: int = 2
    capture: str = "single"
    torus: bool = False
    max_steps: int = 200

    def __post_init__(self) -> None:
        if not _is_int(self.size) or not 3 <= self.size <= 30:
            raise ValueError(f"size must be an integer in [3, 30] (the grid's side), got {self.size!r}")
        if not _is_int(self.hunters) or self.hunters not in (1, 2):
            raise ValueError(f"hunters must be 1 or 2, got {self.hunters!r}")
        if not _is_int(self.scouts) or self.scouts not in (0, 1):
            raise ValueError(f"scouts must be 0 or 1, got {self.scouts!r}")
        for name in ("depth", "scout_depth"):
            value = getattr(self, name)
            if not _is_int(value) or not 0 <= value < self.size:
                raise ValueError(f"{name} must be an integer in [0, size) (a visual depth in cells), got {value!r}")
        if self.capture not in CAPTURE_RULES:
            raise ValueError(f"capture must be one of {', '.join(CAPTURE_RULES)}, got {self.capture!r}")
        if self.capture == "joint" and self.hunters != 2:
            raise ValueError(f"the joint capture rule needs hunters = 2, got {self.hunters!r}")
        if not isinstance(self.torus, bool):
            raise ValueError(f"torus must be true or false, got {self.torus!r}")
        if not _is_int(self.max_steps) or self.max_steps < 1:
            raise ValueError(f"max_steps must be an integer >= 1 (the trial cut-off), got {self.max_steps!r}")

    @property
    def movers(self) -> int:
        return self.hunters + self.scouts

    @property
    def far_radius(self) -> int:
        """The largest |dx| or |dy| between two cells of the grid."""
        return self.size // 2 if self.torus else self.size - 1


@dataclass(frozen=True)
class Percept:
    """What one agent perceives: its cell, the prey's offset and the partner hunter's offset
    (None: out of its visual depth, or no partner)."""

    cell: Cell
    prey: Optional[Offset]
    partner: Optional[Offset]


@dataclass(frozen=True)
class TanStep(StepOutcome):
    """What a reset or a step produced: the outcome and every mover's percept."""

    percepts: tuple[Percept, ...]


class TanWorld:
    """The shared world. ``reset`` then ``step(actions)`` (one per mover: hunters, then scouts)."""

    def __init__(self, options: TanOptions):
        self.options = options
        self.cells: list[Cell] = []
        self.prey: Cell = (0, 0)
        self.steps = 0
        self._rng = np.random.default_rng()

    def reset(self, seed: Optional[int] = None) -> TanStep:
        """Every mover and the prey on independent random cells (never a capture already)."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        size, movers = self.options.size, self.options.movers
        while True:
            picks = self._rng.integers(size * size, size=movers + 1)
            self.cells = [divmod(int(c), size) for c in picks[:movers]]
            self.prey = divmod(int(picks[movers]), size)
            if not self.captured():
                break
        self.steps = 0
        return TanStep(0.0, False, False, 0, percepts=self.percepts())

    def step(self, actions: Sequence[int]) -> TanStep:
        movers = self.options.movers
        if len(actions) != movers or any(not _is_int(a) or not 0 <= a < N_ACTIONS for a in actions):
            raise ValueError(f"a joint action is {movers} actions in range({N_ACTIONS}), got {list(actions)!r}")
        self.steps += 1
        self.cells = [self.moved(cell, action) for cell, action in zip(self.cells, actions)]
        captured = self.captured()
        if not captured:
            self.prey = self.moved(self.prey, int(self._rng.integers(N_ACTIONS)))
            captured = self.captured()
        truncated = not captured and self.steps >= self.options.max_steps
        return TanStep(CAPTURE_REWARD if captured else STEP_REWARD, captured, truncated, self.steps, percepts=self.percepts())

    def moved(self, cell: Cell, action: int) -> Cell:
        """Where `action` takes a mover from `cell` (a wall keeps it in place; a torus wraps)."""
        dy, dx = MOVES[action]
        row, col = cell[0] + dy, cell[1] + dx
        size = self.options.size
        if self.options.torus:
            return row % size, col % size
        if 0 <= row < size and 0 <= col < size:
            return row, col
        return cell

    def offset(self, origin: Cell, target: Cell) -> Offset:
        """(dx, dy) from `origin` to `target` (the shorter way round on a torus)."""
        dx, dy = target[1] - origin[1], target[0] - origin[0]
        if self.options.torus:
            size, radius = self.options.size, self.options.size // 2
            dx, dy = (dx + radius) % size - radius, (dy + radius) % size - radius
        return dx, dy

    def captured(self) -> bool:
        hunters = self.cells[: self.options.hunters]
        if self.options.capture == "single":
            return self.prey in hunters
        return all(sum(map(abs, self.offset(cell, self.prey))) <= 1 for cell in hunters)

    def percepts(self) -> tuple[Percept, ...]:
        options = self.options
        out = []
        for index, cell in enumerate(self.cells):
            hunter = index < options.hunters
            depth = options.depth if hunter else options.scout_depth
            partner = None
            if hunter and options.hunters == 2:
                partner = _within(self.offset(cell, self.cells[1 - index]), depth)
            out.append(Percept(cell, _within(self.offset(cell, self.prey), depth), partner))
        return tuple(out)


def _within(offset: Offset, depth: int) -> Optional[Offset]:
    return offset if max(abs(offset[0]), abs(offset[1])) <= depth else None


# ---------------------------------------------------------------------- states


def offset_states(radius: int) -> int:
    """States of one offset within `radius`: every (dx, dy) plus "unseen"."""
    return (2 * radius + 1) ** 2 + 1


def offset_index(offset: Optional[Offset], radius: int) -> int:
    """The index of an offset within `radius` (None: the unseen state, the last index)."""
    side = 2 * radius + 1
    if offset is None:
        return side * side
    dx, dy = offset
    return (dy + radius) * side + (dx + radius)


def reported_prey(options: TanOptions, own_cell: Cell, report_cell: Sequence[int], report_prey: Optional[Sequence[int]]) -> Optional[Offset]:
    """The prey's offset from `own_cell`, from a partner's report (its cell and its sensation)."""
    if report_prey is None:
        return None
    prey = (report_cell[0] + report_prey[1], report_cell[1] + report_prey[0])
    dx, dy = prey[1] - own_cell[1], prey[0] - own_cell[0]
    if options.torus:
        size, radius = options.size, options.size // 2
        dx, dy = (dx + radius) % size - radius, (dy + radius) % size - radius
    return dx, dy


def view_states(view: str, options: TanOptions, *, scout: bool = False) -> int:
    """How many states a hunter of this view (or the scout) has."""
    if scout:
        return offset_states(options.scout_depth)
    own, far = offset_states(options.depth), offset_states(options.far_radius)
    return {"own": own, "scouted": far, "passive": own * own, "mutual": far * own}[view]


def view_state(view: str, options: TanOptions, percept: Percept, report_prey: Optional[Offset] = None, *, scout: bool = False) -> int:
    """A hunter's state index (`report_prey`: the prey's offset from it by a partner's report)."""
    if scout:
        return offset_index(percept.prey, options.scout_depth)
    depth, far = options.depth, options.far_radius
    if view == "own":
        return offset_index(percept.prey, depth)
    prey = offset_index(percept.prey if percept.prey is not None else report_prey, far)
    if view == "scouted":
        return prey
    partner = offset_index(percept.partner, depth)
    if view == "passive":
        return offset_index(percept.prey, depth) * offset_states(depth) + partner
    return prey * offset_states(depth) + partner
