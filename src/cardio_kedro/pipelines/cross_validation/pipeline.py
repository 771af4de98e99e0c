"""cross_validation: the decoded cohort -> folds -> one model per fold (``fold_<k>``) -> the pooled
out-of-fold predictions -> the final model, calibrated out of fold -> figures and report.

The number of folds shapes the pipeline (one namespace per fold, which kedro viz collapses and an
orchestrator can run as separate tasks), so it is read from the run's configuration when the pipeline is
built (``configured_folds``): ``--env`` and ``--params=cross_validation.n_folds=3`` shape it too.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

from kedro.pipeline import Node, Pipeline

from cardio_kedro.config import RunConf, run_conf

from ..data_processing.pipeline import create_cohort_pipeline
from .nodes import (
    assign_folds,
    build_cross_validation_report,
    calibrate_from_out_of_fold,
    cross_validation_headline_metrics,
    cross_validation_metrics,
    cross_validation_plots,
    epoch_metrics,
    fit_quality_guard_on_folds,
    pool_out_of_fold,
    train_final_model,
    train_fold_model,
)

NAMESPACE = "cross_validation"
FIGURES = ("cv_roc", "cv_fold_auc", "cv_calibration")
FOLD_OUTPUTS = {"held_out": "held_out_scores", "validation_scores": "validation_scores",
                "calibration": "fold_calibration", "history": "training_history"}  # fmt: skip
FOLD_PARAMETERS = (
    "model_training",
    "cross_validation",
    "data_processing.rebalance",
    "reporting.baseline",
    "reporting.calibration_bins",
)
SHARED_PARAMETERS = ("target_findings", "image_size", "model_training", "cross_validation", "reporting",
                     "data_processing.rebalance", "reporting.baseline", "reporting.calibration_bins")  # fmt: skip
SHARED_INPUTS = ("model_input_table", "pixel_cache", "data_quality_report")  # the cohort's, not a run's


def configured_folds() -> int | None:
    """``cross_validation.n_folds`` of the run: its conf source, environment and ``--params``, as the session
    records them before it builds its pipelines; outside a session (``kedro registry``, an import) the
    project's ``conf`` folder with ``KEDRO_ENV`` (else ``local``). ``None`` where no conf is found."""
    from kedro.framework.project import settings

    run = run_conf() or RunConf(Path.cwd() / settings.CONF_SOURCE, os.environ.get("KEDRO_ENV"))
    if not run.conf_source.exists():
        return None
    loader = settings.CONFIG_LOADER_CLASS(  # the project's loader: its environments merge key by key
        conf_source=str(run.conf_source), env=run.env, runtime_params=run.runtime_params, **settings.CONFIG_LOADER_ARGS
    )
    return int(loader["parameters"]["cross_validation"]["n_folds"])


def _fold(fold: int) -> Pipeline:
    """Fold ``fold``'s model and its scores, in the namespace ``fold_<fold>``."""
    return Pipeline(
        [
            Node(
                partial(train_fold_model, fold=fold),
                inputs={
                    "folds": "folds",
                    "pixel_cache": "pixel_cache",
                    "rebalance_params": "params:data_processing.rebalance",
                    "params": "params:model_training",
                    "cross_validation": "params:cross_validation",
                    "baseline_params": "params:reporting.baseline",
                    "calibration_bins": "params:reporting.calibration_bins",
                },
                outputs=list(FOLD_OUTPUTS.values()),
                name="train_fold_model",
            )
        ],
        namespace=f"fold_{fold}",
        inputs={"folds", "pixel_cache"},
        outputs={name: f"fold_{fold}_{name}" for name in FOLD_OUTPUTS.values()},  # what the pool reads
        parameters={f"params:{name}" for name in FOLD_PARAMETERS},
    )


