"""The hooks key on catalog entries by name: each name they use is one the registered pipelines have."""

from cardio_kedro.hooks.mlflow_tags import (
    CV_METRICS_DATASET,
    FOLD_HISTORY_DATASET,
    MODEL_CARD_DATASET,
    MODEL_DATASETS,
    RECALIBRATED_DATASET,
    TRAINING_PARAMS,
)
from cardio_kedro.hooks.preflight import MODELS_TO_SCORE
from cardio_kedro.hooks.run_summary import SUMMARY_FILES
from tests.helpers import registered_pipelines


def test_the_names_the_hooks_use_are_in_the_registered_pipelines():
    pipelines = registered_pipelines()
    assert MODEL_DATASETS[0] in pipelines["model_training"].all_outputs()  # registered when saved
    assert MODEL_DATASETS[1] in pipelines["cross_validation"].all_outputs()
    assert {CV_METRICS_DATASET, FOLD_HISTORY_DATASET} <= pipelines["cross_validation"].all_outputs()
    assert {MODEL_CARD_DATASET, RECALIBRATED_DATASET} <= pipelines["external_validation"].all_outputs()
    assert TRAINING_PARAMS in pipelines["model_training"].inputs()  # a run that trains: tags, weights check
    assert TRAINING_PARAMS in pipelines["cross_validation"].inputs()
    produced = set().union(*(p.all_outputs() for p in pipelines.values()))
    assert set(SUMMARY_FILES) <= produced, set(SUMMARY_FILES) - produced
    inputs = set().union(*(p.inputs() for p in pipelines.values()))
    assert set(MODELS_TO_SCORE) <= inputs
