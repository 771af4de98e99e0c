"""Nodes of the reporting pipeline: predictions, metrics, plots, attention analysis, one HTML report."""

from __future__ import annotations

import io
import logging
from typing import Any

import numpy as np
import pandas as pd

from cardio_kedro.cohort.sampling import undersample
from cardio_kedro.common.formatting import fmt, fmt_auc, short_key
from cardio_kedro.config import ModelTrainingParams, ReportingParams, as_params
from cardio_kedro.datasets import PixelCache
from cardio_kedro.evaluation import plots
from cardio_kedro.evaluation.baseline import pixel_baseline_probability
from cardio_kedro.evaluation.headline import SINGLE_SPLIT, evaluated_figures, headline
from cardio_kedro.evaluation.localization import POINTING_TOLERANCE, boxes_in_cache_frame, localization_scores
from cardio_kedro.evaluation.metrics import (
    auc_or_none,
    bootstrap_auc,
    calibration_metrics,
    evaluate,
    roc_band,
)
from cardio_kedro.evaluation.predictions import PREDICTION_COLUMNS, net_benefit_table, subgroups
from cardio_kedro.evaluation.predictions import labels_and_scores as _scores
from cardio_kedro.evaluation.report import best_epoch, dropped_summary, render_report
from cardio_kedro.modeling import (
    overlay,
    predict_with_attention,
)
from cardio_kedro.modeling.feeds import predict_cached

logger = logging.getLogger(__name__)


def predict_split(classifier, split: pd.DataFrame, pixel_cache: PixelCache, params: dict[str, Any]) -> pd.DataFrame:
    """The calibrated probability and the raw score of every image of a split (no augmentation)."""
    config = as_params(ReportingParams, params)
    rows = pixel_cache.rows(split["path"])
    probability, score = predict_cached(classifier, pixel_cache.pixels(), rows, config.batch_size)
    return split[PREDICTION_COLUMNS].assign(probability=probability, score=score)


def baseline_predictions(
    train: pd.DataFrame, test: pd.DataFrame, pixel_cache: PixelCache, params: dict[str, Any]
) -> pd.DataFrame:
    """The reference model: logistic regression on standardised downsampled pixels, fitted on the
    same (rebalanced) train split as the network, scored on the test split.

    A network that does not beat this has not learnt more than global pixel statistics.
    """
    config = as_params(ReportingParams, params).baseline
    probability = pixel_baseline_probability(
        pixel_cache.images(train["path"]),
        train["target"].to_numpy(),
        pixel_cache.images(test["path"]),
        config.image_size,
        config.regularization,
    )
    return test[["image_index", "patient_id", "target"]].assign(probability=probability)


def _calibration(frame: pd.DataFrame, config: ReportingParams) -> dict:
    """Calibration of the raw score and of the calibrated probability, each metric with its CI."""
    y, _, groups = _scores(frame)
    return {
        name: calibration_metrics(
            y, frame[column].to_numpy(), groups, config.calibration_bins, config.n_bootstrap, config.seed
        )
        for name, column in (("raw_score", "score"), ("calibrated", "probability"))
    }


def _baseline(model_auc: dict, baseline: pd.DataFrame, config: ReportingParams) -> dict:
    """The reference model's AUC with its CI, and whether the network beats it (CIs apart)."""
    auc = bootstrap_auc(*_scores(baseline), config.n_bootstrap, config.seed)
    beats = model_auc["ci_low"] is not None and auc["ci_high"] is not None and model_auc["ci_low"] > auc["ci_high"]
    return {
        "model": f"logistic regression on {config.baseline.image_size}x{config.baseline.image_size} pixels",
        "roc_auc": auc,
        "model_beats_baseline": bool(beats),
    }


def _by_view(test: pd.DataFrame, run, config: ReportingParams) -> dict:
    """The test metrics and the calibrated probability's calibration per view position (AP films magnify
    the heart, so a model can score views differently); a view without both classes gets no AUC."""
    out = {}
    for view, frame in test.groupby("view"):
        y, p, groups = _scores(frame)
        metrics = run(frame)
        metrics["calibration"] = calibration_metrics(
            y, p, groups, config.calibration_bins, config.n_bootstrap, config.seed
        )
        out[str(view)] = metrics
    return out


