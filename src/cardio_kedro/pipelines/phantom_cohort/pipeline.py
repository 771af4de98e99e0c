"""phantom_cohort: writes the offline demo cohort in the NIH layout."""

from kedro.pipeline import Node, Pipeline

from .nodes import generate_phantom_cohort


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                generate_phantom_cohort,
                inputs="params:phantoms",
                outputs="cohort",
                name="generate_phantom_cohort",
            )
        ]
    )
