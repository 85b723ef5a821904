"""The plain-Python Q-learning loop: the baseline the AgentSpeak-driven agents are measured
against, and the quickest way to train a learner in tests.

It calls exactly what an agent's actions call (``learner.choose``, ``env.step``,
``learner.learn``, ``learner.end_episode``) with nothing around them, so the ratio between an
agent's steps/s and this loop's is the cost of driving learning through AgentSpeak.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agents.config import AgentConfig
from agents.qlearning import QLearner
from envs import TabularEnv, make_env


@dataclass(frozen=True)
class PlainRun:
    """What ``train_plain_counted`` did: per-episode returns and lengths, and total steps."""

    returns: list[float]
    lengths: list[int]

    @property
    def steps(self) -> int:
        return sum(self.lengths)


@dataclass(frozen=True)
class TrainedAgent:
    """``train_from_config``'s result: the config, the trained learner and what training did."""

    config: AgentConfig
    learner: QLearner
    returns: list[float]
    lengths: list[int]

    @property
    def q(self) -> np.ndarray:
        return self.learner.q


def build_env(config: AgentConfig) -> TabularEnv:
    """The agent's environment: ``env_id`` with ``env_kwargs``; ``max_steps_per_episode`` (when
    set) becomes the environment's time limit, so reaching it is a real truncation."""
    return make_env(config.env_id, max_episode_steps=config.max_steps_per_episode, **config.env_kwargs)


def build_learner(config: AgentConfig, env: TabularEnv) -> QLearner:
    """A fresh Q-learner sized for ``env`` with the config's hyperparameters (seed included)."""
    return QLearner(env.n_states, env.n_actions, config.hyperparameters)


def train_from_config(config: AgentConfig) -> TrainedAgent:
    """Train one agent's config in the plain loop: ``episodes`` episodes, env seeded with ``seed``."""
    env = build_env(config)
    try:
        learner = build_learner(config, env)
        run = train_plain_counted(env, learner, config.episodes, seed=config.seed)
    finally:
        env.close()
    return TrainedAgent(config, learner, run.returns, run.lengths)


def train_plain(
    env: TabularEnv, learner: QLearner, episodes: int, max_steps: int | None = None, *, seed: int | None = None
) -> list[float]:
    """Train ``learner`` on ``env`` for ``episodes`` episodes; returns each episode's return.

    ``max_steps`` caps each episode (default ``env.step_limit()``): hitting it ends the episode
    like a truncation, so the last update bootstraps. ``seed`` seeds the first ``reset`` (later
    resets continue the env's stream); ``None`` leaves the env's RNG as it is.
    """
    return train_plain_counted(env, learner, episodes, max_steps, seed=seed).returns


def train_plain_counted(
    env: TabularEnv, learner: QLearner, episodes: int, max_steps: int | None = None, *, seed: int | None = None
) -> PlainRun:
    """``train_plain`` that also reports episode lengths (benchmarks divide steps by time)."""
    limit = env.step_limit(max_steps)
    choose, learn, end_episode = learner.choose, learner.learn, learner.end_episode
    step, reset = env.step, env.reset
    returns: list[float] = []
    lengths: list[int] = []
    state, _ = reset(seed=seed)
    for episode in range(episodes):
        if episode:
            state, _ = reset()
        total = 0.0
        steps = 0
        while steps < limit:
            action = choose(state)
            next_state, reward, terminated, truncated, _ = step(action)
            learn(state, action, reward, next_state, terminated)
            total += reward
            steps += 1
            if terminated or truncated:
                break
            state = next_state
        end_episode()
        returns.append(total)
        lengths.append(steps)
    return PlainRun(returns, lengths)
