"""Evaluation metrics: AUC with patient-level bootstrap CI, operating thresholds, confusion-based rates."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    classification_report,
    confusion_matrix,
    roc_auc_score,
    roc_curve,
)

from cardio_kedro.common.parallel import Progress
from cardio_kedro.evaluation.calibration import calibration_slope_intercept, expected_calibration_error
from cardio_kedro.evaluation.intervals import contain


def auc_or_none(y: np.ndarray, p: np.ndarray) -> float | None:
    """ROC AUC, or None when only one class (or no image) is present."""
    y = np.asarray(y)
    if len(y) == 0 or y.min() == y.max():
        return None
    return float(roc_auc_score(y, p))


def _patient_resamples(groups: np.ndarray, n_boot: int, seed: int, what: str):
    """Index arrays of ``n_boot`` resamples of *patients* (``groups``) with replacement."""
    uniq, inverse = np.unique(groups, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    starts = np.searchsorted(inverse[order], np.arange(len(uniq)))
    counts = np.bincount(inverse, minlength=len(uniq))
    rng = np.random.default_rng(seed)
    progress = Progress(int(n_boot), what, every=10.0, quiet_if_fast=True)
    for _ in range(int(n_boot)):
        progress.update()
        pick = rng.integers(0, len(uniq), len(uniq))
        # the images of each picked patient, patient after patient: out[k] = starts[j] + (k - first[j]),
        # built in one pass (a Python loop over 6,000 test patients took 4 s per 1,000 resamples: 20x slower)
        taken = counts[pick]
        first = np.cumsum(taken) - taken
        yield order[np.arange(taken.sum()) + np.repeat(starts[pick] - first, taken)]


Statistic = Callable[[np.ndarray, np.ndarray], "float | None | dict[str, float | None]"]


def _values(name: str, result) -> dict[str, float | None]:
    return dict(result) if isinstance(result, dict) else {name: result}


def patient_bootstrap(
    y: np.ndarray, p: np.ndarray, groups: np.ndarray, statistics: dict[str, Statistic], n_boot: int, seed: int
) -> dict[str, dict]:
    """Each statistic with a 95% percentile CI from resampling *patients* with replacement.

    Images of one patient are correlated, so resampling images would give too narrow an interval.
    A statistic returns a number (or ``None`` where it is undefined: one class, a separated
    resample), or a dict of named numbers computed together. Returns ``{name: {"value", "ci_low",
    "ci_high", "n_boot"}}``; fewer than 10 valid resamples give no interval.
    """
    y, p, groups = np.asarray(y), np.asarray(p), np.asarray(groups)
    points = {k: v for name, fn in statistics.items() for k, v in _values(name, fn(y, p)).items()}
    samples: dict[str, list[float]] = {name: [] for name in points}
    for idx in _patient_resamples(groups, n_boot, seed, f"Bootstrapping {', '.join(points)}"):
        for name, fn in statistics.items():
            for key, value in _values(name, fn(y[idx], p[idx])).items():
                if value is not None and np.isfinite(value):
                    samples[key].append(value)
    return {name: _interval(point, samples[name]) for name, point in points.items()}


def _interval(point: float | None, samples: list[float]) -> dict:
    """The point value with the 95% percentile interval of its resamples (none from fewer than 10), widened to
    the point where the percentiles lie beside it (``contains_estimate`` false: a small or skewed sample)."""
    ok = point is not None and np.isfinite(point) and len(samples) >= 10
    low, high = (float(q) for q in np.quantile(samples, [0.025, 0.975])) if ok else (None, None)
    value = float(point) if point is not None and np.isfinite(point) else None
    low, high, contains = contain(value, low, high)
    return {"value": value, "ci_low": low, "ci_high": high, "n_boot": len(samples), "contains_estimate": contains}


class _WeightedAuc:
    """ROC AUC of a resample given as how many times it takes each image: O(n), no sort per resample.

    The Mann-Whitney form (ties count a half), which is what ``roc_auc_score`` computes: the scores
    are ranked once; a resample only reweights them.
    """

    def __init__(self, y: np.ndarray, p: np.ndarray):
        self.values, self.rank = np.unique(np.asarray(p, float), return_inverse=True)
        self.positive = np.asarray(y).astype(bool)

    def __call__(self, weights: np.ndarray) -> float | None:
        k = len(self.values)
        pos = np.bincount(self.rank, weights=weights * self.positive, minlength=k)
        neg = np.bincount(self.rank, weights=weights * ~self.positive, minlength=k)
        n_pos, n_neg = pos.sum(), neg.sum()
        if n_pos == 0 or n_neg == 0:
            return None
        below = np.cumsum(neg) - neg  # negatives scored lower than each value
        return float(np.dot(pos, below + 0.5 * neg) / (n_pos * n_neg))


def bootstrap_auc(y: np.ndarray, p: np.ndarray, groups: np.ndarray, n_boot: int, seed: int) -> dict:
    """ROC AUC with a patient-level bootstrap CI: ``{"auc", "ci_low", "ci_high", "n_boot"}``.

    The same resamples and values as ``patient_bootstrap`` with ``auc_or_none``, computed as weights
    on the once-ranked scores (22,500 test images: 25x faster than sorting every resample).
    """
    y, p = np.asarray(y), np.asarray(p)
    auc = _WeightedAuc(y, p)
    samples = []
    for idx in _patient_resamples(np.asarray(groups), n_boot, seed, "Bootstrapping auc"):
        value = auc(np.bincount(idx, minlength=len(y)).astype(float))
        if value is not None:
            samples.append(value)
    res = _interval(auc_or_none(y, p), samples)
    return {"auc": res.pop("value"), **res}


def paired_auc_difference(
    y: np.ndarray, p_model: np.ndarray, p_reference: np.ndarray, groups: np.ndarray, n_boot: int, seed: int
) -> dict:
    """AUC of ``p_model`` minus AUC of ``p_reference`` on the same images, with a **paired** patient-level
    bootstrap CI: each resample of patients scores both, so their shared noise cancels (an interval
    much narrower than the two AUCs' intervals side by side). ``{"difference", "ci_low", "ci_high",
    "n_boot", "model_auc", "reference_auc"}``."""
    y = np.asarray(y)
    model, reference = _WeightedAuc(y, p_model), _WeightedAuc(y, p_reference)
    samples = []
    for idx in _patient_resamples(np.asarray(groups), n_boot, seed, "Bootstrapping the paired AUC difference"):
        weights = np.bincount(idx, minlength=len(y)).astype(float)
        a, b = model(weights), reference(weights)
        if a is not None and b is not None:
            samples.append(a - b)
    a, b = auc_or_none(y, p_model), auc_or_none(y, p_reference)
    res = _interval(None if a is None or b is None else a - b, samples)
    return {"difference": res.pop("value"), **res, "model_auc": a, "reference_auc": b}


def calibration_metrics(y: np.ndarray, p: np.ndarray, groups: np.ndarray, bins: int, n_boot: int, seed: int) -> dict:
    """Brier, ECE, calibration slope and calibration-in-the-large, each with a patient-level CI."""

    def slope_and_intercept(yy: np.ndarray, pp: np.ndarray) -> dict[str, float | None]:
        slope, intercept = calibration_slope_intercept(yy, pp) if len(yy) and yy.min() < yy.max() else (None, None)
        return {"calibration_slope": slope, "calibration_intercept": intercept}

    statistics: dict[str, Statistic] = {
        "brier": lambda yy, pp: float(np.mean((pp - yy) ** 2)) if len(yy) else None,
        "ece": lambda yy, pp: expected_calibration_error(yy, pp, bins),
        "slope": slope_and_intercept,
    }
    return patient_bootstrap(y, p, groups, statistics, n_boot, seed)


def rates_at(y: np.ndarray, p: np.ndarray, threshold: float) -> dict:
    """Confusion matrix and the rates a reviewer asks for at ``threshold`` (positive if p >= threshold)."""
    pred = (np.asarray(p) >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()

    def ratio(a, b):
        return float(a / b) if b else None

    sens, ppv = ratio(tp, tp + fn), ratio(tp, tp + fp)
    return {
        "threshold": float(threshold),
        "confusion_matrix": {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
        "sensitivity": sens,
        "specificity": ratio(tn, tn + fp),
        "ppv": ppv,
        "npv": ratio(tn, tn + fn),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
        "classification_report": classification_report(
            y, pred, labels=[0, 1], target_names=["negative", "positive"], output_dict=True, zero_division=0
        ),
    }


def evaluate(y: np.ndarray, p: np.ndarray, groups: np.ndarray, threshold: float, n_boot: int, seed: int) -> dict:
    """Every headline metric of one labelled set of scores."""
    y, p = np.asarray(y), np.asarray(p)
    if len(y) == 0:
        raise ValueError("there are no images to evaluate: the split is empty (check the split fractions and cohort)")
    out = {
        "n_images": int(len(y)),
        "n_patients": int(len(np.unique(groups))),
        "n_positive": int(y.sum()),
        "prevalence": float(y.mean()) if len(y) else None,
        "roc_auc": bootstrap_auc(y, p, groups, n_boot=n_boot, seed=seed),
        "pr_auc": float(average_precision_score(y, p)) if 0 < y.sum() < len(y) else None,
        "brier": float(brier_score_loss(y, p)) if len(y) else None,
    }
    out.update(rates_at(y, p, threshold))
    return out


def roc_band(y: np.ndarray, p: np.ndarray, groups: np.ndarray, n_boot: int, seed: int, points: int = 101):
    """Pointwise 95% band of the ROC curve (TPR on a FPR grid) from patient-level bootstrap."""
    grid = np.linspace(0, 1, points)
    y, p = np.asarray(y), np.asarray(p)
    if len(y) == 0:
        return None
    curves = []
    for idx in _patient_resamples(np.asarray(groups), n_boot, seed, "Bootstrapping the ROC band"):
        if y[idx].min() == y[idx].max():
            continue
        fpr, tpr, _ = roc_curve(y[idx], p[idx])
        curves.append(np.interp(grid, fpr, tpr))
    if len(curves) < 10:
        return None
    return np.quantile(np.array(curves), [0.025, 0.975], axis=0)
