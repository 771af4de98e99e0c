"""Nodes of the reporting pipeline: predictions, metrics, plots, attention analysis, one HTML report."""

from __future__ import annotations

import io
import logging
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

from cardio_kedro.cohort.quality import view_problem
from cardio_kedro.cohort.sampling import undersample
from cardio_kedro.common.errors import UserValueError
from cardio_kedro.common.formatting import fmt, fmt_auc, fmt_interval, short_key
from cardio_kedro.config import ExternalParams, ModelTrainingParams, RebalanceParams, ReportingParams
from cardio_kedro.datasets import PixelCache
from cardio_kedro.evaluation.baseline import pixel_baseline_probability
from cardio_kedro.evaluation.calibration import apply_recalibration, observed_expected
from cardio_kedro.evaluation.decision import net_benefit
from cardio_kedro.evaluation.localization import POINTING_TOLERANCE, boxes_in_cache_frame, localization_scores
from cardio_kedro.evaluation.metrics import (
    auc_or_none,
    bootstrap_auc,
    calibration_metrics,
    evaluate,
    paired_auc_difference,
    patient_bootstrap,
    rates_at,
    roc_band,
)
from cardio_kedro.evaluation.report import best_epoch, render_report
from cardio_kedro.modeling import (
    model_findings,
    model_quality_guard,
    operating_threshold,
    overlay,
    predict_with_attention,
)
from cardio_kedro.modeling.feeds import predict_cached

from . import plots

logger = logging.getLogger(__name__)

AGE_BANDS = [0, 40, 60, 80, 200]
AGE_LABELS = ["<40", "40-59", "60-79", "80+"]
PREDICTION_COLUMNS = ["image_index", "patient_id", "path", "sex", "view", "age", "target"]


def predict_split(classifier, split: pd.DataFrame, pixel_cache: PixelCache, params: dict[str, Any]) -> pd.DataFrame:
    """The calibrated probability and the raw score of every image of a split (no augmentation)."""
    config = ReportingParams.model_validate(params)
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
    config = ReportingParams.model_validate(params).baseline
    probability = pixel_baseline_probability(
        pixel_cache.images(train["path"]),
        train["target"].to_numpy(),
        pixel_cache.images(test["path"]),
        config.image_size,
        config.regularization,
    )
    return test[["image_index", "patient_id", "target"]].assign(probability=probability)


def _scores(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return frame["target"].to_numpy(), frame["probability"].to_numpy(), frame["patient_id"].to_numpy()


def _subgroup_auc(frame: pd.DataFrame, config: ReportingParams) -> dict:
    y, p, groups = _scores(frame)
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    out = {"n_images": int(len(y)), "n_positive": n_pos}
    if min(n_pos, n_neg) < config.subgroup_min_per_class:
        return {**out, "auc": None, "ci_low": None, "ci_high": None, "note": "n too small"}
    return {**out, **bootstrap_auc(y, p, groups, config.n_bootstrap, config.seed)}


def _subgroups(test: pd.DataFrame, config: ReportingParams) -> dict:
    """AUC with CI by sex, view position and age band; groups too small to score say so."""
    ages = pd.cut(test["age"], AGE_BANDS, right=False, labels=AGE_LABELS).astype(str).replace("nan", "unknown")
    return {
        family: {str(k): _subgroup_auc(g, config) for k, g in test.groupby(by)}
        for family, by in (("sex", "sex"), ("view", "view"), ("age", ages))
    }


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
    config = ReportingParams.model_validate(params)
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
        "subgroups": _subgroups(test_predictions, config),
        "by_view": _by_view(test_predictions, run, config),
    }


def decision_curve(test_predictions: pd.DataFrame) -> pd.DataFrame:
    """Net benefit of the model, of treating all and of treating none, at threshold probabilities 1%-99%."""
    y, p, _ = _scores(test_predictions)
    return net_benefit(y, p, np.round(np.arange(0.01, 1.0, 0.01), 2))


