"""Check environment options before Gymnasium sees them.

``gym.make`` passes keyword arguments straight to the constructor: an unknown name is a bare
``TypeError``, and a wrong type is often accepted silently (``is_slippery="no"`` is truthy, so it
makes a *slippery* lake). Here every option is checked against the constructor's signature, typed
by its default value, and, for the options whose range we know, by value. Messages name the
environment, the option, the bad value and what is allowed.
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Mapping
from typing import Any, Callable

from gymnasium.envs.registration import EnvSpec, load_env_creator
from gymnasium.envs.toy_text.frozen_lake import MAPS as FROZEN_LAKE_MAPS
from gymnasium.envs.toy_text.frozen_lake import FrozenLakeEnv

from envs.errors import InvalidEnvKwargsError

#: Options that are probabilities wherever they appear (FrozenLake, Taxi).
_PROBABILITY_OPTIONS = frozenset({"success_rate", "rainy_probability", "fickle_probability"})
_FROZEN_LAKE_TILES = frozenset("SFHG")


def check_env_kwargs(env_id: str, spec: EnvSpec, env_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``env_kwargs`` for the environment ``spec`` registers; return them as a new dict.

    Raises ``InvalidEnvKwargsError`` (with ``key`` set to the offending option).
    """
    if not isinstance(env_kwargs, Mapping):
        raise InvalidEnvKwargsError(
            f"options for {env_id} must be a mapping of option name to value, got {env_kwargs!r}",
            env_id=env_id,
            key=None,
        )
    creator = _creator(spec)
    parameters, open_ended = _options_of(creator)
    checked: dict[str, Any] = {}
    for key, value in env_kwargs.items():
        if key == "render_mode":
            raise InvalidEnvKwargsError(
                f"{env_id}: render_mode is not an option here: tabular environments run headless; "
                "viewers draw from render_hint() and the observations",
                env_id=env_id,
                key=key,
            )
        if key not in parameters:
            if open_ended:
                checked[key] = value
                continue
            raise InvalidEnvKwargsError(_unknown_option_message(env_id, key, parameters), env_id=env_id, key=key)
        _check_type(env_id, key, value, parameters[key].default)
        _check_value(env_id, creator, key, value)
        checked[key] = value
    return checked


def _creator(spec: EnvSpec) -> Callable[..., Any]:
    entry_point = spec.entry_point
    return load_env_creator(entry_point) if isinstance(entry_point, str) else entry_point


def _options_of(creator: Callable[..., Any]) -> tuple[dict[str, inspect.Parameter], bool]:
    """Named keyword options of the constructor, and whether it also takes ``**kwargs``."""
    signature = inspect.signature(creator)
    options = {
        name: p
        for name, p in signature.parameters.items()
        if name not in ("self", "render_mode")
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
    return options, open_ended


def _unknown_option_message(env_id: str, key: str, parameters: Mapping[str, inspect.Parameter]) -> str:
    message = f"{env_id} has no option {key!r}"
    close = difflib.get_close_matches(key, list(parameters), n=1)
    if close:
        message += f"; did you mean {close[0]!r}?"
    allowed = ", ".join(parameters) or "none"
    return f"{message} (its options: {allowed})"


def _check_type(env_id: str, key: str, value: Any, default: Any) -> None:
    """The value must have the kind of the option's default (no default or None: unchecked)."""
    if default is inspect.Parameter.empty or default is None:
        return
    if isinstance(default, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        kind = "a finite number"
    elif isinstance(default, str):
        ok, kind = isinstance(value, str), "a string"
    elif isinstance(default, (tuple, list)):
        ok = isinstance(value, (tuple, list)) and len(value) == len(default)
        kind = f"a list of {len(default)} values like {list(default)}"
    else:
        return
    if not ok:
        raise InvalidEnvKwargsError(f"{env_id} option {key} must be {kind}, got {value!r}", env_id=env_id, key=key)


def _check_value(env_id: str, creator: Callable[..., Any], key: str, value: Any) -> None:
    problem = None
    if key in _PROBABILITY_OPTIONS and not 0.0 <= value <= 1.0:
        problem = f"must be a probability in [0, 1], got {value!r}"
    elif creator is FrozenLakeEnv and key == "map_name" and value not in FROZEN_LAKE_MAPS:
        problem = f"must be one of {sorted(FROZEN_LAKE_MAPS)}, got {value!r} (or give a custom map as desc)"
    elif creator is FrozenLakeEnv and key == "desc" and value is not None:
        problem = _frozen_lake_desc_problem(value)
    if problem:
        raise InvalidEnvKwargsError(f"{env_id} option {key} {problem}", env_id=env_id, key=key)


def _frozen_lake_desc_problem(desc: Any) -> str | None:
    example = "['SFFF', 'FHFH', 'FFFH', 'HFFG']"
    if not isinstance(desc, (list, tuple)) or not desc or not all(isinstance(row, str) for row in desc):
        return f"must be a list of row strings such as {example}, got {desc!r}"
    if len({len(row) for row in desc}) != 1 or not desc[0]:
        return f"rows must all have the same non-zero length, got {desc!r}"
    tiles = "".join(desc)
    if set(tiles) - _FROZEN_LAKE_TILES:
        return f"may only use the tiles S, F, H, G, got {desc!r}"
    if tiles.count("S") != 1 or "G" not in tiles:
        return f"needs exactly one start S and at least one goal G, got {desc!r}"
    return None
