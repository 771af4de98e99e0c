"""The one GPU check command, in its CPU smoke mode: every section runs and records its figures."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.gpu_smoke
def test_gpu_check_smoke_runs_every_section_and_writes_its_figures(tmp_path):
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/gpu_check.py"), "--smoke", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads((tmp_path / "gpu_check.json").read_text())
    assert figures["errors"] == {} and figures["skipped"] == []
    sections = figures["sections"]
    assert sections["env"]["devices"].startswith("backend ")
    rows = sections["kedro"]["rows"]
    assert {(r["loader"], r["phase"]) for r in rows} == {
        (loader, phase) for loader in ("memory", "stream") for phase in ("head", "fine_tune")
    }
    assert all(r["kedro"] > 0 and r["bare"] > 0 and r["ratio"] == pytest.approx(r["kedro"] / r["bare"]) for r in rows)
    inference = sections["inference"]
    assert 0 < inference["bound"] <= max(inference["decode"], inference["predict"])
    assert inference["ratio"] == pytest.approx(inference["batch"] / inference["bound"])
    assert [r["img_s"] > 0 for r in sections["sweep"]["rows"]] == [True] * 3
