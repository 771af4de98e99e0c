"""`kedro run --pipeline=training` end to end on a tiny phantom cohort: outputs, report, MLflow run."""

import json

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from cardio_kedro.pipelines.reporting.pipeline import REPORT_FIGURES
from tests.conftest import run_pipeline


def _client(project):
    uri = f"sqlite:///{project / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_training_pipeline_produces_every_output_and_one_mlflow_run(trained_project):
    project = trained_project
    assert (project / "data/01_raw/phantom/Data_Entry_2017.csv").is_file()
    for name in REPORT_FIGURES:
        versions = list((project / "data/08_reporting/plots").glob(f"{name}.png/*/{name}.png"))
        assert len(versions) == 1 and versions[0].stat().st_size > 2000, name
    report = next((project / "data/08_reporting").glob("evaluation_report.html/*/evaluation_report.html")).read_text()
    assert "Model card" in report and report.count("data:image/png;base64,") == len(REPORT_FIGURES)
    metrics = json.loads(next((project / "data/08_reporting").glob("evaluation_metrics.json/*/*")).read_text())
    assert metrics["threshold"]["chosen_on"] == "validation"
    assert 0.0 <= metrics["test"]["roc_auc"]["auc"] <= 1.0
    assert list((project / "data/06_models").glob("classifier.keras/*/classifier.keras"))

    client = _client(project)
    experiment = client.get_experiment_by_name("Cardiomegaly")
    runs = client.search_runs([experiment.experiment_id], "tags.`kedro.pipeline` LIKE '%training%'")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["model_training.batch_size"] == "16"
    assert run.data.params["image_size"] == "32"
    history = client.get_metric_history(run.info.run_id, "val_auc")
    assert [m.step for m in history] == [1, 2]
    for name in ("loss", "auc", "val_loss", "lr"):
        assert len(client.get_metric_history(run.info.run_id, name)) == 2, name
    assert "test_auc" in run.data.metrics and "test_auc_ci_low" in run.data.metrics
    tags = run.data.tags
    assert tags["keras.backend"] == "tensorflow" and tags["target_finding"] == "Cardiomegaly"
    for dataset in ("classifier", "train_split", "test_split", "train_balanced", "roc_plot"):
        assert f"version.{dataset}" in tags, dataset
    assert tags["kedro.run_id"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"roc_plot", "evaluation_report", "evaluation_metrics", "training_history"} <= artifacts
    versions = client.search_model_versions("name='Cardiomegaly-classifier'")
    assert len(versions) == 1 and versions[0].run_id == run.info.run_id
    service = client.search_model_versions("name='Cardiomegaly-classifier-service'")
    assert len(service) == 1 and service[0].run_id == run.info.run_id
    model = mlflow.keras.load_model(f"models:/Cardiomegaly-classifier/{versions[0].version}")
    assert model.get_layer("attention_map") is not None


def test_a_failing_run_ends_failed_in_mlflow(tiny_project):
    with pytest.raises(ValueError, match="loss must be"):
        run_pipeline(tiny_project, "training", runtime_params={"model_training": {"loss": "hinge"}})
    client = _client(tiny_project)
    runs = client.search_runs([client.get_experiment_by_name("Cardiomegaly").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert not list((tiny_project / "data/06_models").glob("classifier.keras/*"))
