"""Intervals hold their estimate, and the error bars drawn from them are never negative."""

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from cardio_kedro.evaluation.intervals import contain, error_bars, wilson
from cardio_kedro.evaluation.metrics import _interval, bootstrap_auc, paired_auc_difference


def _naive_lower_bound(n: int, z: float = 1.959964) -> float:
    """The textbook ``centre - half`` at a rate of 0: a float a few ulps from 0 for some n."""
    centre = (z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half


def test_the_naive_formula_misses_zero_where_the_sweep_looks():
    # the sweep below is only worth something if it meets the sizes that broke the demo
    assert sum(_naive_lower_bound(n) > 0 for n in range(1, 3000)) > 50


def test_wilson_holds_its_rate_for_every_bin_size_at_rates_0_and_1():
    for n in range(1, 5001):
        low, high = wilson(0, n)
        assert low == 0.0 and 0.0 < high < 1.0, n
        low, high = wilson(n, n)
        assert high == 1.0 and 0.0 < low < 1.0, n
        bars = error_bars([0.0, 1.0], [wilson(0, n)[0], wilson(n, n)[0]], [wilson(0, n)[1], wilson(n, n)[1]])
        assert (bars >= 0).all(), n


def test_wilson_agrees_with_scipys_wilson_interval():
    rng = np.random.default_rng(0)
    for n in [1, 2, 3, 7, 69, 75, 125, 1000, 4999, *rng.integers(1, 5000, 40)]:
        for k in {0, 1, n // 3, n - 1, n} - {-1}:
            if not 0 <= k <= n:
                continue
            low, high = wilson(int(k), int(n))
            reference = binomtest(int(k), int(n)).proportion_ci(method="wilson")
            assert low == pytest.approx(reference.low, abs=1e-12) and high == pytest.approx(reference.high, abs=1e-12)
            assert low <= k / n <= high


def test_wilson_refuses_impossible_counts_and_has_no_interval_for_no_images():
    assert all(math.isnan(b) for b in wilson(0, 0))
    for k, n in ((3, 2), (-1, 4), (1, -1)):
        with pytest.raises(ValueError, match="0 <= positives <= n"):
            wilson(k, n)


def test_an_interval_beside_its_estimate_is_widened_to_it_and_says_so():
    assert contain(0.90, 0.92, 0.97) == (0.90, 0.97, False)
    assert contain(0.99, 0.92, 0.97) == (0.92, 0.99, False)
    assert contain(0.95, 0.92, 0.97) == (0.92, 0.97, True)
    assert contain(None, 0.1, 0.2) == (0.1, 0.2, True) and contain(0.5, None, None) == (None, None, True)
    # a bootstrap whose resamples all lie above the point estimate (a skewed statistic on few patients)
    res = _interval(0.80, list(np.linspace(0.85, 0.95, 50)))
    assert res["ci_low"] == 0.80 and res["ci_high"] <= 0.95 and res["contains_estimate"] is False
    res = _interval(0.90, list(np.linspace(0.85, 0.95, 50)))
    assert res["ci_low"] < 0.90 < res["ci_high"] and res["contains_estimate"] is True


def test_error_bars_are_never_negative_and_missing_bounds_draw_none():
    bars = error_bars([0.5, 0.9, np.nan, 0.3], [0.4, 0.92, 0.1, np.nan], [0.6, 0.97, 0.2, 0.5])
    assert bars.shape == (2, 4) and (bars >= 0).all()
    assert bars[:, 0] == pytest.approx([0.1, 0.1]) and bars[:, 1] == pytest.approx([0.0, 0.07])
    assert (bars[:, 2:] == 0).all()


def test_bootstrap_intervals_of_one_patient_and_of_few_hold_their_estimate():
    # one patient, several films: every resample is that patient, the interval is the point
    y, p = np.array([0, 1, 0, 1]), np.array([0.2, 0.7, 0.3, 0.6])
    res = bootstrap_auc(y, p, np.zeros(4), n_boot=50, seed=0)
    assert res["auc"] == 1.0 and res["ci_low"] == res["ci_high"] == 1.0 and res["contains_estimate"]
    rng = np.random.default_rng(1)
    for seed in range(30):  # small, noisy subgroups: the guarantee holds whatever the resamples do
        y = np.r_[np.ones(3), np.zeros(5)].astype(int)
        p = rng.random(8)
        groups = rng.integers(0, 5, 8)
        res = bootstrap_auc(y, p, groups, n_boot=40, seed=seed)
        if res["ci_low"] is not None:
            assert res["ci_low"] <= res["auc"] <= res["ci_high"]
        paired = paired_auc_difference(y, p, rng.random(8), groups, n_boot=40, seed=seed)
        if paired["ci_low"] is not None:
            assert paired["ci_low"] <= paired["difference"] <= paired["ci_high"]
