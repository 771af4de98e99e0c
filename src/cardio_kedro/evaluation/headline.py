"""The headline figures of a model's own evaluation and the MLflow metric names its runs log them under: a
training run's test split (``test_auc``, ...) and a cross-validation run's pooled out-of-fold figures
(``cv_auc``, ...). External validation reads a scored model's run by the same names."""

from __future__ import annotations

FIGURES = ("auc", "auc_ci_low", "auc_ci_high", "pr_auc", "brier", "ece", "calibration_slope",
           "calibration_intercept", "sensitivity", "specificity", "baseline_auc")  # fmt: skip
SINGLE_SPLIT = {figure: f"test_{figure}" for figure in FIGURES} | {"baseline_auc": "baseline_auc"}
OUT_OF_FOLD = {figure: f"cv_{figure}" for figure in FIGURES}
EXTERNAL = {figure: f"external_{figure}" for figure in FIGURES}
INTERNAL = {"internal test split": SINGLE_SPLIT, "internal out of fold": OUT_OF_FOLD}  # what a scored run logged


def headline(names: dict[str, str], figures: dict[str, float | None]) -> dict[str, float | None]:
    """``figures`` (keyed by ``FIGURES``, every one) under the metric names of ``names``."""
    if set(figures) != set(FIGURES):
        raise ValueError(f"headline figures {sorted(set(FIGURES) ^ set(figures))} missing or unknown")
    return {names[figure]: value for figure, value in figures.items()}


def evaluated_figures(evaluated: dict, calibration: dict, baseline_auc: float | None) -> dict[str, float | None]:
    """``FIGURES`` of one evaluation: ``evaluated`` as ``metrics.evaluate`` gives it, ``calibration`` as
    ``metrics.calibration_metrics`` gives it (the calibrated probabilities'), and the baseline's AUC."""
    return {
        "auc": evaluated["roc_auc"]["auc"],
        "auc_ci_low": evaluated["roc_auc"]["ci_low"],
        "auc_ci_high": evaluated["roc_auc"]["ci_high"],
        "pr_auc": evaluated["pr_auc"],
        "brier": evaluated["brier"],
        "ece": calibration["ece"]["value"],
        "calibration_slope": calibration["calibration_slope"]["value"],
        "calibration_intercept": calibration["calibration_intercept"]["value"],
        "sensitivity": evaluated["sensitivity"],
        "specificity": evaluated["specificity"],
        "baseline_auc": baseline_auc,
    }


def internal_figures(run_metrics: dict[str, float]) -> dict:
    """A model's own evaluation from its training run's metrics (``where``: which), or ``{"where": None}``."""
    for where, names in INTERNAL.items():
        if names["auc"] in run_metrics:
            return {"where": where, **{figure: run_metrics.get(name) for figure, name in names.items()}}
    return {"where": None}
