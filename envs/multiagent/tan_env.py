"""`TanAgentEnv` (registered as ``MosaicTan-v0``): one agent's view of a `TanWorld` as a
Gymnasium environment, so ``envs.make_env`` sizes its Q-table and validates its options.

Options: the world's (``envs.multiagent.tan.TanOptions``), the hunter's ``view`` (own, scouted,
passive, mutual: what its state is made of) and ``role`` (hunter or scout; a scout's state is
its own sensation within ``scout_depth``, whatever the view). Standalone, the view moves the
first mover of its role in a private world where everyone else acts at random and nobody
reports; an agent taking part in a shared world attaches a *link* (``attach``) and the view
returns what the environment agent answered (``agents.coordination.world_agent``).
"""

from __future__ import annotations

from typing import Optional, Protocol

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.multiagent.pursuit import N_ACTIONS
from envs.multiagent.tan import VIEWS, TanOptions, TanWorld, view_state, view_states

ROLES = ("hunter", "scout")


class TanLink(Protocol):
    """Where an attached view gets its observations (the hunter's side of the world protocol)."""

    def take_reset(self) -> int: ...

    def take_step(self, action: int) -> tuple[int, float, bool, bool]: ...


class TanAgentEnv(gym.Env):
    """One agent's view of Tan's pursuit world; see the module docstring."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        size: int = 10,
        hunters: int = 1,
        scouts: int = 0,
        depth: int = 2,
        scout_depth: int = 2,
        capture: str = "single",
        torus: bool = False,
        max_steps: int = 200,
        view: str = "own",
        role: str = "hunter",
    ):
        self.options = TanOptions(size, hunters, scouts, depth, scout_depth, capture, torus, max_steps)
        if view not in VIEWS:
            raise ValueError(f"view must be one of {', '.join(VIEWS)}, got {view!r}")
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        if role == "scout" and scouts == 0:
            raise ValueError("role 'scout' needs scouts = 1")
        if view in ("passive", "mutual") and hunters != 2:
            raise ValueError(f"view {view!r} needs a partner hunter (hunters = 2), got hunters = {hunters}")
        self.view = view
        self.scout = role == "scout"
        self.observation_space = spaces.Discrete(view_states(view, self.options, scout=self.scout))
        self.action_space = spaces.Discrete(N_ACTIONS)
        self.world = TanWorld(self.options)
        self._me = self.options.hunters if self.scout else 0
        self._link: Optional[TanLink] = None
        self._others_rng = np.random.default_rng()

    @property
    def needs_report(self) -> bool:
        """Whether this view's state includes what a partner reports."""
        return not self.scout and self.view in ("scouted", "mutual")

    def attach(self, link: TanLink) -> None:
        """Take observations from `link` (a shared world) instead of the private one."""
        self._link = link

    def state_of(self, percept, report_prey=None) -> int:
        return view_state(self.view, self.options, percept, report_prey, scout=self.scout)

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        super().reset(seed=seed)
        if self._link is not None:
            return self._link.take_reset(), {}
        if seed is not None:
            self._others_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(7,)))
        start = self.world.reset(seed)
        return self.state_of(start.percepts[self._me]), {}

    def step(self, action: int):
        if self._link is not None:
            state, reward, terminated, truncated = self._link.take_step(int(action))
            return state, reward, terminated, truncated, {}
        actions = [int(a) for a in self._others_rng.integers(N_ACTIONS, size=self.options.movers)]
        actions[self._me] = int(action)
        result = self.world.step(actions)
        return self.state_of(result.percepts[self._me]), result.reward, result.terminated, result.truncated, {}
