"""model_training: rebalanced splits + pixel cache -> the trained network -> the calibrated classifier."""

from kedro.pipeline import Node, Pipeline

from .nodes import calibrate_classifier, epoch_metrics, fit_quality_guard, score_validation, train_model


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                train_model,
                inputs={
                    "train": "train_balanced",
                    "validation": "validation_balanced",
                    "pixel_cache": "pixel_cache",
                    "rebalancing": "rebalancing",
                    "params": "params:model_training",
                },
                outputs=["uncalibrated_classifier", "training_history"],
                name="train_model",
            ),
            Node(
                epoch_metrics, inputs={"history": "training_history"}, outputs="training_metrics", name="epoch_metrics"
            ),
            Node(
                score_validation,
                inputs={
                    "classifier": "uncalibrated_classifier",
                    "validation": "validation_split",
                    "pixel_cache": "pixel_cache",
                    "params": "params:model_training",
                },
                outputs="validation_scores",
                name="score_validation",
            ),
            Node(
                fit_quality_guard,
                inputs={
                    "train": "train_split",
                    "held_out": "validation_split",
                    "pixel_cache": "pixel_cache",
                    "params": "params:model_training",
                },
                outputs="quality_guard",
                name="fit_quality_guard",
            ),
            Node(
                calibrate_classifier,
                inputs={
                    "classifier": "uncalibrated_classifier",
                    "validation_scores": "validation_scores",
                    "rebalancing": "rebalancing",
                    "params": "params:model_training",
                    "calibration_bins": "params:reporting.calibration_bins",
                    "quality_guard": "quality_guard",
                },
                outputs=["classifier", "calibration"],
                name="calibrate_classifier",
            ),
        ]
    )
