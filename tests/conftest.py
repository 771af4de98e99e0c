"""Shared fixtures: small phantom cohorts, the read-only NIH material, throw-away Kedro projects."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from cardio_kedro.datasets import CohortDataset
from cardio_kedro.pipelines.phantom_cohort.nodes import generate_phantom_cohort

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_NIH = PROJECT_ROOT.parent / "shared" / "data" / "nih"

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def make_phantom_cohort(path: Path, n_patients: int = 60, size: int = 64, prevalence: float = 0.3, seed: int = 3):
    """Write a small phantom cohort to ``path`` and return the dataset."""
    params = {
        "n_patients": n_patients,
        "prevalence": prevalence,
        "mean_follow_ups": 0.5,
        "native_size": size,
        "seed": seed,
        "images_per_folder": 50,
        "workers": 1,
    }
    dataset = CohortDataset(str(path))
    dataset.save(generate_phantom_cohort(params))
    return dataset


@pytest.fixture(scope="session")
def phantom_cohort_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cohort") / "phantom"
    make_phantom_cohort(path)
    return path


@pytest.fixture(scope="session")
def shared_nih() -> Path:
    """The real NIH material in ../shared; a missing folder fails under CI and skips elsewhere."""
    if not (SHARED_NIH / "Data_Entry_2017_v2020.csv.gz").is_file():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but the shared NIH material is missing at {SHARED_NIH}")
        pytest.skip(f"shared NIH material not found at {SHARED_NIH}")
    return SHARED_NIH


TINY_PARAMETERS = """
image_size: 32
phantoms:
  n_patients: 90
  native_size: 64
  prevalence: 0.35
  workers: 1
  images_per_folder: 60
data_processing:
  workers: 1
model_training:
  model:
    backbone_width: 0.125
    attention_units: [8, 1]
    dense_units: 8
  batch_size: 16
  head: {epochs: 1}
  fine_tune: {epochs: 1}
  verbose: 0
reporting:
  n_bootstrap: 50
  heatmaps_per_group: 2
  examples_per_class: 2
"""


def make_tiny_project(tmp_path: Path) -> Path:
    """A copy of the project's conf in ``tmp_path``, with tiny parameters and an absolute MLflow store."""
    shutil.copytree(PROJECT_ROOT / "conf", tmp_path / "conf", ignore=shutil.ignore_patterns("local"))
    shutil.copy(PROJECT_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "conf" / "local").mkdir()
    (tmp_path / "src").mkdir()  # the package itself is installed; Kedro only checks the folder
    (tmp_path / "conf" / "local" / "parameters.yml").write_text(TINY_PARAMETERS)
    # an absolute store: MLflow caches stores by URI, and the relative one would follow the first project
    mlflow_yml = (PROJECT_ROOT / "conf" / "base" / "mlflow.yml").read_text()
    absolute = mlflow_yml.replace("sqlite:///mlflow.db", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert absolute != mlflow_yml
    (tmp_path / "conf" / "local" / "mlflow.yml").write_text(absolute)
    return tmp_path


@pytest.fixture
def tiny_project(tmp_path, monkeypatch) -> Path:
    """A fresh tiny project; the test runs inside it."""
    monkeypatch.chdir(make_tiny_project(tmp_path))
    return tmp_path


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory) -> Path:
    """A tiny project on which `kedro run --pipeline=training` ran once (shared, read-mostly)."""
    project = make_tiny_project(tmp_path_factory.mktemp("trained"))
    here = os.getcwd()
    os.chdir(project)
    try:
        run_pipeline(project, "training")  # the demo cohort is generated on first use
    finally:
        os.chdir(here)
    return project


def run_pipeline(project: Path, pipeline: str, env: str | None = None, runtime_params: dict | None = None):
    """Run a pipeline of the project in ``project`` through a real Kedro session."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=env, runtime_params=runtime_params or {}) as session:
        return session.run(pipeline_names=[pipeline])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now, below 49152 (kedro viz refuses ephemeral ports)."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 49000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port found between 20000 and 49000")


@contextmanager
def serve(command: list[str], cwd: Path, url: str, env: dict | None = None, timeout: float = 120):
    """Start a server in its own process group, wait for ``url``, and always stop it by process id."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, **(env or {}), "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline = time.time() + timeout
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2):
                    break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
                assert time.time() < deadline, f"{command[0]} did not answer in {timeout} s"
                time.sleep(1)
        yield proc
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except ProcessLookupError:  # it already exited
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
