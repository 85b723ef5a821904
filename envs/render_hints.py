"""Static drawing hints for grid environments, read from the environment itself.

A viewer (the dashboard, a terminal) draws the board once from the hint and then moves the agent
from each step's observation. The maps come from the live environment (FrozenLake's ``desc``,
CliffWalking's ``shape`` and cliff mask, Taxi's ``desc``), so custom maps and ``map_name="8x8"``
are drawn as they are played. Environments without a grid get ``{}``.
"""

from __future__ import annotations

from typing import Any

from gymnasium import Env
from gymnasium.envs.toy_text.cliffwalking import CliffWalkingEnv
from gymnasium.envs.toy_text.frozen_lake import FrozenLakeEnv
from gymnasium.envs.toy_text.taxi import TaxiEnv


def render_hint_for(env: Env) -> dict[str, Any]:
    """The hint for ``env`` (any wrapper around it): ``{"kind": "grid", ...}`` or ``{}``."""
    core = env.unwrapped
    if isinstance(core, FrozenLakeEnv):
        return _frozen_lake(core)
    if isinstance(core, CliffWalkingEnv):
        return _cliff_walking(core)
    if isinstance(core, TaxiEnv):
        return _taxi(core)
    return {}


def _frozen_lake(env: FrozenLakeEnv) -> dict[str, Any]:
    desc = [b"".join(row).decode("ascii") for row in env.desc]
    return {
        "kind": "grid",
        "rows": int(env.nrow),
        "cols": int(env.ncol),
        "desc": desc,
        "legend": {"S": "start", "F": "frozen", "H": "hole", "G": "goal"},
        "state": "row * cols + col",
    }


def _cliff_walking(env: CliffWalkingEnv) -> dict[str, Any]:
    rows, cols = (int(n) for n in env.shape)
    start = divmod(int(env.start_state_index), cols)
    # The goal is not stored on the env: its step rule terminates in the bottom-right cell.
    goal = (rows - 1, cols - 1)
    desc = []
    for r in range(rows):
        line = []
        for c in range(cols):
            if (r, c) == start:
                line.append("S")
            elif (r, c) == goal:
                line.append("G")
            elif env._cliff[r, c]:
                line.append("C")
            else:
                line.append(".")
        desc.append("".join(line))
    return {
        "kind": "grid",
        "rows": rows,
        "cols": cols,
        "desc": desc,
        "legend": {"S": "start", ".": "open", "C": "cliff (-100, back to start)", "G": "goal"},
        "state": "row * cols + col",
    }


def _taxi(env: TaxiEnv) -> dict[str, Any]:
    # env.desc is the bordered ASCII map: cell (r, c) at [1 + r][1 + 2c], a wall east of it at
    # [1 + r][2 + 2c] when that character is "|".
    walls_map = [b"".join(row).decode("ascii") for row in env.desc]
    rows = len(walls_map) - 2
    cols = (len(walls_map[0]) - 1) // 2
    desc = []
    for r in range(rows):
        cells = [walls_map[1 + r][1 + 2 * c] for c in range(cols)]
        desc.append("".join(ch if ch.strip() else "." for ch in cells))
    return {
        "kind": "grid",
        "rows": rows,
        "cols": cols,
        "desc": desc,
        "walls": walls_map,
        "legend": {"R": "red stop", "G": "green stop", "Y": "yellow stop", "B": "blue stop", ".": "road"},
        "locations": [[int(r), int(c)] for r, c in env.locs],
        "state": "((taxi_row * 5 + taxi_col) * 5 + passenger_location) * 4 + destination",
    }
