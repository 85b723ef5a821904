"""envs: every tested environment makes and steps; encoders are bijective; errors are clear."""

from __future__ import annotations

import itertools
import json

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from envs import (
    DEFAULT_STEP_LIMIT,
    InvalidEnvKwargsError,
    UnsupportedEnvironmentError,
    check_env,
    encoder_for,
    make_env,
)
from envs.encoders import MAX_TABULAR_STATES, UnsupportedSpaceError

pytestmark = pytest.mark.timeout(60)

# (env_id, kwargs, n_states, n_actions, reward_threshold, max_episode_steps)
TABULAR_ENVS = [
    ("FrozenLake-v1", {}, 16, 4, 0.70, 100),
    ("FrozenLake-v1", {"is_slippery": False}, 16, 4, 0.70, 100),
    ("FrozenLake-v1", {"map_name": "8x8"}, 64, 4, 0.70, 100),
    ("FrozenLake-v1", {"map_name": "8x8", "is_slippery": False}, 64, 4, 0.70, 100),
    ("FrozenLake8x8-v1", {}, 64, 4, 0.85, 200),
    ("FrozenLake8x8-v1", {"is_slippery": False}, 64, 4, 0.85, 200),
    ("CliffWalking-v1", {}, 48, 4, None, None),
    ("CliffWalkingSlippery-v1", {}, 48, 4, None, None),
    ("Taxi-v3", {}, 500, 6, 8.0, 200),
    ("Taxi-v4", {"is_rainy": True}, 500, 6, 8.0, 200),
    ("Blackjack-v1", {}, 32 * 11 * 2, 2, None, None),
    ("Blackjack-v1", {"natural": True, "sab": False}, 32 * 11 * 2, 2, None, None),
]


@pytest.mark.parametrize("env_id, kwargs, n_states, n_actions, threshold, limit", TABULAR_ENVS)
def test_each_env_makes_steps_and_reports_its_spec(env_id, kwargs, n_states, n_actions, threshold, limit):
    with make_env(env_id, **kwargs) as env:
        assert (env.env_id, env.n_states, env.n_actions) == (env_id, n_states, n_actions)
        assert env.reward_threshold == threshold
        assert env.max_episode_steps == limit
        state, info = env.reset(seed=3)
        assert 0 <= state < n_states and isinstance(info, dict)
        json.dumps(env.observation)  # raw observation is JSON-serialisable
        rng = np.random.default_rng(0)
        for _ in range(300):
            state, reward, terminated, truncated, _ = env.step(int(rng.integers(n_actions)))
            assert isinstance(state, int) and 0 <= state < n_states
            assert isinstance(reward, float) and isinstance(terminated, bool) and isinstance(truncated, bool)
            assert env.encoder.encode(env.encoder.decode(state)) == state
            json.dumps(env.observation)
            if terminated or truncated:
                state, _ = env.reset()


def test_taxi_v3_is_an_alias_for_the_registered_taxi_v4():
    env = make_env("Taxi-v3")
    assert env.env_id == "Taxi-v3" and env.gym_id == "Taxi-v4"
    assert "Taxi-v3" not in gym.registry  # why the alias exists


def test_same_seed_replays_the_same_trajectory_and_action_space_is_seeded():
    def trajectory():
        env = make_env("FrozenLake-v1")
        states = [env.reset(seed=11)[0]]
        sampled = [int(env.action_space.sample()) for _ in range(5)]
        for action in [1, 2, 2, 1, 2, 1, 1, 2] * 5:
            state, _, terminated, truncated, _ = env.step(action)
            states.append(state)
            if terminated or truncated:
                states.append(env.reset()[0])
        return states, sampled

    assert trajectory() == trajectory()


