"""Slippery FrozenLake-v1: seeded learning reaches the environment's reward threshold (0.70)
within a fixed budget, with the default hyperparameters, and the same seed gives the same table.

Why three checks. The best any policy can do on FrozenLake-v1 within its 100-step limit is a
success probability of 0.7402 (finite-horizon value iteration on the env's own model), barely
above the 0.70 threshold. So a 100-episode evaluation of even the optimal policy falls below 0.70
about 15% of the time, whatever the learner did (binomial: P(X >= 70 | n=100, p=0.7402) = 0.85).
The robust checks are therefore (1) the exact success probability of the learned greedy policy,
computed from the env's transition model, and (2) a 1,000-episode evaluation (standard error
0.014). (3) The issue's literal 100-episode evaluation is kept with evaluation seeds fixed by a
rule chosen beforehand (10,000 + training seed).

Measured with these defaults (alpha 0.3 decaying x0.999 per episode to 0.002, gamma 0.98,
epsilon 1.0 decaying x0.999 to 0.01) and 3,000 episodes: 120 of 120 training seeds learned a
greedy policy with exact success >= 0.728 (most the optimal 0.7402); about 1.1 s per run.
"""

from __future__ import annotations

import pytest

from agents.evaluation import evaluate_greedy, greedy_success_probability
from agents.qlearning import Hyperparameters, QLearner
from agents.training import train_plain
from envs import make_env

BUDGET = 3000
SEEDS = (0, 1, 2)

pytestmark = pytest.mark.timeout(120)


def _trained(seed: int) -> QLearner:
    env = make_env("FrozenLake-v1")
    learner = QLearner(env.n_states, env.n_actions, Hyperparameters(seed=seed))
    train_plain(env, learner, BUDGET, seed=seed)
    return learner


@pytest.fixture(scope="module")
def learners() -> dict[int, QLearner]:
    return {seed: _trained(seed) for seed in SEEDS}


@pytest.mark.parametrize("seed", SEEDS)
def test_learned_policy_reaches_the_reward_threshold(learners, seed):
    learner = learners[seed]
    env = make_env("FrozenLake-v1")
    assert env.reward_threshold == 0.70 and env.max_episode_steps == 100
    exact = greedy_success_probability(learner, env)
    assert exact >= 0.72, f"seed {seed}: greedy policy succeeds with probability {exact:.4f}"
    long_run = evaluate_greedy(learner, make_env("FrozenLake-v1"), 1000, seed=20_000 + seed)
    assert long_run.mean_return >= env.reward_threshold
    issue_check = evaluate_greedy(learner, make_env("FrozenLake-v1"), 100, seed=10_000 + seed)
    assert issue_check.mean_return >= env.reward_threshold
    assert issue_check.success_rate == issue_check.mean_return  # reward 1 exactly on success


def test_same_seed_gives_the_same_q_table_bit_for_bit(learners):
    again = _trained(SEEDS[0])
    assert again.q.tobytes() == learners[SEEDS[0]].q.tobytes()
    assert (again.epsilon, again.alpha, again.episodes) == (
        learners[SEEDS[0]].epsilon,
        learners[SEEDS[0]].alpha,
        learners[SEEDS[0]].episodes,
    )
    assert learners[SEEDS[0]].q.tobytes() != learners[SEEDS[1]].q.tobytes()
