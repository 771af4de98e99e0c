"""Probabilities that mean what they say: prior-shift correction, Platt scaling, and calibration metrics.

A model trained on rebalanced data (25% positive) overstates the probability of a finding that
has, say, 2.5% prevalence. ``prior_shift_offset`` is the exact correction of the log-odds for that
change of prior; ``fit_platt`` then fits ``sigmoid(slope * logit(score) + intercept)`` on scores of
a natural-prevalence validation split, shrunk towards that correction so that a (nearly) separated
validation split cannot push the slope to infinity. Pure numpy/scipy.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, logit

from .decision import choose_threshold

logger = logging.getLogger(__name__)

EPS = 1e-7
MAX_STEP = 1.0  # largest Newton step (log-odds) of the calibration fits
MAX_SLOPE = 100.0  # a fitted calibration slope beyond this says the classes are (nearly) separated


def to_logit(p: np.ndarray) -> np.ndarray:
    """Log-odds of probabilities, clipped away from 0 and 1."""
    return logit(np.clip(np.asarray(p, np.float64), EPS, 1 - EPS))


def prior_shift_offset(trained_prevalence: float, target_prevalence: float) -> float:
    """The log-odds to add to a score learnt at ``trained_prevalence`` to read it at ``target_prevalence``.

    Bayes: the likelihood ratio does not change with the prior, so posterior odds move by the ratio
    of prior odds (Saerens et al. 2002).
    """
    for name, value in (("trained", trained_prevalence), ("target", target_prevalence)):
        if not 0 < value < 1:
            raise ValueError(f"{name} prevalence must be in (0, 1), got {value}")
    return float(logit(target_prevalence) - logit(trained_prevalence))


def apply_calibration(scores: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """``sigmoid(slope * logit(score) + intercept)``."""
    return expit(slope * to_logit(scores) + intercept)


def fit_platt(scores: np.ndarray, y: np.ndarray, offset: float, shrinkage: float) -> tuple[float, float]:
    """Platt scaling of raw ``scores`` on labels ``y``, shrunk towards ``(slope 1, intercept offset)``.

    Minimises the mean log loss plus ``shrinkage / n * ((slope - 1)^2 + (intercept - offset)^2)``:
    a prior worth ``shrinkage`` observations. With ``shrinkage`` 0 this is plain Platt scaling;
    with a separated validation split the prior keeps the slope finite.
    """
    x, y = to_logit(scores), np.asarray(y, np.float64)
    if len(x) == 0 or y.min() == y.max():
        raise ValueError("calibration needs validation scores of both classes")
    n = len(x)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        slope, intercept = theta
        z = slope * x + intercept
        nll = np.mean(np.logaddexp(0, z) - y * z)  # cross-entropy with the smoothed targets
        residual = expit(z) - y
        grad = np.array([np.mean(residual * x), np.mean(residual)])
        penalty = shrinkage / n
        nll += penalty * ((slope - 1) ** 2 + (intercept - offset) ** 2)
        grad += 2 * penalty * np.array([slope - 1, intercept - offset])
        return float(nll), grad

    result = minimize(loss, np.array([1.0, offset]), jac=True, method="L-BFGS-B")
    slope, intercept = result.x
    return float(slope), float(intercept)


def probability_bins(p: np.ndarray, bins: int) -> np.ndarray:
    """Each probability's equal-width bin, 0 to ``bins - 1`` (1.0 in the last): ECE's and the reliability
    diagram's."""
    return np.minimum((np.asarray(p, np.float64) * bins).astype(int), bins - 1)


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int) -> float:
    """ECE: the count-weighted mean gap between predicted and observed rate over equal-width bins (``nan`` for
    no image: there is no gap to weigh)."""
    y, p = np.asarray(y, np.float64), np.asarray(p, np.float64)
    if len(y) == 0:
        return float("nan")
    which = probability_bins(p, bins)
    gaps = [
        abs(p[which == b].mean() - y[which == b].mean()) * np.sum(which == b) for b in range(bins) if np.any(which == b)
    ]
    return float(np.sum(gaps) / len(y))


