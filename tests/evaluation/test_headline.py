"""One table of headline metric names: what a run logs is what external validation reads back."""

import numpy as np
import pandas as pd
import pytest

from cardio_kedro.evaluation.headline import FIGURES, OUT_OF_FOLD, SINGLE_SPLIT, headline, internal_figures


def test_names_are_those_the_runs_have_always_logged():
    assert SINGLE_SPLIT["auc"] == "test_auc" and SINGLE_SPLIT["baseline_auc"] == "baseline_auc"
    assert OUT_OF_FOLD["ece"] == "cv_ece" and OUT_OF_FOLD["baseline_auc"] == "cv_baseline_auc"
    with pytest.raises(ValueError, match="auc_ci_low"):
        headline(SINGLE_SPLIT, {figure: 0.5 for figure in FIGURES if figure != "auc_ci_low"})


def test_the_headline_metrics_of_a_run_read_back_as_its_internal_figures():
    from cardio_kedro.pipelines.reporting.nodes import evaluation_metrics, headline_metrics
    from tests.helpers import base_params

    rng = np.random.default_rng(0)
    n = 200
    frame = pd.DataFrame({"image_index": [f"{i}.png" for i in range(n)], "patient_id": np.arange(n)})
    frame = frame.assign(path="p", sex="F", view="PA", age=50.0, target=rng.random(n) < 0.3)
    frame["probability"] = np.clip(frame["target"] * 0.4 + rng.random(n) * 0.6, 0, 1)
    frame["score"] = frame["probability"]
    calibration = {"threshold": {"value": 0.5}, "slope": 1.0, "intercept": 0.0}
    baseline = frame[["image_index", "patient_id", "target"]].assign(probability=rng.random(n))
    metrics = evaluation_metrics(frame, frame, calibration, baseline, base_params("reporting", n_bootstrap=20))
    logged = {name: value["value"] for name, value in headline_metrics(metrics, {}).items()}
    internal = internal_figures(logged)
    assert internal["where"] == "internal test split"
    assert internal["auc"] == pytest.approx(metrics["test"]["roc_auc"]["auc"])
    assert internal["baseline_auc"] == pytest.approx(metrics["baseline"]["roc_auc"]["auc"])
    assert internal_figures({"cv_auc": 0.8})["where"] == "internal out of fold"
    assert internal_figures({}) == {"where": None}