def headline_metrics(metrics: dict, localization: dict) -> dict[str, dict[str, float]]:
    """The evaluation numbers worth comparing across runs, as MLflow metrics (step 0)."""
    test = metrics["test"]
    calibrated = test["calibration"]["calibrated"]
    flat = {
        "test_auc": test["roc_auc"]["auc"],
        "test_ece": calibrated["ece"]["value"],
        "test_calibration_slope": calibrated["calibration_slope"]["value"],
        "test_calibration_intercept": calibrated["calibration_intercept"]["value"],
        "test_ece_raw_score": test["calibration"]["raw_score"]["ece"]["value"],
        "test_brier_raw_score": test["calibration"]["raw_score"]["brier"]["value"],
        "baseline_auc": metrics["baseline"]["roc_auc"]["auc"],
        "baseline_auc_ci_low": metrics["baseline"]["roc_auc"]["ci_low"],
        "baseline_auc_ci_high": metrics["baseline"]["roc_auc"]["ci_high"],
        "test_auc_ci_low": test["roc_auc"]["ci_low"],
        "test_auc_ci_high": test["roc_auc"]["ci_high"],
        "test_pr_auc": test["pr_auc"],
        "test_brier": test["brier"],
        "test_sensitivity": test["sensitivity"],
        "test_specificity": test["specificity"],
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
    config = ReportingParams.model_validate(params)
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
    n = ReportingParams.model_validate(params).examples_per_class
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
    n = ReportingParams.model_validate(params).heatmaps_per_group
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
    model = ModelTrainingParams.model_validate(model_params)
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
        dropped=", ".join(f"{k}: {v['count']}" for k, v in quality["dropped_by_reason"].items()) or "none",
        best=best_epoch(history),
        model=model.model.model_dump(),
        batch_size=model.batch_size,
    )


# ---- cross-validation ----------------------------------------------------------------------------
def _prevalence_only_brier(out_of_fold: pd.DataFrame) -> float:
    """Brier of predicting, for each fold, the prevalence of the other folds (what a model that learnt
    nothing but the base rate scores, out of fold too)."""
    y, fold = out_of_fold["target"].to_numpy(float), out_of_fold["fold"].to_numpy()
    rate = np.array([y[fold != k].mean() for k in fold])
    return float(np.mean((rate - y) ** 2))