def _logistic_fit(x: np.ndarray, y: np.ndarray, free_slope: bool, iterations: int = 200) -> tuple[float, float]:
    """Maximum-likelihood ``(slope, intercept)`` of ``y ~ sigmoid(slope * x + intercept)`` by Newton's method
    (the slope fixed at 1 unless ``free_slope``). Fast enough to run inside a bootstrap.

    Each step is scaled to at most ``MAX_STEP`` and halved until the likelihood improves: with confident
    scores the curvature is tiny and a full Newton step overshoots by orders of magnitude, and with
    scores in a narrow range a capped step can bounce between two points for ever (the plain method
    diverges, a capped one need not converge)."""

    def nll(theta: np.ndarray) -> float:
        z = theta[0] * x + theta[1]
        return float(np.sum(np.logaddexp(0, z) - y * z))

    theta = np.array([1.0, 0.0])
    current = nll(theta)
    for _ in range(iterations):
        p = expit(theta[0] * x + theta[1])
        w = np.maximum(p * (1 - p), 1e-12)
        r = y - p
        if free_slope:
            gradient = np.array([np.sum(r * x), np.sum(r)])
            hessian = np.array([[np.sum(w * x * x), np.sum(w * x)], [np.sum(w * x), np.sum(w)]])
            step = np.linalg.solve(hessian + 1e-9 * np.eye(2), gradient)
        else:
            step = np.array([0.0, np.sum(r) / np.sum(w)])
        step *= min(1.0, MAX_STEP / max(float(np.max(np.abs(step))), 1e-300))
        while True:
            candidate = theta + step
            value = nll(candidate)
            if value <= current or np.max(np.abs(step)) < 1e-10:
                break
            step /= 2
        theta, current = candidate, value
        if np.max(np.abs(step)) < 1e-8:
            break
    return float(theta[0]), float(theta[1])


