"""Project pipelines."""

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

TRAINING_STAGES = ("data_processing", "model_training", "reporting")


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines; ``training`` (the default) runs the stages in order."""
    pipelines = find_pipelines(raise_errors=True)
    pipelines["training"] = sum((pipelines[name] for name in TRAINING_STAGES if name in pipelines), Pipeline([]))
    pipelines["__default__"] = pipelines["training"]
    return pipelines