def evaluation_metrics(
    validation_predictions: pd.DataFrame,
    test_predictions: pd.DataFrame,
    calibration: dict,
    baseline: pd.DataFrame,
    params: dict[str, Any],
) -> dict:
    """Test metrics at natural prevalence and at the model's own threshold (chosen on validation,
    saved with the model): rates, calibration before and after, the baseline, a 3:1 test set as
    the original used, and subgroup AUCs (sex, view position, age band)."""
    config = as_params(ReportingParams, params)
    threshold = calibration["threshold"]["value"]

    def run(frame: pd.DataFrame) -> dict:
        return evaluate(*_scores(frame), threshold, config.n_bootstrap, config.seed)

    test = run(test_predictions)
    ratio = config.original_neg_per_pos
    note = f"test split with {ratio:g} negatives per positive, for comparison with the original notebook"
    if 0 < test["n_positive"] < test["n_images"]:
        rebalanced = {**run(undersample(test_predictions, ratio, np.random.default_rng(config.seed))), "note": note}
    else:  # no positive (or no negative) to rebalance around
        rebalanced = {"roc_auc": {"auc": None}, "note": f"{note}: not drawn, the test split holds one class"}
    reference = _baseline(test["roc_auc"], baseline, config)
    test["calibration"] = _calibration(test_predictions, config)
    logger.info(
        "Test ROC AUC %s (baseline %s), ECE %s, Brier %s, sensitivity %s, specificity %s at threshold %.3f",
        fmt_auc(test["roc_auc"]),
        fmt_auc(reference["roc_auc"]),
        fmt(test["calibration"]["calibrated"]["ece"]["value"]),
        fmt(test["brier"]),
        fmt(test["sensitivity"]),
        fmt(test["specificity"]),
        threshold,
    )
    if not reference["model_beats_baseline"]:
        logger.warning("The model does not beat the pixel baseline: their test AUC intervals overlap or it is below")
    return {
        "threshold": calibration["threshold"],
        "validation_auc": auc_or_none(*_scores(validation_predictions)[:2]),
        "test": test,
        "baseline": reference,
        f"test_rebalanced_{ratio:g}to1": rebalanced,
        "subgroups": subgroups(test_predictions, config),
        "by_view": _by_view(test_predictions, run, config),
    }


def decision_curve(test_predictions: pd.DataFrame) -> pd.DataFrame:
    """Net benefit of the model, of treating all and of treating none, at threshold probabilities 1%-99%."""
    return net_benefit_table(test_predictions)


def headline_metrics(metrics: dict, localization: dict) -> dict[str, dict[str, float]]:
    """The evaluation numbers worth comparing across runs, as MLflow metrics (step 0)."""
    test = metrics["test"]
    calibrated = test["calibration"]["calibrated"]
    figures = evaluated_figures(test, calibrated, metrics["baseline"]["roc_auc"]["auc"])
    flat = headline(SINGLE_SPLIT, figures) | {
        "test_ece_raw_score": test["calibration"]["raw_score"]["ece"]["value"],
        "test_brier_raw_score": test["calibration"]["raw_score"]["brier"]["value"],
        "baseline_auc_ci_low": metrics["baseline"]["roc_auc"]["ci_low"],
        "baseline_auc_ci_high": metrics["baseline"]["roc_auc"]["ci_high"],
        "test_ppv": test["ppv"],
        "test_npv": test["npv"],
        "test_f1": test["f1"],
        "threshold": metrics["threshold"]["value"],
    }
    for view, by_view in metrics.get("by_view", {}).items():  # test_auc.view_AP, test_ece.view_PA, ...
        flat[f"test_auc.view_{view}"] = by_view["roc_auc"]["auc"]
        flat[f"test_brier.view_{view}"] = by_view["brier"]
        flat[f"test_ece.view_{view}"] = by_view["calibration"]["ece"]["value"]
    for key in (
        "pointing_game_hit_rate",
        "pointing_game_strict",
        "uniform_pointing_reference",
        "attention_mass_in_box",
        "uniform_reference",
    ):
        flat[f"attention_{key}".replace("attention_attention_", "attention_")] = localization.get(key)
    for key, value in metrics.items():
        if key.startswith("test_rebalanced"):
            flat[f"{key}_auc"] = value["roc_auc"]["auc"]
    for family, groups in metrics["subgroups"].items():
        for name, res in groups.items():
            flat[f"subgroup_{family}_{name}_auc".replace("<", "lt").replace("+", "plus")] = res["auc"]
    return {k: {"value": float(v), "step": 0} for k, v in flat.items() if v is not None}


