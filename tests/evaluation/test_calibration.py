"""Calibration: prior shift with a known answer, Platt scaling, ECE, slope and intercept by hand."""

import numpy as np
import pytest
from scipy.special import expit, logit

from cardio_kedro.evaluation.calibration import (
    align_scores,
    apply_calibration,
    apply_recalibration,
    calibration_slope_intercept,
    expected_calibration_error,
    fit_platt,
    fit_recalibration,
    observed_expected,
    prior_shift_offset,
)


def test_prior_shift_recovers_the_natural_posterior():
    """Scores of a model that is exact at 25% prevalence, read at 5%: Bayes gives the answer."""
    rng = np.random.default_rng(0)
    likelihood_ratio = np.exp(rng.normal(0, 2, 1000))
    at_25 = 1 / (1 + (0.75 / 0.25) / likelihood_ratio)
    at_5 = 1 / (1 + (0.95 / 0.05) / likelihood_ratio)
    offset = prior_shift_offset(0.25, 0.05)
    assert offset == pytest.approx(logit(0.05) - logit(0.25))
    np.testing.assert_allclose(apply_calibration(at_25, 1.0, offset), at_5, rtol=1e-6)
    with pytest.raises(ValueError, match="target prevalence"):
        prior_shift_offset(0.25, 0.0)


def test_platt_recovers_a_known_miscalibration():
    rng = np.random.default_rng(1)
    true_logit = rng.normal(-1.5, 2.0, 20000)
    y = (rng.random(20000) < expit(true_logit)).astype(int)
    scores = expit((true_logit - 0.7) / 2.0)  # too flat and shifted: slope 2, intercept 0.7 undo it
    slope, intercept = fit_platt(scores, y, offset=0.0, shrinkage=0.0)
    assert slope == pytest.approx(2.0, abs=0.08) and intercept == pytest.approx(0.7, abs=0.08)


def test_shrinkage_keeps_a_separated_split_finite():
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    y = np.array([0, 0, 0, 1, 1, 1])
    free = fit_platt(scores, y, offset=-1.0, shrinkage=0.0)
    shrunk = fit_platt(scores, y, offset=-1.0, shrinkage=5.0)
    assert free[0] > 10  # plain Platt runs off towards an infinite slope
    assert 1.0 < shrunk[0] < free[0] and shrunk[1] < 0  # the prior holds it near (1, offset)


def test_ece_by_hand():
    y = np.array([0, 0, 1, 1, 1, 0, 1, 1, 0, 0])
    p = np.array([0.05, 0.05, 0.05, 0.05, 0.95, 0.95, 0.95, 0.95, 0.55, 0.55])
    # bins: 0.05 (4 images, 50% positive): gap 0.45; 0.95 (4, 75%): gap 0.20; 0.55 (2, 0%): gap 0.55
    assert expected_calibration_error(y, p, bins=10) == pytest.approx((4 * 0.45 + 4 * 0.20 + 2 * 0.55) / 10)
    assert expected_calibration_error(np.array([0, 1]), np.array([0.0, 1.0]), bins=10) == 0.0


def test_slope_and_intercept_of_calibrated_and_overconfident_models():
    rng = np.random.default_rng(2)
    true_logit = rng.normal(-1, 1.5, 40000)
    y = (rng.random(40000) < expit(true_logit)).astype(int)
    slope, intercept = calibration_slope_intercept(y, expit(true_logit))
    assert slope == pytest.approx(1.0, abs=0.05) and intercept == pytest.approx(0.0, abs=0.05)
    slope, _ = calibration_slope_intercept(y, expit(2 * true_logit))  # twice too extreme
    assert slope == pytest.approx(0.5, abs=0.03)
    assert np.isnan(calibration_slope_intercept(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9]))[0])


def test_calibration_in_the_large_converges_for_confident_scores():
    """Scores of 1e-6 for images that are positive 10% of the time: the intercept is logit(0.1) - logit(1e-6).
    A plain Newton step there is about 1e5 log-odds and diverges."""
    y = np.r_[np.ones(10), np.zeros(90)]
    p = np.full(100, 1e-6)
    _, intercept = calibration_slope_intercept(y, p)
    assert intercept == pytest.approx(logit(0.1) - logit(1e-6), abs=1e-6)


