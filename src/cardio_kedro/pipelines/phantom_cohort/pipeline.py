"""phantom_cohort: writes the offline demo cohort in the NIH layout (images, box list, label table)."""

from kedro.pipeline import Node, Pipeline

from .nodes import generate_phantom_cohort


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                generate_phantom_cohort,
                inputs={"params": "params:phantoms"},
                outputs=["cohort_images", "cohort_boxes", "cohort_labels"],
                name="generate_phantom_cohort",
            )
        ]
    )
