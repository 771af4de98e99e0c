"""Multi-host data-parallel training for real: two JAX processes on localhost (one CPU device each)
joined by JAX's distributed runtime, each training its own shard of the split in step.

Afterwards the two processes hold the same weights; there is one MLflow training run (process 0's)
and one saved model. A hard timeout kills both process groups if anything hangs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import mlflow
import numpy as np
import pytest

from tests.helpers import free_port, make_tiny_project, run_pipeline

pytestmark = [pytest.mark.kedro_session, pytest.mark.gpu_smoke]
TIMEOUT_S = 600


def _launch(project, port: int, index: int, weights) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # the project's own store
    env.update(
        KERAS_BACKEND="jax",
        JAX_PLATFORMS="cpu",
        KERAS_DISTRIBUTION_JOB_ADDRESSES=f"127.0.0.1:{port}",
        KERAS_DISTRIBUTION_NUM_PROCESSES="2",
        KERAS_DISTRIBUTION_PROCESS_ID=str(index),
        KEDRO_DISABLE_TELEMETRY="true",
        COLUMNS="300",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "cardio_kedro.team.multihost", "--save-weights", str(weights)],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the timeout kills all of it
    )


def test_two_processes_train_in_step_with_one_mlflow_run_and_one_saved_model(tmp_path, phantom_cohort_dir):
    project = make_tiny_project(tmp_path / "project")
    (project / "conf" / "local" / "globals.yml").write_text(f"image_size: 32\ncohort_dir: {phantom_cohort_dir}\n")
    run_pipeline(project, "data_processing")  # once, before training: the splits and the pixel cache
    port = free_port()
    weights = [tmp_path / f"weights_{i}.npz" for i in range(2)]
    start = time.perf_counter()
    procs = [_launch(project, port, i, weights[i]) for i in range(2)]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=max(1.0, TIMEOUT_S - (time.perf_counter() - start)))[0])
    except subprocess.TimeoutExpired:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"multi-host training did not finish in {TIMEOUT_S} s: both process groups killed")
    print(f"two processes: {time.perf_counter() - start:.0f} s")
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-4000:]
    assert "multi_host: process 0 of 2 trains on" in outputs[0]
    assert "multi_host: process 1 of 2 trains on" in outputs[1]

    first, second = (np.load(path) for path in weights)
    assert len(first.files) == len(second.files) > 10
    for key in first.files:  # the same weights in both processes after training
        np.testing.assert_array_equal(first[key], second[key])

    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    training = [r for r in runs if "model_training" in r.data.tags.get("pipeline_names", "")]
    assert len(training) == 1 and training[0].info.status == "FINISHED"  # process 0's only
    assert "test_auc" in training[0].data.metrics  # process 0 went on to calibration and reporting
    models = project / "data" / "06_models"
    for name in ("uncalibrated_classifier.keras", "classifier.keras"):
        assert len(list((models / name).iterdir())) == 1, name  # one saved version, not one per process


def test_multi_host_without_its_environment_says_what_to_set(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERAS_DISTRIBUTION_")}

    def launch(backend: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "cardio_kedro.team.multihost"]
        environment = {**env, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu"}
        return subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True, check=False)

    done = launch("jax")
    assert done.returncode == 2
    assert "set KERAS_DISTRIBUTION_JOB_ADDRESSES, KERAS_DISTRIBUTION_NUM_PROCESSES" in done.stderr
    done = launch("tensorflow")
    assert done.returncode == 2 and "KERAS_BACKEND=jax" in done.stderr
