"""The Q-learner: update rule, exploration, epsilon decay, determinism, save/load, learning."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agents.evaluation import evaluate_greedy, greedy_success_probability
from agents.qlearning import (
    Q_TABLE_FORMAT,
    HyperparameterError,
    Hyperparameters,
    QLearner,
    QTableFormatError,
)
from agents.training import train_plain, train_plain_counted
from envs import make_env

pytestmark = pytest.mark.timeout(120)


def test_td_update_does_not_bootstrap_on_termination_but_does_on_truncation():
    hp = Hyperparameters(alpha=0.5, gamma=0.9)
    learner = QLearner(3, 2, hp)
    learner.q[2] = [4.0, 10.0]
    # terminated: target is the reward alone
    td = learner.learn(0, 1, 1.0, 2, terminated=True)
    assert td == 1.0 and learner.q[0, 1] == 0.5
    # truncated (time limit), i.e. not terminated: target bootstraps from max Q[s2] = 10
    td = learner.learn(1, 0, 1.0, 2, terminated=False)
    assert td == pytest.approx(1.0 + 0.9 * 10.0)
    assert learner.q[1, 0] == pytest.approx(0.5 * (1.0 + 9.0))


def test_greedy_action_breaks_ties_by_lowest_index_without_using_the_rng():
    learner = QLearner(2, 4, Hyperparameters(epsilon_start=0.0, epsilon_min=0.0))
    learner.q[0] = [0.0, 3.0, 3.0, 1.0]
    state_before = learner._rng.bit_generator.state
    assert learner.greedy_action(0) == 1
    assert learner.choose(0, greedy=True) == 1
    assert learner.policy() == [1, 0]
    assert learner._rng.bit_generator.state == state_before


def test_learning_choice_breaks_ties_uniformly_with_the_seeded_rng():
    learner = QLearner(1, 4, Hyperparameters(epsilon_start=0.0, epsilon_min=0.0, seed=5))
    learner.q[0] = [0.0, 2.0, 2.0, 2.0]
    picks = [learner.choose(0) for _ in range(3000)]
    counts = np.bincount(picks, minlength=4)
    assert counts[0] == 0 and all(900 < c < 1100 for c in counts[1:])
    again = QLearner(1, 4, Hyperparameters(epsilon_start=0.0, epsilon_min=0.0, seed=5))
    again.q[0] = [0.0, 2.0, 2.0, 2.0]
    assert [again.choose(0) for _ in range(3000)] == picks


def test_epsilon_greedy_explores_at_rate_epsilon():
    learner = QLearner(1, 4, Hyperparameters(epsilon_start=0.4, epsilon_min=0.4, epsilon_decay=1.0, seed=1))
    learner.q[0] = [0.0, 0.0, 9.0, 0.0]
    picks = np.array([learner.choose(0) for _ in range(20000)])
    # greedy 2 with probability 0.6 + 0.4/4; each other action 0.1
    assert abs((picks == 2).mean() - 0.7) < 0.02
    assert abs((picks == 0).mean() - 0.1) < 0.02


def test_epsilon_decays_multiplicatively_per_episode_and_stops_at_the_floor():
    hp = Hyperparameters(epsilon_start=1.0, epsilon_min=0.2, epsilon_decay=0.5)
    learner = QLearner(4, 2, hp)
    assert learner.epsilon == 1.0
    seen = [learner.end_episode() for _ in range(6)]
    assert seen == [0.5, 0.25, 0.2, 0.2, 0.2, 0.2]
    assert learner.episodes == 6
    # and in a real training loop
    env = make_env("FrozenLake-v1")
    learner = QLearner(env.n_states, env.n_actions, Hyperparameters(epsilon_decay=0.99, epsilon_min=0.05))
    train_plain(env, learner, 100, seed=0)
    assert learner.epsilon == pytest.approx(0.99**100)
    train_plain(env, learner, 300)
    assert learner.epsilon == 0.05


def test_alpha_decays_per_episode_to_its_floor_and_constant_alpha_stays():
    learner = QLearner(2, 2, Hyperparameters(alpha=0.4, alpha_decay=0.5, alpha_min=0.06))
    assert learner.alpha == 0.4
    for expected in (0.2, 0.1, 0.06, 0.06):
        learner.end_episode()
        assert learner.alpha == expected
    learner.learn(0, 0, 1.0, 1, terminated=True)
    assert learner.q[0, 0] == 0.06  # the update used the decayed step size
    constant = QLearner(2, 2, Hyperparameters(alpha=0.3, alpha_decay=1.0))
    for _ in range(50):
        constant.end_episode()
    assert constant.alpha == 0.3


@pytest.mark.parametrize(
    "field, value, allowed",
    [
        ("alpha", 0.0, "in (0, 1]"),
        ("alpha", 1.5, "in (0, 1]"),
        ("gamma", -0.1, "in [0, 1]"),
        ("epsilon_start", 2, "in [0, 1]"),
        ("epsilon_min", 0.9, "in [0, epsilon_start]"),
        ("epsilon_decay", 0.0, "in (0, 1]"),
        ("epsilon_decay", float("nan"), "in (0, 1]"),
        ("seed", -1, "an integer >= 0"),
        ("seed", 1.5, "an integer >= 0"),
        ("alpha", True, "in (0, 1]"),
        ("alpha_min", 0.3, "in [0, alpha] = [0, 0.2]"),
        ("alpha_decay", 1.01, "in (0, 1]"),
    ],
)
def test_hyperparameter_errors_name_field_value_and_range(field, value, allowed):
    base = {"epsilon_start": 0.5, "epsilon_min": 0.1} if field == "epsilon_min" else {}
    base = {"alpha": 0.2} if field == "alpha_min" else base
    with pytest.raises(HyperparameterError) as caught:
        Hyperparameters(**{**base, field: value})
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field} must be {allowed}")
    assert repr(value) in str(caught.value)


def test_non_slippery_frozen_lake_is_learned_to_greedy_success_one():
    env = make_env("FrozenLake-v1", is_slippery=False)
    learner = QLearner(env.n_states, env.n_actions, Hyperparameters(seed=0))
    train_plain(env, learner, 300, seed=0)
    result = evaluate_greedy(learner, make_env("FrozenLake-v1", is_slippery=False), 20, seed=1)
    assert result.success_rate == 1.0 and result.mean_return == 1.0
    assert result.lengths == [6] * 20  # the shortest path
    assert greedy_success_probability(learner, env) == 1.0


def test_same_seed_gives_the_same_q_table_bit_for_bit_and_another_seed_does_not():
    def learned(seed: int) -> QLearner:
        env = make_env("FrozenLake-v1")
        learner = QLearner(env.n_states, env.n_actions, Hyperparameters(seed=seed))
        train_plain(env, learner, 400, seed=seed)
        return learner

    a, b, c = learned(7), learned(7), learned(8)
    assert a.q.tobytes() == b.q.tobytes() and a.epsilon == b.epsilon
    assert a.q.tobytes() != c.q.tobytes()


def test_learner_rng_is_independent_of_an_env_seeded_with_the_same_number():
    env = make_env("FrozenLake-v1")
    env.reset(seed=3)
    learner = QLearner(16, 4, Hyperparameters(seed=3))
    env_draws = env.gym_env.unwrapped.np_random.random(5)
    learner_draws = learner._rng.random(5)
    assert not np.allclose(env_draws, learner_draws)


def test_train_plain_stops_at_max_steps_and_counts_steps():
    env = make_env("CliffWalking-v1")
    learner = QLearner(env.n_states, env.n_actions, Hyperparameters(seed=0))
    run = train_plain_counted(env, learner, 5, max_steps=20, seed=0)
    assert len(run.returns) == 5 and all(n <= 20 for n in run.lengths) and run.steps == sum(run.lengths)
    assert learner.episodes == 5


def test_evaluation_is_reproducible_and_reports_lengths():
    env = make_env("FrozenLake-v1")
    learner = QLearner(env.n_states, env.n_actions, Hyperparameters(seed=0))
    train_plain(env, learner, 500, seed=0)
    first = evaluate_greedy(learner, make_env("FrozenLake-v1"), 30, seed=99)
    second = evaluate_greedy(learner, make_env("FrozenLake-v1"), 30, seed=99)
    assert first == second
    assert first.episodes == 30 and len(first.lengths) == 30 and all(1 <= n <= 100 for n in first.lengths)
    assert first.success_rate == pytest.approx(sum(first.successes) / 30)
    assert first.mean_return == pytest.approx(np.mean(first.returns))


def test_save_load_round_trip_is_exact(tmp_path):
    env = make_env("FrozenLake-v1")
    learner = QLearner(env.n_states, env.n_actions, Hyperparameters(alpha=0.3, seed=4))
    train_plain(env, learner, 200, seed=4)
    path = learner.save(tmp_path / "policies" / "a.json", {"env": "FrozenLake-v1", "agent": "a1", "note": "x"})
    document = json.loads(path.read_text())
    assert document["format"] == Q_TABLE_FORMAT
    assert document["metadata"]["env"] == "FrozenLake-v1" and document["metadata"]["agent"] == "a1"
    assert document["metadata"]["episodes"] == 200
    assert document["metadata"]["hyperparameters"] == learner.hp.to_dict()
    loaded = QLearner.load(path, n_states=16, n_actions=4)
    assert loaded.q.tobytes() == learner.q.tobytes()
    assert loaded.hp == learner.hp and loaded.epsilon == learner.epsilon and loaded.episodes == 200
    assert loaded.alpha == learner.alpha < learner.hp.alpha
    assert loaded.metadata["note"] == "x"
    assert not list(tmp_path.glob("policies/*.partial"))


def test_to_json_requires_env_and_agent():
    with pytest.raises(ValueError, match="needs env and agent"):
        QLearner(2, 2).to_json({})


def _document() -> dict:
    return QLearner(3, 2).to_json({"env": "X-v0", "agent": "a"})


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda d: d.update(format="q_table/v0"), "expected \"format\": \"q_table/v1\", got 'q_table/v0'"),
        (lambda d: d.pop("format"), "got None"),
        (lambda d: d.update(q=[[0.0, 0.0], [0.0]]), "same non-zero length"),
        (lambda d: d.update(q=[[0.0, "a"]] * 3), "only numbers, found 'a'"),
        (lambda d: d.update(q=[[0.0, "1.5"]] * 3), "only numbers, found '1.5'"),
        (lambda d: d.update(q=[[0.0, True]] * 3), "only numbers, found True"),
        (lambda d: d.update(n_states=4), "declares n_states x n_actions = 4x2"),
        (lambda d: d["metadata"]["hyperparameters"].update(alpha=7), "alpha must be in (0, 1]"),
        (lambda d: d["metadata"].pop("hyperparameters"), "metadata.hyperparameters"),
    ],
)
def test_loading_a_bad_document_is_a_clear_error(mutate, fragment):
    document = _document()
    mutate(document)
    with pytest.raises(QTableFormatError) as caught:
        QLearner.from_json(document)
    assert fragment in str(caught.value)


def test_loading_a_table_for_another_environment_is_refused(tmp_path):
    path = QLearner(16, 4).save(tmp_path / "lake.json", {"env": "FrozenLake-v1", "agent": "a"})
    with pytest.raises(QTableFormatError) as caught:
        QLearner.load(path, n_states=64, n_actions=4)
    assert str(path) in str(caught.value) and "16 states x 4 actions" in str(caught.value)
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(QTableFormatError, match="junk.json is not a JSON Q-table"):
        QLearner.load(tmp_path / "junk.json")
    with pytest.raises(QTableFormatError, match="cannot read Q-table"):
        QLearner.load(tmp_path / "missing.json")