def evaluation_plots(test_predictions: pd.DataFrame, metrics: dict, curve: pd.DataFrame, params: dict[str, Any]):
    """ROC (with band and operating point), confusion matrix, classification report, PR, calibration
    before and after, decision curve, subgroups."""
    config = as_params(ReportingParams, params)
    y, p, groups = _scores(test_predictions)
    test = metrics["test"]
    band = roc_band(y, p, groups, min(config.n_bootstrap, config.roc_band_max_resamples), config.seed)
    raw = test_predictions["score"].to_numpy()
    return (
        plots.roc(y, p, test["roc_auc"], test, band),
        plots.confusion(test["confusion_matrix"], test["threshold"]),
        plots.report_table(test["classification_report"]),
        plots.precision_recall(y, p, test["pr_auc"]),
        plots.calibration(y, raw, p, test["calibration"], config.calibration_bins),
        plots.decision_curve(curve, test["threshold"], test["prevalence"]),
        plots.subgroup_auc(metrics["subgroups"]),
    )


def cohort_plots(
    metadata: pd.DataFrame,
    train: pd.DataFrame,
    validation: pd.DataFrame,
    test: pd.DataFrame,
    train_split: pd.DataFrame,
    validation_split: pd.DataFrame,
    target_finding: str,
):
    """Raw class distribution, rebalanced distribution and patient-wise split sizes."""
    return (
        plots.class_distribution(metadata, target_finding),
        plots.rebalanced_distribution(train, validation, test),
        plots.split_sizes(train_split, validation_split, test),
    )


def example_images(train: pd.DataFrame, pixel_cache: PixelCache, params: dict[str, Any]):
    """Example positive and negative training images, as the model sees them."""
    n = as_params(ReportingParams, params).examples_per_class
    picks = pd.concat([train[train["target"] == 1].head(n), train[train["target"] == 0].head(n)])
    titles = [
        f"{'positive' if t else 'negative'}: {short_key(i)}" for t, i in zip(picks["target"], picks["image_index"])
    ]
    colors = [plots.POS if t else plots.NEG for t in picks["target"]]
    images = list(pixel_cache.images(picks["path"]))
    return plots.image_grid(images, titles, "Example training images", ncols=n, title_colors=colors)


def architecture_plot(classifier):
    """The model architecture: Keras' plot_model where graphviz is installed, else the layer summary."""
    import keras

    try:
        import matplotlib.image as mpimg
        import matplotlib.pyplot as plt

        buf = keras.utils.model_to_dot(classifier, show_shapes=True, expand_nested=False).create(format="png")
        fig, ax = plt.subplots(figsize=(8, 12))
        ax.imshow(mpimg.imread(io.BytesIO(buf), format="png"))
        ax.axis("off")
        return fig
    except Exception:  # noqa: BLE001 - pydot or graphviz missing: the summary as text
        lines: list[str] = []
        classifier.summary(print_fn=lambda line, **_: lines.append(line), line_length=110)
        return plots.text_figure("\n".join(lines), f"Model architecture: {classifier.name}")


def training_curves_plot(history: pd.DataFrame):
    """Loss and AUC per epoch, both phases, best epoch marked."""
    return plots.training_curves(history)


def _heatmap_groups(test_predictions: pd.DataFrame, threshold: float, n: int) -> dict[str, pd.DataFrame]:
    """The most confident true positives, false positives, false negatives and true negatives."""
    pred = test_predictions["probability"] >= threshold
    y = test_predictions["target"] == 1
    return {
        "TP": test_predictions[pred & y].nlargest(n, "probability"),
        "FP": test_predictions[pred & ~y].nlargest(n, "probability"),
        "FN": test_predictions[~pred & y].nsmallest(n, "probability"),
        "TN": test_predictions[~pred & ~y].nsmallest(n, "probability"),
    }


