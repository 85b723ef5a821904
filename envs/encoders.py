"""Observation encoders: map a Gymnasium observation to a state index in ``range(n_states)``.

A tabular learner indexes its Q-table by one integer. ``Discrete`` observations already are one
(shifted by the space's ``start``); ``Tuple`` of ``Discrete`` (Blackjack-v1's
``(player_sum, dealer_card, usable_ace)``) and ``MultiDiscrete`` observations are encoded in mixed
radix, first component most significant, exactly like ``numpy.ravel_multi_index`` in C order. Every
encoder is a bijection between the space and ``range(n_states)``: ``decode(encode(o)) == o``.

``encoder_for(space)`` picks the encoder, or raises ``UnsupportedSpaceError`` whose message says
why the space cannot be tabulated (the caller adds the environment's name).
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import numpy as np
from gymnasium import spaces

#: Largest table we agree to build: 10^6 states x a few actions of float64 is tens of MB already.
MAX_TABULAR_STATES = 1_000_000


class UnsupportedSpaceError(ValueError):
    """The space has no finite integer encoding we support; the message says why."""


class ObservationEncoder(Protocol):
    """What a tabular environment needs from an encoder."""

    n_states: int

    def encode(self, observation: Any) -> int:
        """The state index of ``observation``, in ``range(n_states)``."""
        ...

    def decode(self, index: int) -> Any:
        """The observation whose state index is ``index`` (inverse of ``encode``)."""
        ...

    def to_json(self, observation: Any) -> Any:
        """``observation`` as plain JSON values (int, or list of ints)."""
        ...


class DiscreteEncoder:
    """``Discrete(n, start)``: index = observation - start."""

    def __init__(self, n: int, start: int = 0) -> None:
        self.n_states = int(n)
        self.start = int(start)

    def encode(self, observation: Any) -> int:
        return int(observation) - self.start

    def decode(self, index: int) -> int:
        _check_index(index, self.n_states)
        return int(index) + self.start

    def to_json(self, observation: Any) -> int:
        return int(observation)


class MixedRadixEncoder:
    """A fixed-length vector of bounded integers (``Tuple`` of ``Discrete``, ``MultiDiscrete``).

    Component ``i`` takes values ``starts[i] .. starts[i] + sizes[i] - 1``; the index is
    ``ravel_multi_index(obs - starts, sizes)`` in C order. ``shape`` restores a multi-dimensional
    ``MultiDiscrete`` on ``decode``; ``as_tuple`` makes ``decode`` return a tuple like ``Tuple``
    spaces do.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        starts: Sequence[int],
        *,
        as_tuple: bool,
        shape: tuple[int, ...] | None = None,
    ) -> None:
        self.sizes = tuple(int(n) for n in sizes)
        self.starts = tuple(int(s) for s in starts)
        self.as_tuple = as_tuple
        self.shape = shape
        self.n_states = int(np.prod(self.sizes, dtype=np.int64))
        # Place values, most significant first: strides[i] = prod(sizes[i+1:]).
        strides = []
        stride = 1
        for n in reversed(self.sizes):
            strides.append(stride)
            stride *= n
        self.strides = tuple(reversed(strides))
        self._terms = tuple(zip(self.starts, self.sizes, self.strides))

    def encode(self, observation: Any) -> int:
        values = np.ravel(observation).tolist() if self.shape else observation
        index = 0
        for value, (start, size, stride) in zip(values, self._terms):
            offset = int(value) - start
            if not 0 <= offset < size:
                raise ValueError(f"observation component {value} is outside {start}..{start + size - 1}")
            index += offset * stride
        return index

    def decode(self, index: int) -> Any:
        _check_index(index, self.n_states)
        values = []
        for start, size, stride in self._terms:
            values.append(start + (int(index) // stride) % size)
        if self.as_tuple:
            return tuple(values)
        if self.shape:
            return np.asarray(values, dtype=np.int64).reshape(self.shape)
        return values

    def to_json(self, observation: Any) -> list:
        if self.shape:
            return np.asarray(observation).tolist()
        return [int(v) for v in observation]


def _check_index(index: int, n_states: int) -> None:
    if not 0 <= int(index) < n_states:
        raise ValueError(f"state index {index} is outside range({n_states})")


def encoder_for(space: spaces.Space) -> ObservationEncoder:
    """The encoder for ``space``, or ``UnsupportedSpaceError`` saying why there is none."""
    if isinstance(space, spaces.Discrete):
        encoder: ObservationEncoder = DiscreteEncoder(int(space.n), int(space.start))
    elif isinstance(space, spaces.Tuple):
        parts = space.spaces
        bad = [f"component {i} is {p}" for i, p in enumerate(parts) if not isinstance(p, spaces.Discrete)]
        if bad or not parts:
            raise UnsupportedSpaceError(
                "a Tuple observation is tabular only when every component is Discrete"
                + (f" ({'; '.join(bad)})" if bad else " (this one is empty)")
            )
        encoder = MixedRadixEncoder(
            [int(p.n) for p in parts], [int(p.start) for p in parts], as_tuple=True
        )
    elif isinstance(space, spaces.MultiDiscrete):
        nvec = np.asarray(space.nvec)
        shape = tuple(nvec.shape) if nvec.ndim > 1 else None
        encoder = MixedRadixEncoder(
            nvec.ravel().tolist(), np.asarray(space.start).ravel().tolist(), as_tuple=False, shape=shape
        )
    else:
        raise UnsupportedSpaceError(
            f"{type(space).__name__} observations have no finite set of states to tabulate "
            "(supported: Discrete, Tuple of Discrete, MultiDiscrete)"
        )
    if encoder.n_states > MAX_TABULAR_STATES:
        raise UnsupportedSpaceError(
            f"the observation space has {encoder.n_states} states, more than the "
            f"{MAX_TABULAR_STATES} a Q-table here may hold"
        )
    return encoder
