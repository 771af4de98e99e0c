"""inference: a folder of images + a trained classifier -> scored table and heat-map overlays."""

from kedro.pipeline import Node, Pipeline

from .nodes import score_images


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                score_images,
                inputs=["inference_images", "inference_model", "params:inference", "inference_storage"],
                outputs=["inference_predictions", "inference_heatmaps"],
                name="score_images",
            )
        ]
    )
