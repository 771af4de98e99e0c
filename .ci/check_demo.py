"""After `make run` on a clean clone: the demo as a user gets it, or a non-zero exit that says what is missing.

Checks every dataset the training pipeline saves (the HTML report, every plot, metrics, the model) exists in the
catalog, the model and its service are registered, and the MLflow run of the demo FINISHED.
Usage: check_demo.py PROJECT [PARAMS] (PARAMS as `make run PARAMS=...` had them).
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import yaml
from kedro.framework.project import pipelines
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.io import MemoryDataset


def main(project: Path, params: dict) -> list[str]:
    problems = []
    bootstrap_project(project)
    with KedroSession.create(project_path=project, runtime_params=params) as session:
        catalog = session.load_context().catalog
        outputs = sorted(pipelines["training"].all_outputs())
        saved, logged = [], []  # files on disk; metrics logged to the MLflow run (checked in its store below)
        for name in outputs:
            dataset = catalog.get(name)
            if type(dataset).__module__.startswith("kedro_mlflow.io.metrics"):
                logged.append(name)
            elif not isinstance(dataset, MemoryDataset):
                saved.append(name)
        for name in saved:
            if not catalog.exists(name):
                problems.append(f"{name}: not written")
    plots = [n for n in saved if n.endswith("_plot")]
    if len(plots) < 10 or "evaluation_report" not in saved:
        has_report = "evaluation_report" in saved
        problems.append(f"the training pipeline saves only {len(plots)} plots (report among them: {has_report})")
    report = sorted(project.glob("data/08_reporting/evaluation_report.html/*/evaluation_report.html"))
    if not report or report[-1].read_text().count('<img alt="') < 10:
        problems.append("the HTML report is missing or holds fewer than 10 figures")
    with sqlite3.connect(project / "mlflow.db") as db:
        statuses = [s for (s,) in db.execute("SELECT status FROM runs ORDER BY start_time")]
        last = db.execute("SELECT run_uuid FROM runs ORDER BY start_time DESC LIMIT 1").fetchone()
        metrics = {k for (k,) in db.execute("SELECT DISTINCT key FROM metrics WHERE run_uuid = ?", last or ("",))}
        models = {n for (n,) in db.execute("SELECT DISTINCT name FROM model_versions")}
    if not statuses or statuses[-1] != "FINISHED":
        problems.append(f"the demo's MLflow run is {statuses[-1] if statuses else 'missing'}, not FINISHED")
    if logged and not {"test_auc", "test_ece", "val_auc"} <= metrics:
        problems.append(f"the demo's MLflow run lacks test_auc, test_ece or val_auc (it has {sorted(metrics)[:20]})")
    for name in ("Cardiomegaly-classifier", "Cardiomegaly-classifier-service"):
        if name not in models:
            problems.append(f"{name} is not registered (registry: {sorted(models)})")
    print(
        f"demo checked: {len(saved)} saved datasets ({len(plots)} plots), report {report[-1] if report else None}, "
        f"MLflow runs {statuses} ({len(metrics)} metrics in the last), registered {sorted(models)}"
    )
    return problems


def _params(text: str) -> dict:
    """``make run PARAMS=...`` as the run had them (``k=v,k.sub=v``): the catalog's paths depend on some."""
    return {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in text.split(",") if item)}


if __name__ == "__main__":
    found = main(
        Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve(), _params(sys.argv[2] if len(sys.argv) > 2 else "")
    )
    for problem in found:
        print(f"DEMO CHECK FAILED: {problem}", file=sys.stderr)
    sys.exit(1 if found else 0)
