"""Rules for merging Q-tables received from peers into an agent's own (policy sharing).

A plan picks the rule by name (`.merge_q_tables(Rule)`):

- ``average``: the element-wise mean of the own table and the peers' (Tan 1993's rule). Every
  table counts the same, including its never-updated zeros.
- ``visits``: each (state, action) value is the mean of the tables' values weighted by how many
  updates each agent made there; where nobody updated it, the own value stays. A peer's
  knowledge of states the agent never visited then replaces the agent's zeros instead of
  halving the peer's estimate.

The agent's own visit counts are not changed by a merge: counts say what the agent itself saw,
so repeated merges do not count a peer's experience twice.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

RULES = ("average", "visits")


def merge_q_tables(rule: str, own_q: np.ndarray, own_visits: np.ndarray, peers: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The merged table (a new array). `peers` are (q, visits) pairs shaped like `own_q`.

    Raises ValueError for an unknown rule or a table of another shape."""
    if rule not in RULES:
        raise ValueError(f"unknown merge rule {rule!r}: use one of {', '.join(RULES)}")
    for q, visits in peers:
        if q.shape != own_q.shape or visits.shape != own_q.shape:
            raise ValueError(f"a peer's Q-table is {q.shape}, this agent's is {own_q.shape}: they learn different environments")
    tables = np.stack([own_q, *(q for q, _ in peers)])
    if rule == "average":
        return tables.mean(axis=0)
    weights = np.stack([own_visits, *(v for _, v in peers)]).astype(np.float64)
    total = weights.sum(axis=0)
    merged = (tables * weights).sum(axis=0) / np.where(total > 0, total, 1.0)
    return np.where(total > 0, merged, own_q)
