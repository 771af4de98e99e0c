"""Every command the README shows, run as a user runs it: on a fresh copy of the project, in the README's order, with
the README's own words plus only the parameters that make a run tiny (image size, epochs, cohort size, folds).

The README's placeholders become real folders: ``/data/nih`` the real NIH sample of ``../shared``, ``/data/my_cohort``
and ``/data/site_b`` small phantom cohorts, ``/path/to/images`` a folder of films. Commands that start servers,
clusters or GPUs are run by the tests named in ``ELSEWHERE``; a README command that no test runs fails here.
"""

import base64
import json
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import PROJECT_ROOT, SHARED_NIH, free_port, make_phantom_cohort, serve

pytestmark = [pytest.mark.kedro_session, pytest.mark.slow]

# what makes a run tiny, nothing else (make PARAMS=..., or appended to a kedro command's --params)
TINY = {
    "image_size": 32,
    "phantoms.n_patients": 90,
    "phantoms.native_size": 64,
    "phantoms.prevalence": 0.35,
    "phantoms.images_per_folder": 60,
    "phantoms.workers": 1,
    "data_processing.workers": 1,
    "model_training.model.backbone_width": 0.125,
    "model_training.model.dense_units": 8,
    "model_training.batch_size": 16,
    "model_training.head.epochs": 1,
    "model_training.fine_tune.epochs": 1,
    "model_training.verbose": 0,
    "reporting.n_bootstrap": 50,
    "reporting.heatmaps_per_group": 2,
    "reporting.examples_per_class": 2,
}
MULTILABEL_TINY = {
    k: v for k, v in TINY.items() if not k.startswith("phantoms.")
}  # all 14: rare ones need the full cohort
CV_TINY = {**TINY, "cross_validation.n_folds": 3}  # --params shape the fold groups
OFFLINE = {"model_training.model.backbone_weights": "null"}  # ImageNet weights cannot be fetched here
PLACEHOLDERS = {"/data/nih": "{nih}", "/data/my_cohort": "{cohort}", "/data/site_b": "{site}",
                "/path/to/images": "{images}"}  # fmt: skip

# README commands run by other tests (they start servers, clusters, GPUs or browsers): command -> (test, fragment
# of that test file that runs it)
ELSEWHERE = {
    "make test": ("CI: .ci/run runs it", None),
    "make run-gpu COHORT={nih}": (
        "tests/test_lock.py::test_make_run_gpu_installs_the_gpu_lock_and_trains_with_jax_on_a_gpu_only",
        "run-gpu",
    ),
    "make mlflow-ui": ("tests/test_browser.py::test_mlflow_ui_compares_two_runs", "mlflow"),
    "make viz": ("tests/test_browser.py::test_kedro_viz_shows_the_three_pipelines", "viz"),
    "make mlflow-server": (
        "tests/team/test_server.py::test_two_runs_started_together_both_finish_in_one_experiment",
        "cardio_kedro.team.server",
    ),
    "MLFLOW_TRACKING_URI=http://127.0.0.1:5000 make run": (
        "tests/team/test_server.py::test_two_runs_started_together_both_finish_in_one_experiment",
        "MLFLOW_TRACKING_URI",
    ),
    "make sweep STORAGE=postgresql://postgres@127.0.0.1:5433/optuna TRIALS=4": (
        "tests/team/test_sweep.py::test_two_workers_run_exactly_two_trials_as_two_finished_mlflow_runs",
        "cardio_kedro.team.sweep",
    ),
    ".venv/bin/kedro run --params=cohort_dir=s3://lab-data/nih": (
        "tests/datasets/test_object_storage.py::test_data_processing_from_s3_builds_the_same_pixel_cache_as_the_local_copy",
        "s3://",
    ),
    "KERAS_BACKEND=jax KERAS_DISTRIBUTION_JOB_ADDRESSES=host0:12345 KERAS_DISTRIBUTION_NUM_PROCESSES=2 KERAS_DISTRIBUTION_PROCESS_ID=0 .venv/bin/python -m cardio_kedro.team.multihost --env nih": (
        "tests/team/test_multihost.py::test_two_processes_train_in_step_with_one_mlflow_run_and_one_saved_model",
        "cardio_kedro.team.multihost",
    ),
    "source .venv/bin/activate": ("the service test below runs the commands of that block in the venv", None),
}
RUN_HERE: dict[str, str] = {}  # README command -> the test below that runs it


