"""Sweep throughput on this machine: trials per hour with 1 worker and with N workers, in one run.

Starts PostgreSQL and an MLflow server with proxied artifacts (``cardio_kedro.team.server``) in a
scratch folder, generates a small phantom cohort, and runs two studies of ``--trials`` trials each
in two scratch projects: one worker running them all, then ``--workers`` workers sharing them.
Each trial is a real ``kedro run`` of model_training and reporting (the project's tiny test
settings unless ``--demo``: the demo's model at its 64 px). Data preparation (data_processing,
once per study and machine) is timed apart and not counted as trial time.

    python benchmarks/sweep_throughput.py                     # 4 trials: 1 worker, then 2 workers
    python benchmarks/sweep_throughput.py --trials 6 --workers 3
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers import TINY_GLOBALS, TINY_PARAMETERS, free_port, make_phantom_cohort  # noqa: E402

from cardio_kedro.team.server import MlflowServer, Postgres  # noqa: E402


def _project(root: Path, study: str, tiny: bool) -> Path:
    shutil.copytree(ROOT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    shutil.copy(ROOT / "pyproject.toml", root)
    (root / "src").mkdir()
    local = root / "conf" / "local"
    local.mkdir()
    if tiny:
        (local / "parameters.yml").write_text(TINY_PARAMETERS)
        (local / "globals.yml").write_text(TINY_GLOBALS)
    (local / "parameters_sweep.yml").write_text(f"sweep:\n  study_name: {study}\n  heartbeat_s: 10\n")
    return root


def _sweep(project: Path, workers: int, trials: int, storage: str, url: str, cohort: Path) -> dict:
    """Run ``trials`` trials over ``workers`` workers; wall time, preparation and trial times."""
    per_worker = [trials // workers + (i < trials % workers) for i in range(workers)]
    env = {**os.environ, "MLFLOW_TRACKING_URI": url, "COLUMNS": "300", "KEDRO_DISABLE_TELEMETRY": "true"}
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "cardio_kedro.team.sweep", "--storage", storage, "--trials", str(n)]
            + ["--params", f"cohort_dir={cohort}"],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for n in per_worker
    ]
    outputs = [p.communicate()[0] for p in procs]
    wall = time.perf_counter() - start
    for proc, out in zip(procs, outputs):
        if proc.returncode:
            raise SystemExit(f"a worker failed:\n{out[-3000:]}")
    text = "\n".join(outputs)
    trial_seconds = [float(s) for s in re.findall(r"trial \d+: val_auc [0-9.]+ in (\d+) s", text)]
    return {"wall": wall, "trials": len(trial_seconds), "trial_seconds": trial_seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--demo", action="store_true", help="the demo's model and image size, not the tiny one")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cardio-sweep-bench-"))
    work.chmod(0o755)
    postgres = Postgres(work / "db", free_port()).start()
    server = MlflowServer(postgres.create_database("mlflow"), work / "artifacts", free_port(), log=work / "mlflow.log")
    try:
        server.start()
        cohort = make_phantom_cohort(work / "cohort", n_patients=90, prevalence=0.35)
        rows = []
        for workers in (1, args.workers):
            study = f"bench-{workers}-workers"
            project = _project(work / study, study, tiny=not args.demo)
            storage = postgres.create_database(f"optuna_{workers}")
            prepare_start = time.perf_counter()
            subprocess.run(  # data_processing once, timed apart from the trials (the sweep skips it then)
                [sys.executable, "-m", "cardio_kedro.team.sweep", "--storage", storage, "--trials", "0"]
                + ["--params", f"cohort_dir={cohort}"],
                cwd=project,
                env={**os.environ, "MLFLOW_TRACKING_URI": server.url},
                check=True,
                capture_output=True,
            )
            prepare = time.perf_counter() - prepare_start
            result = _sweep(project, workers, args.trials, storage, server.url, cohort)
            per_hour = 3600 * result["trials"] / result["wall"]
            rows.append((workers, result, prepare, per_hour))
            mean_trial = sum(result["trial_seconds"]) / len(result["trial_seconds"])
            print(
                f"{workers} worker(s): {result['trials']} trials in {result['wall']:.0f} s "
                f"(mean trial {mean_trial:.0f} s; data preparation {prepare:.0f} s before) "
                f"-> {per_hour:.0f} trials/hour",
                flush=True,
            )
        (_, _, _, one), (n, _, _, many) = rows
        print(f"\n{n} workers vs 1 worker on {os.cpu_count()} cores: {many / one:.2f}x the trials per hour")
    finally:
        server.stop()
        postgres.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