def cross_validation_metrics(out_of_fold: pd.DataFrame, calibration: dict, params: dict[str, Any]) -> dict:
    """The pooled out-of-fold figures: the model's ROC AUC (patient-level CI), PR AUC, Brier against
    the prevalence-only Brier, ECE and calibration slope; each image's call at its own fold model's
    threshold; the pixel baseline's pooled AUC on the same folds and the **paired** difference
    (model minus baseline, patient bootstrap); per-fold AUCs; the final model's calibration."""
    config = ReportingParams.model_validate(params)
    y = out_of_fold["target"].to_numpy()
    p, raw = out_of_fold["probability"].to_numpy(), out_of_fold["raw_score"].to_numpy()
    ranked, groups = out_of_fold["ranking_score"].to_numpy(), out_of_fold["patient_id"].to_numpy()
    base = out_of_fold["baseline_ranking_score"].to_numpy()
    n_boot, seed = config.n_bootstrap, config.seed
    # each image's call at its own fold's threshold: p >= t  <=>  p - t + 0.5 >= 0.5
    shifted = np.clip(p - out_of_fold["fold_threshold"].to_numpy() + 0.5, 0, 1)
    pooled = evaluate(y, p, groups, 0.5, n_boot, seed) | {
        k: v for k, v in rates_at(y, shifted, 0.5).items() if k != "threshold"
    }
    pooled["threshold"] = "each fold model's own (chosen on its validation part)"
    # the ranking of the pool: the aligned scores (fold_calibration: aligned) or the probabilities
    pooled["ranked_by"] = "probability" if np.array_equal(ranked, p) else "aligned_score"
    if pooled["ranked_by"] != "probability":
        pooled["probability_roc_auc"] = pooled["roc_auc"]["auc"]
        pooled["roc_auc"] = bootstrap_auc(y, ranked, groups, n_boot=n_boot, seed=seed)
        pooled["pr_auc"] = float(average_precision_score(y, ranked)) if 0 < y.sum() < len(y) else None
    pooled["calibration"] = {
        "raw_score": calibration_metrics(y, raw, groups, config.calibration_bins, n_boot, seed),
        "calibrated": calibration_metrics(y, p, groups, config.calibration_bins, n_boot, seed),
    }
    pooled["prevalence_only_brier"] = _prevalence_only_brier(out_of_fold)
    paired = paired_auc_difference(y, ranked, base, groups, n_boot, seed)
    beats = paired["ci_low"] is not None and paired["ci_low"] > 0
    folds = []
    for k, part in out_of_fold.groupby("fold"):
        yk = part["target"].to_numpy()
        folds.append(
            {
                "fold": int(k) + 1,
                "n_images": int(len(part)),
                "n_patients": int(part["patient_id"].nunique()),
                "n_positive": int(yk.sum()),
                "auc": auc_or_none(yk, part["probability"].to_numpy()),
                "baseline_auc": auc_or_none(yk, part["baseline_probability"].to_numpy()),
                "threshold": float(part["fold_threshold"].iloc[0]),
            }
        )
    if beats:
        logger.info("Out of fold, the model beats the pixel baseline: paired AUC difference %s", _fmt_paired(paired))
    else:
        logger.warning("Out of fold, the model does NOT beat the pixel baseline: paired AUC difference %s",
                       _fmt_paired(paired))  # fmt: skip
    return {
        "out_of_fold": pooled,
        "baseline": {"roc_auc": bootstrap_auc(y, base, groups, n_boot, seed)},
        "paired_difference": paired,
        "beats_baseline": beats,
        "folds": folds,
        "n_folds": len(folds),
        "final_model": {
            "calibration_slope": calibration["slope"],
            "calibration_intercept": calibration["intercept"],
            "threshold": calibration["threshold"]["value"],
            "fitted_on": calibration.get("fitted_on", "validation"),
        },
    }


def _fmt_paired(paired: dict) -> str:
    value = paired["difference"]
    return "n/a" if value is None else f"{value:+.3f} (95% CI {fmt_interval(paired['ci_low'], paired['ci_high'])})"


def cross_validation_headline_metrics(metrics: dict) -> dict[str, dict[str, float]]:
    """The cross-validation figures as MLflow metrics (``cv_*``, step 0; per fold: step = fold)."""
    pooled, paired = metrics["out_of_fold"], metrics["paired_difference"]
    calibrated = pooled["calibration"]["calibrated"]
    flat = {
        "cv_auc": pooled["roc_auc"]["auc"],
        "cv_auc_ci_low": pooled["roc_auc"]["ci_low"],
        "cv_auc_ci_high": pooled["roc_auc"]["ci_high"],
        "cv_pr_auc": pooled["pr_auc"],
        "cv_brier": pooled["brier"],
        "cv_prevalence_only_brier": pooled["prevalence_only_brier"],
        "cv_ece": calibrated["ece"]["value"],
        "cv_calibration_slope": calibrated["calibration_slope"]["value"],
        "cv_calibration_intercept": calibrated["calibration_intercept"]["value"],
        "cv_sensitivity": pooled["sensitivity"],
        "cv_specificity": pooled["specificity"],
        "cv_baseline_auc": metrics["baseline"]["roc_auc"]["auc"],
        "cv_auc_difference": paired["difference"],
        "cv_auc_difference_ci_low": paired["ci_low"],
        "cv_auc_difference_ci_high": paired["ci_high"],
        "cv_probability_auc": pooled.get("probability_roc_auc"),
        "cv_beats_baseline": float(metrics["beats_baseline"]),
        "threshold": metrics["final_model"]["threshold"],
    }
    out = {k: [{"value": float(v), "step": 0}] for k, v in flat.items() if v is not None}
    for name in ("auc", "baseline_auc"):
        steps = [{"value": float(f[name]), "step": f["fold"]} for f in metrics["folds"] if f[name] is not None]
        out[f"cv_fold_{name}"] = steps
    return out