def _pooled(n_folds: int) -> Node:
    parts = {
        f"fold_{k}_{part}": f"fold_{k}_{dataset}"
        for k in range(1, n_folds + 1)
        for part, dataset in FOLD_OUTPUTS.items()
    }
    return Node(
        pool_out_of_fold,
        inputs={
            "params": "params:model_training",
            "cross_validation": "params:cross_validation",
            "calibration_bins": "params:reporting.calibration_bins",
            **parts,
        },
        outputs=["out_of_fold_predictions", "fold_training_history"],
        name="pool_out_of_fold",
    )


def create_pipeline(n_folds: int | None = None, **kwargs) -> Pipeline:
    """The cohort's decoding (data_processing's nodes, shared with training) and the cross-validation in the
    ``cross_validation`` namespace, with ``n_folds`` fold groups (default: ``configured_folds()``)."""
    n_folds = configured_folds() if n_folds is None else n_folds
    if n_folds is None:
        return Pipeline([])
    validation = Pipeline(
        [
            Node(
                assign_folds,
                inputs={
                    "decoded": "model_input_table",
                    "target_findings": "params:target_findings",
                    "params": "params:cross_validation",
                },
                outputs="folds",
                name="assign_folds",
            ),
            *(_fold(k) for k in range(1, n_folds + 1)),
            _pooled(n_folds),
            Node(
                train_final_model,
                inputs={
                    "folds": "folds",
                    "pixel_cache": "pixel_cache",
                    "rebalance_params": "params:data_processing.rebalance",
                    "params": "params:model_training",
                    "cross_validation": "params:cross_validation",
                    "calibration_bins": "params:reporting.calibration_bins",
                },
                outputs=["uncalibrated_classifier", "training_history", "rebalancing"],
                name="train_final_model",
            ),
            Node(
                epoch_metrics,
                inputs={"history": "training_history"},
                outputs="training_metrics",
                name="epoch_metrics",
            ),
            Node(
                fit_quality_guard_on_folds,
                inputs={"folds": "folds", "pixel_cache": "pixel_cache", "params": "params:model_training"},
                outputs="quality_guard",
                name="fit_quality_guard_on_folds",
            ),
            Node(
                calibrate_from_out_of_fold,
                inputs={
                    "classifier": "uncalibrated_classifier",
                    "out_of_fold": "out_of_fold_predictions",
                    "rebalancing": "rebalancing",
                    "params": "params:model_training",
                    "calibration_bins": "params:reporting.calibration_bins",
                    "quality_guard": "quality_guard",
                    "pixel_cache": "pixel_cache",
                },
                outputs=["classifier", "calibration"],
                name="calibrate_from_out_of_fold",
            ),
            Node(
                cross_validation_metrics,
                inputs={
                    "out_of_fold": "out_of_fold_predictions",
                    "calibration": "calibration",
                    "params": "params:reporting",
                },
                outputs="metrics",
                name="cross_validation_metrics",
            ),
            Node(
                cross_validation_headline_metrics,
                inputs={"metrics": "metrics"},
                outputs="headline_metrics",
                name="cross_validation_headline_metrics",
            ),
            Node(
                cross_validation_plots,
                inputs={"out_of_fold": "out_of_fold_predictions", "metrics": "metrics", "params": "params:reporting"},
                outputs=[f"{name}_plot" for name in FIGURES],
                name="cross_validation_plots",
            ),
            Node(
                build_cross_validation_report,
                inputs={
                    "metrics": "metrics",
                    "quality": "data_quality_report",
                    "target_finding": "params:target_findings",
                    "image_size": "params:image_size",
                    "model_params": "params:model_training",
                    "cross_validation": "params:cross_validation",
                    **{name: f"{name}_plot" for name in FIGURES},
                },
                outputs="report",
                name="build_cross_validation_report",
            ),
        ],
        namespace=NAMESPACE,
        inputs=set(SHARED_INPUTS),
        parameters={f"params:{name}" for name in SHARED_PARAMETERS},
    )
    return create_cohort_pipeline() + validation
