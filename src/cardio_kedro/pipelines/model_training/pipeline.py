"""model_training: rebalanced splits + pixel cache -> trained attention classifier and its history."""

from kedro.pipeline import Node, Pipeline

from .nodes import epoch_metrics, train_model


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
                    "params:model_training",
                ],
                outputs=["classifier", "training_history"],
                name="train_model",
            ),
            Node(epoch_metrics, inputs="training_history", outputs="training_metrics", name="epoch_metrics"),
        ]
    )
