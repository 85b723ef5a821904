"""``make_env``: a Gymnasium environment seen as a table of states and actions.

``TabularEnv`` keeps Gymnasium's contract (``reset(seed)`` then ``step(action)`` returning
``terminated`` and ``truncated`` separately) but speaks in state indices: the Q-learner indexes
its table with what ``reset`` and ``step`` return, while the raw observation stays available as
JSON for telemetry (``observation``).

Seeding follows Gymnasium: ``reset(seed=s)`` re-seeds the environment's RNG, ``reset()`` continues
the stream, so one seeded reset at the start of a run makes every later episode reproducible.
Gymnasium does not seed the action space in ``reset``; we do, with the same seed, so anything
sampling ``action_space`` is reproducible too. The Q-learner never samples it: exploration draws
from the learner's own generator (``agents.qlearning``).

Success, per environment (``is_success``, used by evaluation and the agents' success rate):

- default, which covers FrozenLake, Taxi and Blackjack: the episode terminated with a positive
  reward. FrozenLake pays 1 at the goal and 0 in a hole; Taxi pays +20 for a correct drop-off;
  Blackjack pays +1 (or +1.5 for a natural with ``natural=True``) for a win, 0 for a draw and -1
  for a loss.
- CliffWalking: the episode terminated. Its only terminal cell is the goal and every step pays -1
  (the cliff pays -100 and sends the walker back to the start without ending the episode), so a
  positive-reward rule would never count a success.
"""

from __future__ import annotations

import logging
from typing import Any

import gymnasium as gym
from gymnasium import spaces
from gymnasium.envs.registration import EnvSpec
from gymnasium.envs.toy_text.cliffwalking import CliffWalkingEnv

from envs.encoders import ObservationEncoder, UnsupportedSpaceError, encoder_for
from envs.env_kwargs import check_env_kwargs
from envs.errors import InvalidEnvKwargsError, UnsupportedEnvironmentError
from envs.ids import ALIASES, resolve_env_spec
from envs.render_hints import render_hint_for

log = logging.getLogger(__name__)

#: Step cap for loops over environments registered without a time limit (CliffWalking, Blackjack)
#: when the caller gives none: a greedy policy that walks into a wall would otherwise never end.
DEFAULT_STEP_LIMIT = 1000

SUCCESS_POSITIVE_TERMINAL = "terminated with a positive reward"
SUCCESS_TERMINATED = "terminated (the only terminal state is the goal)"


class TabularEnv:
    """A Gymnasium environment with a finite state index and ``Discrete`` actions.

    Attributes: ``env_id`` (as requested), ``gym_id`` (as registered; differs for aliases),
    ``n_states``, ``n_actions``, ``reward_threshold`` and ``max_episode_steps`` (from the
    registration spec; ``max_episode_steps`` is the time limit in force, which ``make_env`` may
    override), ``success_rule`` (a sentence), ``gym_env`` (the wrapped Gymnasium env).
    """

    def __init__(
        self,
        env_id: str,
        gym_env: gym.Env,
        encoder: ObservationEncoder,
        *,
        max_episode_steps: int | None,
    ) -> None:
        spec = gym_env.spec
        self.env_id = env_id
        self.gym_id = spec.id if spec is not None else env_id
        self.gym_env = gym_env
        self.encoder = encoder
        self.n_states = encoder.n_states
        action_space = gym_env.action_space
        assert isinstance(action_space, spaces.Discrete)
        self.n_actions = int(action_space.n)
        self._action_start = int(action_space.start)
        reward_threshold = spec.reward_threshold if spec is not None else None
        self.reward_threshold: float | None = None if reward_threshold is None else float(reward_threshold)
        self.max_episode_steps = max_episode_steps
        self._success_on_termination = isinstance(gym_env.unwrapped, CliffWalkingEnv)
        self.success_rule = SUCCESS_TERMINATED if self._success_on_termination else SUCCESS_POSITIVE_TERMINAL
        self._encode = encoder.encode
        self._step = gym_env.step
        self._raw_observation: Any = None

    @property
    def observation_space(self) -> spaces.Space:
        return self.gym_env.observation_space

    @property
    def action_space(self) -> spaces.Discrete:
        return self.gym_env.action_space  # type: ignore[return-value]

    @property
    def observation(self) -> Any:
        """The last raw observation as JSON values (int, or list of ints); None before reset."""
        if self._raw_observation is None:
            return None
        return self.encoder.to_json(self._raw_observation)

    def reset(self, seed: int | None = None) -> tuple[int, dict[str, Any]]:
        """Start an episode; ``seed`` re-seeds the env's RNG and its action space."""
        if seed is not None:
            self.gym_env.action_space.seed(seed)
        observation, info = self.gym_env.reset(seed=seed)
        self._raw_observation = observation
        return self._encode(observation), info

    def step(self, action: int) -> tuple[int, float, bool, bool, dict[str, Any]]:
        """Take ``action`` (an index in ``range(n_actions)``).

        Returns ``(state, reward, terminated, truncated, info)``: ``terminated`` means a terminal
        state (do not bootstrap), ``truncated`` means the time limit cut the episode (bootstrap).
        """
        if not 0 <= action < self.n_actions:
            raise ValueError(f"{self.env_id}: action {action!r} is outside range({self.n_actions})")
        observation, reward, terminated, truncated, info = self._step(action + self._action_start)
        self._raw_observation = observation
        return self._encode(observation), float(reward), bool(terminated), bool(truncated), info

    def is_success(self, reward: float, terminated: bool) -> bool:
        """Whether a step that ended the episode with ``reward`` counts as a success."""
        if not terminated:
            return False
        return self._success_on_termination or reward > 0

    def step_limit(self, requested: int | None = None) -> int:
        """Steps a loop should allow per episode: ``requested``, else the time limit, else 1000."""
        if requested is not None:
            return requested
        return self.max_episode_steps if self.max_episode_steps is not None else DEFAULT_STEP_LIMIT

    def render_hint(self) -> dict[str, Any]:
        """How to draw the board: ``{"kind": "grid", "rows", "cols", "desc", ...}`` or ``{}``."""
        return render_hint_for(self.gym_env)

    def close(self) -> None:
        self.gym_env.close()

    def __enter__(self) -> TabularEnv:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TabularEnv({self.env_id!r}, n_states={self.n_states}, n_actions={self.n_actions})"


