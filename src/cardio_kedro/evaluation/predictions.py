"""Tables of scored images shared by the reports: the prediction columns, subgroup AUCs, net benefit.

A predictions table holds one row per image with ``target``, ``probability`` and ``patient_id`` (the
bootstrap resamples patients). ``config`` below is the ``reporting`` parameter group.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .decision import net_benefit
from .metrics import bootstrap_auc

AGE_BANDS = [0, 40, 60, 80, 200]
AGE_LABELS = ["<40", "40-59", "60-79", "80+"]
PREDICTION_COLUMNS = ["image_index", "patient_id", "path", "sex", "view", "age", "target"]


def labels_and_scores(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(target, probability, patient_id)`` of a predictions table."""
    return frame["target"].to_numpy(), frame["probability"].to_numpy(), frame["patient_id"].to_numpy()


def subgroup_auc(frame: pd.DataFrame, config) -> dict:
    """AUC with its CI in one subgroup, or ``note: n too small`` below ``subgroup_min_per_class`` of a class."""
    y, p, groups = labels_and_scores(frame)
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    out = {"n_images": int(len(y)), "n_positive": n_pos}
    if min(n_pos, n_neg) < config.subgroup_min_per_class:
        return {**out, "auc": None, "ci_low": None, "ci_high": None, "note": "n too small"}
    return {**out, **bootstrap_auc(y, p, groups, config.n_bootstrap, config.seed)}


def subgroups(frame: pd.DataFrame, config) -> dict:
    """AUC with CI by sex, view position and age band; groups too small to score say so."""
    ages = pd.cut(frame["age"], AGE_BANDS, right=False, labels=AGE_LABELS).astype(str).replace("nan", "unknown")
    return {
        family: {str(k): subgroup_auc(g, config) for k, g in frame.groupby(by)}
        for family, by in (("sex", "sex"), ("view", "view"), ("age", ages))
    }


def net_benefit_table(predictions: pd.DataFrame) -> pd.DataFrame:
    """Net benefit of the model, of treating all and of treating none, at threshold probabilities 1%-99%."""
    y, p, _ = labels_and_scores(predictions)
    return net_benefit(y, p, np.round(np.arange(0.01, 1.0, 0.01), 2))
