"""Greedy evaluation of a Q-learner: how good is the policy it has learned?

``evaluate_greedy`` plays ``episodes`` episodes with the greedy action (no exploration, no
learning) and reports the mean return, the success rate and the episode lengths. Success follows
the environment's own rule (``TabularEnv.is_success``: a positive terminal reward, except
CliffWalking where reaching the terminal goal is success; see ``envs.tabular``).

The environment is reset with ``seed`` once, before the first episode, and continues its stream
after that (Gymnasium semantics), so one seed fixes all episodes. Evaluating re-seeds the env:
use a separate environment from the one being trained on if training continues afterwards.

For environments that publish their transition model (the toy-text ones: ``P[s][a]``),
``greedy_success_probability`` computes the exact probability that the greedy policy succeeds
within the step limit, with no sampling noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from agents.qlearning import QLearner
from envs import TabularEnv


@dataclass(frozen=True)
class EvaluationResult:
    """``mean_return`` (CleanRL's mean ``episodic_return``), ``success_rate`` in [0, 1], and per
    episode ``returns``, ``lengths`` (steps) and ``successes``."""

    mean_return: float
    success_rate: float
    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    successes: list[bool] = field(default_factory=list)

    @property
    def episodes(self) -> int:
        return len(self.returns)


def evaluate_greedy(
    learner: QLearner, env: TabularEnv, episodes: int, seed: int | None, *, max_steps: int | None = None
) -> EvaluationResult:
    """Play ``episodes`` greedy episodes; ``max_steps`` defaults to ``env.step_limit()``."""
    if episodes < 1:
        raise ValueError(f"evaluation needs at least one episode, got {episodes}")
    limit = env.step_limit(max_steps)
    greedy, step, is_success = learner.greedy_action, env.step, env.is_success
    returns: list[float] = []
    lengths: list[int] = []
    successes: list[bool] = []
    for episode in range(episodes):
        state, _ = env.reset(seed=seed if episode == 0 else None)
        total, steps, success = 0.0, 0, False
        while steps < limit:
            state, reward, terminated, truncated, _ = step(greedy(state))
            total += reward
            steps += 1
            if terminated or truncated:
                success = is_success(reward, terminated)
                break
        returns.append(total)
        lengths.append(steps)
        successes.append(success)
    return EvaluationResult(
        mean_return=float(np.mean(returns)),
        success_rate=float(np.mean(successes)),
        returns=returns,
        lengths=lengths,
        successes=successes,
    )


def greedy_success_probability(learner: QLearner, env: TabularEnv, *, max_steps: int | None = None) -> float:
    """Exact probability that the greedy policy succeeds within the step limit, from ``env``'s
    transition model ``P[s][a] = [(probability, next_state, reward, terminated), ...]``.

    Only for Discrete-observation environments that expose ``P`` (FrozenLake, CliffWalking, Taxi);
    the start distribution is the env's ``initial_state_distrib``.
    """
    core = env.gym_env.unwrapped
    model = getattr(core, "P", None)
    start = getattr(core, "initial_state_distrib", None)
    if model is None or start is None:
        raise ValueError(f"{env.env_id} publishes no transition model (P); use evaluate_greedy instead")
    policy = learner.policy()
    # success[s] = probability of succeeding from s with the remaining steps; iterate the horizon.
    success = np.zeros(env.n_states)
    for _ in range(env.step_limit(max_steps)):
        success = np.array(
            [
                sum(
                    p * (1.0 if env.is_success(float(r), bool(t)) else 0.0 if t else success[s2])
                    for p, s2, r, t in model[s][policy[s]]
                )
                for s in range(env.n_states)
            ]
        )
    return float(np.dot(np.asarray(start, dtype=np.float64), success))