def cross_validation_plots(out_of_fold: pd.DataFrame, metrics: dict, params: dict[str, Any]):
    """Out-of-fold ROC of the model and the baseline, per-fold AUCs, and the reliability diagram."""
    config = ReportingParams.model_validate(params)
    y = out_of_fold["target"].to_numpy()
    pooled = metrics["out_of_fold"]
    return (
        plots.roc_against_baseline(
            y,
            out_of_fold["ranking_score"].to_numpy(),
            out_of_fold["baseline_ranking_score"].to_numpy(),
            pooled["roc_auc"],
            metrics["baseline"]["roc_auc"],
            metrics["paired_difference"],
        ),  # fmt: skip
        plots.fold_aucs(metrics["folds"]),
        plots.calibration(
            y,
            out_of_fold["raw_score"].to_numpy(),
            out_of_fold["probability"].to_numpy(),
            pooled["calibration"],
            config.calibration_bins,
            where="out of fold",
        ),
    )


def build_cross_validation_report(
    metrics: dict,
    quality: dict,
    target_finding: str,
    image_size: int,
    model_params: dict[str, Any],
    **figures: bytes,
) -> str:
    """The cross-validation report: the out-of-fold figures where a test split would be, and a fold table."""
    model = ModelTrainingParams.model_validate(model_params)
    return render_report(
        "cross_validation.html.j2",
        figures,
        target=target_finding,
        image_size=image_size,
        metrics=metrics,
        quality=quality,
        paired=_fmt_paired(metrics["paired_difference"]),
        dropped=", ".join(f"{k}: {v['count']}" for k, v in quality["dropped_by_reason"].items()) or "none",
        model=model.model.model_dump(),
        batch_size=model.batch_size,
        keep_weights=model.keep_weights,
        fold_calibration=model.cross_validation.fold_calibration,
        members=model.cross_validation.members,
    )


# ---- external validation -------------------------------------------------------------------------
# The internal figures of the model's training run, as its MLflow metrics name them: the test split's
# (training) or the pooled out-of-fold ones (cross_validation).
INTERNAL_METRICS = {
    "internal test split": {
        "auc": "test_auc", "auc_ci_low": "test_auc_ci_low", "auc_ci_high": "test_auc_ci_high",
        "pr_auc": "test_pr_auc", "brier": "test_brier", "ece": "test_ece",
        "calibration_slope": "test_calibration_slope", "calibration_intercept": "test_calibration_intercept",
        "sensitivity": "test_sensitivity", "specificity": "test_specificity", "baseline_auc": "baseline_auc",
    },
    "internal out of fold": {
        "auc": "cv_auc", "auc_ci_low": "cv_auc_ci_low", "auc_ci_high": "cv_auc_ci_high",
        "pr_auc": "cv_pr_auc", "brier": "cv_brier", "ece": "cv_ece",
        "calibration_slope": "cv_calibration_slope", "calibration_intercept": "cv_calibration_intercept",
        "sensitivity": "cv_sensitivity", "specificity": "cv_specificity", "baseline_auc": "cv_baseline_auc",
    },
}  # fmt: skip


def _internal_figures(run_metrics: dict[str, float]) -> dict:
    """The model's own evaluation (its training run's metrics), or ``{"where": None}`` when unknown."""
    for where, names in INTERNAL_METRICS.items():
        if names["auc"] in run_metrics:
            return {"where": where, **{key: run_metrics.get(name) for key, name in names.items()}}
    return {"where": None}


