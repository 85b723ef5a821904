"""The statistics experiment summaries use, on the rules a reviewer expects.

- The seed (one cell) is the unit: values passed here are one per seed, never one per agent.
- Seeds are paired by design (every condition runs the same seeds), so comparisons are paired.
- Comparisons are declared before the results exist (each condition against the first) and
  their p-values are Holm-corrected together (`holm`).
- A first-passage time that never happened within the budget is censored, not a measurement:
  it is described by the Kaplan-Meier median (`censored_median`) and compared with a paired
  sign test that only counts the pairs whose order is known (`paired_censored`), never averaged
  or fed to a t-test.
- Intervals of a bounded metric (a success rate) are clipped to its range.
- "No difference" is never read as "the same": sameness is claimed only by an equivalence
  test (paired TOST, `paired_equivalence`) against a margin declared before the results.

The tests and distributions come from scipy.stats; only Holm's step-down (a few lines) is ours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from scipy import stats

UNBOUNDED = (-math.inf, math.inf)


@dataclass(frozen=True)
class Interval:
    """A mean over seeds with its 95% t interval (None below two seeds), clipped to bounds."""
    n: int
    mean: float
    low: Optional[float]
    high: Optional[float]

    def as_dict(self) -> dict:
        return {"n": self.n, "mean": self.mean, "low": self.low, "high": self.high}


def mean_interval(values: Sequence[float], bounds: tuple[float, float] = UNBOUNDED,
                  confidence: float = 0.95) -> Interval:
    """Mean and t-based interval of `values` (one per seed), clipped to `bounds`."""
    data = np.asarray(values, dtype=float)
    if len(data) == 0:
        raise ValueError("no values")
    mean = float(data.mean())
    if len(data) < 2:
        return Interval(len(data), mean, None, None)
    half = float(stats.t.ppf(0.5 + confidence / 2, len(data) - 1) * data.std(ddof=1) / math.sqrt(len(data)))
    return Interval(len(data), mean, max(bounds[0], mean - half), min(bounds[1], mean + half))


def holm(p_values: Sequence[Optional[float]]) -> list[Optional[float]]:
    """Holm's step-down adjustment of a family of p-values (None: not tested, stays None)."""
    present = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    adjusted: list[Optional[float]] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(present):
        running = max(running, min(1.0, (len(present) - rank) * p))
        adjusted[i] = running
    return adjusted


def paired_difference(a: Sequence[float], b: Sequence[float],
                      bounds: tuple[float, float] = UNBOUNDED) -> tuple[Interval, Optional[float]]:
    """The per-seed difference a - b: its mean and interval (clipped to `bounds`), and the
    paired t-test's two-sided p (None below two pairs; 0 when every pair differs alike)."""
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    p: Optional[float] = None
    if len(diff) >= 2 and np.any(diff != diff[0]):
        p = float(stats.ttest_rel(a, b).pvalue)
    elif len(diff) >= 2 and diff[0] != 0:
        p = 0.0
    elif len(diff) >= 2:
        p = 1.0
    return mean_interval(diff, bounds), p


@dataclass(frozen=True)
class CensoredComparison:
    """Paired first-passage times: how many seeds each condition got there first (a seed that
    never got there within the budget loses to one that did; both never: no order, a tie), and
    the sign test's two-sided p over the ordered pairs (None when no pair is ordered)."""
    first_a: int
    first_b: int
    ties: int
    p: Optional[float]


def paired_censored(a: Sequence[Optional[float]], b: Sequence[Optional[float]]) -> CensoredComparison:
    """Compare paired first-passage times, None meaning "not within the budget"."""
    first_a = first_b = ties = 0
    for x, y in zip(a, b, strict=True):
        if x is None and y is None or x == y:
            ties += 1
        elif y is None or (x is not None and x < y):
            first_a += 1
        else:
            first_b += 1
    ordered = first_a + first_b
    p = float(stats.binomtest(first_a, ordered, 0.5).pvalue) if ordered else None
    return CensoredComparison(first_a, first_b, ties, p)


def censored_median(times: Sequence[Optional[float]], budget: float) -> Optional[float]:
    """Kaplan-Meier median of first-passage times censored at `budget` (None entries); None
    when fewer than half of the seeds got there (the median is then beyond the budget)."""
    observed = [t for t in times if t is not None]
    if not observed:
        return None
    censored = [budget] * (len(times) - len(observed))
    survival = stats.ecdf(stats.CensoredData(uncensored=observed, right=censored)).sf
    below = [t for t, s in zip(survival.quantiles, survival.probabilities) if s <= 0.5]
    return float(below[0]) if below else None


def paired_equivalence(a: Sequence[float], b: Sequence[float], margin: float) -> Optional[float]:
    """Paired TOST: the p-value for "the per-seed difference a - b lies within (-margin,
    +margin)", the larger of the two one-sided t-tests' (scipy.stats.ttest_1samp). Small p:
    equivalence shown. None below two pairs or when every pair differs alike (no variance: the
    test has nothing to say, and a constant difference is no evidence of a population's)."""
    if margin <= 0:
        raise ValueError(f"an equivalence margin must be > 0, got {margin}")
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if len(diff) < 2 or np.all(diff == diff[0]):
        return None
    above = stats.ttest_1samp(diff, -margin, alternative="greater").pvalue
    below = stats.ttest_1samp(diff, margin, alternative="less").pvalue
    return float(max(above, below))
