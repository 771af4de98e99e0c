"""Checks before a run touches data: a local backbone weights file must exist and load into the backbone."""

import keras
import pytest

from cardio_kedro.config import ConfigSources, ParameterError
from cardio_kedro.hooks.preflight import check_backbone_weights
from tests.config.test_config import _validate


def test_backbone_weights_file_is_checked_before_any_work(conf, tmp_path):
    def check(path: str):
        params = _validate(conf, runtime_params={"model_training": {"model": {"backbone_weights": path}}})
        check_backbone_weights(params, ConfigSources(conf, "local", runtime_params={"x": 1}))

    with pytest.raises(ParameterError, match=r"backbone_weights' = '/missing/file.h5': no such file"):
        check("/missing/file.h5")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"<html>a proxy error page</html>")
    with pytest.raises(ParameterError, match="not an HDF5"):
        check(str(junk))
    other = tmp_path / "mobilenet.weights.h5"
    inputs = keras.Input((64, 64, 3))
    keras.Model(inputs, keras.layers.Conv2D(3, 3)(inputs)).save_weights(other)
    with pytest.raises(ParameterError, match="does not load into a headless vgg16 at 64 px"):
        check(str(other))


@pytest.mark.kedro_session
def test_external_validation_on_a_fresh_project_stops_before_reading_the_cohort(tiny_project, phantom_cohort_dir):
    import time

    from cardio_kedro.common.errors import UserDatasetError
    from tests.helpers import run_pipeline

    start = time.monotonic()
    with pytest.raises(UserDatasetError, match="No registered Cardiomegaly-classifier to score") as caught:
        run_pipeline(
            tiny_project, "external_validation", runtime_params={"external": {"cohort_dir": str(phantom_cohort_dir)}}
        )
    assert "kedro run --pipelines=training" in str(caught.value)
    assert not (tiny_project / "data" / "02_intermediate" / "external").exists()  # no image of the cohort was read
    assert time.monotonic() - start < 60


@pytest.mark.kedro_session
def test_inference_with_a_version_that_does_not_exist_stops_before_reading_images(tiny_project, phantom_cohort_dir):
    from cardio_kedro.common.errors import UserDatasetError
    from tests.helpers import run_pipeline

    images = str(next(phantom_cohort_dir.glob("images_*/images")))
    with pytest.raises(UserDatasetError, match="does not resolve"):
        params = {"images_dir": images, "model_uri": "models:/Cardiomegaly-classifier/7"}
        run_pipeline(tiny_project, "inference", runtime_params=params)
    assert not list((tiny_project / "data" / "07_model_output").glob("inference_predictions*"))


def test_nodes_get_the_parameter_groups_validated_once_before_the_run():
    """Each ``params:`` group a node takes is the object validated before the run (not a mapping each node
    validates again); single values stay as they are; kedro-mlflow, called with the same inputs, still sees
    the mappings it logs as MLflow params."""
    from cardio_kedro.config import ModelTrainingParams, ProjectParams, RebalanceParams, as_params
    from cardio_kedro.hooks.preflight import PreflightHooks
    from cardio_kedro.settings import load_parameters
    from tests.helpers import PROJECT_ROOT

    tree = load_parameters(str(PROJECT_ROOT / "conf"), env="base")
    hooks = PreflightHooks()
    assert hooks.before_node_run(node=None, inputs={"params:model_training": {}}) is None  # no run: nothing swapped
    hooks._params = ProjectParams.model_validate(tree)
    inputs = {
        "params:model_training": tree["model_training"],
        "params:data_processing.rebalance": tree["data_processing"]["rebalance"],
        "params:reporting.calibration_bins": 10,
        "params:external.cohort": tree["external"]["cohort"],
        "pixel_cache": object(),
    }
    swapped = hooks.before_node_run(node=None, inputs=inputs)
    assert set(swapped) == {"params:model_training", "params:data_processing.rebalance", "params:external.cohort"}
    assert swapped["params:model_training"] is hooks._params.model_training
    assert isinstance(swapped["params:data_processing.rebalance"], RebalanceParams)
    assert isinstance(inputs["params:model_training"], dict)  # the run's own inputs are untouched
    # a node takes either: the validated object as it is, a mapping (a direct call) validated
    assert as_params(ModelTrainingParams, swapped["params:model_training"]) is swapped["params:model_training"]
    assert as_params(ModelTrainingParams, tree["model_training"]) == hooks._params.model_training
    hooks.after_pipeline_run()
    assert hooks.before_node_run(node=None, inputs=inputs) is None
