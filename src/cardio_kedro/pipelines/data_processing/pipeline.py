"""data_processing: cohort (its layout) -> clean metadata -> checked files -> decoded pixels -> patient splits."""

from kedro.pipeline import Node, Pipeline

from .nodes import (
    assign_folds,
    assign_update_part,
    build_quality_report,
    clean_metadata,
    decode_images,
    read_cohort,
    rebalance,
    resolve_image_files,
    select_decoded_images,
    split_by_patient,
)

EXTERNAL = "external"  # the namespace of the external_validation pipeline's cohort


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                read_cohort,
                inputs=["cohort_folder", "params:cohort", "params:data_processing.workers"],
                outputs=[
                    "cohort_table",
                    "cohort_files",
                    "cohort_split_lists",
                    "cohort_left_out",
                    "cohort_label_policy",
                ],
                name="read_cohort",
            ),
            Node(
                clean_metadata,
                inputs=[
                    "cohort_table",
                    "cohort_left_out",
                    "cohort_label_policy",
                    "params:target_findings",
                    "params:data_processing",
                ],
                outputs=["clean_metadata", "label_report", "metadata_left_out"],
                name="clean_metadata",
            ),
            Node(
                resolve_image_files,
                inputs=["clean_metadata", "cohort_files", "params:data_processing"],
                outputs=["resolved_images", "file_problems"],
                name="resolve_image_files",
            ),
            Node(
                decode_images,
                inputs=[
                    "resolved_images",
                    "existing_pixel_cache",
                    "params:image_size",
                    "params:data_processing",
                    "cohort_storage",
                ],
                outputs="pixel_cache",
                name="decode_images",
            ),
            Node(
                select_decoded_images,
                inputs=["resolved_images", "pixel_cache", "file_problems", "metadata_left_out"],
                outputs=["model_input_table", "dropped_rows"],
                name="select_decoded_images",
            ),
            Node(
                build_quality_report,
                inputs=["label_report", "dropped_rows", "model_input_table"],
                outputs="data_quality_report",
                name="build_quality_report",
            ),
            Node(
                split_by_patient,
                inputs=[
                    "model_input_table",
                    "cohort_split_lists",
                    "params:target_findings",
                    "params:data_processing.split",
                ],
                outputs=["train_split", "validation_split", "test_split"],
                name="split_by_patient",
            ),
            Node(
                rebalance,
                inputs=[
                    "train_split",
                    "validation_split",
                    "params:target_findings",
                    "params:data_processing.rebalance",
                ],
                outputs=["train_balanced", "validation_balanced", "rebalancing"],
                name="rebalance",
            ),
        ]
    )


def create_cross_validation_pipeline(**kwargs) -> Pipeline:
    """data_processing up to the model input table, then the folds (``split.method: kfold``)."""
    decoded = create_pipeline().to_nodes("select_decoded_images", "build_quality_report")
    return decoded + Pipeline(
        [
            Node(
                assign_folds,
                inputs=["model_input_table", "params:target_findings", "params:data_processing.split"],
                outputs="cv_folds",
                name="assign_folds",
            )
        ]
    )


def create_external_validation_pipeline(**kwargs) -> Pipeline:
    """A second cohort read and decoded as the training cohort is (its layout: ``external.cohort``), then
    each patient's part (recalibration fitting or evaluation): kedro viz shows the nodes under the
    ``external`` namespace; the folder and what later stages read keep plain names (``external_cohort_folder``,
    ``external_cohort``, ``external_pixel_cache``, ``external_data_quality_report``)."""
    decoded = create_pipeline().to_nodes("select_decoded_images", "build_quality_report")
    parts = Node(
        assign_update_part,
        inputs=["model_input_table", "params:target_findings", "params:external"],
        outputs="cohort_parts",
        name="assign_update_part",
    )
    shared = ("target_findings", "data_processing", "data_processing.workers", "image_size", "external")
    return Pipeline(
        decoded + Pipeline([parts]),
        namespace=EXTERNAL,
        parameters={name: name for name in shared} | {"cohort": f"{EXTERNAL}.cohort"},
        inputs={name: f"{EXTERNAL}_{name}" for name in ("cohort_folder", "cohort_storage", "existing_pixel_cache")},
        outputs={name: f"{EXTERNAL}_{name}" for name in ("pixel_cache", "data_quality_report")}
        | {"cohort_parts": f"{EXTERNAL}_cohort"},
    )
