"""data_processing: cohort (its layout) -> clean metadata -> checked files -> decoded pixels -> patient splits."""

from kedro.pipeline import Node, Pipeline

from .nodes import (
    build_quality_report,
    clean_metadata,
    decode_images,
    read_cohort,
    rebalance,
    resolve_image_files,
    select_decoded_images,
    split_by_patient,
)


def create_cohort_pipeline() -> Pipeline:
    """The cohort read, cleaned, checked and decoded: up to ``model_input_table``, the pixel cache and the
    data-quality report (what the cross_validation and external_validation pipelines reuse)."""
    return create_pipeline().to_nodes("select_decoded_images", "build_quality_report")


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                read_cohort,
                inputs={
                    "folder": "cohort_folder",
                    "params": "params:cohort",
                    "workers": "params:data_processing.workers",
                },
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
                inputs={
                    "labels": "cohort_table",
                    "cohort_left_out": "cohort_left_out",
                    "label_policy": "cohort_label_policy",
                    "target_findings": "params:target_findings",
                    "params": "params:data_processing",
                },
                outputs=["clean_metadata", "label_report", "metadata_left_out"],
                name="clean_metadata",
            ),
            Node(
                resolve_image_files,
                inputs={
                    "metadata": "clean_metadata",
                    "image_files": "cohort_files",
                    "params": "params:data_processing",
                },
                outputs=["resolved_images", "file_problems"],
                name="resolve_image_files",
            ),
            Node(
                decode_images,
                inputs={
                    "resolved": "resolved_images",
                    "existing": "existing_pixel_cache",
                    "image_size": "params:image_size",
                    "params": "params:data_processing",
                    "storage_options": "cohort_storage",
                },
                outputs="pixel_cache",
                name="decode_images",
            ),
            Node(
                select_decoded_images,
                inputs={
                    "resolved": "resolved_images",
                    "pixel_cache": "pixel_cache",
                    "file_problems": "file_problems",
                    "metadata_left_out": "metadata_left_out",
                },
                outputs=["model_input_table", "dropped_rows"],
                name="select_decoded_images",
            ),
            Node(
                build_quality_report,
                inputs={"label_report": "label_report", "dropped": "dropped_rows", "decoded": "model_input_table"},
                outputs="data_quality_report",
                name="build_quality_report",
            ),
            Node(
                split_by_patient,
                inputs={
                    "decoded": "model_input_table",
                    "official_split": "cohort_split_lists",
                    "target_findings": "params:target_findings",
                    "params": "params:data_processing.split",
                },
                outputs=["train_split", "validation_split", "test_split"],
                name="split_by_patient",
            ),
            Node(
                rebalance,
                inputs={
                    "train": "train_split",
                    "validation": "validation_split",
                    "target_findings": "params:target_findings",
                    "params": "params:data_processing.rebalance",
                },
                outputs=["train_balanced", "validation_balanced", "rebalancing"],
                name="rebalance",
            ),
        ]
    )
