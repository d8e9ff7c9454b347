# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""Statistics over seeds: mean ± std, paired differences by seed and their Student-t confidence intervals.

Evidence runs train every method once per seed; methods of one seed share the initial weights, the data order
and (where the protocol re-draws it) the split, so the fair comparison of two methods is the per-seed difference.
Its interval is the Student-t interval of the mean difference with ``n - 1`` degrees of freedom,
``mean ± t_{(1+level)/2, n-1} · std / sqrt(n)``: with 3 seeds ``t = 4.303``, so an interval that excludes 0 needs a
difference that is consistent across seeds, not only a positive mean. Pure Python (no NumPy, SciPy or torch), so
``monai-kd results`` answers without heavy imports.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Interval", "PairedDifference", "paired_difference", "t_cdf", "t_interval", "t_quantile"]


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes ``betacf``)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function ``I_x(a, b)``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """Cumulative distribution function of Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}.")
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """Quantile of Student's t: the ``t`` with ``t_cdf(t, df) == p`` (bisection to 1e-12).

    Args:
        p: probability in (0, 1), e.g. 0.975 for a two-sided 95% interval.
        df: degrees of freedom (> 0).
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}.")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        high *= 2.0
    while high - low > 1e-12 * max(1.0, high):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if t_cdf(mid, df) < p else (low, mid)
    return 0.5 * (low + high)


@dataclass(frozen=True)
class Interval:
    """Mean of ``n`` values over seeds with its standard deviation and two-sided Student-t interval.

    ``low`` / ``high`` are NaN for fewer than two values (no spread, so no interval).
    """

    mean: float
    std: float
    low: float
    high: float
    n: int
    level: float = 0.95

    @property
    def defined(self) -> bool:
        """Whether the interval has finite bounds (two or more values)."""
        return self.n >= 2 and math.isfinite(self.low)


def t_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean, sample std (``n - 1``) and Student-t confidence interval of the mean of ``values``.

    Args:
        values: one value per seed (``None`` entries are dropped).
        level: confidence level of the two-sided interval.

    Raises:
        ValueError: no values, or ``level`` outside (0, 1).
    """
    vals = [float(v) for v in values if v is not None]
    if not vals:
        raise ValueError("t_interval needs at least one value.")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}.")
    n, mean = len(vals), statistics.mean(vals)
    if n < 2:
        return Interval(mean, 0.0, math.nan, math.nan, n, level)
    std = statistics.stdev(vals)
    half = t_quantile(0.5 + level / 2.0, n - 1) * std / math.sqrt(n)
    return Interval(mean, std, mean - half, mean + half, n, level)


@dataclass(frozen=True)
class PairedDifference:
    """Per-seed differences ``a - b`` over the seeds both arms hold, their interval and how many are positive."""

    seeds: tuple
    differences: tuple
    interval: Interval | None

    @property
    def wins(self) -> int:
        """Seeds on which ``a`` is higher than ``b``."""
        return sum(d > 0 for d in self.differences)

    @property
    def n(self) -> int:
        return len(self.differences)


def paired_difference(a: Mapping[Hashable, float | None], b: Mapping[Hashable, float | None],
                      level: float = 0.95) -> PairedDifference:
    """Differences ``a[seed] - b[seed]`` on the seeds where both have a value, with their t-interval.

    Args:
        a: seed -> value of the method.
        b: seed -> value of the baseline (same seed: same initial weights, data order and split).
        level: confidence level.

    Returns:
        the paired differences in seed order; ``interval`` is ``None`` when no seed is shared.
    """
    seeds = tuple(sorted(s for s in set(a) & set(b) if a[s] is not None and b[s] is not None))
    diffs = tuple(float(a[s]) - float(b[s]) for s in seeds)  # type: ignore[arg-type]
    return PairedDifference(seeds, diffs, t_interval(diffs, level) if diffs else None)