def test_frozen_lake_truncates_at_its_time_limit_and_max_episode_steps_overrides_it():
    env = make_env("FrozenLake-v1", is_slippery=False)
    env.reset(seed=0)
    for step in range(1, 101):
        _, _, terminated, truncated, _ = env.step(0)  # LEFT into the wall forever
        assert not terminated
        assert truncated == (step == 100)
    short = make_env("CliffWalking-v1", max_episode_steps=7)
    assert short.max_episode_steps == 7 and short.step_limit() == 7
    short.reset(seed=0)
    assert [short.step(0)[3] for _ in range(7)] == [False] * 6 + [True]
    assert make_env("CliffWalking-v1").step_limit() == DEFAULT_STEP_LIMIT
    assert make_env("CliffWalking-v1").step_limit(50) == 50


def test_success_rule_per_environment():
    lake = make_env("FrozenLake-v1", is_slippery=False)
    lake.reset(seed=0)
    path = [2, 2, 1, 1, 1, 2]  # right, right, down, down, down, right: the goal
    for action in path:
        _, reward, terminated, _, _ = lake.step(action)
    assert terminated and reward == 1.0 and lake.is_success(reward, terminated)
    assert not lake.is_success(0.0, True)  # a hole
    cliff = make_env("CliffWalking-v1")
    cliff.reset(seed=0)
    for action in [0] + [1] * 11 + [2]:  # up, along row 2, down onto the goal
        _, reward, terminated, _, _ = cliff.step(action)
    assert terminated and reward == -1.0 and cliff.is_success(reward, terminated)
    assert not cliff.is_success(-1.0, False)
    blackjack = make_env("Blackjack-v1")
    assert blackjack.is_success(1.0, True) and not blackjack.is_success(0.0, True)


def test_render_hints_come_from_the_env_itself():
    assert make_env("FrozenLake-v1").render_hint() == {
        "kind": "grid",
        "rows": 4,
        "cols": 4,
        "desc": ["SFFF", "FHFH", "FFFH", "HFFG"],
        "legend": {"S": "start", "F": "frozen", "H": "hole", "G": "goal"},
        "state": "row * cols + col",
    }
    custom = make_env("FrozenLake-v1", desc=["SH", "FG"]).render_hint()
    assert custom["desc"] == ["SH", "FG"] and (custom["rows"], custom["cols"]) == (2, 2)
    eight = make_env("FrozenLake8x8-v1").render_hint()
    assert (eight["rows"], eight["cols"]) == (8, 8) and eight["desc"][-1] == "FFFHFFFG"
    cliff = make_env("CliffWalking-v1").render_hint()
    assert (cliff["rows"], cliff["cols"]) == (4, 12)
    assert cliff["desc"][3] == "S" + "C" * 10 + "G" and cliff["desc"][0] == "." * 12
    taxi = make_env("Taxi-v3").render_hint()
    assert (taxi["rows"], taxi["cols"]) == (5, 5)
    assert taxi["desc"] == ["R...G", ".....", ".....", ".....", "Y..B."]
    assert taxi["walls"][1] == "|R: | : :G|"
    assert make_env("Blackjack-v1").render_hint() == {}
    for env_id in ("FrozenLake-v1", "CliffWalking-v1", "Taxi-v3"):
        json.dumps(make_env(env_id).render_hint())


def test_blackjack_encoder_is_a_bijection_onto_range_n_states():
    env = make_env("Blackjack-v1")
    space = env.observation_space
    observations = list(itertools.product(*(range(s.start, s.start + s.n) for s in space.spaces)))
    indices = [env.encoder.encode(o) for o in observations]
    assert sorted(indices) == list(range(env.n_states))
    assert all(env.encoder.decode(i) == o for i, o in zip(indices, observations))


