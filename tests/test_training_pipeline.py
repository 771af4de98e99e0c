"""`kedro run --pipelines=training` end to end on a tiny phantom cohort: outputs, report, MLflow run."""

import json
import re

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from cardio_kedro.modeling import operating_threshold
from cardio_kedro.pipelines.reporting.pipeline import REPORT_FIGURES
from tests.helpers import run_pipeline

pytestmark = pytest.mark.kedro_session


def _client(project):
    uri = f"sqlite:///{project / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _latest_file(project, pattern):
    return sorted(project.glob(f"data/{pattern}/*/*"))[-1]


def test_training_pipeline_produces_every_output_and_one_mlflow_run(trained_project):
    project = trained_project
    assert (project / "data/01_raw/phantom/Data_Entry_2017.csv").is_file()
    for name in REPORT_FIGURES:
        versions = list((project / "data/08_reporting/plots").glob(f"{name}.png/*/{name}.png"))
        assert len(versions) == 1 and versions[0].stat().st_size > 2000, name
    report = _latest_file(project, "08_reporting/evaluation_report.html").read_text()
    assert "Model card" in report and report.count("data:image/png;base64,") == len(REPORT_FIGURES)
    metrics = json.loads(_latest_file(project, "08_reporting/evaluation_metrics.json").read_text())
    assert metrics["threshold"]["chosen_on"] == "validation"
    assert 0.0 <= metrics["test"]["roc_auc"]["auc"] <= 1.0
    model_file = _latest_file(project, "06_models/classifier.keras")
    run_version = model_file.parent.name  # every versioned output of the run shares this version

    client = _client(project)
    experiment = client.get_experiment_by_name("Cardiomegaly")
    runs = client.search_runs([experiment.experiment_id], "tags.pipeline_names LIKE '%training%'")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["model_training.batch_size"] == "16"
    assert run.data.params["image_size"] == "32" and run.data.params["target_findings"] == "Cardiomegaly"
    history = client.get_metric_history(run.info.run_id, "val_auc")
    assert [m.step for m in history] == [1, 2]
    for name in ("loss", "auc", "val_loss", "lr", "images_per_second"):
        assert len(client.get_metric_history(run.info.run_id, name)) == 2, name
    assert run.data.metrics["test_auc"] == pytest.approx(metrics["test"]["roc_auc"]["auc"])
    assert "test_auc_ci_low" in run.data.metrics and "threshold" in run.data.metrics
    tags = run.data.tags
    assert tags["keras.backend"] == "tensorflow" and tags["device"] == "backend tensorflow on cpu:0"
    assert not [t for t in tags if t.startswith(("version.", "kedro.run_id"))]  # kedro-mlflow's run_id tag says it
    # each artifact is logged to MLflow and kept as a catalog version of the same run
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {
        "roc_plot",
        "evaluation_report",
        "evaluation_metrics",
        "training_history",
        "data_quality_report",
    } <= artifacts
    logged = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="roc_plot/roc.png")
    kept = project / "data/08_reporting/plots/roc.png" / run_version / "roc.png"
    assert open(logged, "rb").read() == kept.read_bytes()
    versions = client.search_model_versions("name='Cardiomegaly-classifier'")
    assert len(versions) == 1 and versions[0].run_id == run.info.run_id
    service = client.search_model_versions("name='Cardiomegaly-classifier-service'")
    assert len(service) == 1 and service[0].run_id == run.info.run_id
    model = mlflow.keras.load_model(f"models:/Cardiomegaly-classifier/{versions[0].version}")
    assert model.get_layer("attention_map") is not None
    # the registered model is the calibrated one, with this run's threshold inside
    assert operating_threshold(model) == pytest.approx(metrics["threshold"]["value"])
    assert run.data.metrics["threshold"] == pytest.approx(metrics["threshold"]["value"])
    assert {"test_ece", "baseline_auc", "attention_uniform_reference"} <= set(run.data.metrics)


def test_a_failing_run_ends_failed_in_mlflow(tiny_project, phantom_cohort_dir):
    cohort = tiny_project / "no_images"
    cohort.mkdir()
    (cohort / "Data_Entry_2017.csv").write_bytes((phantom_cohort_dir / "Data_Entry_2017.csv").read_bytes())
    with pytest.raises(ValueError, match=r"Too few patients with Cardiomegaly \(0\)"):  # every image is missing
        run_pipeline(tiny_project, "training", runtime_params={"cohort_dir": str(cohort)})
    client = _client(tiny_project)
    runs = client.search_runs([client.get_experiment_by_name("Cardiomegaly").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert runs[0].data.tags["cardio.end_reason"].startswith("UserValueError: Too few patients with Cardiomegaly (0)")
    assert not list((tiny_project / "data/06_models").glob("classifier.keras/*"))
    # what the failed run saved is set aside: no later run takes it as the latest version
    versions = [p for p in (tiny_project / "data").rglob("*") if re.fullmatch(r"\d{4}-\d\d-\d\dT[\d.]+Z", p.name)]
    assert versions and all(p.parent.name.endswith(".incomplete") for p in versions), versions


def test_from_any_data_processing_node_reruns_from_saved_intermediates(trained_project, tmp_path):
    """``kedro run --from-nodes=<node>`` works from every node: every intermediate is persisted."""
    import shutil

    from cardio_kedro.pipelines.data_processing import create_pipeline

    project = tmp_path / "copy"
    shutil.copytree(trained_project, project, ignore=shutil.ignore_patterns("mlflow.db", "06_models", "08_reporting"))
    mlflow_yml = project / "conf" / "local" / "mlflow.yml"
    mlflow_yml.write_text(mlflow_yml.read_text().replace(str(trained_project), str(project)))
    for node in create_pipeline().nodes:
        run_pipeline(project, "data_processing", from_nodes=[node.name])
