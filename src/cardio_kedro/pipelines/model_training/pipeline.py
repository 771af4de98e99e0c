"""model_training: rebalanced splits + pixel cache -> the trained network -> the calibrated classifier."""

from kedro.pipeline import Node, Pipeline

from .nodes import (
    calibrate_classifier,
    calibrate_from_out_of_fold,
    cross_validate,
    epoch_metrics,
    fit_quality_guard,
    fit_quality_guard_on_folds,
    fit_site_recalibration,
    score_validation,
    train_final_model,
    train_model,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                train_model,
                inputs=["train_balanced", "validation_balanced", "pixel_cache", "rebalancing", "params:model_training"],
                outputs=["uncalibrated_classifier", "training_history"],
                name="train_model",
            ),
            Node(epoch_metrics, inputs="training_history", outputs="training_metrics", name="epoch_metrics"),
            Node(
                score_validation,
                inputs=["uncalibrated_classifier", "validation_split", "pixel_cache", "params:model_training"],
                outputs="validation_scores",
                name="score_validation",
            ),
            Node(
                fit_quality_guard,
                inputs=["train_split", "validation_split", "pixel_cache", "params:model_training"],
                outputs="quality_guard",
                name="fit_quality_guard",
            ),
            Node(
                calibrate_classifier,
                inputs=[
                    "uncalibrated_classifier",
                    "validation_scores",
                    "rebalancing",
                    "params:model_training",
                    "params:reporting.calibration_bins",
                    "quality_guard",
                ],
                outputs=["classifier", "calibration"],
                name="calibrate_classifier",
            ),
        ]
    )


def create_cross_validation_pipeline(**kwargs) -> Pipeline:
    """One model per fold scoring the fold it never saw; the final model on every fold, calibrated out of fold."""
    return Pipeline(
        [
            Node(
                cross_validate,
                inputs=[
                    "cv_folds",
                    "pixel_cache",
                    "params:data_processing.rebalance",
                    "params:model_training",
                    "params:reporting.baseline",
                    "params:reporting.calibration_bins",
                ],
                outputs=["out_of_fold_predictions", "fold_training_history"],
                name="cross_validate",
            ),
            Node(
                train_final_model,
                inputs=[
                    "cv_folds",
                    "pixel_cache",
                    "params:data_processing.rebalance",
                    "params:model_training",
                    "params:reporting.calibration_bins",
                ],
                outputs=["uncalibrated_classifier", "training_history", "rebalancing"],
                name="train_final_model",
            ),
            Node(epoch_metrics, inputs="training_history", outputs="training_metrics", name="epoch_metrics"),
            Node(
                fit_quality_guard_on_folds,
                inputs=["cv_folds", "pixel_cache", "params:model_training"],
                outputs="quality_guard",
                name="fit_quality_guard_on_folds",
            ),
            Node(
                calibrate_from_out_of_fold,
                inputs=[
                    "uncalibrated_classifier",
                    "out_of_fold_predictions",
                    "rebalancing",
                    "params:model_training",
                    "params:reporting.calibration_bins",
                    "quality_guard",
                    "pixel_cache",
                ],
                outputs=["classifier", "calibration"],
                name="calibrate_from_out_of_fold",
            ),
        ]
    )


def create_external_validation_pipeline(**kwargs) -> Pipeline:
    """``external.recalibrate``: the model updated for the external site (a new registered version)."""
    return Pipeline(
        [
            Node(
                fit_site_recalibration,
                inputs=["external_model", "external_predictions", "external_model_card", "params:external"],
                outputs=["external_recalibration", "recalibrated_classifier"],
                name="fit_site_recalibration",
            )
        ]
    )
