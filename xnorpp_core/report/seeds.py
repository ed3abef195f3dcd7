"""Accuracy over seeds: mean ± std per row, and paired differences with a t interval.

A row of Table 1 or 3 is trained once per seed. Its accuracy is reported as the
sample mean and standard deviation over seeds,

    mean = (1/n) sum_s a_s,    std = sqrt( sum_s (a_s - mean)^2 / (n - 1) ).

A method is compared with XNOR-Net on the seeds both were trained with (the
same seed gives the same initialisation of the shared layers and the same data
order): the paired differences d_s = a_s(method) - a_s(XNOR-Net) give

    d = mean_s d_s,    95% interval  d ± t_{0.975, n-1} * std(d_s) / sqrt(n)

(Student's t, ``scipy.stats.t``). An ordering is stated only when the interval
excludes zero; with one seed there is no interval and no ordering.
"""

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["Spread", "Paired", "spread", "paired", "t_half_width", "ordering", "CONFIDENCE"]

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Spread:
    """Mean and sample standard deviation of ``n`` values (std is NaN for one value)."""

    n: int
    mean: float
    std: float

    def text(self, digits=1):
        if self.n == 0:
            return "—"
        if self.n == 1:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


@dataclass(frozen=True)
class Paired:
    """Mean paired difference over ``n`` shared seeds and its two-sided ``CONFIDENCE`` t interval.

    ``low`` and ``high`` are NaN when ``n < 2`` (no interval).
    """

    n: int
    mean: float
    low: float
    high: float

    def text(self, digits=1):
        if self.n == 0:
            return "—"
        if self.n == 1:
            return f"{self.mean:+.{digits}f} (one seed)"
        return f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"


def spread(values):
    """``Spread`` of a sequence of numbers."""
    a = np.asarray(list(values), dtype=float)
    if a.size == 0:
        return Spread(0, math.nan, math.nan)
    return Spread(a.size, float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else math.nan)


def t_half_width(std, n, confidence=CONFIDENCE):
    """Half-width of the two-sided ``confidence`` Student-t interval of a mean of ``n`` values with sample
    standard deviation ``std``."""
    return float(stats.t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n))


def paired(values, baseline):
    """``Paired`` difference ``values - baseline``, two dicts seed -> accuracy, on their common seeds."""
    seeds = sorted(set(values) & set(baseline))
    d = np.array([values[s] - baseline[s] for s in seeds], dtype=float)
    if d.size == 0:
        return Paired(0, math.nan, math.nan, math.nan)
    mean = float(d.mean())
    if d.size == 1:
        return Paired(1, mean, math.nan, math.nan)
    half = t_half_width(d.std(ddof=1), d.size)
    return Paired(int(d.size), mean, mean - half, mean + half)


def ordering(diff, dataset, baseline="XNOR-Net"):
    """The ordering a paired difference supports: above / below ``baseline``, or not separable."""
    if diff.n == 0:
        return "—"
    if diff.n < 2:
        return "one seed: no interval"
    if diff.low > 0:
        return f"above {baseline}"
    if diff.high < 0:
        return f"below {baseline}"
    return f"not separable on the {dataset}" if dataset[0].islower() else f"not separable on {dataset}"  # a name
