"""reporting: trained model + splits -> metrics, plots, attention heat maps and one HTML report."""

from kedro.pipeline import Node, Pipeline

from .nodes import (
    architecture_plot,
    attention_heatmaps,
    attention_localization,
    baseline_predictions,
    build_report,
    cohort_plots,
    decision_curve,
    evaluation_metrics,
    evaluation_plots,
    example_images,
    headline_metrics,
    predict_split,
    training_curves_plot,
)

REPORT_FIGURES = (
    "class_distribution",
    "rebalanced_distribution",
    "split_sizes",
    "example_images",
    "architecture",
    "training_curves",
    "roc",
    "precision_recall",
    "calibration",
    "decision_curve",
    "confusion_matrix",
    "classification_report",
    "subgroup_auc",
    "attention_heatmaps",
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                predict_split,
                inputs={
                    "classifier": "classifier",
                    "split": "validation_split",
                    "pixel_cache": "pixel_cache",
                    "params": "params:reporting",
                },
                outputs="validation_predictions",
                name="predict_validation",
            ),
            Node(
                predict_split,
                inputs={
                    "classifier": "classifier",
                    "split": "test_split",
                    "pixel_cache": "pixel_cache",
                    "params": "params:reporting",
                },
                outputs="test_predictions",
                name="predict_test",
            ),
            Node(
                baseline_predictions,
                inputs={
                    "train": "train_balanced",
                    "test": "test_split",
                    "pixel_cache": "pixel_cache",
                    "params": "params:reporting",
                },
                outputs="baseline_predictions",
                name="baseline_predictions",
            ),
            Node(
                evaluation_metrics,
                inputs={
                    "validation_predictions": "validation_predictions",
                    "test_predictions": "test_predictions",
                    "calibration": "calibration",
                    "baseline": "baseline_predictions",
                    "params": "params:reporting",
                },
                outputs="evaluation_metrics",
                name="evaluation_metrics",
            ),
            Node(
                decision_curve,
                inputs={"test_predictions": "test_predictions"},
                outputs="decision_curve",
                name="decision_curve",
            ),
            Node(
                headline_metrics,
                inputs={"metrics": "evaluation_metrics", "localization": "attention_localization"},
                outputs="evaluation_headline_metrics",
                name="headline_metrics",
            ),
            Node(
                evaluation_plots,
                inputs={
                    "test_predictions": "test_predictions",
                    "metrics": "evaluation_metrics",
                    "curve": "decision_curve",
                    "params": "params:reporting",
                },
                outputs=[
                    "roc_plot",
                    "confusion_matrix_plot",
                    "classification_report_plot",
                    "precision_recall_plot",
                    "calibration_plot",
                    "decision_curve_plot",
                    "subgroup_auc_plot",
                ],
                name="evaluation_plots",
            ),
            Node(
                cohort_plots,
                inputs={
                    "metadata": "clean_metadata",
                    "train": "train_balanced",
                    "validation": "validation_balanced",
                    "test": "test_split",
                    "train_split": "train_split",
                    "validation_split": "validation_split",
                    "target_finding": "params:target_findings",
                },
                outputs=["class_distribution_plot", "rebalanced_distribution_plot", "split_sizes_plot"],
                name="cohort_plots",
            ),
            Node(
                example_images,
                inputs={"train": "train_balanced", "pixel_cache": "pixel_cache", "params": "params:reporting"},
                outputs="example_images_plot",
                name="example_images",
            ),
            Node(
                architecture_plot,
                inputs={"classifier": "classifier"},
                outputs="architecture_plot",
                name="architecture_plot",
            ),
            Node(
                training_curves_plot,
                inputs={"history": "training_history"},
                outputs="training_curves_plot",
                name="training_curves_plot",
            ),
            Node(
                attention_heatmaps,
                inputs={
                    "classifier": "classifier",
                    "test_predictions": "test_predictions",
                    "pixel_cache": "pixel_cache",
                    "metrics": "evaluation_metrics",
                    "params": "params:reporting",
                },
                outputs="attention_heatmaps_plot",
                name="attention_heatmaps",
            ),
            Node(
                attention_localization,
                inputs={
                    "classifier": "classifier",
                    "test_predictions": "test_predictions",
                    "pixel_cache": "pixel_cache",
                    "boxes": "cohort_boxes",
                    "target_finding": "params:target_findings",
                },
                outputs="attention_localization",
                name="attention_localization",
            ),
            Node(
                build_report,
                inputs={
                    "metrics": "evaluation_metrics",
                    "calibration_report": "calibration",
                    "localization": "attention_localization",
                    "quality": "data_quality_report",
                    "history": "training_history",
                    "target_finding": "params:target_findings",
                    "image_size": "params:image_size",
                    "model_params": "params:model_training",
                    **{name: f"{name}_plot" for name in REPORT_FIGURES},
                },
                outputs="evaluation_report",
                name="build_report",
            ),
        ]
    )
