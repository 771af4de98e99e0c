"""Nodes of the model_training pipeline: the network trained on the single split, its quality guard and
its calibration. The fitting itself is ``cardio_kedro.modeling.fitting`` (the cross_validation pipeline
trains its fold models with the same functions)."""

from __future__ import annotations

import logging
from typing import Any

import keras
import pandas as pd

from cardio_kedro.cohort.findings import SCORE_PREFIX, TARGET_PREFIX
from cardio_kedro.config import ModelTrainingParams, as_params
from cardio_kedro.datasets import PixelCache
from cardio_kedro.evaluation.calibration import calibration_entry
from cardio_kedro.modeling import calibrate
from cardio_kedro.modeling.fitting import fit_guard, frame_findings, history_metrics, score_images, train_classifier

logger = logging.getLogger(__name__)


def epoch_metrics(history: pd.DataFrame) -> dict[str, list[dict[str, float]]]:
    """The model's per-epoch history as MLflow metric histories (step = epoch) and ``best_epoch``."""
    return history_metrics(history)


def train_model(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    pixel_cache: PixelCache,
    rebalancing: dict,
    params: dict[str, Any],
) -> tuple[keras.Model, pd.DataFrame]:
    """Train the attention classifier in two phases on the rebalanced split (``train_classifier``):
    the uncalibrated model with its best epoch's weights, and its per-epoch history."""
    return train_classifier(train, validation, pixel_cache, rebalancing, as_params(ModelTrainingParams, params))


def score_validation(
    classifier: keras.Model, validation: pd.DataFrame, pixel_cache: PixelCache, params: dict
) -> pd.DataFrame:
    """The trained network's raw score for every image of the validation split (natural prevalence);
    a multi-label model's as one ``score.<finding>`` column per finding, beside its ``target.<finding>``."""
    return score_images(classifier, validation, pixel_cache, as_params(ModelTrainingParams, params).batch_size)


def fit_quality_guard(
    train: pd.DataFrame, held_out: pd.DataFrame, pixel_cache: PixelCache, params: dict[str, Any]
) -> dict:
    """The image check saved with the model (``cardio_kedro.cohort.quality``): the template from the
    training films, the correlation threshold from held-out training films (the validation split).
    Returns ``{"guard": its config, "report": what it flags among the held-out films}``."""
    return fit_guard(train, held_out, pixel_cache, as_params(ModelTrainingParams, params).quality_guard)


def calibrate_classifier(
    classifier: keras.Model,
    validation_scores: pd.DataFrame,
    rebalancing: dict,
    params: dict[str, Any],
    calibration_bins: int,
    quality_guard: dict | None,
) -> tuple[keras.Model, dict]:
    """The deployable classifier: the network, its calibration and its operating threshold in one model.

    The calibration reads scores learnt at the rebalanced prevalence at the natural one (the exact
    prior shift) and, with ``method: platt``, fits Platt scaling on the validation split's scores
    (natural prevalence), shrunk towards the prior shift. The threshold is then chosen on the
    calibrated validation probabilities. Test images are never used. Returns the model and a report.
    A multi-label model gets one calibration and one threshold per finding; the report then holds
    ``findings`` and one entry per finding under ``by_finding``.
    """
    config = as_params(ModelTrainingParams, params)
    guard = None if quality_guard is None else quality_guard["guard"]
    findings = frame_findings(validation_scores)
    if findings is None:
        y, raw = validation_scores["target"].to_numpy(), validation_scores["score"].to_numpy()
        report = calibration_entry(
            y, raw, rebalancing["prevalence"], config.calibration, config.threshold, calibration_bins
        )
        threshold = report["threshold"]["value"]
        return calibrate(classifier, report["slope"], report["intercept"], threshold, quality_guard=guard), report
    prevalence = rebalancing["prevalence"]
    by_finding = {
        f: calibration_entry(
            validation_scores[f"{TARGET_PREFIX}{f}"].to_numpy(),
            validation_scores[f"{SCORE_PREFIX}{f}"].to_numpy(),
            {"natural": prevalence["natural"][f], "trained": prevalence["trained"][f]},
            config.calibration,
            config.threshold,
            calibration_bins,
            f,
        )
        for f in findings
    }
    calibrated = calibrate(
        classifier,
        [by_finding[f]["slope"] for f in findings],
        [by_finding[f]["intercept"] for f in findings],
        [by_finding[f]["threshold"]["value"] for f in findings],
        findings=findings,
        quality_guard=guard,
    )
    return calibrated, {"findings": list(findings), "by_finding": by_finding}
