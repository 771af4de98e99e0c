"""multilabel_reporting: the multi-label model -> per-finding metrics, ROC grid, co-occurrence, attention, report."""

from kedro.pipeline import Node, Pipeline

from .nodes import (
    build_multilabel_report,
    finding_attention_grid,
    finding_headline_metrics,
    finding_localization,
    finding_metrics,
    finding_plots,
    predict_findings,
)

FIGURES = ("finding_roc_grid", "label_cooccurrence", "finding_training_curves", "finding_attention_grid")


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                predict_findings,
                ["classifier", "test_split", "pixel_cache", "params:reporting"],
                "finding_test_predictions",
                name="predict_findings",
            ),
            Node(
                finding_metrics,
                ["finding_test_predictions", "calibration", "params:reporting"],
                "finding_metrics",
                name="finding_metrics",
            ),
            Node(
                finding_localization,
                ["classifier", "finding_test_predictions", "pixel_cache", "cohort_boxes"],
                "finding_localization",
                name="finding_localization",
            ),
            Node(
                finding_headline_metrics,
                ["finding_metrics", "finding_localization"],
                "finding_headline_metrics",
                name="finding_headline_metrics",
            ),
            Node(
                finding_plots,
                ["finding_test_predictions", "finding_metrics", "clean_metadata", "training_history"],
                ["finding_roc_grid_plot", "label_cooccurrence_plot", "finding_training_curves_plot"],
                name="finding_plots",
            ),
            Node(
                finding_attention_grid,
                ["classifier", "finding_test_predictions", "pixel_cache", "params:reporting"],
                "finding_attention_grid_plot",
                name="finding_attention_grid",
            ),
            Node(
                build_multilabel_report,
                {
                    "metrics": "finding_metrics",
                    "calibration_report": "calibration",
                    "localization": "finding_localization",
                    "quality": "data_quality_report",
                    "history": "training_history",
                    "image_size": "params:image_size",
                    "phantom_params": "params:phantoms",
                    "model_params": "params:model_training",
                    "cohort_dir": "params:cohort_dir",
                    **{name: f"{name}_plot" for name in FIGURES},
                },
                "multilabel_report",
                name="build_multilabel_report",
            ),
        ]
    )
