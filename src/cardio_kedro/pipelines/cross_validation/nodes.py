"""Nodes of the cross_validation pipeline: patient-wise folds, one model per fold scoring the fold it never
saw, the pooled out-of-fold predictions, the final model calibrated out of fold, and their report.

Each fold's model is its own node (``train_fold_model``, in the namespace ``fold_<k>``): the folds are
independent, so a runner or an orchestrator may run them apart; ``pool_out_of_fold`` puts them together.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import keras
import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

from cardio_kedro.cohort.findings import TargetFindings, balanced_patient_folds, parse_target_findings
from cardio_kedro.common.errors import UserValueError
from cardio_kedro.common.formatting import fmt_paired
from cardio_kedro.config import (
    BaselineParams,
    CrossValidationParams,
    ModelTrainingParams,
    RebalanceParams,
    ReportingParams,
    as_params,
)
from cardio_kedro.datasets import PixelCache
from cardio_kedro.evaluation import plots
from cardio_kedro.evaluation.calibration import align_scores, apply_calibration, calibration_entry
from cardio_kedro.evaluation.headline import OUT_OF_FOLD, evaluated_figures, headline
from cardio_kedro.evaluation.metrics import (
    auc_or_none,
    bootstrap_auc,
    calibration_metrics,
    evaluate,
    paired_auc_difference,
    rates_at,
)
from cardio_kedro.evaluation.report import dropped_summary, render_report
from cardio_kedro.modeling import calibrate
from cardio_kedro.modeling.feeds import predict_cached
from cardio_kedro.modeling.fitting import ensemble_baseline, fit_guard, fit_with_held_out_validation, history_metrics
from cardio_kedro.modeling.training import keras_state

logger = logging.getLogger(__name__)

OUT_OF_FOLD_COLUMNS = ["image_index", "patient_id", "path", "sex", "view", "age", "target", "fold"]


def assign_folds(decoded: pd.DataFrame, target_findings: TargetFindings, params: dict[str, Any]) -> pd.DataFrame:
    """Every image in one of ``cross_validation.n_folds`` folds (a ``fold``
    column, 0..n-1), no patient in two, each fold holding its share of the positive patients and,
    as near as whole patients allow, of the positive images (``balanced_patient_folds``; seeded)."""
    config = as_params(CrossValidationParams, params)
    findings = parse_target_findings(target_findings)
    if len(findings) > 1:
        raise UserValueError(
            f"Cross-validation is for one target finding; target_findings names {len(findings)}: {list(findings)}"
        )
    patient_labels = decoded.groupby("patient_id")["target"].agg(["max", "sum", "size"])
    n_pos = int(patient_labels["max"].sum())
    if n_pos < config.n_folds or len(patient_labels) - n_pos < config.n_folds:
        raise UserValueError(
            f"{config.n_folds} folds need at least {config.n_folds} positive and negative patients; the cohort has "
            f"{n_pos} positive of {len(patient_labels)}. Lower cross_validation.n_folds (in conf/<env>/parameters.yml)."
        )
    rng = np.random.default_rng(config.seed)
    codes = balanced_patient_folds(
        patient_labels["size"].to_numpy(), patient_labels["sum"].to_numpy(), config.n_folds, rng
    )
    folds = decoded.assign(fold=decoded["patient_id"].map(pd.Series(codes, index=patient_labels.index)).astype(int))
    for k, part in folds.groupby("fold"):
        logger.info(
            "Fold %d: %d images, %d patients, %d %s",
            k + 1, len(part), part["patient_id"].nunique(), int(part["target"].sum()), findings[0],
        )  # fmt: skip
    return folds


def train_fold_model(
    folds: pd.DataFrame,
    pixel_cache: PixelCache,
    rebalance_params: dict[str, Any],
    params: dict[str, Any],
    cross_validation: dict[str, Any],
    baseline_params: dict[str, Any],
    calibration_bins: int,
    fold: int,
) -> tuple[pd.DataFrame, pd.DataFrame, dict, pd.DataFrame]:
    """Fold ``fold`` (1..n): a model trained on the other folds scores the images of this one.

    The model holds out ``cross_validation.validation_fraction`` of its training patients for its best
    epoch and its own calibration (``fit_with_held_out_validation``; training seed
    ``model_training.seed + fold - 1``). The pixel baseline is fitted on the same rebalanced training
    images and scores the same fold and the model's validation part.

    Returns the fold's images with the network's raw ``score`` and the baseline's probability
    (``baseline_probability``), the validation part's scores (``score``, ``baseline_score``), the
    fold model's calibration with the prevalences it was trained at, and its training history.
    """
    config, settings = (
        as_params(ModelTrainingParams, params),
        as_params(CrossValidationParams, cross_validation),
    )
    rebalance, baseline = (
        as_params(RebalanceParams, rebalance_params),
        as_params(BaselineParams, baseline_params),
    )
    k = fold - 1  # the fold column counts from 0
    held, pool = folds[folds["fold"] == k], folds[folds["fold"] != k]
    if held.empty:
        raise UserValueError(
            f"Fold {fold} holds no image: the folds table has {int(folds['fold'].max()) + 1} folds and the pipeline "
            f"was built with at least {fold}: cross_validation.n_folds shapes the pipeline when it is built. Run it "
            "with 'kedro run --pipelines=cross_validation' (which builds it from the run's conf and --params)."
        )
    logger.info(
        "Fold %d/%d: training on %d images (%d positive), scoring %d (%d positive)",
        fold, settings.n_folds, len(pool), int(pool["target"].sum()), len(held), int(held["target"].sum()),
    )  # fmt: skip
    started = time.monotonic()
    with keras_state(config.mixed_precision, clear_after=True):
        model, history, rebalancing, kept, entry, scores = fit_with_held_out_validation(
            pool, pixel_cache, rebalance, config, settings, calibration_bins, config.seed + k
        )
        _, raw = predict_cached(model, pixel_cache.pixels(), pixel_cache.rows(held["path"]), config.batch_size)
    validation_paths = pool.set_index("image_index").loc[scores["image_index"], "path"]
    scored = pixel_cache.images(pd.concat([held["path"], validation_paths], ignore_index=True))
    reference = ensemble_baseline(kept, scored, pixel_cache, baseline)
    logger.info("Fold %d/%d done in %.0f s", fold, settings.n_folds, time.monotonic() - started)
    return (
        held[OUT_OF_FOLD_COLUMNS].assign(score=raw, baseline_probability=reference[: len(held)]),
        scores.assign(baseline_score=reference[len(held) :]),
        {"calibration": entry, "prevalence": rebalancing["prevalence"]},
        history.assign(fold=k),
    )


def shared_fold_calibration(
    validation_scores: list[pd.DataFrame], held_patients: set, prevalence: dict, config: ModelTrainingParams, bins: int
) -> dict[str, Any]:
    """One fold model's calibration fitted on the validation parts of every fold model (each scored
    by its own model), less the images of ``held_patients``, the fold it is to score: none of that
    fold's labels is seen, and the map rests on about five validation parts instead of one."""
    pooled = pd.concat(validation_scores, ignore_index=True)
    pooled = pooled[~pooled["patient_id"].isin(held_patients)]
    return calibration_entry(
        pooled["target"].to_numpy(),
        pooled["score"].to_numpy(),
        prevalence,
        config.calibration,
        config.threshold,
        bins,
        "shared",
    )