def score_external_cohort(
    model_info: dict, cohort: pd.DataFrame, pixel_cache: PixelCache, external: dict[str, Any], params: dict[str, Any]
) -> tuple[pd.DataFrame, dict]:
    """Every image of the external cohort scored by the model: calibrated probability, raw score and the
    verdict of the model's quality guard (``quality``). Also the model card of the run: which model
    (registered name, version, training run), its threshold and internal figures, and the cohort."""
    config, reporting = ExternalParams.model_validate(external), ReportingParams.model_validate(params)
    model = model_info["model"]
    if model_findings(model):
        raise UserValueError(
            f"Model {model_info['version']} is a multi-label model ({len(model_findings(model))} findings): external "
            "validation scores a binary classifier"
        )
    threshold = operating_threshold(model)
    if threshold is None:
        raise UserValueError(
            f"Model {model_info['version']} ({model_info['source']}) has no threshold and calibration of its own: "
            "external validation scores a calibrated classifier (the training pipeline registers one)"
        )
    size = int(model.inputs[0].shape[1])
    if size != pixel_cache.size:
        raise UserValueError(
            f"Model {model_info['version']} reads {size} px images and the external cohort was decoded at "
            f"{pixel_cache.size} px: run with --params=image_size={size},..."
        )
    rows = pixel_cache.rows(cohort["path"])
    probability, score = predict_cached(model, pixel_cache.pixels(), rows, reporting.batch_size)
    guard = model_quality_guard(model)
    pixels = pixel_cache.pixels()
    shapes = cohort[["src_height", "src_width"]].to_numpy()
    views = cohort["view"] if "view" in cohort else pd.Series([None] * len(cohort))
    quality = [  # a lateral film by its own view (layout metadata, DICOM header), else the guard on its pixels
        view_problem(view) or (guard.check(pixels[r], tuple(s)) if guard else "unchecked")
        for r, s, view in zip(rows, shapes, views)
    ]
    columns = [c for c in (*PREDICTION_COLUMNS, "part") if c in cohort.columns]
    predictions = cohort[columns].assign(probability=probability, score=score, quality=quality)
    name = config.name or str(config.cohort_dir).rstrip("/").rsplit("/", 1)[-1]
    card = {
        "model": model_info["version"],
        "registered_name": model_info.get("name"),
        "registered_version": model_info.get("model_version"),
        "training_run_id": model_info.get("run_id"),
        "source": model_info["source"],
        "threshold": float(threshold),
        "image_size": size,
        "has_quality_guard": guard is not None,
        "internal": _internal_figures(model_info.get("run_metrics") or {}),
        "cohort": {"name": name, "dir": str(config.cohort_dir), "layout": config.cohort.layout},
    }
    flagged = int((predictions["quality"].isin(["ok", "unchecked"]) == 0).sum())
    logger.info(
        "Scored %d external images of %d patients with model %s (threshold %.3f); the quality guard flags %d",
        len(predictions), predictions["patient_id"].nunique(), model_info["version"], threshold, flagged,
    )  # fmt: skip
    return predictions, card


def external_baseline_predictions(
    internal: pd.DataFrame,
    pixel_cache: PixelCache,
    cohort: pd.DataFrame,
    external_pixel_cache: PixelCache,
    rebalance: dict[str, Any],
    params: dict[str, Any],
) -> pd.DataFrame:
    """The pixel baseline fitted on this project's own (internal) cohort, the newest ``model_input_table``,
    rebalanced as the model's training images were (``data_processing.rebalance``), and scored on the
    external cohort. A single-split model trained on part of that cohort; a cross-validated final model on
    all of it: the baseline gets at least the images the model had, never an external one."""
    config, balance = ReportingParams.model_validate(params).baseline, RebalanceParams.model_validate(rebalance)
    if balance.strategy == "undersample":
        internal = undersample(internal, balance.neg_per_pos, np.random.default_rng(balance.seed), match="sex")
    probability = pixel_baseline_probability(
        pixel_cache.images(internal["path"]),
        internal["target"].to_numpy(),
        external_pixel_cache.images(cohort["path"]),
        config.image_size,
        config.regularization,
    )
    return cohort[["image_index", "patient_id", "target"]].assign(probability=probability)


def _scored(predictions: pd.DataFrame, include_flagged: bool) -> pd.DataFrame:
    """The images the metrics count: those the model would label (quality ok), or all with include_flagged."""
    return predictions if include_flagged else predictions[predictions["quality"].isin(["ok", "unchecked"])]


