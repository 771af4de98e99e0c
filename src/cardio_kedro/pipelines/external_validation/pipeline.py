"""external_validation: the external cohort (its layout: ``external.cohort``) read and decoded by
data_processing's nodes, each patient's part (update or evaluation), the model's and the baseline's scores,
the site's recalibration, figures and one report: all in the ``external`` namespace."""

from kedro.pipeline import Node, Pipeline

from ..data_processing.pipeline import create_cohort_pipeline
from .nodes import (
    assign_update_part,
    build_external_validation_report,
    external_baseline_predictions,
    external_decision_curve,
    external_headline_metrics,
    external_validation_metrics,
    external_validation_plots,
    fit_site_recalibration,
    promotion_decision,
    score_external_cohort,
)

NAMESPACE = "external"
FIGURES = ("roc", "calibration", "decision_curve", "subgroup_auc")  # external.<name>_plot
COHORT_PARAMETERS = ("target_findings", "data_processing", "data_processing.workers", "image_size")
SHARED_PARAMETERS = ("target_findings", "data_processing.rebalance", "image_size", "external", "reporting")
TRAINING_COHORT = ("model_input_table", "pixel_cache")  # the pixel baseline is fitted on the project's own cohort


def _cohort() -> Pipeline:
    """data_processing's cohort nodes on the external folder, its layout ``external.cohort``."""
    return Pipeline(
        create_cohort_pipeline(),
        namespace=NAMESPACE,
        parameters={f"params:{name}": f"params:{name}" for name in COHORT_PARAMETERS}
        | {"params:cohort": f"params:{NAMESPACE}.cohort"},
    )


def create_pipeline(**kwargs) -> Pipeline:
    validation = Pipeline(
        [
            Node(
                assign_update_part,
                inputs={
                    "decoded": "model_input_table",
                    "target_findings": "params:target_findings",
                    "params": "params:external",
                },  # fmt: skip
                outputs="cohort",
                name="assign_update_part",
            ),
            Node(
                score_external_cohort,
                inputs={
                    "model_info": "model",
                    "cohort": "cohort",
                    "pixel_cache": "pixel_cache",
                    "external": "params:external",
                    "params": "params:reporting",
                },  # fmt: skip
                outputs=["predictions", "model_card"],
                name="score_external_cohort",
            ),
            Node(
                external_baseline_predictions,
                inputs={
                    "internal": "training_model_input_table",
                    "pixel_cache": "training_pixel_cache",
                    "cohort": "cohort",
                    "external_pixel_cache": "pixel_cache",
                    "rebalance": "params:data_processing.rebalance",
                    "params": "params:reporting",
                },
                outputs="baseline_predictions",
                name="external_baseline_predictions",
            ),
            Node(
                fit_site_recalibration,
                inputs={
                    "model_info": "model",
                    "predictions": "predictions",
                    "card": "model_card",
                    "params": "params:external",
                },  # fmt: skip
                outputs=["recalibration", "recalibrated_classifier"],
                name="fit_site_recalibration",
            ),
            Node(
                external_validation_metrics,
                inputs={
                    "predictions": "predictions",
                    "baseline": "baseline_predictions",
                    "recalibration": "recalibration",
                    "card": "model_card",
                    "external": "params:external",
                    "params": "params:reporting",
                },
                outputs="metrics",
                name="external_validation_metrics",
            ),
            Node(
                external_headline_metrics,
                inputs={"metrics": "metrics"},
                outputs="headline_metrics",
                name="external_headline_metrics",
            ),
            Node(
                external_decision_curve,
                inputs={"predictions": "predictions", "external": "params:external"},
                outputs="decision_curve",
                name="external_decision_curve",
            ),
            Node(
                external_validation_plots,
                inputs={
                    "predictions": "predictions",
                    "baseline": "baseline_predictions",
                    "metrics": "metrics",
                    "curve": "decision_curve",
                    "recalibration": "recalibration",
                    "external": "params:external",
                    "params": "params:reporting",
                },
                outputs=[f"{name}_plot" for name in FIGURES],
                name="external_validation_plots",
            ),
            Node(
                promotion_decision,
                inputs={"metrics": "metrics", "external": "params:external"},
                outputs="promotion",
                name="promotion_decision",
            ),
            Node(
                build_external_validation_report,
                inputs={
                    "metrics": "metrics",
                    "quality": "data_quality_report",
                    "target_finding": "params:target_findings",
                    "image_size": "params:image_size",
                    **{f"external_{name}": f"{name}_plot" for name in FIGURES},
                },
                outputs="report",
                name="build_external_validation_report",
            ),
        ],
        namespace=NAMESPACE,
        inputs={f"training_{name}": name for name in TRAINING_COHORT},
        parameters={f"params:{name}" for name in SHARED_PARAMETERS},
    )
    return _cohort() + validation
