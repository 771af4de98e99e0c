"""Project pipelines."""

import importlib
import warnings

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

TRAINING_STAGES = ("data_processing", "model_training", "reporting")
COMPOSITES = ("training",)


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines; ``training`` (the default) runs the three stages in order.

    Kedro only imports the pipelines named on the command line, so the stages of the composite
    ``training`` pipeline are imported here explicitly (an import error in one of them is raised).
    """
    with warnings.catch_warnings():
        # a composite name has no folder of its own under pipelines/
        warnings.filterwarnings("ignore", message=r".*cardio_kedro\.pipelines\.(" + "|".join(COMPOSITES) + ")")
        pipelines = find_pipelines()
    for name in TRAINING_STAGES:
        if name not in pipelines:
            pipelines[name] = importlib.import_module(f"cardio_kedro.pipelines.{name}").create_pipeline()
    pipelines["training"] = sum((pipelines[name] for name in TRAINING_STAGES), Pipeline([]))
    pipelines["__default__"] = pipelines["training"]
    return pipelines
