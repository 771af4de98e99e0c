"""A team's tracking server for real: PostgreSQL + ``mlflow server`` with proxied artifacts on 127.0.0.1.

Two training runs start at the same moment against it (the experiment does not exist yet: both
race to create it), both finish in one experiment, their artifacts come back through the server,
and the registered service answers HTTP requests when served from it.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from cardio_kedro.team.server import MlflowServer, postgres_bin
from tests.helpers import free_port, make_tiny_project, mlflow_serve_command, serve

pytestmark = [pytest.mark.kedro_session, pytest.mark.server]
FINDING = "Cardiomegaly"


def _kedro(project: Path, cohort: Path, uri: str) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "KEDRO_DISABLE_TELEMETRY": "true"}
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "kedro"), "run", "--pipelines=training", f"--params=cohort_dir={cohort}"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture(scope="module")
def two_runs(team_server, phantom_cohort_dir, tmp_path_factory):
    """Two `kedro run`s of two projects started together against the server; their run ids."""
    server, _ = team_server
    projects = [make_tiny_project(tmp_path_factory.mktemp(f"member{i}")) for i in range(2)]
    for project in projects:  # no local store to fall back on: the server is the only one
        (project / "conf" / "local" / "mlflow.yml").unlink()
    start = time.perf_counter()
    runs = [_kedro(project, phantom_cohort_dir, server.url) for project in projects]
    for run in runs:
        out, _ = run.communicate(timeout=900)
        assert run.returncode == 0, out[-4000:]
    print(f"two concurrent training runs: {time.perf_counter() - start:.0f} s")
    client = MlflowClient(server.url)
    experiment = client.get_experiment_by_name(FINDING)
    return client, experiment, client.search_runs([experiment.experiment_id])


def test_two_runs_started_together_both_finish_in_one_experiment(two_runs):
    client, experiment, runs = two_runs
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # proxied: clients need no storage access
    assert [run.info.status for run in runs] == ["FINISHED", "FINISHED"]
    assert {run.info.experiment_id for run in runs} == {experiment.experiment_id}
    assert len({run.info.run_id for run in runs}) == 2
    assert all("test_auc" in run.data.metrics for run in runs)


def test_artifacts_download_back_through_the_server(two_runs, tmp_path):
    client, _, runs = two_runs
    for run in runs:
        where = tmp_path / run.info.run_id
        where.mkdir()
        for artifact in ("evaluation_report", "evaluation_metrics", "roc_plot"):
            client.download_artifacts(run.info.run_id, artifact, str(where))
        report = next((where / "evaluation_report").rglob("*.html")).read_text()
        assert "ROC AUC" in report
        metrics = json.loads(next((where / "evaluation_metrics").rglob("*.json")).read_text())
        assert metrics["test"]["roc_auc"]["auc"] == pytest.approx(run.data.metrics["test_auc"], abs=1e-6)
        assert next((where / "roc_plot").rglob("*.png")).read_bytes()[:4] == b"\x89PNG"
        # the registered Keras model of this run, from the registry through the server
        (version,) = client.search_model_versions(f"name='{FINDING}-classifier' and run_id='{run.info.run_id}'")
        source = client.get_model_version_download_uri(f"{FINDING}-classifier", version.version)
        model = mlflow.artifacts.download_artifacts(
            artifact_uri=source, dst_path=str(where / "model"), tracking_uri=client.tracking_uri
        )
        assert (Path(model) / "MLmodel").is_file()


def test_the_registered_service_serves_from_the_server(two_runs, team_server, tmp_path):
    server, _ = team_server
    client = two_runs[0]
    versions = client.search_model_versions(f"name='{FINDING}-classifier-service'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    port = free_port()
    command = mlflow_serve_command(f"models:/{FINDING}-classifier-service/2", port)
    image = base64.b64encode(cv2.imencode(".png", np.full((48, 48), 90, np.uint8))[1].tobytes()).decode()
    with serve(command, tmp_path, f"http://127.0.0.1:{port}/ping", env={"MLFLOW_TRACKING_URI": server.url}):
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps({"dataframe_records": [{"image": image}]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())["predictions"][0]
    # a 48 px grey square: the model's quality guard answers (smaller than min_side 64), nothing is scored
    assert answer["quality"] == "too_small" and answer["probability"] is None and answer["label"] is None


def test_a_missing_postgres_is_named_with_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("glob.glob", lambda pattern: [])
    with pytest.raises(RuntimeError, match=r"'initdb' was not found .* apt-get install postgresql"):
        postgres_bin("initdb")


def test_a_taken_port_says_so(team_server, tmp_path):
    server, postgres = team_server
    clash = MlflowServer(postgres.uri("mlflow"), tmp_path / "a", server.port, log=tmp_path / "log")
    with pytest.raises(RuntimeError, match=rf"port {server.port} on 127.0.0.1 is taken .*choose another port"):
        clash.start(timeout_s=60)
    assert clash.process is None  # nothing was started
