"""Typed parameters: the YAML validates, every bad value is named with what is accepted and where to fix it."""

from pathlib import Path

import pytest
from kedro.config import OmegaConfigLoader

from cardio_kedro.config import (
    ConfigSources,
    ModelTrainingParams,
    ParameterError,
    validate_parameters,
)
from cardio_kedro.config.docs import parameters_markdown
from tests.helpers import PROJECT_ROOT, data_written, run_pipeline


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


def test_small_real_doubles_the_augmentation_and_keeps_the_rest_of_base(conf):
    """conf/small_real changes a few keys of model_training; soft merging keeps every other base key."""
    base, small = _validate(conf), _validate(conf, env="small_real")
    assert small.cross_validation.n_folds == 5 and small.model_training.keep_weights == "last"
    doubled = {k: 2 * v for k, v in base.model_training.model.augmentation.model_dump().items()}
    assert small.model_training.model.augmentation.model_dump() == doubled
    assert small.model_training.model.dense_units == base.model_training.model.dense_units
    assert small.model_training.fine_tune == base.model_training.fine_tune
    assert base.model_training.weight_decay == 0.0 and small.model_training.weight_decay == 2.0


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
        (  # the rules that span groups live in ProjectParams alone: the nodes do not repeat them
            {"target_findings": "Cardiomegaly|Effusion", "model_training": {"loss": "focal"}},
            [
                "target_findings names 2 findings, and a multi-label model needs",
                "data_processing.rebalance.strategy=class_weight",
                "model_training.view_loss_weight=0",
                "model_training.loss=binary_crossentropy",
            ],
        ),
        (
            {"model_training": {"auxiliary_findings": "Effusion|Cardiomegaly"}},  # the target itself
            ["auxiliary_findings ['Effusion', 'Cardiomegaly'] names the target finding Cardiomegaly"],
        ),
        (
            {"model_training": {"auxiliary_findings": "Effusion|Efusion"}},
            ["'model_training.auxiliary_findings.1' = 'Efusion'", "'Effusion'"],
        ),
        (
            {
                "model_training": {"auxiliary_findings": ["Edema"], "view_loss_weight": 0.0},
                "data_processing": {"rebalance": {"strategy": "class_weight"}},
            },
            ["auxiliary_findings and data_processing.rebalance.strategy class_weight do not combine"],
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


def test_parameters_doc_is_generated_from_the_typed_config():
    generated = parameters_markdown(PROJECT_ROOT / "conf")
    assert (PROJECT_ROOT / "docs" / "parameters.md").read_text() == generated, (
        "docs/parameters.md is out of date: run `python -m cardio_kedro.config > docs/parameters.md`"
    )
    for key in ("inference.heatmaps", "model_training.fine_tune.unfreeze_layers", "phantoms.native_size"):
        assert f"`{key}`" in generated


@pytest.mark.kedro_session
def test_a_bad_parameter_stops_a_run_before_any_data_or_mlflow_run(tiny_project):
    with pytest.raises(ParameterError, match="model_training.model.backbone"):
        run_pipeline(tiny_project, "training", runtime_params={"model_training": {"model": {"backbone": "resnet50"}}})
    assert not data_written(tiny_project)  # not even the demo cohort
    assert not (tiny_project / "mlflow.db").exists() or _runs(tiny_project) == []


def _runs(project: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
