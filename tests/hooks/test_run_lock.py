"""One run at a time per project: a second run stops before it reads anything, and says whose run is going on."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from cardio_kedro.hooks.run_lock import DataNotWritable, ProjectLock
from tests.helpers import make_tiny_project

TRY_LOCK = (
    "import sys\n"
    "from cardio_kedro.common.errors import UserError\n"
    "from cardio_kedro.hooks.run_lock import ProjectLock\n"
    "try:\n"
    "    ProjectLock(sys.argv[1]).acquire('the other process')\n"
    "    print('acquired')\n"
    "except UserError as exc:\n"
    "    print(type(exc).__name__, exc)\n"
)


def _try_elsewhere(data: Path) -> str:
    return subprocess.run([sys.executable, "-c", TRY_LOCK, str(data)], capture_output=True, text=True, check=True,
                          timeout=120).stdout.strip()  # fmt: skip


def test_a_second_process_is_refused_while_a_run_holds_the_lock_and_takes_it_after(tmp_path):
    lock = ProjectLock(tmp_path / "data")
    lock.acquire("kedro run --pipelines=training")
    try:
        refused = _try_elsewhere(tmp_path / "data")
        assert refused.startswith("ProjectBusy"), refused
        assert f"by process {os.getpid()}" in refused and "kedro run --pipelines=training" in refused
        assert "Wait for that run to end" in refused and "copy of the project" in refused
    finally:
        lock.release()
    assert _try_elsewhere(tmp_path / "data") == "acquired"  # and the process's end gave it back
    assert _try_elsewhere(tmp_path / "data") == "acquired"


def test_a_lock_left_by_a_run_that_stopped_early_in_this_process_is_taken_again(tmp_path):
    lock = ProjectLock(tmp_path / "data")
    lock.acquire("first")  # a hook after the lock refused the run: Kedro calls no end hook
    lock.acquire("second")
    assert lock.held
    lock.release()


@pytest.fixture
def read_only(tmp_path):
    """A folder that even root cannot write to (the immutable attribute; chmod for anyone else)."""
    folder = tmp_path / "data"
    folder.mkdir()
    if os.geteuid() == 0:
        assert shutil.which("chattr"), "e2fsprogs' chattr is needed to make a folder read-only for root"
        subprocess.run(["chattr", "+i", str(folder)], check=True)
    else:
        folder.chmod(0o555)
    yield folder
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        folder.chmod(0o755)


def test_a_read_only_data_folder_is_named_before_anything_is_read(read_only):
    with pytest.raises(DataNotWritable, match=r"cannot write to the project's data folder .*data \(.*\)"):
        ProjectLock(read_only).acquire("kedro run")


def _kedro_run(project: Path, seed: int, log: Path) -> subprocess.Popen:
    kedro = str(Path(sys.executable).parent / "kedro")
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "COLUMNS": "200"}
    env.pop("MLFLOW_TRACKING_URI", None)  # the project's own store
    command = [kedro, "run", "--pipelines=training", f"--params=data_processing.split.seed={seed}"]
    return subprocess.Popen(command, cwd=project, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def _own_figures(project: Path, run) -> tuple[float, float]:
    """The run's logged test AUC, and the AUC of the test predictions that run saved."""
    from sklearn.metrics import roc_auc_score

    version = run.data.tags["cardio.save_version"]
    folder = project / "data" / "07_model_output" / "test_predictions.parquet" / version
    predictions = pd.read_parquet(folder / "test_predictions.parquet")
    return run.data.metrics["test_auc"], roc_auc_score(predictions["target"], predictions["probability"])


@pytest.mark.kedro_session
def test_two_runs_started_together_never_read_each_others_outputs(tmp_path, phantom_cohort_dir):
    """Formerly both ran, and run A logged run B's test AUC (0.458 where its own predictions gave 0.632)."""
    import mlflow

    project = make_tiny_project(tmp_path / "project")
    (project / "conf" / "local" / "globals.yml").write_text(f"image_size: 32\ncohort_dir: {phantom_cohort_dir}\n")
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    runs = [_kedro_run(project, 1, logs[0])]
    time.sleep(0.5)  # both start within the same second; the first has its lock by its first node
    runs.append(_kedro_run(project, 2, logs[1]))
    codes = [run.wait(timeout=900) for run in runs]
    outputs = [log.read_text() for log in logs]
    assert sorted(codes) == [0, 1], outputs
    refused = outputs[codes.index(1)]
    assert "is using this project's data" in refused and "Wait for that run to end" in refused
    assert "Traceback" not in refused and len(refused.strip().splitlines()) < 25, refused
    assert "Loading data from" not in refused  # stopped before reading anything
    # the refused run, started again once the first has ended
    again = _kedro_run(project, 2 if codes[0] == 0 else 1, tmp_path / "again.log")
    assert again.wait(timeout=900) == 0, (tmp_path / "again.log").read_text()[-3000:]

    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    finished = client.search_runs([e.experiment_id for e in client.search_experiments()])
    finished = [r for r in finished if "test_auc" in r.data.metrics]
    assert len(finished) == 2 and {r.data.params["data_processing.split.seed"] for r in finished} == {"1", "2"}
    for run in finished:
        logged, own = _own_figures(project, run)
        assert logged == pytest.approx(own, abs=1e-9), (run.data.params["data_processing.split.seed"], logged, own)
    assert all("did not match load version" not in text for text in outputs)
