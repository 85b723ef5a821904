"""Gymnasium environments for tabular learners: validation, observation encoders, render hints.

``make_env(env_id, **env_kwargs)`` returns a ``TabularEnv`` whose ``reset``/``step`` speak in
state indices; see ``envs.tabular`` for seeding and the per-environment success rule.
"""

from envs.encoders import ObservationEncoder, UnsupportedSpaceError, encoder_for
from envs.errors import EnvSetupError, InvalidEnvKwargsError, UnsupportedEnvironmentError
from envs.ids import ALIASES, TESTED_ENV_IDS, resolve_env_spec
from envs.tabular import DEFAULT_STEP_LIMIT, TabularEnv, check_env, make_env

__all__ = [
    "ALIASES",
    "DEFAULT_STEP_LIMIT",
    "EnvSetupError",
    "InvalidEnvKwargsError",
    "ObservationEncoder",
    "TESTED_ENV_IDS",
    "TabularEnv",
    "UnsupportedEnvironmentError",
    "UnsupportedSpaceError",
    "check_env",
    "encoder_for",
    "make_env",
    "resolve_env_spec",
]
