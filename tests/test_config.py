"""Typed parameters: the YAML validates, every bad value is named with what is accepted and where to fix it."""

import shutil
from pathlib import Path

import keras
import pytest
from kedro.config import OmegaConfigLoader

from cardio_kedro.config import (
    ConfigSources,
    ModelTrainingParams,
    ParameterError,
    check_backbone_weights,
    parameters_markdown,
    validate_parameters,
)
from tests.helpers import PROJECT_ROOT, run_pipeline


@pytest.fixture
def conf(tmp_path) -> Path:
    """A copy of the project's conf (base and nih) with an empty conf/local."""
    shutil.copytree(PROJECT_ROOT / "conf", tmp_path / "conf", ignore=shutil.ignore_patterns("local"))
    (tmp_path / "conf" / "local").mkdir()
    return tmp_path / "conf"


def _validate(conf: Path, env: str = "local", runtime_params: dict | None = None):
    runtime_params = runtime_params or {}
    loader = OmegaConfigLoader(
        str(conf),
        base_env="base",
        default_run_env="local",
        env=env,
        runtime_params=runtime_params,
        merge_strategy={"parameters": "soft"},
    )
    return validate_parameters(loader["parameters"], ConfigSources(conf, env, runtime_params=runtime_params))


def _problems(conf: Path, **kwargs) -> str:
    with pytest.raises(ParameterError) as err:
        _validate(conf, **kwargs)
    return str(err.value)


def test_base_and_nih_configurations_validate(conf):
    base = _validate(conf)
    assert base.image_size == 64 and base.model_training.model.backbone_batchnorm
    nih = _validate(conf, env="nih")
    assert nih.image_size == 224 and nih.model_training.model.backbone_weights == "imagenet"
    assert not nih.model_training.model.backbone_batchnorm  # VGG16-BN has no ImageNet weights
    with pytest.raises(ValueError, match="frozen"):
        base.model_training.seed = 1


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            {"model_training": {"model": {"backbone": "resnet50"}}},
            ["'model_training.model.backbone' = 'resnet50'", "'vgg16', 'densenet121'", "(set in --params)"],
        ),
        ({"image_size": 0}, ["'image_size' = 0", "greater than or equal to 32", "(set in --params)"]),
        (
            {"data_processing": {"rebalance": {"neg_per_pos": 0}}},
            ["'data_processing.rebalance.neg_per_pos' = 0", "greater than 0"],
        ),
        (
            {"model_training": {"fine_tune": {"epoch": 3}}},
            ["unknown parameter 'model_training.fine_tune.epoch'", "epochs, learning_rate", "did you mean 'epochs'?"],
        ),
        ({"modle_training": {"seed": 3}}, ["unknown parameter 'modle_training'", "did you mean 'model_training'?"]),
        (
            {"data_processing": {"split": {"fractions": {"test": 0.5}}}},
            ["data_processing.split.fractions", "must be 1, got 1.3"],
        ),
        (
            {"model_training": {"fine_tune": {"unfreeze_layers": "some"}}},
            ["'model_training.fine_tune.unfreeze_layers' = 'some'", "number of layers (0 or more) or 'all'"],
        ),
        (
            {"model_training": {"model": {"global_context": "none"}}},  # the view target needs the global branch
            ["'model_training'", "view_loss_weight > 0 reads the global-context branch"],
        ),
        (
            {"data_processing": {"rebalance": {"strategy": "class_weight"}}},
            ["view_loss_weight > 0 and data_processing.rebalance.strategy class_weight do not combine"],
        ),
        (
            {"model_training": {"model": {"backbone_weights": "imagenet"}}},  # with VGG16-BN from base
            ["'model_training.model'", "backbone_batchnorm: true exist only for backbone vgg16 without imagenet"],
        ),
    ],
)
def test_a_bad_value_is_named_with_what_is_accepted_and_where(conf, override, expected):
    message = _problems(conf, runtime_params=override)
    for text in expected:
        assert text in message, (text, message)
    assert "nothing was run" in message and "docs/parameters.md" in message


def test_the_file_that_sets_a_bad_value_is_named(conf):
    (conf / "local" / "parameters.yml").write_text("reporting:\n  n_bootstrap: -5\n")
    assert "'reporting.n_bootstrap' = -5" in _problems(conf) and "(set in conf/local/parameters.yml)" in _problems(conf)
    (conf / "local" / "parameters.yml").unlink()
    (conf / "local" / "globals.yml").write_text("image_size: 8\n")
    assert "(set in conf/local/globals.yml)" in _problems(conf)


def test_a_missing_key_names_the_file_to_add_it_to(conf):
    path = conf / "base" / "parameters_reporting.yml"
    path.write_text(path.read_text().replace("  seed: 0\n", ""))
    assert "missing parameter 'reporting.seed': add it to conf/base/parameters_reporting.yml" in _problems(conf)


def test_every_problem_is_reported_at_once(conf):
    message = _problems(conf, runtime_params={"image_size": 0, "reporting": {"n_bootstrap": -1}})
    assert message.count("\n  - ") == 2


def test_nodes_refuse_a_group_with_a_typo():
    params = _validate(PROJECT_ROOT / "conf").model_training.model_dump()
    assert ModelTrainingParams.model_validate(params).batch_size == 32
    with pytest.raises(ValueError, match="early_stoping_patience"):
        ModelTrainingParams.model_validate({**params, "early_stoping_patience": 3})


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


def test_parameters_doc_is_generated_from_the_typed_config():
    generated = parameters_markdown(PROJECT_ROOT / "conf")
    assert (PROJECT_ROOT / "docs" / "parameters.md").read_text() == generated, (
        "docs/parameters.md is out of date: run `python -m cardio_kedro.config > docs/parameters.md`"
    )
    for key in ("inference.heatmaps", "model_training.fine_tune.unfreeze_layers", "phantoms.native_size"):
        assert f"`{key}`" in generated


@pytest.mark.slow
def test_a_bad_parameter_stops_a_run_before_any_data_or_mlflow_run(tiny_project):
    with pytest.raises(ParameterError, match="model_training.model.backbone"):
        run_pipeline(tiny_project, "training", runtime_params={"model_training": {"model": {"backbone": "resnet50"}}})
    assert not [p for p in (tiny_project / "data").rglob("*") if p.is_file()]  # not even the demo cohort
    assert not (tiny_project / "mlflow.db").exists() or _runs(tiny_project) == []


def _runs(project: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
