"""The hooks key on catalog entries by name: each name they use is one the registered pipelines have."""

from cardio_kedro.hooks.mlflow_tags import MODEL_DATASET, TRAINING_PARAMS
from cardio_kedro.hooks.run_summary import SUMMARY_FILES
from tests.helpers import registered_pipelines


def test_the_names_the_hooks_use_are_in_theregistered_pipelines():
    pipelines = registered_pipelines()
    assert MODEL_DATASET in pipelines["model_training"].all_outputs()  # registered when saved
    assert TRAINING_PARAMS in pipelines["model_training"].inputs()  # a run that trains: tags, weights check
    produced = set().union(*(p.all_outputs() for p in pipelines.values()))
    assert set(SUMMARY_FILES) <= produced, set(SUMMARY_FILES) - produced
