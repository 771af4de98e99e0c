"""What a user sees when a run cannot go on: the message, what to do, a few lines; never a traceback.

Each case is one `kedro run` on a fresh tiny project, as a user would start it, with what the case
needs broken. The lines counted are everything the command prints (Kedro's progress included, at 200
columns). Before these fixes the same cases printed 177 to 333 lines ending in a traceback.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import make_tiny_project

pytestmark = pytest.mark.kedro_session
MOST_LINES = 40


def _kedro(project: Path, *args: str, wrap: list[str] | None = None) -> tuple[int, str]:
    kedro = str(Path(sys.executable).parent / "kedro")
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "COLUMNS": "200"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("CARDIO_TRACEBACK", None)
    command = [*(wrap or []), kedro, "run", *args]
    done = subprocess.run(command, check=False, cwd=project, env=env, capture_output=True, text=True, timeout=900)
    return done.returncode, done.stdout + done.stderr


def _short(code: int, output: str, *expected: str, most: int = MOST_LINES) -> int:
    """The command failed with a short message: every expected text, no traceback, at most ``most`` lines in
    all (a case that ran nodes first shows Kedro's progress) and at most 6 from ``Error:`` on."""
    lines = output.strip().splitlines()
    error = output[output.rindex("\nError: ") :].strip().splitlines() if "\nError: " in output else []
    print(f"{len(lines)} lines, {len(error)} of them the error: {error[:1]}")
    assert code == 1, output[-3000:]
    assert "Traceback" not in output and "╭" not in output, output[-3000:]
    for text in expected:
        assert text in output, output[-3000:]
    assert 0 < len(error) <= 6 and len(lines) <= most, output
    log = output.split("the full traceback is in ", maxsplit=1)[-1].split(";", maxsplit=1)[0]
    assert "the full traceback is in" in output and Path(log).is_file()
    return len(lines)


@pytest.fixture
def project(tmp_path, phantom_cohort_dir):
    project = make_tiny_project(tmp_path / "project")
    (project / "conf" / "local" / "globals.yml").write_text(f"image_size: 32\ncohort_dir: {phantom_cohort_dir}\n")
    return project


def test_a_misspelled_target_finding(project):
    """Raised inside kedro-mlflow's configuration (formerly 293 lines)."""
    code, out = _kedro(project, "--params=target_findings=Cardiomegally")
    _short(code, out, "Error: target_findings 'Cardiomegally'", "not an NIH finding", "'Cardiomegaly'")


def test_external_validation_on_a_project_that_has_no_model(project, phantom_cohort_dir):
    """Formerly the whole external cohort was processed, then 177 lines ending in 'Did not find any versions'."""
    code, out = _kedro(project, "--pipelines=external_validation", f"--params=external.cohort_dir={phantom_cohort_dir}")
    _short(code, out, "No registered Cardiomegaly-classifier to score", "kedro run --pipelines=training")
    assert "Loading data from external.cohort" not in out  # nothing of the cohort was read


def test_a_read_only_data_folder(project):
    """Formerly 197 lines, after the cohort had been read."""
    data = project / "data"
    data.mkdir()
    chattr = os.geteuid() == 0
    subprocess.run(["chattr", "+i", str(data)], check=True) if chattr else data.chmod(0o555)
    try:
        code, out = _kedro(project)
    finally:
        subprocess.run(["chattr", "-i", str(data)], check=True) if chattr else data.chmod(0o755)
    _short(code, out, "cannot write to the project's data folder", "Make it writable")
    assert "Loading data from" not in out


def test_a_label_table_that_goes_on_as_junk(project, tmp_path):
    """A valid NIH header, then junk (formerly 70 s, 5.9 GB and a bare KeyError: 'Patient ID' for 2 GB)."""
    cohort = tmp_path / "junk_cohort"
    (cohort / "images").mkdir(parents=True)
    header = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
              "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n")  # fmt: skip
    with (cohort / "Data_Entry_2017.csv").open("wb") as fh:
        fh.write(header.encode())
        fh.write(b"00000001_000.png,Cardiomegaly,0,1,57,M,PA,2682,2749,0.143,0.143\n")
        block = os.urandom(4 * 2**20)
        for _ in range(64):  # 256 MiB
            fh.write(block)
    code, out = _kedro(project, "--pipelines=data_processing", f"--params=cohort_dir={cohort}")
    _short(code, out, "from line 3:", "the file stops looking like a label table")


def test_a_disk_too_small_for_the_pixel_cache(project):
    """data/04_feature on a 1 MiB file system (formerly 157 lines ending in 'No space left on device', and 86 KB
    of partial pixels kept the disk full)."""
    assert shutil.which("unshare"), "util-linux's unshare is needed to mount a small file system"
    feature = project / "data" / "04_feature"
    feature.mkdir(parents=True)
    mount = f'mount -t tmpfs -o size=1m tmpfs "{feature}" && exec "$@"'
    code, out = _kedro(project, "--pipelines=data_processing", wrap=["unshare", "-rm", "sh", "-c", mount, "sh"])
    _short(code, out, "The pixel cache", "MiB free", "nothing was decoded", most=80)  # after three nodes' progress
