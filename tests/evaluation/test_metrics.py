"""The paired bootstrap of an AUC difference: against hand-computed AUCs and the unpaired intervals."""

import numpy as np
from sklearn.metrics import roc_auc_score

from cardio_kedro.evaluation.metrics import bootstrap_auc, paired_auc_difference


def _scores(n=400, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.2).astype(int)
    groups = np.arange(n) // 2
    shared = rng.normal(size=n)  # what both models read, their shared noise
    model = 1.2 * y + shared + 0.3 * rng.normal(size=n)
    reference = 0.9 * y + shared + 0.3 * rng.normal(size=n)
    return y, model, reference, groups


def test_the_difference_is_the_two_aucs_apart():
    y, model, reference, groups = _scores()
    result = paired_auc_difference(y, model, reference, groups, n_boot=200, seed=1)
    assert np.isclose(result["model_auc"], roc_auc_score(y, model))
    assert np.isclose(result["difference"], roc_auc_score(y, model) - roc_auc_score(y, reference))
    assert result["ci_low"] < result["difference"] < result["ci_high"] and result["n_boot"] == 200


def test_pairing_narrows_the_interval_and_finds_a_real_difference():
    y, model, reference, groups = _scores()
    paired = paired_auc_difference(y, model, reference, groups, n_boot=300, seed=1)
    a = bootstrap_auc(y, model, groups, n_boot=300, seed=1)
    b = bootstrap_auc(y, reference, groups, n_boot=300, seed=1)
    assert a["ci_low"] < b["ci_high"]  # side by side, the intervals overlap ...
    assert paired["ci_low"] > 0  # ... paired, the model is better
    assert paired["ci_high"] - paired["ci_low"] < 0.5 * (a["ci_high"] - a["ci_low"] + b["ci_high"] - b["ci_low"])


def test_the_same_scores_differ_by_exactly_zero():
    y, model, _, groups = _scores()
    result = paired_auc_difference(y, model, model, groups, n_boot=50, seed=0)
    assert result["difference"] == 0 and result["ci_low"] == 0 and result["ci_high"] == 0
