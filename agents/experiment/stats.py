"""Small-sample statistics for experiment summaries: means with t-based 95% confidence
intervals and Welch's t-test, with no dependency beyond the standard library.

Student's t distribution is computed from the regularized incomplete beta function (continued
fraction, modified Lentz's method, as in Numerical Recipes 6.4): P(|T| > t) for df degrees of
freedom is I_{df/(df+t^2)}(df/2, 1/2). Quantiles are found by bisection on that. Accuracy is
~1e-10, far beyond what 5 seeds can resolve (tests check it against tabulated values).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b) for a, b > 0 and x in [0, 1]."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with `df` (> 0, may be fractional) degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return regularized_beta(df / 2.0, 0.5, df / (df + t * t))


def t_quantile(probability: float, df: float) -> float:
    """The t value with P(T <= t) = probability (0.5 < probability < 1)."""
    tail = 2.0 * (1.0 - probability)
    low, high = 0.0, 1.0
    while t_two_sided_p(high, df) > tail:
        high *= 2.0
    for _ in range(200):
        mid = (low + high) / 2.0
        if t_two_sided_p(mid, df) > tail:
            low = mid
        else:
            high = mid
    return (low + high) / 2.0


@dataclass(frozen=True)
class MeanInterval:
    """A sample mean and its 95% confidence interval (t-based); `half_width` is None for n < 2."""

    n: int
    mean: float
    sd: Optional[float]
    half_width: Optional[float]

    @property
    def low(self) -> Optional[float]:
        return None if self.half_width is None else self.mean - self.half_width

    @property
    def high(self) -> Optional[float]:
        return None if self.half_width is None else self.mean + self.half_width


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> MeanInterval:
    n = len(values)
    if n == 0:
        raise ValueError("a mean needs at least one value")
    mean = sum(values) / n
    if n < 2:
        return MeanInterval(n, mean, None, None)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return MeanInterval(n, mean, sd, t_quantile(0.5 + confidence / 2.0, n - 1) * sd / math.sqrt(n))


@dataclass(frozen=True)
class WelchResult:
    """Welch's t-test of mean(a) - mean(b): the difference, its 95% CI, t, df and two-sided p."""

    difference: float
    low: float
    high: float
    t: float
    df: float
    p: float


def welch_test(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Optional[WelchResult]:
    """None when either sample has fewer than 2 values. Equal constant samples give p = 1."""
    if len(a) < 2 or len(b) < 2:
        return None
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    va = sum((x - ma) ** 2 for x in a) / (len(a) - 1)
    vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1)
    sa, sb = va / len(a), vb / len(b)
    difference = ma - mb
    se = math.sqrt(sa + sb)
    if se == 0.0:
        p = 1.0 if difference == 0.0 else 0.0
        return WelchResult(difference, difference, difference, math.copysign(math.inf, difference) if difference else 0.0, math.inf, p)
    df = (sa + sb) ** 2 / ((sa * sa / (len(a) - 1) if sa else 0.0) + (sb * sb / (len(b) - 1) if sb else 0.0))
    t = difference / se
    half = t_quantile(0.5 + confidence / 2.0, df) * se
    return WelchResult(difference, difference - half, difference + half, t, df, t_two_sided_p(t, df))
