"""Shared fixtures: small phantom cohorts, the read-only NIH material, throw-away Kedro projects.

Helpers live in ``tests/helpers.py``. Tests are marked by what they start (``kedro_session``,
``server``, ``browser``, ``gpu_smoke``); each of those is ``slow`` too, as are long computations.
``make test-fast`` runs the rest; ``pytest -m server`` (or any marker) runs one tier.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from cardio_kedro.team.server import MlflowServer, Postgres, postgres_bin
from tests.helpers import (
    MULTI_LABEL_PARAMS,
    PROJECT_ROOT,
    SHARED_NIH,
    free_port,
    make_phantom_cohort,
    make_tiny_project,
    run_pipeline,
    write_toy_cache,
)

TIERS = ("kedro_session", "server", "browser", "gpu_smoke")  # what a test starts; each is also `slow`


# The longest test files, longest first (test_readme.py: 486 s measured alone):
# `make test` hands whole files to two workers in collection order, so a long file collected last would run alone
# at the end while the other worker idles.
LONGEST_FIRST = ("test_readme.py", "test_external_validation_pipeline.py")


def pytest_collection_modifyitems(items):
    """A test marked with what it starts is slow too, so `-m "not slow"` is the fast tier; the longest files first."""
    for item in items:
        if any(item.get_closest_marker(tier) for tier in TIERS) and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
_MLFLOW_STORES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
_SESSION_STORES = {name: os.environ.get(name) for name in _MLFLOW_STORES}


def _restore_tracking_uri() -> None:
    for name, value in _SESSION_STORES.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(autouse=True)
def _tracking_uri_as_the_session_started():
    """MLflow writes MLFLOW_TRACKING_URI (and MLFLOW_REGISTRY_URI) into os.environ whenever a run sets
    its store, and the project reads them: a `kedro run` that a later test starts in a subprocess
    would otherwise log to another test's project. Every test starts (and ends) with both as the
    session had them."""
    _restore_tracking_uri()
    yield
    _restore_tracking_uri()


@pytest.fixture
def conf(tmp_path) -> Path:
    """A copy of the project's conf (base and nih) with an empty conf/local."""
    shutil.copytree(PROJECT_ROOT / "conf", tmp_path / "conf", ignore=shutil.ignore_patterns("local"))
    (tmp_path / "conf" / "local").mkdir()
    return tmp_path / "conf"


@pytest.fixture(scope="session")
def phantom_cohort_dir(tmp_path_factory) -> Path:
    return make_phantom_cohort(tmp_path_factory.mktemp("cohort") / "phantom")


@pytest.fixture(scope="session")
def shared_nih() -> Path:
    """The real NIH material in ../shared; a missing folder fails under CI and skips elsewhere."""
    if not (SHARED_NIH / "Data_Entry_2017_v2020.csv.gz").is_file():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but the shared NIH material is missing at {SHARED_NIH}")
        pytest.skip(f"shared NIH material not found at {SHARED_NIH}")
    return SHARED_NIH


@pytest.fixture
def tiny_project(tmp_path, monkeypatch) -> Path:
    """A fresh tiny project; the test runs inside it."""
    monkeypatch.chdir(make_tiny_project(tmp_path))
    return tmp_path


def _project_after_one_run(folder: Path, pipeline: str, runtime_params: dict | None = None) -> Path:
    """A tiny project in ``folder`` on which ``pipeline`` ran once, from inside the project."""
    project = make_tiny_project(folder)
    here = os.getcwd()
    os.chdir(project)
    try:
        run_pipeline(project, pipeline, runtime_params=runtime_params)  # the demo cohort is generated on first use
    finally:
        os.chdir(here)
    return project


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory) -> Path:
    """A tiny project on which `kedro run --pipelines=training` ran once (shared, read-mostly)."""
    return _project_after_one_run(tmp_path_factory.mktemp("trained"), "training")


@pytest.fixture(scope="session")
def multilabel_project(tmp_path_factory) -> Path:
    """A tiny project on which `kedro run --pipelines=multilabel` ran once (shared, read-mostly)."""
    return _project_after_one_run(tmp_path_factory.mktemp("multilabel"), "multilabel", MULTI_LABEL_PARAMS)


@pytest.fixture(scope="session")
def toy_cache(tmp_path_factory):
    """A learnable toy set in a 32 px pixel cache: positives carry a bright block on the left."""
    rng = np.random.default_rng(0)
    images, rows = [], []
    for i in range(96):
        target = int(i % 3 == 0)
        img = rng.integers(20, 60, (32, 32)).astype(np.uint8)
        if target:
            img[8:24, 2:14] = 220
        images.append(img)
        rows.append({"target": target, "sex": "MF"[i % 2], "view": "PA", "age": 50.0})
    table, dataset = write_toy_cache(tmp_path_factory.mktemp("toy"), images, rows)
    return {
        "cache": dataset.load(),
        "dataset": dataset,
        "train": table.iloc[:64].reset_index(drop=True),
        "validation": table.iloc[64:].reset_index(drop=True),
    }


def _postgres_available() -> None:
    try:
        postgres_bin("initdb")
    except RuntimeError as missing:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {missing}")
        pytest.skip(str(missing))


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server on 127.0.0.1 for the whole session (tests make their own databases)."""
    _postgres_available()
    # not under pytest's tmp folder: that is private to root, and PostgreSQL runs as its own user
    root = Path(tempfile.mkdtemp(prefix="cardio-postgres-"))
    root.chmod(0o755)
    server = Postgres(root / "db", free_port())
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def team_server(postgres, request):
    """An MLflow server with proxied artifacts over a PostgreSQL database of this test module's own."""
    name = "mlflow_" + request.module.__name__.rsplit(".", 1)[-1]
    root = Path(tempfile.mkdtemp(prefix="cardio-mlflow-"))
    server = MlflowServer(postgres.create_database(name), root / "artifacts", free_port(), log=root / "mlflow.log")
    try:
        yield server.start(), postgres
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
