"""Project hooks: the demo cohort on a fresh clone, and what each MLflow run records beyond parameters."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

logger = logging.getLogger(__name__)

# Versioned datasets whose saved file is also logged to the MLflow run (under the dataset's name).
MLFLOW_ARTIFACTS = (
    "data_quality_report",
    "training_history",
    "evaluation_metrics",
    "attention_localization",
    "evaluation_report",
)
MLFLOW_ARTIFACT_SUFFIX = "_plot"
MODEL_DATASET = "classifier"


class DemoCohortHooks:
    """Generates the offline phantom cohort when the demo runs on a fresh clone."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        if "cohort" not in pipeline.inputs() or catalog.exists("cohort"):
            return
        params = catalog.load("parameters")
        phantoms = params.get("phantoms") or {}
        if not phantoms.get("generate_if_missing") or (run_params.get("runtime_params") or {}).get("cohort_dir"):
            return  # the cohort dataset's load raises a clear error naming what to do
        from cardio_kedro.pipelines.phantom_cohort.nodes import generate_phantom_cohort

        logger.info("No demo cohort yet: generating %d phantom patients (once)", phantoms["n_patients"])
        catalog.save("cohort", generate_phantom_cohort(phantoms))


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _active_run():
    try:
        import mlflow
    except ImportError:  # a machine with Kedro and Keras but no MLflow: nothing to record
        return None
    return mlflow.active_run()