def _calibration_in_the_large(y: np.ndarray, p: np.ndarray, groups: np.ndarray, config: ReportingParams) -> dict:
    """Mean predicted probability against the observed rate, and their ratio (observed / expected) with CIs."""
    return patient_bootstrap(
        y,
        p,
        groups,
        {
            "observed_rate": lambda yy, pp: float(np.mean(yy)),
            "mean_predicted": lambda yy, pp: float(np.mean(pp)),
            "observed_expected": observed_expected,
        },
        config.n_bootstrap,
        config.seed,
    )


def _external_calibration(frame: pd.DataFrame, column: str, config: ReportingParams) -> dict:
    y, groups = frame["target"].to_numpy(), frame["patient_id"].to_numpy()
    p = frame[column].to_numpy()
    return {
        **calibration_metrics(y, p, groups, config.calibration_bins, config.n_bootstrap, config.seed),
        "in_the_large": _calibration_in_the_large(y, p, groups, config),
    }


def external_validation_metrics(
    predictions: pd.DataFrame,
    baseline: pd.DataFrame,
    recalibration: dict,
    card: dict,
    external: dict[str, Any],
    params: dict[str, Any],
) -> dict:
    """The external figures: ROC and PR AUC with patient-level CIs, rates at the model's own threshold,
    calibration-in-the-large (mean predicted against observed, O/E), calibration slope and intercept,
    subgroups by view, sex and age band; the pixel baseline on the same images with the paired difference;
    the model's internal figures beside them; and, with ``external.recalibrate``, the evaluation part
    before and after the recalibration fitted on the update part."""
    config, ext = ReportingParams.model_validate(params), ExternalParams.model_validate(external)
    scored = _scored(predictions, ext.include_flagged)
    if scored["target"].nunique() < 2:
        raise UserValueError(
            f"The external cohort's scored images hold one class only ({int(scored['target'].sum())} positive of "
            f"{len(scored)}): AUC and calibration need both"
        )
    y, p, groups = _scores(scored)
    external_figures = evaluate(y, p, groups, card["threshold"], config.n_bootstrap, config.seed)
    pr = patient_bootstrap(y, p, groups, {"pr_auc": _pr_auc}, config.n_bootstrap, config.seed)["pr_auc"]
    external_figures["pr_auc_ci"] = pr
    external_figures["probability_range"] = [float(p.min()), float(p.max())]
    external_figures["calibration"] = _external_calibration(scored, "probability", config)
    base = baseline.set_index("image_index").loc[scored["image_index"], "probability"].to_numpy()
    paired = paired_auc_difference(y, p, base, groups, config.n_bootstrap, config.seed)
    quality = predictions["quality"].value_counts().to_dict()
    out = {
        "model": {k: v for k, v in card.items() if k != "internal"},
        "cohort": {
            **card["cohort"],
            "n_images": int(len(predictions)),
            "n_patients": int(predictions["patient_id"].nunique()),
            "n_positive": int(predictions["target"].sum()),
            "quality": {str(k): int(v) for k, v in quality.items()},
            "scored": "every image" if ext.include_flagged else "images the quality guard passes",
        },
        "external": external_figures,
        "internal": card["internal"],
        "baseline": {
            "model": f"logistic regression on {config.baseline.image_size}x{config.baseline.image_size} pixels, "
            "fitted on this project's own cohort (its newest model input table, rebalanced as for training)",
            "roc_auc": bootstrap_auc(y, base, groups, config.n_bootstrap, config.seed),
            "paired_difference": paired,
            "model_beats_baseline": bool(paired["ci_low"] is not None and paired["ci_low"] > 0),
        },
        "subgroups": _subgroups(scored, config),
        "recalibration": _recalibration_figures(scored, recalibration, card["threshold"], config),
    }
    cil = external_figures["calibration"]["in_the_large"]
    logger.info(
        "External ROC AUC %s (internal %s), baseline %s; mean predicted %s, observed %s, O/E %s",
        fmt_auc(external_figures["roc_auc"]), fmt(card["internal"].get("auc")), fmt_auc(out["baseline"]["roc_auc"]),
        fmt(cil["mean_predicted"]["value"]), fmt(cil["observed_rate"]["value"]), fmt(cil["observed_expected"]["value"]),
    )  # fmt: skip
    return out


