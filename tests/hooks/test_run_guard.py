"""Interrupted, killed and failed runs: MLflow status and tags, and outputs no later run takes as the latest."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from kedro.io import DatasetError, Version
from kedro_datasets.pandas import ParquetDataset

from cardio_kedro.common.errors import UserError
from cardio_kedro.hooks.run_guard import INCOMPLETE, RunGuardHooks, RunInterrupted, mark_dead_runs, quarantine, restore

SPLIT = "data/05_model_input/train_balanced.parquet"


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_quarantine_moves_only_that_versions_folders(tmp_path):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    for path, version in ((a, "V1"), (a, "V2"), (b, "V1")):
        (path / version).mkdir(parents=True)
        (path / version / path.name).write_text(version)
    moved = quarantine([a, b, tmp_path / "never_saved.parquet"], "V1")
    assert moved == [tmp_path / f"a.parquet{INCOMPLETE}" / "V1", tmp_path / f"b.parquet{INCOMPLETE}" / "V1"]
    assert sorted(p.name for p in a.iterdir()) == ["V2"]
    with pytest.raises(DatasetError, match="Did not find any versions"):  # the latest never finds it
        ParquetDataset(filepath=str(b), version=Version(None, None)).load()
    assert restore(tmp_path, "V1") == [a / "V1", b / "V1"]  # put back on request
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.parquet", "b.parquet"]
    with pytest.raises(UserError, match="no set-aside outputs of version 'V9'"):
        restore(tmp_path, "V9")


def test_an_interrupt_swallowed_where_it_landed_is_raised_at_the_next_dataset():
    """A signal that arrives inside code catching every Exception (a logging handler's emit) still ends
    the run: the next dataset load, save or node raises it again."""
    hooks = RunGuardHooks()
    hooks.after_catalog_created(catalog=None, save_version="v")
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN where the suite was started in the background (&, nohup)
    hooks._install_handlers()
    try:
        try:  # as logging.Handler.emit does: handleError() and go on
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
        except Exception:  # noqa: BLE001
            pass
        with pytest.raises(RunInterrupted, match="SIGINT"):
            hooks.before_dataset_loaded()
        with pytest.raises(RunInterrupted):
            hooks.before_node_run()
        assert signal.getsignal(signal.SIGINT) is before  # the handler the process had: a second Ctrl-C acts at once
    finally:
        hooks._restore_handlers()
    hooks.after_catalog_created(catalog=None, save_version="w")  # the next run starts clean
    hooks.before_dataset_loaded()


def test_runs_of_dead_processes_on_this_host_are_marked_killed(tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("x", artifact_location=str(tmp_path / "art"))
    host = socket.gethostname()
    dead = client.create_run(experiment, tags={"cardio.host": host, "cardio.pid": str(_dead_pid())})
    alive = client.create_run(experiment, tags={"cardio.host": host, "cardio.pid": str(os.getpid())})
    elsewhere = client.create_run(experiment, tags={"cardio.host": "another-host", "cardio.pid": str(_dead_pid())})
    marked = mark_dead_runs(client, host, own_run_id=None)
    assert [r.info.run_id for r in marked] == [dead.info.run_id]
    assert client.get_run(dead.info.run_id).info.status == "KILLED"
    assert "died without ending the run" in client.get_run(dead.info.run_id).data.tags["cardio.end_reason"]
    assert client.get_run(alive.info.run_id).info.status == "RUNNING"
    assert client.get_run(elsewhere.info.run_id).info.status == "RUNNING"


# ---- real `kedro run` processes -----------------------------------------------------------------------
def _copy(trained_project: Path, tmp_path: Path) -> Path:
    project = tmp_path / "copy"
    shutil.copytree(trained_project, project, ignore=shutil.ignore_patterns("mlflow.db", "mlartifacts", "logs"))
    mlflow_yml = project / "conf" / "local" / "mlflow.yml"
    mlflow_yml.write_text(mlflow_yml.read_text().replace(str(trained_project), str(project)))
    return project


def _start(project: Path, pipeline: str = "training") -> subprocess.Popen:
    kedro = str(Path(sys.executable).parent / "kedro")
    log = (project / f"{pipeline}.out").open("w")
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"}
    return subprocess.Popen(
        [kedro, "run", f"--pipelines={pipeline}"], cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT
    )


def _versions(project: Path) -> list[str]:
    return sorted(p.name for p in (project / SPLIT).iterdir())


def _wait_for_new_split(project: Path, proc: subprocess.Popen, before: list[str]) -> str:
    deadline = time.time() + 300
    while time.time() < deadline:
        new = [v for v in _versions(project) if v not in before and (project / SPLIT / v).is_dir()]
        if new and (project / SPLIT / new[0] / "train_balanced.parquet").exists():
            return new[0]
        assert proc.poll() is None, (project / "training.out").read_text()[-3000:]
        time.sleep(0.2)
    raise AssertionError("the run saved no train_balanced in 300 s")


def _runs(project: Path) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, order_by=["attributes.start_time ASC"])


def _load_split(project: Path, version: str | None) -> pd.DataFrame:
    """What the catalog's versioned entry loads: the latest version, or ``version`` as --load-versions gives it."""
    return ParquetDataset(filepath=str(project / SPLIT), version=Version(version, None)).load()


@pytest.mark.kedro_session
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_the_run_killed_and_sets_its_outputs_aside(trained_project, tmp_path, signum):
    project = _copy(trained_project, tmp_path)
    before = _versions(project)
    complete = _load_split(project, None)
    proc = _start(project)
    version = _wait_for_new_split(project, proc, before)
    proc.send_signal(signum)
    assert proc.wait(timeout=120) == 1
    out = (project / "training.out").read_text()
    assert f"Error: the run was interrupted by {signal.Signals(signum).name}" in out, out[-3000:]
    (run,) = _runs(project)
    assert run.info.status == "KILLED"
    assert signal.Signals(signum).name in run.data.tags["cardio.end_reason"]
    assert _versions(project) == before  # the new version is set aside ...
    pd.testing.assert_frame_equal(_load_split(project, None), complete)  # ... the latest is the complete one
    restored = subprocess.run(
        [sys.executable, "-m", "cardio_kedro.hooks.run_guard", "restore", version],
        cwd=project,
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"--load-versions=<dataset>:{version}" in restored.stdout
    assert len(_load_split(project, version)) > 0  # put back, it loads explicitly
    assert not list(project.glob("data/06_models/classifier.keras/*/classifier.keras.tmp*"))


@pytest.mark.kedro_session
def test_a_killed_runs_mlflow_run_and_outputs_are_dealt_with_by_the_next_run(trained_project, tmp_path):
    project = _copy(trained_project, tmp_path)
    before = _versions(project)
    proc = _start(project)
    version = _wait_for_new_split(project, proc, before)
    proc.kill()
    proc.wait(timeout=60)
    (run,) = _runs(project)
    assert run.info.status == "RUNNING"  # nothing could end it
    assert version in _versions(project)
    later = _start(project, "data_processing")
    assert later.wait(timeout=300) == 0, (project / "data_processing.out").read_text()[-3000:]
    killed = next(r for r in _runs(project) if r.info.run_id == run.info.run_id)
    assert killed.info.status == "KILLED" and "died without ending the run" in killed.data.tags["cardio.end_reason"]
    assert (project / f"{SPLIT}{INCOMPLETE}" / version / "train_balanced.parquet").exists()
    assert "marked KILLED" in " ".join((project / "data_processing.out").read_text().split())  # Rich wraps lines
