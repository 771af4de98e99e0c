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
                ["classifier", "validation_split", "pixel_cache", "params:reporting"],
                "validation_predictions",
                name="predict_validation",
            ),
            Node(
                predict_split,
                ["classifier", "test_split", "pixel_cache", "params:reporting"],
                "test_predictions",
                name="predict_test",
            ),
            Node(
                baseline_predictions,
                ["train_balanced", "test_split", "pixel_cache", "params:reporting"],
                "baseline_predictions",
                name="baseline_predictions",
            ),
            Node(
                evaluation_metrics,
                [
                    "validation_predictions",
                    "test_predictions",
                    "calibration",
                    "baseline_predictions",
                    "params:reporting",
                ],
                "evaluation_metrics",
                name="evaluation_metrics",
            ),
            Node(decision_curve, "test_predictions", "decision_curve", name="decision_curve"),
            Node(
                headline_metrics,
                ["evaluation_metrics", "attention_localization"],
                "evaluation_headline_metrics",
                name="headline_metrics",
            ),
            Node(
                evaluation_plots,
                ["test_predictions", "evaluation_metrics", "decision_curve", "params:reporting"],
                [
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
                [
                    "clean_metadata",
                    "train_balanced",
                    "validation_balanced",
                    "test_split",
                    "train_split",
                    "validation_split",
                    "params:target_findings",
                ],
                ["class_distribution_plot", "rebalanced_distribution_plot", "split_sizes_plot"],
                name="cohort_plots",
            ),
            Node(
                example_images,
                ["train_balanced", "pixel_cache", "params:reporting"],
                "example_images_plot",
                name="example_images",
            ),
            Node(architecture_plot, "classifier", "architecture_plot", name="architecture_plot"),
            Node(training_curves_plot, "training_history", "training_curves_plot", name="training_curves_plot"),
            Node(
                attention_heatmaps,
                ["classifier", "test_predictions", "pixel_cache", "evaluation_metrics", "params:reporting"],
                "attention_heatmaps_plot",
                name="attention_heatmaps",
            ),
            Node(
                attention_localization,
                ["classifier", "test_predictions", "pixel_cache", "cohort_boxes", "params:target_findings"],
                "attention_localization",
                name="attention_localization",
            ),
            Node(
                build_report,
                {
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
                "evaluation_report",
                name="build_report",
            ),
        ]
    )
