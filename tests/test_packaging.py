"""What the package imports is declared, and the wheel carries every file the package reads at run time.

CI goes further (.ci/run): it builds the wheel with `kedro package`, installs it into a fresh virtual environment
with the lock file and runs the inference pipeline from it with the packaged conf.
"""

import ast
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
