"""One summary at the end of a run: where its model, report and predictions are, its headline metrics."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from cardio_kedro.common.formatting import fmt, fmt_auc
from cardio_kedro.hooks.mlflow_tags import MODEL_DATASETS
from cardio_kedro.hooks.run_guard import saved_file

# the saved files the end-of-run summary names, where the run wrote them (catalog entries)
SUMMARY_FILES = {
    **dict.fromkeys(MODEL_DATASETS, "model"),
    "evaluation_report": "report",
    "cross_validation.report": "report",
    "external.report": "report",
    "inference_predictions": "predictions",
}

logger = logging.getLogger(__name__)

METRICS_DATASET = "evaluation_metrics"


class RunSummaryHooks:
    """Logs where a run's model, report and predictions are, its headline metrics and its MLflow run."""

    def __init__(self) -> None:
        self._catalog = None
        self._save_version = ""
        self._metrics: dict | None = None
        self._run_id: str | None = None

    @hook_impl
    def after_catalog_created(self, catalog, save_version: str) -> None:
        self._catalog, self._save_version, self._metrics = catalog, save_version, None

    @hook_impl
    def before_pipeline_run(self) -> None:
        import mlflow

        run = mlflow.active_run()
        self._run_id = run.info.run_id if run is not None else None

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any) -> None:
        if dataset_name == METRICS_DATASET:
            self._metrics = data

    def _saved_file(self, name: str) -> Path | None:
        """The file this run saved for a versioned dataset, if it did."""
        path = saved_file(self._catalog, name, self._save_version)
        return path if path is not None and path.exists() else None

    @hook_impl
    def after_pipeline_run(self, pipeline) -> None:
        lines = []
        outputs = pipeline.all_outputs()
        for name, what in SUMMARY_FILES.items():
            path = self._saved_file(name) if name in outputs else None
            if path is not None:
                lines.append(f"{what}: {path}")
        if self._metrics is not None:
            test, baseline = self._metrics["test"], self._metrics["baseline"]
            lines.append(
                f"test ROC AUC {fmt_auc(test['roc_auc'])}, sensitivity {fmt(test['sensitivity'])}, "
                f"specificity {fmt(test['specificity'])} at threshold {fmt(self._metrics['threshold']['value'])}"
            )
            ece = test["calibration"]["calibrated"]["ece"]["value"]
            lines.append(
                f"calibrated: ECE {fmt(ece)}, Brier {fmt(test['brier'])}; "
                f"pixel baseline ROC AUC {fmt_auc(baseline['roc_auc'])}"
                + ("" if baseline["model_beats_baseline"] else ": the model does NOT beat it")
            )
        if self._run_id:
            lines.append(f"MLflow run {self._run_id}: open it with 'kedro mlflow ui'")
        if lines:
            logger.info("Run summary:\n  %s", "\n  ".join(lines))
