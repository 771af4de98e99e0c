"""Decisions from probabilities: an operating threshold chosen on validation, and the decision curve."""

from __future__ import annotations

import numpy as np
import pandas as pd

THRESHOLD_METHODS = ("youden", "sensitivity", "ppv")


def _cuts(y: np.ndarray, p: np.ndarray) -> pd.DataFrame:
    """Every distinct way to call ``p >= t`` positive, with the interval of ``t`` that gives it.

    Cut ``k`` calls the top ``k`` distinct scores positive: any ``t`` in ``(lower, upper]`` gives
    it, where ``upper`` is the k-th highest distinct score and ``lower`` the next one down.
    """
    scores = np.unique(p)[::-1]  # distinct, descending
    pos_at = pd.Series(y).groupby(p).sum().reindex(scores).to_numpy()
    neg_at = pd.Series(1 - y).groupby(p).sum().reindex(scores).to_numpy()
    tp, fp = np.cumsum(pos_at), np.cumsum(neg_at)
    n_pos, n_neg = y.sum(), len(y) - y.sum()
    lower = np.append(scores[1:], min(0.0, scores[-1]))
    with np.errstate(invalid="ignore", divide="ignore"):
        ppv = tp / (tp + fp)
    return pd.DataFrame(
        {
            "upper": scores,
            "lower": lower,
            "sensitivity": tp / n_pos,
            "specificity": 1 - fp / n_neg,
            "ppv": ppv,
        }
    )


def choose_threshold(y: np.ndarray, p: np.ndarray, method: str, target_sensitivity: float, target_ppv: float) -> dict:
    """Operating threshold from *validation* labels and (calibrated) probabilities.

    ``youden``: the cut with the largest sensitivity + specificity - 1; ``sensitivity``: the most
    specific cut that reaches ``target_sensitivity``; ``ppv``: the most sensitive cut that reaches
    ``target_ppv``. Every threshold in the chosen cut's interval makes the same calls, and where
    several cuts tie (a separated split ties every cut between the classes) the interval spans them
    all: the threshold is the middle of that interval, not its edge, so it does not sit on a score.
    """
    y, p = np.asarray(y, np.int64), np.asarray(p, np.float64)
    if len(y) == 0 or y.min() == y.max():
        raise ValueError(
            f"choosing a threshold needs validation images of both classes ({int(y.sum())} positive of {len(y)})"
        )
    cuts = _cuts(y, p)
    if method == "youden":
        score = cuts["sensitivity"] + cuts["specificity"] - 1
    elif method == "sensitivity":
        score = cuts["specificity"].where(cuts["sensitivity"] >= target_sensitivity)
    elif method == "ppv":
        score = cuts["sensitivity"].where(cuts["ppv"] >= target_ppv)
    else:
        raise ValueError(f"threshold method must be one of {THRESHOLD_METHODS}, got '{method}'")
    if score.isna().all():
        raise ValueError(f"no threshold reaches the {method} target on the validation split")
    best = cuts[np.isclose(score, score.max())]
    low, high = float(best["lower"].min()), float(best["upper"].max())
    chosen = best.iloc[0]
    separated = bool(p[y == 1].min() > p[y == 0].max())
    return {
        "value": (low + high) / 2,
        "method": method,
        "tied_interval": [low, high],
        "validation_sensitivity": float(chosen["sensitivity"]),
        "validation_specificity": float(chosen["specificity"]),
        "validation_separated": separated,
    }


def net_benefit(y: np.ndarray, p: np.ndarray, thresholds: np.ndarray) -> pd.DataFrame:
    """Decision curve (Vickers & Elkin 2006): net benefit of the model, of treating all and of none.

    At threshold probability ``t``, net benefit = TP/n - FP/n * t/(1 - t): true positives found,
    less false positives weighted by the odds at which a clinician is indifferent.
    """
    y, p = np.asarray(y, np.float64), np.asarray(p, np.float64)
    t = np.asarray(thresholds, np.float64)
    if len(y) == 0:  # no image: no benefit to weigh (nan, not a division by zero)
        nan = np.full_like(t, np.nan)
        return pd.DataFrame({"threshold": t, "model": nan, "treat_all": nan, "treat_none": np.zeros_like(t)})
    if not ((t > 0) & (t < 1)).all():
        raise ValueError("decision-curve thresholds must lie strictly between 0 and 1 (the odds t/(1-t) are infinite)")
    n, prevalence = len(y), y.mean()
    called = p[None, :] >= t[:, None]
    tp = (called & (y[None, :] == 1)).sum(axis=1) / n
    fp = (called & (y[None, :] == 0)).sum(axis=1) / n
    odds = t / (1 - t)
    return pd.DataFrame(
        {
            "threshold": t,
            "model": tp - fp * odds,
            "treat_all": prevalence - (1 - prevalence) * odds,
            "treat_none": np.zeros_like(t),
        }
    )