def align_fold_scores(validation_scores: list[pd.DataFrame], column: str = "score") -> list[tuple[float, float]]:
    """One ``(slope, intercept)`` logit map per fold model that puts the quartiles of its scores
    (``column``) on its own validation part onto those of all the validation parts pooled
    (``align_scores``; no label is used). Networks trained alike end on differently spread scores;
    pooled as they are, a fold whose scores run high ranks its negatives above another fold's
    positives, and the pooled out-of-fold AUC falls below every fold's own."""
    reference = pd.concat(validation_scores, ignore_index=True)[column].to_numpy()
    return [align_scores(part[column].to_numpy(), reference) for part in validation_scores]


FOLD_PARTS = ("held_out", "validation_scores", "calibration", "history")  # what each fold node hands the pool


def _fold_parts(parts: dict[str, Any]) -> dict[str, list]:
    """``{"fold_1_held_out": ..., "fold_2_held_out": ...}`` as ``{"held_out": [fold 1's, fold 2's, ...], ...}``."""
    n = len(parts) // len(FOLD_PARTS)
    missing = [f"fold_{k}_{p}" for k in range(1, n + 1) for p in FOLD_PARTS if f"fold_{k}_{p}" not in parts]
    if missing or len(parts) != n * len(FOLD_PARTS):
        raise ValueError(f"pool_out_of_fold needs {FOLD_PARTS} of every fold; missing {missing}")
    return {p: [parts[f"fold_{k}_{p}"] for k in range(1, n + 1)] for p in FOLD_PARTS}


