"""The attention classifier, its training loop pieces and its data feeds; Keras only (any backend).

Imports neither Kedro nor TensorFlow at module level, so the same code runs under
``KERAS_BACKEND=jax`` on a machine without TensorFlow. ``serving`` is the MLflow pyfunc that serves a
trained classifier over HTTP.

May import: ``common``, ``cohort``; keras (and mlflow for the pyfunc); never kedro, never tensorflow at
module level.
"""

from .attention import attention_model, encode_png, overlay, predict_finding_maps, predict_with_attention, upsample
from .builder import (
    ATTENTION_LAYER,
    BACKBONE_PREPROCESSING,
    build_backbone,
    build_model,
    calibrate,
    ensemble,
    ensemble_members,
    model_findings,
    model_quality_guard,
    operating_threshold,
    recalibrated,
    scoring_model,
    with_auxiliary_findings,
    with_score,
    with_view_head,
)
from .io import load_model
from .layers import (
    AttentionPooling,
    Calibration,
    FindingAttentionPooling,
    LogitMean,
    SpatialSoftmax,
    XrayAugment,
    XrayPreprocess,
)

__all__ = [
    "ATTENTION_LAYER",
    "BACKBONE_PREPROCESSING",
    "AttentionPooling",
    "Calibration",
    "FindingAttentionPooling",
    "LogitMean",
    "SpatialSoftmax",
    "XrayAugment",
    "XrayPreprocess",
    "attention_model",
    "build_backbone",
    "build_model",
    "calibrate",
    "ensemble",
    "ensemble_members",
    "recalibrated",
    "scoring_model",
    "encode_png",
    "load_model",
    "model_findings",
    "model_quality_guard",
    "operating_threshold",
    "overlay",
    "predict_finding_maps",
    "predict_with_attention",
    "upsample",
    "with_score",
    "with_auxiliary_findings",
    "with_view_head",
]