def test_multidiscrete_and_offset_discrete_encoders_are_bijections():
    md = encoder_for(spaces.MultiDiscrete([3, 2, 4], start=[1, -2, 0]))
    obs = [np.array(v) for v in itertools.product(range(1, 4), range(-2, 0), range(0, 4))]
    assert sorted(md.encode(o) for o in obs) == list(range(24))
    assert all(np.array_equal(md.decode(md.encode(o)), o) for o in obs)
    grid = encoder_for(spaces.MultiDiscrete([[2, 3], [2, 2]]))
    assert grid.n_states == 24
    sample = np.array([[1, 2], [0, 1]])
    assert np.array_equal(grid.decode(grid.encode(sample)), sample)
    assert grid.to_json(sample) == [[1, 2], [0, 1]]
    shifted = encoder_for(spaces.Discrete(5, start=-2))
    assert [shifted.encode(v) for v in range(-2, 3)] == list(range(5))
    assert shifted.decode(0) == -2


def test_unsupported_spaces_say_why():
    with pytest.raises(UnsupportedSpaceError, match="Box observations"):
        encoder_for(spaces.Box(0, 1, (2,)))
    with pytest.raises(UnsupportedSpaceError, match="component 1 is Box"):
        encoder_for(spaces.Tuple((spaces.Discrete(2), spaces.Box(0, 1, (1,)))))
    with pytest.raises(UnsupportedSpaceError, match=str(MAX_TABULAR_STATES)):
        encoder_for(spaces.MultiDiscrete([1000, 1000, 2]))


def test_unknown_id_names_it_and_suggests_close_matches():
    with pytest.raises(UnsupportedEnvironmentError) as caught:
        make_env("Frozenlake-v1")
    message = str(caught.value)
    assert "'Frozenlake-v1'" in message and "Did you mean 'FrozenLake-v1'" in message
    assert caught.value.env_id == "Frozenlake-v1"
    with pytest.raises(UnsupportedEnvironmentError, match="'FrozenLake-v1'"):
        make_env("FrozenLake-v0")
    with pytest.raises(UnsupportedEnvironmentError, match="'CliffWalking-v1'"):
        make_env("CliffWalking-v0")
    with pytest.raises(UnsupportedEnvironmentError, match="non-empty string"):
        make_env("")


def test_cartpole_is_refused_naming_env_spaces_and_reason():
    with pytest.raises(UnsupportedEnvironmentError) as caught:
        make_env("CartPole-v1")
    message = str(caught.value)
    assert "CartPole-v1" in message
    assert "observation space Box(shape=(4,), dtype=float32)" in message
    assert "action space Discrete(2)" in message
    assert "no finite set of states" in message


@pytest.mark.parametrize(
    "kwargs, key, fragment",
    [
        ({"slippery": False}, "slippery", "did you mean 'is_slippery'"),
        ({"is_slippery": "no"}, "is_slippery", "must be true or false, got 'no'"),
        ({"map_name": "5x5"}, "map_name", "must be one of ['4x4', '8x8'], got '5x5'"),
        ({"success_rate": 1.5}, "success_rate", "probability in [0, 1], got 1.5"),
        ({"desc": ["SFX", "FFG"]}, "desc", "tiles S, F, H, G"),
        ({"desc": ["SF", "FFG"]}, "desc", "same non-zero length"),
        ({"render_mode": "human"}, "render_mode", "headless"),
    ],
)
def test_invalid_env_kwargs_are_clear(kwargs, key, fragment):
    with pytest.raises(InvalidEnvKwargsError) as caught:
        make_env("FrozenLake-v1", **kwargs)
    assert caught.value.key == key
    assert "FrozenLake-v1" in str(caught.value) and fragment in str(caught.value)
    with pytest.raises(InvalidEnvKwargsError):
        check_env("FrozenLake-v1", kwargs)  # the config-time check agrees, without building


def test_invalid_taxi_and_max_episode_steps_options():
    with pytest.raises(InvalidEnvKwargsError, match="rainy_probability must be a probability"):
        make_env("Taxi-v3", rainy_probability=2)
    with pytest.raises(InvalidEnvKwargsError, match="max_episode_steps must be a positive integer"):
        make_env("FrozenLake-v1", max_episode_steps=0)


def test_out_of_range_action_is_a_clear_error():
    env = make_env("FrozenLake-v1")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action 4 is outside range\(4\)"):
        env.step(4)
