"""The hooks key on catalog entries by name: each name they use is one the registered pipelines have."""

import warnings

from cardio_kedro.hooks.mlflow_tags import MODEL_DATASET, TRAINING_PARAMS
from cardio_kedro.hooks.run_summary import SUMMARY_FILES


def _pipelines():
    from kedro.framework.project import configure_project

    configure_project("cardio_kedro")
    from cardio_kedro.pipeline_registry import register_pipelines

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return register_pipelines()


def test_the_names_the_hooks_use_are_in_the_pipelines():
    pipelines = _pipelines()
    assert MODEL_DATASET in pipelines["model_training"].all_outputs()  # registered when saved
    assert TRAINING_PARAMS in pipelines["model_training"].inputs()  # a run that trains: tags, weights check
    produced = set().union(*(p.all_outputs() for p in pipelines.values()))
    assert set(SUMMARY_FILES) <= produced, set(SUMMARY_FILES) - produced
