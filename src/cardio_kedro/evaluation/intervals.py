"""Confidence intervals that contain their estimate, and the error bars drawn from them.

Every interval the reports show is made here, with ``low <= estimate <= high`` built in:

- ``wilson``: a proportion's 95% Wilson score interval. Its bound at a rate of 0 (or 1) is exactly 0
  (or 1); computed as ``centre - half`` it is a float a few ulps away (``1e-17`` for 186 of the bin
  sizes 1..2999), which put an error bar's length below zero and made matplotlib refuse the figure.
- ``contain``: a percentile (bootstrap) interval need not contain its point estimate (a small
  subgroup, a skewed statistic); it is widened to the estimate and says so (``contains_estimate``).
- ``error_bars``: the two non-negative lengths matplotlib's ``xerr``/``yerr`` take, from such intervals.
"""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5th percentile


def contain(estimate: float | None, low: float | None, high: float | None) -> tuple[float | None, float | None, bool]:
    """``(low, high, contains_estimate)``: the interval widened just enough to hold ``estimate``, and whether
    it held it before. Without an estimate or a bound the interval is returned as it is (it holds nothing)."""
    if estimate is None or low is None or high is None or not all(map(math.isfinite, (estimate, low, high))):
        return low, high, True
    if low > high:
        low, high = high, low
    contains = low <= estimate <= high
    return float(min(low, estimate)), float(max(high, estimate)), bool(contains)


def wilson(positives: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``positives`` of ``n``: ``(nan, nan)`` for ``n == 0``; exactly 0 as the
    lower bound at no positive and 1 as the upper at all positive; always ``low <= rate <= high``."""
    if n < 0 or positives < 0 or positives > n:
        raise ValueError(f"a proportion needs 0 <= positives <= n, got {positives} of {n}")
    if n == 0:
        return float("nan"), float("nan")
    rate = positives / n
    denominator = 1 + z * z / n
    centre = (rate + z * z / (2 * n)) / denominator
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / denominator
    low = 0.0 if positives == 0 else min(max(0.0, centre - half), rate)
    high = 1.0 if positives == n else max(min(1.0, centre + half), rate)
    return low, high


def error_bars(estimates, lows, highs) -> np.ndarray:
    """``[[estimate - low], [high - estimate]]`` for matplotlib's ``xerr``/``yerr``: never negative (an
    interval beside its estimate is drawn as reaching it, as ``contain`` widens it), ``nan`` where a
    bound or the estimate is missing (matplotlib draws no bar there)."""
    estimates, lows, highs = (np.asarray(a, dtype=float) for a in (estimates, lows, highs))
    with np.errstate(invalid="ignore"):
        below = np.maximum(estimates - lows, 0.0)
        above = np.maximum(highs - estimates, 0.0)
    missing = ~(np.isfinite(estimates) & np.isfinite(lows) & np.isfinite(highs))
    below[missing] = 0.0
    above[missing] = 0.0
    return np.vstack([below, above])
