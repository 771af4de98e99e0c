"""`kedro run --pipelines=multilabel` end to end on tiny phantoms drawing five findings: per-finding
outputs, the report, MLflow metrics named per finding, and the checks that stop a mismatched run."""

import json
import os

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from cardio_kedro.config import ParameterError
from cardio_kedro.modeling import model_findings
from cardio_kedro.pipelines.multilabel_reporting.pipeline import FIGURES
from tests.helpers import MULTI_LABEL_FINDINGS as FINDINGS
from tests.helpers import MULTI_LABEL_PARAMS as MULTI
from tests.helpers import make_tiny_project, run_pipeline

DRAWN = MULTI["phantoms"]["drawn_findings"]

pytestmark = pytest.mark.kedro_session


def _latest(project, pattern):
    return sorted(project.glob(f"data/{pattern}/*/*"))[-1]


def test_the_multilabel_run_reports_every_finding(multilabel_project):
    project = multilabel_project
    metrics = json.loads(_latest(project, "08_reporting/finding_metrics.json").read_text())
    assert metrics["findings"] == FINDINGS
    for finding in FINDINGS:
        m = metrics["by_finding"][finding]
        assert m["n_positive"] >= 1 and 0 <= m["roc_auc"]["auc"] <= 1 and m["chexnet_auc"] > 0.7
        assert {"pr_auc", "brier", "ece", "threshold", "sensitivity", "specificity", "by_view"} <= set(m)
    localization = json.loads(_latest(project, "08_reporting/finding_localization.json").read_text())
    for finding in DRAWN:  # the phantoms' box list has every drawn finding
        assert localization[finding]["n_images"] >= 1, finding
    assert localization["Infiltration"]["n_images"] == 0  # labels only: no boxes
    report = _latest(project, "08_reporting/multilabel_report.html").read_text()
    assert report.count("data:image/png;base64,") == len(FIGURES)
    assert "Infiltration (not drawn)" in report and "CheXNet" in report
    for name in FIGURES:
        assert _latest(project, f"08_reporting/plots/{name}.png").stat().st_size > 2000, name

    from cardio_kedro.modeling import load_model

    assert model_findings(load_model(_latest(project, "06_models/classifier.keras"))) == FINDINGS


def test_mlflow_has_per_finding_metrics_in_one_run(multilabel_project):
    uri = f"sqlite:///{multilabel_project / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name(
        "+".join(["Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumothorax"])
    )
    (run,) = client.search_runs([experiment.experiment_id], "tags.pipeline_names LIKE '%multilabel%'")
    assert run.info.status == "FINISHED"
    for finding in FINDINGS:
        assert f"test_auc.{finding}" in run.data.metrics and f"threshold.{finding}" in run.data.metrics
        assert len(client.get_metric_history(run.info.run_id, f"val_auc.{finding}")) == 2  # every epoch
    assert "attention_pointing_game.Effusion" in run.data.metrics
    assert "test_auc_mean" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"finding_metrics", "multilabel_report", "finding_roc_grid_plot", "label_cooccurrence_plot"} <= artifacts
    versions = client.search_model_versions(f"name='{experiment.name}-classifier'")
    assert len(versions) == 1


@pytest.mark.parametrize(
    ("pipeline", "params", "message"),
    [
        ("training", MULTI, "train and report them with the multilabel pipeline"),
        ("cross_validation", MULTI, "the cross_validation pipeline is for one"),
        ("multilabel", {}, "the multilabel pipeline needs several"),
        (
            "multilabel",
            {**MULTI, "data_processing": {"rebalance": {"strategy": "undersample"}}},
            "strategy=class_weight",
        ),
    ],
)
def test_a_run_whose_report_cannot_read_its_model_stops_before_any_work(tmp_path, pipeline, params, message):
    project = make_tiny_project(tmp_path)
    here = os.getcwd()
    os.chdir(project)
    try:
        with pytest.raises(ParameterError, match=message):
            run_pipeline(project, pipeline, runtime_params=params)
    finally:
        os.chdir(here)
    assert not (project / "data" / "01_raw" / "phantom").exists()  # stopped before generating anything


def test_batch_inference_and_the_service_answer_per_finding(multilabel_project, tmp_path):
    import base64
    import shutil

    import numpy as np
    import pandas as pd

    images = sorted((multilabel_project / "data/01_raw/phantom").rglob("*.png"))[:5]
    folder = tmp_path / "incoming"
    folder.mkdir()
    for path in images:
        shutil.copy(path, folder / path.name)
    here = os.getcwd()
    os.chdir(multilabel_project)
    try:
        run_pipeline(multilabel_project, "inference", runtime_params={**MULTI, "images_dir": str(folder)})
    finally:
        os.chdir(here)
    table = pd.read_csv(_latest(multilabel_project, "07_model_output/inference_predictions.csv")).set_index("file")
    for finding in FINDINGS:
        assert table[f"probability.{finding}"].between(0, 1).all()
        assert set(table[f"label.{finding}"]) <= {0, 1}
    uri = f"sqlite:///{multilabel_project / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    service = mlflow.pyfunc.load_model(f"models:/{'+'.join(FINDINGS)}-classifier-service/1")
    request = pd.DataFrame({"image": [base64.b64encode(p.read_bytes()).decode() for p in images]})
    answer = service.predict(request)
    assert list(answer.columns) == [c for f in FINDINGS for c in (f"probability.{f}", f"label.{f}")] + ["quality"]
    batch = table.loc[[p.name for p in images]]
    assert answer["quality"].tolist() == batch["quality"].tolist()  # the same guard in both
    ok = (answer["quality"] == "ok").to_numpy()
    assert ok.sum() >= 3, answer["quality"].tolist()  # phantoms of the cohort the model was trained on
    for finding in FINDINGS:
        np.testing.assert_allclose(
            answer.loc[ok, f"probability.{finding}"].astype(float), batch.loc[ok, f"probability.{finding}"], rtol=1e-5
        )
