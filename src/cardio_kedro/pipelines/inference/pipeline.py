"""inference: a folder of images + a trained classifier -> scored table and heat-map overlays."""

from kedro.pipeline import Node, Pipeline

from .nodes import score_images


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                score_images,
                inputs={
                    "images": "inference_images",
                    "model_info": "inference_model",
                    "params": "params:inference",
                    "storage_options": "inference_storage",
                },
                outputs=["inference_predictions", "inference_heatmaps"],
                name="score_images",
            )
        ]
    )
