"""Sweeps for real: Optuna workers on a PostgreSQL study, each trial a `kedro run` logged to an MLflow server.

Two workers x one trial each give exactly two trials and two FINISHED MLflow runs with distinct
parameters, the best one crowned ``champion``; a worker killed mid-trial leaves its trial failed
in the study and its MLflow run FAILED, not running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest

from cardio_kedro.datasets.inference_model_dataset import normalise_model_uri
from cardio_kedro.team.sweep import CHAMPION, draw, objective_value, params_argument
from tests.helpers import make_tiny_project

pytestmark = [pytest.mark.kedro_session, pytest.mark.server]
FINDING = "Cardiomegaly"
SWEEP_LOCAL = """
sweep:
  study_name: {study}
  trials_per_worker: 1
  heartbeat_s: 2
"""


def _project(root: Path, study: str) -> Path:
    project = make_tiny_project(root)
    (project / "conf" / "local" / "mlflow.yml").unlink()  # the server only
    (project / "conf" / "local" / "parameters_sweep.yml").write_text(SWEEP_LOCAL.format(study=study))
    return project


def _worker(project: Path, storage: str, server_url: str, cohort: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cardio_kedro.team.sweep",
            "--storage",
            storage,
            "--params",
            f"cohort_dir={cohort}",
            *extra,
        ],
        cwd=project,
        env={**os.environ, "MLFLOW_TRACKING_URI": server_url, "COLUMNS": "300"},  # log lines unwrapped
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _sweep_runs(client, study: str):
    experiment = client.get_experiment_by_name(FINDING)
    if experiment is None:  # no worker has started yet
        return []
    return client.search_runs([experiment.experiment_id], filter_string=f"tags.`sweep.study` = '{study}'")


@pytest.fixture(scope="module")
def two_workers(team_server, phantom_cohort_dir, tmp_path_factory):
    server, postgres = team_server
    storage = postgres.create_database("optuna_two_workers")
    project = _project(tmp_path_factory.mktemp("sweep"), "two-workers")
    start = time.perf_counter()
    workers = [_worker(project, storage, server.url, phantom_cohort_dir) for _ in range(2)]
    outputs = []
    for worker in workers:
        out, _ = worker.communicate(timeout=1200)
        outputs.append(out)
        assert worker.returncode == 0, out[-4000:]
    print(f"2 workers x 1 trial: {time.perf_counter() - start:.0f} s")
    study = optuna.load_study(study_name="two-workers", storage=storage)
    return study, mlflow.MlflowClient(server.url), outputs


def test_two_workers_run_exactly_two_trials_as_two_finished_mlflow_runs(two_workers):
    study, client, _ = two_workers
    trials = study.get_trials()
    assert len(trials) == 2
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    runs = _sweep_runs(client, "two-workers")
    assert sorted(int(r.data.tags["sweep.trial"]) for r in runs) == [0, 1]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert sorted(r.info.run_name for r in runs) == [f"two-workers trial {n}" for n in range(2)]  # in the UI
    by_trial = {int(r.data.tags["sweep.trial"]): r for r in runs}
    for trial in trials:  # each run trained with its trial's parameters and reported its own val_auc
        run = by_trial[trial.number]
        assert float(run.data.params["model_training.fine_tune.learning_rate"]) == pytest.approx(
            trial.params["model_training.fine_tune.learning_rate"]
        )
        assert trial.value == pytest.approx(objective_value(client, run, "val_auc"))
    parameter_sets = {tuple(sorted(t.params.items())) for t in trials}
    assert len(parameter_sets) == 2  # no duplicates


def test_the_best_trial_is_the_champion_that_inference_resolves(two_workers):
    study, client, _ = two_workers
    best_run = study.best_trial.user_attrs["mlflow_run_id"]
    for name in (f"{FINDING}-classifier", f"{FINDING}-classifier-service"):
        assert client.get_model_version_by_alias(name, CHAMPION).run_id == best_run
    uri = f"models:/{FINDING}-classifier@{CHAMPION}"
    assert normalise_model_uri(uri) == uri  # the inference pipeline's model_uri takes the alias as it is


def test_data_is_prepared_once_for_the_study(two_workers):
    _, _, outputs = two_workers
    assert sum("preparing the data once" in out for out in outputs) == 1


def test_a_killed_workers_trial_is_marked_failed_not_left_running(team_server, phantom_cohort_dir, tmp_path):
    server, postgres = team_server
    storage = postgres.create_database("optuna_killed")
    project = _project(tmp_path, "killed")
    client = mlflow.MlflowClient(server.url)
    worker = _worker(project, storage, server.url, phantom_cohort_dir, "--trials", "1")
    deadline = time.monotonic() + 600
    while not _sweep_runs(client, "killed"):  # its kedro run has opened the MLflow run: mid-trial
        assert worker.poll() is None, worker.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "the trial's MLflow run never appeared"
        time.sleep(1)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    time.sleep(5)  # past the grace period of two 2 s heartbeats
    cleanup = _worker(project, storage, server.url, phantom_cohort_dir, "--trials", "0")
    out, _ = cleanup.communicate(timeout=300)
    assert cleanup.returncode == 0, out[-3000:]
    (trial,) = optuna.load_study(study_name="killed", storage=storage).get_trials()
    assert trial.state == optuna.trial.TrialState.FAIL
    (run,) = _sweep_runs(client, "killed")
    assert run.info.status == "FAILED"
    assert "marked failed the MLflow runs of trials [0], whose workers stopped" in out


def test_draw_and_params_argument():
    from cardio_kedro.config import SweepDimension

    space = {
        "model_training.fine_tune.learning_rate": SweepDimension(type="float", low=1e-4, high=1e-2, log=True),
        "model_training.batch_size": SweepDimension(type="categorical", choices=[16, 32]),
        "model_training.head.epochs": SweepDimension(type="int", low=1, high=3),
    }
    trial = optuna.create_study().ask()
    values = draw(trial, space)
    assert 1e-4 <= values["model_training.fine_tune.learning_rate"] <= 1e-2
    assert values["model_training.batch_size"] in (16, 32) and values["model_training.head.epochs"] in (1, 2, 3)
    text = params_argument(values, "cohort_dir=/data")
    assert text.startswith("cohort_dir=/data,model_training.fine_tune.learning_rate=")
    assert "model_training.batch_size=" in text


def test_a_test_metric_is_refused_as_objective():
    from pydantic import ValidationError

    from cardio_kedro.config import SweepParams
    from tests.helpers import base_params

    with pytest.raises(ValidationError, match="measured on the test split"):
        SweepParams.model_validate(base_params("sweep", objective="test_auc"))