# ---- recalibration for a new site ------------------------------------------------------------------
def test_intercept_recalibration_by_hand():
    """Every image at p = 0.5, one positive in four: the only intercept that fits is logit(1/4)."""
    intercept, slope = fit_recalibration(np.full(4, 0.5), np.array([1, 0, 0, 0]), "intercept")
    assert slope == 1.0
    assert intercept == pytest.approx(logit(0.25), abs=1e-9)
    assert apply_recalibration(np.array([0.5]), intercept, slope)[0] == pytest.approx(0.25)


def test_logistic_recalibration_by_hand():
    """Two groups of images at logit -1 and +1 with observed rates 0.2 and 0.6: the line through both."""
    p = expit(np.r_[np.full(10, -1.0), np.full(10, 1.0)])
    y = np.r_[[1, 1] + [0] * 8, [1] * 6 + [0] * 4]
    intercept, slope = fit_recalibration(p, y, "logistic")
    assert slope == pytest.approx((logit(0.6) - logit(0.2)) / 2, abs=1e-7)
    assert intercept == pytest.approx((logit(0.6) + logit(0.2)) / 2, abs=1e-7)
    assert fit_recalibration(p, y, "none") == (0.0, 1.0)


def test_recalibration_is_the_maximum_likelihood_fit():
    """A model that over-predicts a 10% site (it was built at 30%): the intercept update makes the mean
    prediction equal the observed rate on the data it was fitted on (the score equation), and the
    logistic update equals an unpenalised logistic regression of the outcome on logit(p)."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(4)
    x = rng.normal(0, 1.5, 4000)
    y = rng.random(4000) < expit(-2.2 + 0.7 * x)
    p = expit(-0.8 + x)  # too high and too extreme for this site
    intercept, slope = fit_recalibration(p, y, "intercept")
    assert np.mean(apply_recalibration(p, intercept, slope)) == pytest.approx(np.mean(y), abs=1e-6)
    assert observed_expected(y, p) < 0.6  # the scored model over-predicts ...
    updated = apply_recalibration(p, intercept, slope)
    assert observed_expected(y, updated) == pytest.approx(1.0, abs=1e-5)  # ... no longer
    intercept, slope = fit_recalibration(p, y, "logistic")
    reference = LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000).fit(logit(p)[:, None], y)
    assert slope == pytest.approx(reference.coef_[0, 0], abs=1e-4)
    assert intercept == pytest.approx(reference.intercept_[0], abs=1e-4)
    assert slope == pytest.approx(0.7, abs=0.1)  # the truth it was drawn with


def test_recalibration_refuses_what_the_data_cannot_support():
    with pytest.raises(ValueError, match="both classes"):
        fit_recalibration(np.full(5, 0.3), np.zeros(5), "intercept")
    with pytest.raises(ValueError, match="separates the classes"):
        fit_recalibration(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1]), "logistic")
    with pytest.raises(ValueError, match="slope is -"):  # positives ranked below negatives: a reversed model
        fit_recalibration(np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9]), np.array([1, 1, 0, 1, 0, 0]), "logistic")


def test_observed_expected_by_hand():
    assert observed_expected(np.array([1, 0, 0, 0]), np.array([0.5, 0.5, 0.25, 0.25])) == pytest.approx(1 / 1.5)
    assert observed_expected(np.array([0, 0]), np.array([0.0, 0.0])) is None


def test_slope_fit_converges_on_a_narrow_range_of_scores():
    """Scores within a few hundredths of each other: a capped Newton step bounced between two points
    here (slope 5.0 after the intercept update, 6.0 before). The slope of logit p is the same before
    and after an intercept update, and equals sklearn's unpenalised fit."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(-1.9, 0.05, 240)
    y = (rng.random(240) < expit(-1.9 + 6 * (x + 1.9))).astype(int)
    before = calibration_slope_intercept(y, expit(x))[0]
    after = calibration_slope_intercept(y, expit(x - 1.83))[0]
    reference = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10000).fit(x[:, None], y).coef_[0, 0]
    assert before == pytest.approx(reference, rel=1e-4)
    assert after == pytest.approx(before, rel=1e-6)


def test_align_scores_puts_quartiles_on_quartiles():
    """Scores whose logits are 2x + 1 of another model's: the map back is slope 2, intercept 1 (by hand);
    a model whose scores do not spread is left as it is."""
    x = np.linspace(-3, 3, 101)
    slope, intercept = align_scores(expit(x), expit(2 * x + 1))
    assert slope == pytest.approx(2.0) and intercept == pytest.approx(1.0)
    assert align_scores(np.full(10, 0.3), expit(x)) == (1.0, 0.0)