def pool_out_of_fold(
    params: dict[str, Any], cross_validation: dict[str, Any], calibration_bins: int, **parts: Any
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The folds' predictions pooled: each fold's scores on one scale and calibrated without its own labels.

    Each fold model is calibrated on its own validation part (``fold_calibration: own``), or on every
    fold model's validation part less the patients of the fold it scores (``shared``,
    ``shared_fold_calibration``), with ``aligned`` after each fold model's scores are put on one scale
    (``align_fold_scores``). The held-out fold's probabilities are therefore never from a model (or a
    calibration) that saw those images.

    Returns the pooled out-of-fold predictions and the folds' training histories (a ``fold`` column).
    The predictions hold ``raw_score`` (the fold model's network), ``score`` (on the pooled scale:
    aligned with ``aligned``, else raw; the final model's out-of-fold calibration is fitted on it),
    ``probability`` and ``fold_threshold`` (the fold's calibration), ``baseline_probability``, and
    ``ranking_score`` / ``baseline_ranking_score``, what the pooled AUCs rank by: with ``aligned`` the
    aligned scores (one monotone scale for every fold, as the deployed model has one calibration for
    every image), else the probabilities. Per-fold calibrations fitted without the scored fold shift
    folds rich in positives down (their calibration data are poor in them), which reorders the pool.
    """
    config = as_params(ModelTrainingParams, params)
    cross_validation = as_params(CrossValidationParams, cross_validation)
    folded = _fold_parts(parts)
    predictions, validation_scores = folded["held_out"], folded["validation_scores"]
    entries = [part["calibration"] for part in folded["calibration"]]
    prevalences = [part["prevalence"] for part in folded["calibration"]]
    histories = folded["history"]
    aligned = cross_validation.fold_calibration == "aligned"
    predictions = [part.assign(raw_score=part["score"]) for part in predictions]
    if aligned:
        maps, baseline_maps = (
            align_fold_scores(validation_scores),
            align_fold_scores(validation_scores, "baseline_score"),
        )
        for k, (slope, intercept) in enumerate(maps):
            logger.info(
                "Fold %d's scores aligned to the pooled validation scale: logit x %.3f %+.3f", k + 1, slope, intercept
            )
        validation_scores = [
            part.assign(score=apply_calibration(part["score"].to_numpy(), *m))
            for part, m in zip(validation_scores, maps)
        ]
        predictions = [
            part.assign(
                score=apply_calibration(part["raw_score"].to_numpy(), *m),
                baseline_ranking_score=apply_calibration(part["baseline_probability"].to_numpy(), *b),
            )
            for part, m, b in zip(predictions, maps, baseline_maps)
        ]
    if cross_validation.fold_calibration in ("shared", "aligned"):
        entries = [
            shared_fold_calibration(validation_scores, set(part["patient_id"]), prevalence, config, calibration_bins)
            for part, prevalence in zip(predictions, prevalences)
        ]
    predictions = [
        part.assign(
            probability=apply_calibration(part["score"].to_numpy(), entry["slope"], entry["intercept"]),
            fold_threshold=entry["threshold"]["value"],
        )
        for part, entry in zip(predictions, entries)
    ]
    out = pd.concat(predictions, ignore_index=True)
    if aligned:
        out["ranking_score"] = out["score"]
    else:
        out["ranking_score"], out["baseline_ranking_score"] = out["probability"], out["baseline_probability"]
    return out, pd.concat(histories, ignore_index=True)


def train_final_model(
    folds: pd.DataFrame,
    pixel_cache: PixelCache,
    rebalance_params: dict[str, Any],
    params: dict[str, Any],
    cross_validation: dict[str, Any],
    calibration_bins: int,
) -> tuple[keras.Model, pd.DataFrame, dict]:
    """The model to deploy: trained on every fold (its validation part held out the same way), an
    ensemble of ``cross_validation.members`` networks as each fold model is; it is calibrated from the
    out-of-fold predictions (``calibrate_from_out_of_fold``)."""
    config = as_params(ModelTrainingParams, params)
    rebalance = as_params(RebalanceParams, rebalance_params)
    logger.info("Final model: training on all %d images", len(folds))
    with keras_state(config.mixed_precision, clear_after=True):
        model, history, rebalancing, *_ = fit_with_held_out_validation(
            folds, pixel_cache, rebalance, config, as_params(CrossValidationParams, cross_validation),
            calibration_bins, config.seed,
        )  # fmt: skip
    return model, history, rebalancing


def calibrate_from_out_of_fold(
    classifier: keras.Model,
    out_of_fold: pd.DataFrame,
    rebalancing: dict,
    params: dict[str, Any],
    calibration_bins: int,
    quality_guard: dict,
    pixel_cache: PixelCache,
) -> tuple[keras.Model, dict]:
    """The final model's calibration and threshold, fitted on the pooled out-of-fold raw scores:
    every image once, each scored by a model that never saw it (the final model saw them all, so
    its own scores on them would be optimistic). The prior shift is the final model's own.

    The out-of-fold scores come from the fold models, not from the final model, and networks trained
    alike can stop at epochs whose scores spread very differently (on 970 real NIH thumbnails, a final
    model whose scores spanned 0.26-0.29 beside fold scores of 0-0.99). So the final model's scores on
    the same images are first put on the out-of-fold scale, quartiles onto quartiles in logit space
    (``align_scores``: its ranking, no label, decides), and the out-of-fold calibration then applies;
    the alignment folds into the ``Calibration`` layer and is recorded as ``score_alignment``.
    """
    config = as_params(ModelTrainingParams, params)
    y, oof = out_of_fold["target"].to_numpy(), out_of_fold["score"].to_numpy()
    rows = pixel_cache.rows(out_of_fold["path"])
    _, final = predict_cached(classifier, pixel_cache.pixels(), rows, config.batch_size)
    align_slope, align_intercept = align_scores(final, oof)
    report = calibration_entry(
        y, oof, rebalancing["prevalence"], config.calibration, config.threshold, calibration_bins
    )
    slope, intercept = report["slope"] * align_slope, report["slope"] * align_intercept + report["intercept"]
    report["threshold"]["chosen_on"] = "out_of_fold"
    report["fitted_on"] = "out_of_fold"
    report["score_alignment"] = {
        "slope": align_slope,
        "intercept": align_intercept,
        "final_score_quartiles": np.quantile(final, [0.25, 0.5, 0.75]).tolist(),
        "out_of_fold_score_quartiles": np.quantile(oof, [0.25, 0.5, 0.75]).tolist(),
        "calibration_slope": slope,
        "calibration_intercept": intercept,
    }
    log = logger.warning if not 0.5 <= align_slope <= 2 else logger.info
    log(
        "Final model's scores aligned to the out-of-fold scale: logit x %.3f %+.3f (quartiles %s against %s)%s",
        align_slope, align_intercept, np.round(np.quantile(final, [0.25, 0.5, 0.75]), 3).tolist(),
        np.round(np.quantile(oof, [0.25, 0.5, 0.75]), 3).tolist(),
        "; its scores spread very differently from the fold models'" if log is logger.warning else "",
    )  # fmt: skip
    guard = None if quality_guard is None else quality_guard["guard"]
    return calibrate(classifier, slope, intercept, report["threshold"]["value"], quality_guard=guard), report


def epoch_metrics(history: pd.DataFrame) -> dict[str, list[dict[str, float]]]:
    """The model's per-epoch history as MLflow metric histories (step = epoch) and ``best_epoch``."""
    return history_metrics(history)


def fit_quality_guard_on_folds(folds: pd.DataFrame, pixel_cache: PixelCache, params: dict[str, Any]) -> dict:
    """The quality guard of the final model: the template from folds 2..n, the threshold from fold 1."""
    config = as_params(ModelTrainingParams, params).quality_guard
    return fit_guard(folds[folds["fold"] != 0], folds[folds["fold"] == 0], pixel_cache, config)


# ---- the out-of-fold figures and report ----------------------------------------------------------
def _prevalence_only_brier(out_of_fold: pd.DataFrame) -> float:
    """Brier of predicting, for each fold, the prevalence of the other folds (what a model that learnt
    nothing but the base rate scores, out of fold too)."""
    y, fold = out_of_fold["target"].to_numpy(float), out_of_fold["fold"].to_numpy()
    rate = np.array([y[fold != k].mean() for k in fold])
    return float(np.mean((rate - y) ** 2))


def _fold_rows(out_of_fold: pd.DataFrame) -> list[dict]:
    """Each fold's size, AUC (model and baseline, its own probabilities) and threshold: the report's fold table."""
    rows = []
    for k, part in out_of_fold.groupby("fold"):
        yk = part["target"].to_numpy()
        rows.append(
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
    return rows


def cross_validation_metrics(out_of_fold: pd.DataFrame, calibration: dict, params: dict[str, Any]) -> dict:
    """The pooled out-of-fold figures: the model's ROC AUC (patient-level CI), PR AUC, Brier against
    the prevalence-only Brier, ECE and calibration slope; each image's call at its own fold model's
    threshold; the pixel baseline's pooled AUC on the same folds and the **paired** difference
    (model minus baseline, patient bootstrap); per-fold AUCs; the final model's calibration."""
    config = as_params(ReportingParams, params)
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
    folds = _fold_rows(out_of_fold)
    if beats:
        logger.info("Out of fold, the model beats the pixel baseline: paired AUC difference %s", fmt_paired(paired))
    else:
        logger.warning("Out of fold, the model does NOT beat the pixel baseline: paired AUC difference %s",
                       fmt_paired(paired))  # fmt: skip
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
            "fitted_on": calibration["fitted_on"],
        },
    }


def cross_validation_headline_metrics(metrics: dict) -> dict[str, dict[str, float]]:
    """The cross-validation figures as MLflow metrics (``cv_*``, step 0; per fold: step = fold)."""
    pooled, paired = metrics["out_of_fold"], metrics["paired_difference"]
    calibrated = pooled["calibration"]["calibrated"]
    figures = evaluated_figures(pooled, calibrated, metrics["baseline"]["roc_auc"]["auc"])
    flat = headline(OUT_OF_FOLD, figures) | {
        "cv_prevalence_only_brier": pooled["prevalence_only_brier"],
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
    config = as_params(ReportingParams, params)
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
    cross_validation: dict[str, Any],
    **figures: bytes,
) -> str:
    """The cross-validation report: the out-of-fold figures where a test split would be, and a fold table."""
    model = as_params(ModelTrainingParams, model_params)
    folds = as_params(CrossValidationParams, cross_validation)
    return render_report(
        "cross_validation.html.j2",
        figures,
        target=target_finding,
        image_size=image_size,
        metrics=metrics,
        quality=quality,
        paired=fmt_paired(metrics["paired_difference"]),
        dropped=dropped_summary(quality),
        model=model.model.model_dump(),
        batch_size=model.batch_size,
        keep_weights=model.keep_weights,
        fold_calibration=folds.fold_calibration,
        members=folds.members,
    )