def readme_commands() -> list[str]:
    """The commands of the README's bash blocks, continuation lines joined, comments dropped, placeholders named."""
    text = (PROJECT_ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for raw_line in re.sub(r"\\\n\s*", " ", block).splitlines():
            stripped = raw_line.strip()
            command = "" if stripped.startswith("#") else re.sub(r"\s+#.*$", "", stripped)
            for raw, token in PLACEHOLDERS.items():
                command = command.replace(raw, token)
            if command:
                commands.append(" ".join(command.split()))
    return commands


def _readme(command: str):
    """Marks a test as the one that runs ``command`` (as the README writes it, placeholders named)."""

    def mark(test):
        RUN_HERE[command] = test.__name__
        return test

    return mark


def _params(values: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in values.items())


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A fresh copy of the project as a clone has it (the installed .venv linked in), and the README's folders."""
    root = tmp_path_factory.mktemp("fresh") / "cardio-kedro"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=PROJECT_ROOT,
                           capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    for name in files:
        if (PROJECT_ROOT / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT_ROOT / name, root / name)
    (root / ".venv").symlink_to(Path(sys.executable).parents[1])
    return root


@pytest.fixture(scope="module")
def folders(project) -> dict[str, str]:
    """The README's placeholders as real folders."""
    data = project.parent / "user_data"
    site = make_phantom_cohort(data / "site_b", seed=11, n_patients=70, prevalence=0.25)
    cohort = make_phantom_cohort(data / "my_cohort", seed=5, n_patients=70, prevalence=0.35)
    images = data / "images"
    images.mkdir()
    for png in sorted(site.rglob("*.png"))[:6]:
        shutil.copy(png, images / png.name)
    return {"site": str(site), "cohort": str(cohort), "images": str(images), "nih": str(SHARED_NIH / "sample")}


def run(project: Path, command: str, extra: dict | None = None) -> subprocess.CompletedProcess:
    """One README command in ``project``: ``make`` targets get ``PARAMS=``, ``kedro run`` more ``--params``."""
    words = shlex.split(command)
    if extra and words[0] == "make":
        words += [f"PARAMS={_params(extra)}", "-o", ".venv/bin/.installed"]  # installed already: the .venv is linked
    elif extra:
        given = next((i for i, w in enumerate(words) if w.startswith("--params=")), None)
        if given is None:
            words.append(f"--params={_params(extra)}")
        else:
            words[given] += f",{_params(extra)}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env |= {"KEDRO_DISABLE_TELEMETRY": "true", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    while "=" in words[0] and not words[0].startswith("-"):  # VAR=value before the command
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    done = subprocess.run(words, cwd=project, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return done


def _runs(project: Path) -> list[tuple[str, str]]:
    """Every MLflow run of the project's store: (pipelines tag, status)."""
    with sqlite3.connect(project / "mlflow.db") as db:
        return db.execute(
            "SELECT t.value, r.status FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
            "WHERE t.key = 'pipeline_names' ORDER BY r.start_time"
        ).fetchall()


def _versions(project: Path, name: str) -> list[int]:
    with sqlite3.connect(project / "mlflow.db") as db:
        rows = db.execute("SELECT version FROM model_versions WHERE name = ? ORDER BY version", (name,)).fetchall()
    return [v for (v,) in rows]


def _newest(project: Path, pattern: str) -> Path:
    found = sorted(project.glob(f"data/{pattern}/*/*"))
    assert found, pattern
    return found[-1]


# ---- in the README's order ----------------------------------------------------------------------------------------
@_readme("make run")
def test_make_run_trains_reports_and_registers_the_demo(project):
    run(project, "make run", TINY)
    report = _newest(project, "08_reporting/evaluation_report.html").read_text()
    assert "Model card" in report and report.count("<img") >= 7
    assert _versions(project, "Cardiomegaly-classifier") == [1]
    assert _runs(project)[-1][1] == "FINISHED"


@_readme("make run-multilabel")
def test_make_run_multilabel(project):
    run(project, "make run-multilabel", MULTILABEL_TINY)
    assert _newest(project, "08_reporting/multilabel_report.html").read_text().count("<img") >= 1
    assert _runs(project)[-1] == ("['multilabel']", "FINISHED")


@_readme(".venv/bin/kedro run --pipelines=training --env=nih")
def test_the_nih_training_in_its_default_folder(project, folders):
    (project / "data" / "01_raw" / "nih").symlink_to(folders["nih"])
    run(project, ".venv/bin/kedro run --pipelines=training --env=nih",
        {**TINY, **OFFLINE, "model_training.require_accelerator": "false"})  # fmt: skip
    assert _runs(project)[-1][1] == "FINISHED"


@_readme(".venv/bin/kedro run --pipelines=training --env=nih --params=cohort_dir={nih}")
def test_the_nih_training_anywhere_else(project, folders):
    run(project, f".venv/bin/kedro run --pipelines=training --env=nih --params=cohort_dir={folders['nih']}",
        {**TINY, **OFFLINE, "model_training.require_accelerator": "false"})  # fmt: skip
    metrics = json.loads(_newest(project, "08_reporting/evaluation_metrics.json").read_text())
    assert metrics["test"]["n_images"] > 0 and _runs(project)[-1][1] == "FINISHED"


@_readme("make small-real COHORT={cohort}")
def test_make_small_real(project, folders):
    run(project, f"make small-real COHORT={folders['cohort']}", CV_TINY)
    assert (project / "data/06_models/phantom_backbone.weights.h5").is_file()
    metrics = json.loads(_newest(project, "08_reporting/cross_validation_metrics.json").read_text())
    assert metrics["n_folds"] == 3 and metrics["out_of_fold"]["n_images"] > 0
    assert _runs(project)[-1] == ("['cross_validation']", "FINISHED")


@_readme(".venv/bin/kedro run --pipelines=external_validation --params=external.cohort_dir={site}")
def test_external_validation_with_its_defaults(project, folders):
    before = set(project.glob("data/06_models/recalibrated_classifier.keras/*"))
    run(project, f".venv/bin/kedro run --pipelines=external_validation --params=external.cohort_dir={folders['site']}",
        {"reporting.n_bootstrap": 50, "image_size": 32})  # fmt: skip
    assert _newest(project, "08_reporting/external_validation_report.html").is_file()
    assert set(project.glob("data/06_models/recalibrated_classifier.keras/*")) == before  # nothing recalibrated
    assert _runs(project)[-1] == ("['external_validation']", "FINISHED")


@_readme(
    ".venv/bin/kedro run --pipelines=external_validation --params=external.cohort_dir={site},external.recalibrate=intercept"
)
def test_external_validation_with_recalibration(project, folders):
    versions = _versions(project, "Cardiomegaly-classifier")
    run(project, ".venv/bin/kedro run --pipelines=external_validation "
        f"--params=external.cohort_dir={folders['site']},external.recalibrate=intercept",
        {"reporting.n_bootstrap": 50, "image_size": 32})  # fmt: skip
    assert _newest(project, "06_models/recalibrated_classifier.keras").is_file()
    assert len(_versions(project, "Cardiomegaly-classifier")) == len(versions) + 1  # registered as a new version


@_readme(".venv/bin/kedro run --pipelines=inference --params=images_dir={images}")
def test_inference_with_the_latest_model(project, folders):
    run(project, f".venv/bin/kedro run --pipelines=inference --params=images_dir={folders['images']}",
        {"image_size": 32})  # fmt: skip
    rows = _newest(project, "07_model_output/inference_predictions.csv").read_text().splitlines()
    assert len(rows) == 1 + 6 and "probability" in rows[0]


@_readme(
    ".venv/bin/kedro run --pipelines=inference --params=images_dir={images},model_uri=models:/Cardiomegaly-classifier/1,inference.heatmaps=true"
)
def test_inference_with_a_registered_model_and_heat_maps(project, folders):
    run(project, f".venv/bin/kedro run --pipelines=inference --params=images_dir={folders['images']},"
        "model_uri=models:/Cardiomegaly-classifier/1,inference.heatmaps=true", {"image_size": 32})  # fmt: skip
    heatmaps = sorted(project.glob("data/07_model_output/inference_heatmaps/*/inference_heatmaps/*.png"))
    assert len(heatmaps) == 6


@_readme(
    "MLFLOW_TRACKING_URI=sqlite:///mlflow.db mlflow models serve -m models:/Cardiomegaly-classifier-service/1 --env-manager local -p 5001"
)
@_readme(
    'curl -s 127.0.0.1:5001/invocations -H \'Content-Type: application/json\' -d "{\\"dataframe_split\\": {\\"columns\\": [\\"image\\"], \\"data\\": [[\\"$(base64 -w0 some.png)\\"]]}}"'
)
def test_the_service_answers_the_readmes_request(project, folders):
    port = free_port()
    command = ["mlflow", "models", "serve", "-m", "models:/Cardiomegaly-classifier-service/1",
               "--env-manager", "local", "-p", str(port)]  # fmt: skip
    env = {"MLFLOW_TRACKING_URI": "sqlite:///mlflow.db"}
    with serve(command, project, f"http://127.0.0.1:{port}/ping", env=env, timeout=180):
        image = base64.b64encode(next(Path(folders["images"]).glob("*.png")).read_bytes()).decode()
        body = json.dumps({"dataframe_split": {"columns": ["image"], "data": [[image]]}}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=60) as answer:
            (prediction,) = json.loads(answer.read())["predictions"]
    assert prediction["quality"] == "ok" and 0.0 <= prediction["probability"] <= 1.0 and prediction["label"] in (0, 1)


@_readme(".venv/bin/python -m cardio_kedro.registry promote")
@_readme(".venv/bin/python -m cardio_kedro.registry status")
def test_the_candidate_becomes_the_champion(project):
    def registry(*args: str) -> str:
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        done = subprocess.run([".venv/bin/python", "-m", "cardio_kedro.registry", *args], cwd=project, env=env,
                              capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    promoted = registry("promote")
    version = re.search(r"Cardiomegaly-classifier/(\d+) is @champion", promoted).group(1)
    assert f"@champion: version {version}" in registry("status")


def test_every_readme_command_is_run_by_a_test():
    tests_here = {name for name in globals() if name.startswith("test_")}
    missing, dangling = [], []
    for command in readme_commands():
        if command in RUN_HERE:
            assert RUN_HERE[command] in tests_here
        elif command in ELSEWHERE:
            test, fragment = ELSEWHERE[command]
            if fragment is not None:
                path, name = test.split("::")
                source = (PROJECT_ROOT / path).read_text()
                if f"def {name}(" not in source or fragment not in source:
                    dangling.append(test)
        else:
            missing.append(command)
    assert not missing, f"README commands that no test runs: {missing}"
    assert not dangling, f"README commands mapped to tests that do not run them: {dangling}"


def test_the_readme_command_check_sees_a_command_it_does_not_know(monkeypatch, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("```bash\nmake run   # the demo\n.venv/bin/kedro run --pipelines=nowhere\n```\n")
    monkeypatch.setattr(sys.modules[__name__], "PROJECT_ROOT", tmp_path)
    assert readme_commands() == ["make run", ".venv/bin/kedro run --pipelines=nowhere"]
    with pytest.raises(AssertionError, match="nowhere"):
        test_every_readme_command_is_run_by_a_test()