def calibration_slope_intercept(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """Calibration slope (logistic regression of ``y`` on ``logit(p)``) and calibration-in-the-large
    (the intercept with the slope fixed at 1). A calibrated model has slope 1 and intercept 0;
    slope < 1: its probabilities are too extreme. ``nan`` when ``y`` has one class; the slope is
    ``nan`` too when the classes are separated (the likelihood has no maximum in the slope)."""
    x, y = to_logit(p), np.asarray(y, np.float64)
    if len(y) == 0 or y.min() == y.max():
        return float("nan"), float("nan")
    intercept = _logistic_fit(x, y, free_slope=False)[1]
    slope = _logistic_fit(x, y, free_slope=True)[0] if x[y == 1].min() <= x[y == 0].max() else float("nan")
    # a handful of overlapping cases (quasi-separation) leaves the slope unbounded too
    return (slope if np.isfinite(slope) and abs(slope) < MAX_SLOPE else float("nan")), intercept


def align_scores(scores: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """``(slope, intercept)`` of the map ``slope * logit(score) + intercept`` that puts the quartiles of
    ``scores`` on those of ``reference`` (median onto median, interquartile range onto interquartile range).

    Labels play no part: it matches one model's score scale to another's on the same images. A
    cross-validated final model's scores are aligned this way to the pooled out-of-fold scores before
    the out-of-fold calibration is applied to it (two networks trained alike can still stop at epochs
    whose scores spread very differently). ``(1, 0)`` when ``scores`` do not spread at all (or are none)."""
    if len(scores) == 0 or len(reference) == 0:
        return 1.0, 0.0
    q_scores = np.quantile(to_logit(scores), [0.25, 0.5, 0.75])
    q_reference = np.quantile(to_logit(reference), [0.25, 0.5, 0.75])
    spread = q_scores[2] - q_scores[0]
    if not spread > 0:
        return 1.0, 0.0
    slope = float((q_reference[2] - q_reference[0]) / spread)
    return slope, float(q_reference[1] - slope * q_scores[1])


# ---- recalibration for a new site (Steyerberg, Clinical Prediction Models, ch. 20) -----------------
def fit_recalibration(p: np.ndarray, y: np.ndarray, method: str) -> tuple[float, float]:
    """``(intercept, slope)`` of ``logit p' = intercept + slope * logit p``, fitted by maximum likelihood
    on a new site's probabilities ``p`` and outcomes ``y``.

    ``intercept``: the slope stays 1 and only the intercept moves (recalibration in the large: the mean
    prediction then equals the observed rate on the fitted data); ``logistic``: both move (logistic
    recalibration: it also shrinks or stretches over-/under-confident predictions); ``none``: ``(0, 1)``.
    Ranking, and so the AUC, is unchanged by either (the slope of a sane fit is positive).
    """
    if method == "none":
        return 0.0, 1.0
    if method not in ("intercept", "logistic"):
        raise ValueError(f"recalibration method '{method}': none, intercept or logistic")
    x, y = to_logit(p), np.asarray(y, np.float64)
    if len(y) == 0 or y.min() == y.max():
        raise ValueError(
            f"recalibration needs both classes in the part it is fitted on ({int(y.sum())} positive of {len(y)})"
        )
    if method == "logistic" and x[y == 1].min() > x[y == 0].max():
        raise ValueError(
            "the part recalibration is fitted on separates the classes (every positive above every negative): "
            "a logistic slope has no maximum there; recalibrate with intercept, or use a larger update_fraction"
        )
    slope, intercept = _logistic_fit(x, y, free_slope=method == "logistic")
    if slope <= 0:
        raise ValueError(
            f"the fitted slope is {slope:.3f}: at this site the model's ranking carries no information (or runs "
            "backwards), and a non-positive slope would reverse it; recalibrate with intercept"
        )
    return intercept, slope


def apply_recalibration(p: np.ndarray, intercept: float, slope: float) -> np.ndarray:
    """``sigmoid(intercept + slope * logit p)``: probabilities updated by ``fit_recalibration``."""
    return expit(intercept + slope * to_logit(p))


def observed_expected(y: np.ndarray, p: np.ndarray) -> float | None:
    """Calibration-in-the-large as a ratio: observed positives over the sum of predicted probabilities
    (1: the model predicts as many cases as there are; below 1: it over-predicts)."""
    expected = float(np.sum(p))
    return float(np.sum(y)) / expected if expected > 0 else None


def _calibration_map(
    scores: np.ndarray, target: np.ndarray, prevalence: dict, calibration
) -> tuple[float, float, float]:
    """``(slope, intercept, prior-shift offset)`` of the calibration asked for (``model_training.calibration``)."""
    offset = prior_shift_offset(prevalence["trained"], prevalence["natural"])
    method = calibration.method
    if method == "platt":
        return (*fit_platt(scores, target, offset, calibration.shrinkage), offset)
    return (1.0, offset, offset) if method == "prior_shift" else (1.0, 0.0, offset)


def calibration_entry(
    y: np.ndarray, raw: np.ndarray, prevalence: dict, calibration, threshold, bins: int, name: str = ""
) -> dict[str, Any]:
    """One finding's calibration and threshold, fitted on labelled scores at their natural prevalence
    (a validation split): the report entry. ``calibration`` and ``threshold`` are the parameter groups
    ``model_training.calibration`` and ``model_training.threshold``."""
    slope, intercept, offset = _calibration_map(raw, y, prevalence, calibration)
    calibrated = apply_calibration(raw, slope, intercept)
    t = threshold
    chosen = choose_threshold(y, calibrated, t.method, t.target_sensitivity, t.target_ppv)
    logger.info(
        "Calibration%s (%s): slope %.3f, intercept %.3f (prior shift %.3f); threshold %.3f (%s)%s",
        f" of {name}" if name else "",
        calibration.method,
        slope,
        intercept,
        offset,
        chosen["value"],
        t.method,
        "; the validation split is separated: every threshold between the classes ties"
        if chosen["validation_separated"]
        else "",
    )
    return {
        **calibration.model_dump(),
        "prevalence": prevalence,
        "prior_shift_offset": offset,
        "slope": slope,
        "intercept": intercept,
        "threshold": {**chosen, **t.model_dump(), "chosen_on": "validation", "scale": "calibrated"},
        "validation": {
            "n_images": int(len(y)),
            "n_positive": int(y.sum()),
            "ece_raw": expected_calibration_error(y, raw, bins),
            "ece_calibrated": expected_calibration_error(y, calibrated, bins),
        },
    }
