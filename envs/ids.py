"""Resolve a user's environment id to a Gymnasium registration, with helpful errors.

Gymnasium 1.4 no longer registers ``Taxi-v3`` (it raises ``DeprecatedEnv`` in favour of
``Taxi-v4``, whose only change fixed the optional ``is_rainy``/``fickle_passenger`` variants; the
default dynamics are the same). The issue and existing configs name ``Taxi-v3``, so it is kept as
an alias: ``make_env("Taxi-v3")`` builds ``Taxi-v4`` and reports ``env_id == "Taxi-v3"`` and
``gym_id == "Taxi-v4"``. Every other unregistered id is an error suggesting close matches.
"""

from __future__ import annotations

import difflib
import re

import gymnasium as gym
from gymnasium.envs.registration import EnvSpec

from envs.errors import UnsupportedEnvironmentError

#: Ids kept working although the pinned Gymnasium retired them: id -> registered id.
ALIASES: dict[str, str] = {"Taxi-v3": "Taxi-v4"}

#: The environments this project tests for tabular learning (others with tabular spaces work too).
TESTED_ENV_IDS: tuple[str, ...] = (
    "FrozenLake-v1",
    "FrozenLake8x8-v1",
    "CliffWalking-v1",
    "CliffWalkingSlippery-v1",
    "Taxi-v3",
    "Taxi-v4",
    "Blackjack-v1",
)

_VERSIONED = re.compile(r"^(?P<name>.+)-v(?P<version>\d+)$")


def resolve_env_spec(env_id: str) -> EnvSpec:
    """The registration spec that ``env_id`` (or its alias) names.

    Raises ``UnsupportedEnvironmentError`` naming the id, close matches, and the tested ids.
    """
    if not isinstance(env_id, str) or not env_id.strip():
        raise UnsupportedEnvironmentError(
            f"environment id must be a non-empty string such as 'FrozenLake-v1', got {env_id!r}",
            env_id=str(env_id),
        )
    gym_id = ALIASES.get(env_id, env_id)
    spec = gym.registry.get(gym_id)
    if spec is not None:
        return spec
    raise UnsupportedEnvironmentError(_unknown_id_message(env_id), env_id=env_id)


def _unknown_id_message(env_id: str) -> str:
    known = list(gym.registry) + list(ALIASES)
    suggestions = _other_versions(env_id, known) or _close_matches(env_id, known)
    message = f"unknown environment id {env_id!r}: gymnasium {gym.__version__} registers no such environment."
    if suggestions:
        message += " Did you mean " + " or ".join(repr(s) for s in suggestions) + "?"
    return message + " Tested here for tabular learning: " + ", ".join(TESTED_ENV_IDS) + "."


def _other_versions(env_id: str, known: list[str]) -> list[str]:
    """Registered versions of the same name (``FrozenLake-v0`` -> ``FrozenLake-v1``)."""
    match = _VERSIONED.match(env_id)
    if not match:
        return []
    name = match["name"].lower()
    return sorted(k for k in known if (m := _VERSIONED.match(k)) and m["name"].lower() == name)


def _close_matches(env_id: str, known: list[str]) -> list[str]:
    by_lower = {k.lower(): k for k in known}
    return [by_lower[m] for m in difflib.get_close_matches(env_id.lower(), list(by_lower), n=3, cutoff=0.6)]
