"""Evaluation metrics: AUC with patient-level bootstrap CI, operating thresholds, confusion-based rates."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    classification_report,
    confusion_matrix,
    roc_auc_score,
    roc_curve,
)

from cardio_kedro.parallel import Progress


def auc_or_none(y: np.ndarray, p: np.ndarray) -> float | None:
    """ROC AUC, or None when only one class is present."""
    y = np.asarray(y)
    if y.min() == y.max():
        return None
    return float(roc_auc_score(y, p))


def bootstrap_auc(
    y: np.ndarray, p: np.ndarray, groups: np.ndarray, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> dict:
    """ROC AUC with a percentile CI from resampling *patients* (``groups``) with replacement.

    Images of one patient are correlated, so resampling images would give too narrow an interval.
    """
    y, p, groups = np.asarray(y), np.asarray(p), np.asarray(groups)
    point = auc_or_none(y, p)
    uniq, inverse = np.unique(groups, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    starts = np.searchsorted(inverse[order], np.arange(len(uniq)))
    counts = np.bincount(inverse, minlength=len(uniq))
    rng = np.random.default_rng(seed)
    aucs = []
    progress = Progress(int(n_boot), "Bootstrapping the AUC", every=10.0, quiet_if_fast=True)
    for _ in range(int(n_boot)):
        progress.update()
        pick = rng.integers(0, len(uniq), len(uniq))
        idx = order[np.concatenate([np.arange(s, s + c) for s, c in zip(starts[pick], counts[pick])])]
        a = auc_or_none(y[idx], p[idx])
        if a is not None:
            aucs.append(a)
    if point is None or len(aucs) < 10:
        return {"auc": point, "ci_low": None, "ci_high": None, "n_boot": len(aucs)}
    low, high = np.quantile(aucs, [alpha / 2, 1 - alpha / 2])
    return {"auc": point, "ci_low": float(low), "ci_high": float(high), "n_boot": len(aucs)}


def choose_threshold(y: np.ndarray, p: np.ndarray, method: str, target_sensitivity: float) -> float:
    """Operating threshold from *validation* scores: Youden's J, or the highest threshold that
    reaches ``target_sensitivity``."""
    fpr, tpr, thresholds = roc_curve(y, p, drop_intermediate=False)
    thresholds = np.minimum(thresholds, 1.0)
    if method == "youden":
        return float(thresholds[int(np.argmax(tpr - fpr))])
    if method == "sensitivity":
        ok = np.flatnonzero(tpr >= target_sensitivity)
        return float(thresholds[ok[0]])
    raise ValueError(f"threshold method must be 'youden' or 'sensitivity', got '{method}'")


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
    uniq = np.unique(groups)
    by_patient = {g: np.flatnonzero(groups == g) for g in uniq}
    rng = np.random.default_rng(seed)
    curves = []
    for _ in range(n_boot):
        idx = np.concatenate([by_patient[g] for g in rng.choice(uniq, len(uniq))])
        if y[idx].min() == y[idx].max():
            continue
        fpr, tpr, _ = roc_curve(y[idx], p[idx])
        curves.append(np.interp(grid, fpr, tpr))
    if len(curves) < 10:
        return None
    return np.quantile(np.array(curves), [0.025, 0.975], axis=0)