def _pr_auc(y: np.ndarray, p: np.ndarray) -> float | None:
    return float(average_precision_score(y, p)) if 0 < y.sum() < len(y) else None


def _recalibration_figures(scored: pd.DataFrame, recalibration: dict, threshold: float, config: ReportingParams):
    """The evaluation part's calibration before and after the update (``None`` without recalibration)."""
    if recalibration["method"] == "none":
        return None
    part = scored[scored["part"] == "evaluation"]
    updated = part.assign(
        recalibrated=apply_recalibration(part["probability"].to_numpy(), recalibration["intercept"],
                                         recalibration["slope"])
    )  # fmt: skip
    y = updated["target"].to_numpy()
    return {
        **recalibration,
        "evaluation_part": {
            "n_images": int(len(part)),
            "n_patients": int(part["patient_id"].nunique()),
            "n_positive": int(y.sum()),
        },
        "before": _external_calibration(updated, "probability", config),
        "after": _external_calibration(updated, "recalibrated", config),
        "rates_before": rates_at(y, updated["probability"].to_numpy(), threshold),
        "rates_after": rates_at(y, updated["recalibrated"].to_numpy(), recalibration["threshold"]),
    }


def external_headline_metrics(metrics: dict) -> dict[str, dict[str, float]]:
    """The external figures as MLflow metrics (``external_*``, step 0)."""
    ext, base = metrics["external"], metrics["baseline"]
    cal, cil = ext["calibration"], ext["calibration"]["in_the_large"]
    flat = {
        "external_auc": ext["roc_auc"]["auc"],
        "external_auc_ci_low": ext["roc_auc"]["ci_low"],
        "external_auc_ci_high": ext["roc_auc"]["ci_high"],
        "external_pr_auc": ext["pr_auc"],
        "external_brier": ext["brier"],
        "external_ece": cal["ece"]["value"],
        "external_calibration_slope": cal["calibration_slope"]["value"],
        "external_calibration_intercept": cal["calibration_intercept"]["value"],
        "external_mean_predicted": cil["mean_predicted"]["value"],
        "external_observed_rate": cil["observed_rate"]["value"],
        "external_observed_expected": cil["observed_expected"]["value"],
        "external_sensitivity": ext["sensitivity"],
        "external_specificity": ext["specificity"],
        "external_baseline_auc": base["roc_auc"]["auc"],
        "external_auc_difference": base["paired_difference"]["difference"],
        "external_auc_difference_ci_low": base["paired_difference"]["ci_low"],
        "external_auc_difference_ci_high": base["paired_difference"]["ci_high"],
        "external_n_images": metrics["cohort"]["n_images"],
        "external_n_scored": ext["n_images"],
    }
    recal = metrics["recalibration"]
    if recal is not None:
        for when in ("before", "after"):
            flat[f"external_recalibration_{when}_observed_expected"] = recal[when]["in_the_large"]["observed_expected"][
                "value"
            ]
            flat[f"external_recalibration_{when}_calibration_intercept"] = recal[when]["calibration_intercept"]["value"]
            flat[f"external_recalibration_{when}_calibration_slope"] = recal[when]["calibration_slope"]["value"]
            flat[f"external_recalibration_{when}_brier"] = recal[when]["brier"]["value"]
    return {k: {"value": float(v), "step": 0} for k, v in flat.items() if v is not None}


def external_decision_curve(predictions: pd.DataFrame, external: dict[str, Any]) -> pd.DataFrame:
    """Net benefit of the model on the external images it scores, of treating all and of treating none."""
    return decision_curve(_scored(predictions, ExternalParams.model_validate(external).include_flagged))


