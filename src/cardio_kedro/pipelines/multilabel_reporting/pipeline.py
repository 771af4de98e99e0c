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
                inputs={
                    "classifier": "classifier",
                    "split": "test_split",
                    "pixel_cache": "pixel_cache",
                    "params": "params:reporting",
                },
                outputs="finding_test_predictions",
                name="predict_findings",
            ),
            Node(
                finding_metrics,
                inputs={
                    "test_predictions": "finding_test_predictions",
                    "calibration": "calibration",
                    "params": "params:reporting",
                },
                outputs="finding_metrics",
                name="finding_metrics",
            ),
            Node(
                finding_localization,
                inputs={
                    "classifier": "classifier",
                    "test_predictions": "finding_test_predictions",
                    "pixel_cache": "pixel_cache",
                    "boxes": "cohort_boxes",
                },
                outputs="finding_localization",
                name="finding_localization",
            ),
            Node(
                finding_headline_metrics,
                inputs={"metrics": "finding_metrics", "localization": "finding_localization"},
                outputs="finding_headline_metrics",
                name="finding_headline_metrics",
            ),
            Node(
                finding_plots,
                inputs={
                    "test_predictions": "finding_test_predictions",
                    "metrics": "finding_metrics",
                    "clean_metadata": "clean_metadata",
                    "history": "training_history",
                },
                outputs=["finding_roc_grid_plot", "label_cooccurrence_plot", "finding_training_curves_plot"],
                name="finding_plots",
            ),
            Node(
                finding_attention_grid,
                inputs={
                    "classifier": "classifier",
                    "test_predictions": "finding_test_predictions",
                    "pixel_cache": "pixel_cache",
                    "params": "params:reporting",
                },
                outputs="finding_attention_grid_plot",
                name="finding_attention_grid",
            ),
            Node(
                build_multilabel_report,
                inputs={
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
                outputs="multilabel_report",
                name="build_multilabel_report",
            ),
        ]
    )
