"""Errors raised while turning a Gymnasium id and options into a tabular environment.

Both are ``ValueError`` subclasses: they describe bad input (a config, a command line), never a
bug, so entry points turn them into a message and exit code 2 instead of a traceback.
"""

from __future__ import annotations


class EnvSetupError(ValueError):
    """Base class: the requested environment cannot be used for tabular learning as asked."""


class UnsupportedEnvironmentError(EnvSetupError):
    """The id is unknown to Gymnasium, or its spaces are not tabular (message names id and spaces)."""

    def __init__(self, message: str, *, env_id: str) -> None:
        super().__init__(message)
        self.env_id = env_id


class InvalidEnvKwargsError(EnvSetupError):
    """An environment option is unknown, of the wrong type, or out of range.

    ``key`` is the offending option name (``None`` when the whole mapping is wrong), so config
    loaders can report it as ``agents[1].env_kwargs.<key>``.
    """

    def __init__(self, message: str, *, env_id: str, key: str | None) -> None:
        super().__init__(message)
        self.env_id = env_id
        self.key = key