def external_validation_plots(
    predictions: pd.DataFrame,
    baseline: pd.DataFrame,
    metrics: dict,
    curve: pd.DataFrame,
    recalibration: dict,
    external: dict[str, Any],
    params: dict[str, Any],
):
    """ROC of the model and the baseline, the reliability diagram (and after recalibration), the decision
    curve and the subgroup AUCs, on the external cohort."""
    config, ext = ReportingParams.model_validate(params), ExternalParams.model_validate(external)
    scored = _scored(predictions, ext.include_flagged)
    y, p, _ = _scores(scored)
    base = baseline.set_index("image_index").loc[scored["image_index"], "probability"].to_numpy()
    figures = metrics["external"]
    roc = plots.roc_against_baseline(
        y, p, base, figures["roc_auc"], metrics["baseline"]["roc_auc"], metrics["baseline"]["paired_difference"],
        where="external",
    )  # fmt: skip
    recal = metrics["recalibration"]
    if recal is None:
        calibration_plot = plots.reliability(
            y, {"model": (p, figures["calibration"])}, config.calibration_bins, "external cohort"
        )
    else:
        part = scored[scored["part"] == "evaluation"]
        before = part["probability"].to_numpy()
        after = apply_recalibration(before, recalibration["intercept"], recalibration["slope"])
        calibration_plot = plots.reliability(
            part["target"].to_numpy(),
            {"model": (before, recal["before"]), f"recalibrated ({recal['method']})": (after, recal["after"])},
            config.calibration_bins,
            "external evaluation part",
        )
    return (
        roc,
        calibration_plot,
        plots.decision_curve(curve, metrics["model"]["threshold"], figures["prevalence"], where="external"),
        plots.subgroup_auc(metrics["subgroups"], where="external"),
    )


def build_external_validation_report(
    metrics: dict, quality: dict, target_finding: str, image_size: int, **figures: bytes
) -> str:
    """The external validation report: the cohort, the external figures beside the internal ones,
    calibration and its recalibration, the baseline, subgroups."""
    internal, external = metrics["internal"], metrics["external"]
    cal = external["calibration"]
    rows = [
        ("ROC AUC", internal.get("auc"), fmt_interval(internal.get("auc_ci_low"), internal.get("auc_ci_high")),
         external["roc_auc"]["auc"], fmt_interval(external["roc_auc"]["ci_low"], external["roc_auc"]["ci_high"])),
        ("PR AUC", internal.get("pr_auc"), "", external["pr_auc"],
         fmt_interval(external["pr_auc_ci"]["ci_low"], external["pr_auc_ci"]["ci_high"])),
        ("Brier", internal.get("brier"), "", external["brier"],
         fmt_interval(cal["brier"]["ci_low"], cal["brier"]["ci_high"])),
        ("ECE", internal.get("ece"), "", cal["ece"]["value"],
         fmt_interval(cal["ece"]["ci_low"], cal["ece"]["ci_high"])),
        ("calibration slope", internal.get("calibration_slope"), "", cal["calibration_slope"]["value"],
         fmt_interval(cal["calibration_slope"]["ci_low"], cal["calibration_slope"]["ci_high"])),
        ("calibration intercept (in the large)", internal.get("calibration_intercept"), "",
         cal["calibration_intercept"]["value"],
         fmt_interval(cal["calibration_intercept"]["ci_low"], cal["calibration_intercept"]["ci_high"])),
        ("sensitivity at the threshold", internal.get("sensitivity"), "", external["sensitivity"], ""),
        ("specificity at the threshold", internal.get("specificity"), "", external["specificity"], ""),
        ("pixel baseline ROC AUC", internal.get("baseline_auc"), "", metrics["baseline"]["roc_auc"]["auc"],
         fmt_interval(metrics["baseline"]["roc_auc"]["ci_low"], metrics["baseline"]["roc_auc"]["ci_high"])),
    ]  # fmt: skip
    return render_report(
        "external_validation.html.j2",
        figures,
        target=target_finding,
        image_size=image_size,
        metrics=metrics,
        comparison=rows,
        paired=_fmt_paired(metrics["baseline"]["paired_difference"]),
        quality=quality,
        dropped=", ".join(f"{k}: {v['count']}" for k, v in quality["dropped_by_reason"].items()) or "none",
    )
