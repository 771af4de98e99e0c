"""What a training run logs to MLflow about its models: pinned requirements, no inference by loading."""

from __future__ import annotations

from importlib.metadata import version

import pytest

from cardio_kedro.modeling.serving import SERVING_PACKAGES, serving_requirements


def test_serving_requirements_pin_keras_its_backend_and_the_decoders():
    pins = dict(pin.split("==") for pin in serving_requirements("tensorflow"))
    assert pins["keras"] == version("keras") and pins["tensorflow"] == version("tensorflow")
    assert {"pydicom", "opencv-python-headless", "pylibjpeg-openjpeg"} <= set(pins)
    assert set(SERVING_PACKAGES) <= set(pins)  # every one of them is installed here
    assert "tensorflow" not in dict(p.split("==") for p in serving_requirements("jax"))
    with pytest.raises(ValueError, match="unknown Keras backend 'theano'"):
        serving_requirements("theano")


@pytest.mark.slow
@pytest.mark.kedro_session
def test_both_registered_models_carry_the_pinned_requirements(trained_project):
    from mlflow.artifacts import download_artifacts
    from mlflow.tracking import MlflowClient

    store = f"sqlite:///{trained_project / 'mlflow.db'}"
    client = MlflowClient(store, registry_uri=store)
    expected = set(serving_requirements("tensorflow"))
    for name in ("Cardiomegaly-classifier", "Cardiomegaly-classifier-service"):
        (latest, *_) = client.search_model_versions(f"name='{name}'", order_by=["version_number DESC"])
        source = client.get_model_version_download_uri(name, latest.version)
        requirements = download_artifacts(artifact_uri=f"{source}/requirements.txt", tracking_uri=store)
        lines = set(open(requirements).read().split())
        assert expected <= lines, f"{name}: {sorted(expected - lines)} missing"
        assert any(line.startswith("mlflow==") for line in lines), name


def test_a_registry_that_lost_the_models_in_data_06_models_is_reported(tmp_path):
    """mlflow.db deleted between runs: the registry starts again at version 1 while data/06_models keeps the
    older models; a registry that knows every local model says nothing."""
    from mlflow.tracking import MlflowClient

    from cardio_kedro.hooks.mlflow_tags import local_model_versions, registry_mismatch

    folder = tmp_path / "classifier.keras"
    for stamp in ("2026-12-01T10.00.00.000Z", "2026-12-02T10.00.00.000Z", "2026-12-03T10.00.00.000Z"):
        (folder / stamp).mkdir(parents=True)
        (folder / stamp / "classifier.keras").write_bytes(b"model")
    (folder / "2026-12-04T10.00.00.000Z").mkdir()  # a version folder without its model is none
    assert local_model_versions(folder) == sorted(p.name for p in folder.iterdir())[:3]

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("Cardiomegaly")
    client.create_registered_model("Cardiomegaly-classifier")
    for stamp in local_model_versions(folder)[2:]:  # the newest only: the older ones were in the lost mlflow.db
        run = client.create_run(experiment, tags={"cardio.save_version": stamp})
        client.create_model_version("Cardiomegaly-classifier", f"runs:/{run.info.run_id}/model", run.info.run_id)
    problem = registry_mismatch(client, "Cardiomegaly-classifier", local_model_versions(folder))
    assert problem.startswith("data/06_models holds 2 trained model(s) that the MLflow registry")
    assert "newest 2026-12-02T10.00.00.000Z" in problem and "has 1 version(s)" in problem
    assert "was mlflow.db deleted or replaced?" in problem

    for stamp in local_model_versions(folder)[:2]:
        run = client.create_run(experiment, tags={"cardio.save_version": stamp})
        client.create_model_version("Cardiomegaly-classifier", f"runs:/{run.info.run_id}/model", run.info.run_id)
    assert registry_mismatch(client, "Cardiomegaly-classifier", local_model_versions(folder)) is None


@pytest.mark.kedro_session
def test_a_run_that_fails_after_training_registers_no_model(tiny_project, phantom_cohort_dir, caplog):
    """Formerly the model of a run whose reporting crashed was registered (version 1 of a FAILED run) while its
    outputs were set aside, and "the newest registered" was that failed run's."""
    from mlflow.tracking import MlflowClient

    from tests.helpers import run_pipeline

    (tiny_project / "conf" / "local" / "globals.yml").write_text(f"image_size: 32\ncohort_dir: {phantom_cohort_dir}\n")
    (tiny_project / "conf" / "local" / "catalog.yml").write_text(
        "evaluation_report:  # the report's HTML into a CSV dataset: reporting's last save fails\n"
        "  dataset: {type: pandas.CSVDataset, filepath: data/08_reporting/evaluation_report.csv}\n"
    )
    with pytest.raises(Exception, match="evaluation_report"):
        run_pipeline(tiny_project, "training")
    client = MlflowClient(f"sqlite:///{tiny_project / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "test_auc" in runs[0].data.metrics  # it got as far as the metrics: only the report failed
    assert client.search_model_versions("name='Cardiomegaly-classifier'") == []
    assert client.search_model_versions("name='Cardiomegaly-classifier-service'") == []
    assert "were not registered in MLflow" in caplog.text
    models = tiny_project / "data" / "06_models"
    assert not any((models / "classifier.keras").glob("*/classifier.keras"))  # set aside, with the run's outputs
    assert any((models / "classifier.keras.incomplete").glob("*/classifier.keras"))
