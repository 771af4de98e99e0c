"""Repeatable installs: every dependency pinned with hashes in requirements.lock, and the Makefile installs from it."""

import re
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=~! ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pins(lock: str) -> dict[str, str]:
    return {k.lower().replace("_", "-"): v for k, v in re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+) \\$", lock, flags=re.M)}


@pytest.mark.parametrize(
    ("lock_file", "extras"), [("requirements.lock", ["test"]), ("requirements-gpu.lock", ["gpu", "test"])]
)
def test_the_lock_pins_every_dependency_with_hashes(lock_file, extras):
    lock = (ROOT / lock_file).read_text()
    pins = _pins(lock)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {
        _name(r) for r in project["dependencies"] + sum((project["optional-dependencies"][e] for e in extras), [])
    }
    assert wanted <= set(pins), wanted - set(pins)
    entries = re.split(r"\n(?=[A-Za-z0-9])", lock.split("\n", 2)[2])
    assert all("--hash=sha256:" in e for e in entries if "==" in e)  # pip's --require-hashes needs each
    assert len(pins) == lock.count("==")  # exact versions only


def test_the_gpu_lock_is_the_cpu_lock_plus_jax_with_cuda():
    cpu, gpu = _pins((ROOT / "requirements.lock").read_text()), _pins((ROOT / "requirements-gpu.lock").read_text())
    assert {k: gpu[k] for k in cpu} == cpu  # the same versions of everything the CPU install has
    assert {"jax-cuda12-plugin", "jax-cuda12-pjrt", "nvidia-cudnn-cu12"} <= set(gpu) - set(cpu)  # CUDA on top
    assert {"jax", "jaxlib"} <= set(cpu)  # the CPU build, for the multi-host training test


def test_make_run_gpu_installs_the_gpu_lock_and_trains_with_jax_on_a_gpu_only():
    out = subprocess.run(
        ["make", "-n", "run-gpu", "ENV=nih", "COHORT=/data/nih"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert "pip install -q --require-hashes -r requirements-gpu.lock" in out
    command = out[out.index("KERAS_BACKEND=jax") :].replace("\\\n", " ")
    assert "kedro run --pipelines=training --env=nih" in command
    assert "--params=model_training.require_accelerator=true,cohort_dir=/data/nih" in command


def test_make_installs_from_the_lock():
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install -q --require-hashes -r requirements.lock" in makefile
    assert "--no-deps --no-build-isolation -e ." in makefile  # the package alone, nothing re-resolved
    assert "uv pip compile pyproject.toml --extra test --generate-hashes" in makefile  # make lock
