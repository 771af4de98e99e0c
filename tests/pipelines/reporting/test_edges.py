"""The report's figures at the edges that a real run meets: a calibration bin with no (or only) positives at every
size, a subgroup of one patient, a subgroup whose bootstrap interval lies beside its estimate, a test split of one
class. Each figure is drawn from the reporting nodes' own metrics, as a run draws it."""

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from cardio_kedro.config import ReportingParams  # noqa: E402
from cardio_kedro.evaluation import plots  # noqa: E402
from cardio_kedro.evaluation.predictions import subgroup_auc  # noqa: E402
from cardio_kedro.pipelines.reporting import nodes  # noqa: E402
from tests.helpers import base_params  # noqa: E402

PARAMS = base_params("reporting", n_bootstrap=30, roc_band_max_resamples=30)


def _naive_positive_lower_bound_sizes(limit: int) -> list[int]:
    """Bin sizes where ``centre - half`` at a rate of 0 is a float above 0 (how the demo's figure broke)."""
    z, out = 1.959964, []
    for n in range(1, limit):
        centre = (z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(z * z / (4 * n * n)) / (1 + z * z / n)
        if centre - half > 0:
            out.append(n)
    return out


def _bars(figure: plt.Figure) -> list[np.ndarray]:
    """Every error bar's (low, high) in data units, of every container on the figure's first axes."""
    out = []
    for container in figure.axes[0].containers:
        for collection in container.lines[2]:
            out.extend(np.asarray(seg) for seg in collection.get_segments())
    return out


@pytest.mark.parametrize("n", [*_naive_positive_lower_bound_sizes(400)[:6], 1, 2, 4999, 5000])
def test_the_calibration_figure_draws_a_bin_of_no_positives_and_one_of_only_positives(n):
    # one bin of n negatives at 0.03 and one of n positives at 0.93: the two edges of the Wilson interval
    y = np.r_[np.zeros(n), np.ones(n)].astype(int)
    p = np.r_[np.full(n, 0.03), np.full(n, 0.93)]
    metrics = {name: {"ece": {"value": 0.05}, "brier": {"value": 0.01}} for name in ("raw_score", "calibrated")}
    figure = plots.calibration(y, p, p, metrics, 10)
    try:
        bars = _bars(figure)
        assert len(bars) == 4  # two bins, two curves
        for segment in bars:  # vertical bars: same x, low <= high, inside [0, 1]
            (x0, y0), (x1, y1) = segment
            assert x0 == x1 and 0.0 <= y0 <= y1 <= 1.0
        lows = sorted(min(s[:, 1]) for s in bars)
        highs = sorted(max(s[:, 1]) for s in bars)
        assert lows[0] == 0.0 and highs[-1] == 1.0
    finally:
        plt.close(figure)


def _predictions(targets: np.ndarray, patients: np.ndarray, sex: np.ndarray, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = len(targets)
    score = np.clip(0.3 * targets + rng.random(n) * 0.7, 0.001, 0.999)
    return pd.DataFrame(
        {
            "image_index": [f"{i:08d}_000.png" for i in range(n)],
            "patient_id": patients,
            "target": targets,
            "probability": np.clip(score * 0.2, 0.001, 0.999),
            "score": score,
            "sex": sex,
            "view": np.where(np.arange(n) % 2, "PA", "AP"),
            "age": 30 + (np.arange(n) % 50),
        }
    )


def _report_figures(test: pd.DataFrame) -> tuple[dict, list[plt.Figure]]:
    """Metrics, decision curve, headline metrics and every evaluation figure of one test split."""
    validation = _predictions(np.r_[np.ones(10), np.zeros(30)].astype(int), np.arange(40), np.full(40, "M"), seed=1)
    calibration = {"threshold": {"value": 0.05, "method": "youden"}}
    baseline = test[["image_index", "patient_id", "target"]].assign(probability=test["score"][::-1].to_numpy())
    metrics = nodes.evaluation_metrics(validation, test, calibration, baseline, PARAMS)
    curve = nodes.decision_curve(test)
    headline = nodes.headline_metrics(metrics, {})
    assert all(math.isfinite(v["value"]) for v in headline.values())
    return metrics, list(nodes.evaluation_plots(test, metrics, curve, PARAMS))


@pytest.mark.parametrize("target", [0, 1])
def test_a_test_split_of_one_class_draws_every_figure(target):
    n = 69  # a size whose all-negative bin broke the demo
    test = _predictions(np.full(n, target), np.arange(n) // 2, np.where(np.arange(n) % 3, "M", "F"))
    metrics, figures = _report_figures(test)
    try:
        assert metrics["test"]["roc_auc"]["auc"] is None and metrics["test"]["n_positive"] == n * target
        assert len(figures) == 7
        roc_text = " ".join(t.get_text() for t in figures[0].axes[0].texts)
        assert "no ROC curve" in roc_text and f"{n * target} positive of {n}" in roc_text
        for segment in _bars(figures[4]):
            assert segment[0][1] <= segment[1][1]
    finally:
        for figure in figures:
            plt.close(figure)


def test_a_subgroup_of_one_patient_and_one_beside_its_estimate_are_drawn_and_marked():
    rng = np.random.default_rng(3)
    n = 120
    targets = (rng.random(n) < 0.3).astype(int)
    targets[:6] = [1, 0, 1, 0, 1, 0]
    patients = np.r_[np.zeros(6, int), np.arange(1, n - 5)]  # the first six films: one patient, the only woman
    sex = np.r_[np.full(6, "F"), np.full(n - 6, "M")]
    metrics, figures = _report_figures(_predictions(targets, patients, sex))
    try:
        assert metrics["subgroups"]["sex"]["F"]["n_images"] == 6  # too few per class: listed, not scored
        labels = [t.get_text() for t in figures[6].axes[0].get_yticklabels()]
        assert any(label.startswith("sex: F (n=6)") for label in labels)
    finally:
        for figure in figures:
            plt.close(figure)
    # one patient with enough films of both classes: every resample is that patient, the interval its point
    one = {"sex": {"F": subgroup_auc(_predictions(targets[:40], np.zeros(40, int), np.full(40, "F")),
                                             ReportingParams.model_validate(PARAMS))}}  # fmt: skip
    assert one["sex"]["F"]["ci_low"] == one["sex"]["F"]["auc"] == one["sex"]["F"]["ci_high"]
    # an interval beside its estimate (percentile intervals need not hold it): drawn, never a negative bar
    flagged = {"n_images": 30, "auc": 0.95, "ci_low": 0.80, "ci_high": 0.90, "contains_estimate": False}
    beside = {"age": {"40-60": {"n_images": 30, "auc": 0.70, "ci_low": 0.74, "ci_high": 0.90}}, "view": {"AP": flagged}}
    figure = plots.subgroup_auc({**one, **beside})
    try:
        bars = [s for c in figure.axes[0].containers for coll in c.lines[2] for s in coll.get_segments()]
        assert len(bars) == 3 and all(s[0][0] <= s[1][0] for s in bars)
        reached = sorted((round(s[0][0], 3), round(s[1][0], 3)) for s in bars)
        assert (0.7, 0.9) in reached and (0.8, 0.95) in reached  # each bar reaches its estimate
        labels = [t.get_text() for t in figure.axes[0].get_yticklabels()]
        assert "view: AP (n=30) *" in labels and "beside its estimate" in figure.axes[0].get_title()
    finally:
        plt.close(figure)