class MlflowRecordHooks:
    """Adds to kedro-mlflow's run: tags (Kedro run id, dataset save versions, git commit, Keras
    backend, device), the versioned plots and reports as artifacts, and the trained model in
    MLflow's Keras flavour, registered as ``<target>-classifier``.

    Catalog versioning stays with Kedro: the file a versioned dataset just saved is copied to the
    run, so both the catalog version and the MLflow artifact exist.
    """

    def __init__(self) -> None:
        self._catalog = None
        self._target = "Cardiomegaly"
        self._last_run_id: str | None = None

    @hook_impl
    def after_catalog_created(self, catalog) -> None:
        self._catalog = catalog

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        self._catalog = catalog
        if "params:target_finding" in catalog:
            self._target = catalog.load("params:target_finding")
        active = _active_run()
        self._last_run_id = active.info.run_id if active is not None else None
        if active is None:
            return
        import mlflow

        tags = {
            "kedro.run_id": run_params.get("run_id") or run_params.get("session_id"),
            "kedro.pipeline": run_params.get("pipeline_names") or run_params.get("pipeline_name") or "__default__",
            "kedro.env": run_params.get("env") or "local",
            "git.commit": _git_commit(),
            "target_finding": self._target,
        }
        if "train_model" in {n.name for n in pipeline.nodes}:
            import keras

            tags["keras.backend"] = keras.backend.backend()
            tags["device"] = ",".join(keras.distribution.list_devices())
        mlflow.set_tags({k: str(v) for k, v in tags.items() if v is not None})

    def _saved_path(self, dataset_name: str) -> Path | None:
        if self._catalog is None or dataset_name not in self._catalog:
            return None
        dataset = self._catalog.get(dataset_name)
        if not hasattr(dataset, "resolve_save_version") or getattr(dataset, "_version", None) is None:
            return None
        return Path(str(dataset._get_versioned_path(dataset.resolve_save_version())))

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node) -> None:
        if _active_run() is None:
            return
        import mlflow

        path = self._saved_path(dataset_name)
        if path is None:
            return
        mlflow.set_tag(f"version.{dataset_name}", path.parent.name)
        if dataset_name in MLFLOW_ARTIFACTS or dataset_name.endswith(MLFLOW_ARTIFACT_SUFFIX):
            if path.is_file():
                mlflow.log_artifact(str(path), artifact_path=dataset_name)
            elif path.is_dir():
                mlflow.log_artifacts(str(path), artifact_path=dataset_name)
        if dataset_name == MODEL_DATASET:
            self._log_model(data)
        if dataset_name == "evaluation_metrics":
            mlflow.log_metrics(headline_metrics(data))
            self._log_service(data["threshold"]["value"])

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        """One short summary at the end of a run: where the results are, and the headline metrics."""
        lines = []
        for name, what in (
            ("classifier", "model"),
            ("evaluation_report", "report"),
            ("inference_predictions", "predictions"),
        ):
            if name in pipeline.all_outputs():
                path = self._saved_path(name)
                if path is not None and path.exists():
                    lines.append(f"{what}: {path}")
        metrics = self._saved_path("evaluation_metrics") if "evaluation_metrics" in pipeline.all_outputs() else None
        if metrics is not None and metrics.is_file():
            import json

            m = json.loads(metrics.read_text())
            auc = m["test"]["roc_auc"]
            ci = f" (95% CI {auc['ci_low']:.3f}-{auc['ci_high']:.3f})" if auc.get("ci_low") is not None else ""
            lines.append(
                f"test ROC AUC {auc['auc']:.3f}{ci}, sensitivity {m['test']['sensitivity']:.3f}, "
                f"specificity {m['test']['specificity']:.3f} at threshold {m['threshold']['value']:.3f}"
            )
        run = self._last_run_id
        if run:
            lines.append(f"MLflow run {run}: mlflow ui --backend-store-uri sqlite:///mlflow.db")
        if lines:
            logger.info("Run summary:\n  %s", "\n  ".join(lines))

    def _log_service(self, threshold: float) -> None:
        """Log and register the HTTP-serving pyfunc (base64 images in, probability and label out)."""
        import mlflow
        import pandas as pd
        from mlflow.models import infer_signature

        from cardio_kedro.serving import XrayClassifierService

        model_file = self._saved_path(MODEL_DATASET)
        if model_file is None or not model_file.is_file():
            return
        name = f"{self._target}-classifier-service"
        signature = infer_signature(
            pd.DataFrame({"image": ["aGVsbG8="]}), pd.DataFrame({"probability": [0.5], "label": [1]})
        )
        info = mlflow.pyfunc.log_model(
            name="service",
            python_model=XrayClassifierService(),
            artifacts={"keras_model": str(model_file)},
            model_config={"threshold": float(threshold)},
            signature=signature,
            registered_model_name=name,
        )
        version = getattr(info, "registered_model_version", None)
        mlflow.set_tag("registered_service", f"{name}/{version}" if version else name)
        logger.info("Serving model registered as %s (version %s), threshold %.3f", name, version, threshold)

    def _log_model(self, model) -> None:
        import mlflow
        import numpy as np
        from mlflow.models import infer_signature

        size = int(model.inputs[0].shape[1])
        example = np.zeros((1, size, size, 1), np.uint8)
        signature = infer_signature(example, np.zeros((1, 1), np.float32))
        name = f"{self._target}-classifier"
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        info = mlflow.keras.log_model(model, name="model", signature=signature, registered_model_name=name)
        version = getattr(info, "registered_model_version", None)
        mlflow.set_tag("registered_model", f"{name}/{version}" if version else name)
        logger.info("Model logged to MLflow and registered as %s (version %s)", name, version)


def headline_metrics(metrics: dict) -> dict[str, float]:
    """The evaluation numbers worth comparing across runs, flat, for ``mlflow.log_metrics``."""
    test = metrics["test"]
    flat = {
        "test_auc": test["roc_auc"]["auc"],
        "test_auc_ci_low": test["roc_auc"]["ci_low"],
        "test_auc_ci_high": test["roc_auc"]["ci_high"],
        "test_pr_auc": test["pr_auc"],
        "test_brier": test["brier"],
        "test_sensitivity": test["sensitivity"],
        "test_specificity": test["specificity"],
        "test_ppv": test["ppv"],
        "test_npv": test["npv"],
        "test_f1": test["f1"],
        "threshold": metrics["threshold"]["value"],
    }
    for key, value in metrics.items():
        if key.startswith("test_rebalanced"):
            flat[f"{key}_auc"] = value["roc_auc"]["auc"]
    for family, groups in metrics.get("subgroups", {}).items():
        for name, res in groups.items():
            flat[f"subgroup_{family}_{name}_auc".replace("<", "lt").replace("+", "plus")] = res.get("auc")
    return {k: float(v) for k, v in flat.items() if v is not None}