def check_env(env_id: str, env_kwargs: dict[str, Any] | None = None) -> EnvSpec:
    """Validate an id and its options without building the environment (cheap; for configs)."""
    spec = resolve_env_spec(env_id)
    check_env_kwargs(env_id, spec, env_kwargs or {})
    return spec


def make_env(env_id: str, *, max_episode_steps: int | None = None, **env_kwargs: Any) -> TabularEnv:
    """Build ``env_id`` with ``env_kwargs`` and check it can be learned with a Q-table.

    ``max_episode_steps`` overrides the registered time limit (Gymnasium's ``TimeLimit``, so
    hitting it sets ``truncated``). Raises ``UnsupportedEnvironmentError`` for an unknown id or
    spaces that are not tabular (the message names the environment and both spaces), and
    ``InvalidEnvKwargsError`` for a bad option.
    """
    spec = resolve_env_spec(env_id)
    kwargs = check_env_kwargs(env_id, spec, env_kwargs)
    if max_episode_steps is not None and (
        isinstance(max_episode_steps, bool) or not isinstance(max_episode_steps, int) or max_episode_steps < 1
    ):
        raise InvalidEnvKwargsError(
            f"{env_id}: max_episode_steps must be a positive integer, got {max_episode_steps!r}",
            env_id=env_id,
            key="max_episode_steps",
        )
    if env_id in ALIASES:
        log.info("%s is not registered by gymnasium %s; using %s", env_id, gym.__version__, spec.id)
    gym_env = _build(env_id, spec, kwargs, max_episode_steps)
    try:
        encoder = _tabular_encoder(env_id, gym_env)
    except UnsupportedEnvironmentError:
        gym_env.close()
        raise
    time_limit = max_episode_steps if max_episode_steps is not None else spec.max_episode_steps
    return TabularEnv(env_id, gym_env, encoder, max_episode_steps=time_limit)


def _build(env_id: str, spec: EnvSpec, kwargs: dict[str, Any], max_episode_steps: int | None) -> gym.Env:
    try:
        return gym.make(spec.id, max_episode_steps=max_episode_steps, **kwargs)
    except Exception as error:  # the constructor's own checks: turn them into our message
        if kwargs:
            raise InvalidEnvKwargsError(
                f"gymnasium could not build {env_id} with options {kwargs!r}: {type(error).__name__}: {error}",
                env_id=env_id,
                key=None,
            ) from error
        raise UnsupportedEnvironmentError(
            f"gymnasium could not build {env_id}: {type(error).__name__}: {error}", env_id=env_id
        ) from error


def _tabular_encoder(env_id: str, gym_env: gym.Env) -> ObservationEncoder:
    observation_space, action_space = gym_env.observation_space, gym_env.action_space
    spaces_text = f"observation space {_describe(observation_space)}, action space {_describe(action_space)}"
    if not isinstance(action_space, spaces.Discrete):
        raise UnsupportedEnvironmentError(
            f"{env_id} cannot be learned with a Q-table ({spaces_text}): the action space must be "
            f"Discrete, not {type(action_space).__name__}",
            env_id=env_id,
        )
    try:
        return encoder_for(observation_space)
    except UnsupportedSpaceError as why:
        raise UnsupportedEnvironmentError(
            f"{env_id} cannot be learned with a Q-table ({spaces_text}): {why}", env_id=env_id
        ) from None


def _describe(space: spaces.Space) -> str:
    """A short space description: a Box's bounds are long and say nothing about tabulating it."""
    if isinstance(space, spaces.Box):
        return f"Box(shape={space.shape}, dtype={space.dtype})"
    return str(space)
