"""model_training: rebalanced splits + pixel cache -> trained attention classifier."""

from kedro.pipeline import Node, Pipeline

from .nodes import train_model


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                train_model,
                inputs=[
                    "train_balanced",
                    "validation_balanced",
                    "pixel_cache",
                    "class_weights",
                    "params:image_size",
                    "params:model_training",
                ],
                outputs=["classifier", "training_history"],
                name="train_model",
            )
        ]
    )