def attention_heatmaps(
    classifier, test_predictions: pd.DataFrame, pixel_cache: PixelCache, metrics: dict, params: dict[str, Any]
):
    """Heat-map grid: a row each of true positives, false positives, false negatives, true negatives."""
    n = as_params(ReportingParams, params).heatmaps_per_group
    threshold = metrics["threshold"]["value"]
    images, titles, colors = [], [], []
    for name, frame in _heatmap_groups(test_predictions, threshold, n).items():
        if frame.empty:
            continue
        pixels = pixel_cache.images(frame["path"])
        _, maps = predict_with_attention(classifier, pixels)
        for img, heat, (_, row) in zip(pixels, maps, frame.iterrows()):
            images.append(overlay(img, heat))
            titles.append(f"{name} p={row['probability']:.2f}\n{short_key(row['image_index'])}")
            colors.append(plots.POS if name in ("TP", "FN") else plots.NEG)
    return plots.image_grid(
        images, titles, f"Attention heat maps (threshold {threshold:.3f})", ncols=n, title_colors=colors
    )


def attention_localization(
    classifier, test_predictions: pd.DataFrame, pixel_cache: PixelCache, boxes: pd.DataFrame, target_finding: str
) -> dict:
    """Localization of the attention on test images that have a bounding box for the target finding,
    overall and by view position (``by_view``)."""
    if boxes.empty:
        return {"n_images": 0, "note": "no BBox_List_2017.csv in the cohort"}
    target_boxes = boxes[boxes["finding"] == target_finding].drop_duplicates("image_index").set_index("image_index")
    frame = test_predictions[test_predictions["image_index"].isin(target_boxes.index)]
    if frame.empty:
        return {"n_images": 0, "note": f"no test image has a {target_finding} box"}
    b = boxes_in_cache_frame(
        target_boxes.loc[frame["image_index"], ["x", "y", "w", "h"]].to_numpy(float),
        pixel_cache.source_shapes(frame["path"]),
        pixel_cache.size,
    )
    _, maps = predict_with_attention(classifier, pixel_cache.images(frame["path"]))
    tolerance = POINTING_TOLERANCE * pixel_cache.size
    out = localization_scores(maps, b, tolerance)
    views = frame["view"].astype(str).to_numpy()
    # by view: a model may look at the film's view cues (AP films magnify the heart) instead of the heart
    out["by_view"] = {v: localization_scores(maps[views == v], b[views == v], tolerance) for v in sorted(set(views))}
    logger.info(
        "Attention localization on %d boxed test images: pointing game %.3f (a uniform map %.3f), "
        "mass in box %.3f (a uniform map %.3f)",
        out["n_images"],
        out["pointing_game_hit_rate"],
        out["uniform_pointing_reference"],
        out["attention_mass_in_box"],
        out["uniform_reference"],
    )
    return out


def build_report(
    metrics: dict,
    calibration_report: dict,
    localization: dict,
    quality: dict,
    history: pd.DataFrame,
    target_finding: str,
    image_size: int,
    model_params: dict[str, Any],
    **figures: bytes,
) -> str:
    """One self-contained HTML report (figures embedded) with a model card section."""
    model = as_params(ModelTrainingParams, model_params)
    by_view = metrics.get("by_view", {})  # reports before the per-view breakdown have none
    return render_report(
        "report.html.j2",
        figures,
        target=target_finding,
        image_size=image_size,
        metrics=metrics,
        calibration=calibration_report,
        metric_rows=[
            *((k, v) for k, v in metrics.items() if k.startswith("test")),
            *((f"test, {view} films", m) for view, m in by_view.items()),
        ],
        calibration_rows=[
            *metrics["test"]["calibration"].items(),
            *((f"calibrated, {view} films", m["calibration"]) for view, m in by_view.items()),
        ],
        localization=localization,
        quality=quality,
        dropped=dropped_summary(quality),
        best=best_epoch(history),
        model=model.model.model_dump(),
        batch_size=model.batch_size,
    )
