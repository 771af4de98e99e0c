"""Project hooks: what runs around a pipeline, not inside it.

- ``PreflightHooks``: before a run opens its MLflow run, check every parameter and the weights file,
  and generate the demo cohort when a fresh clone has none (the ``phantom_cohort`` pipeline, logged).
- ``MlflowTagHooks``: the MLflow tags the catalog cannot express (git commit, Keras backend, device)
  and model registration. What a run logs otherwise is declared in the catalog.
- ``RunSummaryHooks``: one summary at the end of a run: where the results are, the headline metrics.
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from cardio_kedro.config import ConfigSources, check_backbone_weights, validate_parameters
from cardio_kedro.formatting import fmt, fmt_auc

logger = logging.getLogger(__name__)

MODEL_DATASET = "classifier"  # registered as <finding>-classifier when saved
METRICS_DATASET = "evaluation_metrics"  # its threshold goes with the registered service
TRAINING_PARAMS = "params:model_training"


class PreflightHooks:
    """Checks before anything is read or an MLflow run is opened; generates the demo cohort if missing.

    ``tryfirst``: these run before kedro-mlflow opens its run, so a bad parameter leaves no run behind.
    """

    def __init__(self) -> None:
        self._sources = ConfigSources(Path("conf"))  # replaced by the session's in after_context_created

    @hook_impl
    def after_context_created(self, context) -> None:
        loader = context.config_loader
        self._sources = ConfigSources(
            conf_source=Path(loader.conf_source),
            env=context.env or loader.default_run_env,
            base_env=loader.base_env,
            runtime_params=dict(loader.runtime_params or {}),
        )

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        params = validate_parameters(catalog.load("parameters"), self._sources)
        if TRAINING_PARAMS in pipeline.inputs():
            check_backbone_weights(params, self._sources)
        if "cohort_labels" in pipeline.inputs() and not catalog.exists("cohort_labels"):
            self._generate_demo_cohort(params, catalog)

    @staticmethod
    def _generate_demo_cohort(params, catalog) -> None:
        """Run the ``phantom_cohort`` pipeline first when the demo cohort is missing (a fresh clone)."""
        if not params.phantoms.generate_if_missing or params.cohort_dir:
            return  # the label table's load raises a clear error naming what to do
        from kedro.framework.project import pipelines
        from kedro.runner import SequentialRunner

        logger.info(
            "No cohort yet: running the phantom_cohort pipeline first (%d phantom patients, once; "
            "phantoms.generate_if_missing: false turns this off)",
            params.phantoms.n_patients,
        )
        SequentialRunner().run(pipelines["phantom_cohort"], catalog)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


class MlflowTagHooks:
    """Tags (``git.commit``; ``keras.backend`` and ``device`` when the run trains) and model registration.

    When ``classifier`` is saved, the Keras model is logged in MLflow's Keras flavour and registered
    as ``<finding>-classifier``; when ``evaluation_metrics`` is saved, the HTTP-serving pyfunc is
    logged with that run's threshold and registered as ``<finding>-classifier-service``.
    """

    def __init__(self) -> None:
        self._catalog = None
        self._target = ""
        self._model = None

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        import mlflow

        self._catalog, self._model = catalog, None
        if mlflow.active_run() is None:  # tracking is off for this pipeline
            return
        self._target = catalog.load("params:target_finding")
        tags = {"git.commit": _git_commit()}
        if TRAINING_PARAMS in pipeline.inputs():
            import keras

            tags["keras.backend"] = keras.backend.backend()
            tags["device"] = ",".join(keras.distribution.list_devices())
        mlflow.set_tags({k: v for k, v in tags.items() if v is not None})

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node) -> None:
        import mlflow

        if mlflow.active_run() is None:
            return
        if dataset_name == MODEL_DATASET:
            self._model = data
            self._register_model(data)
        elif dataset_name == METRICS_DATASET:
            model = self._model if self._model is not None else self._catalog.load(MODEL_DATASET)
            self._register_service(model, float(data["threshold"]["value"]))

    def _register_model(self, model) -> None:
        import mlflow
        import numpy as np
        from mlflow.models import infer_signature

        size = int(model.inputs[0].shape[1])
        signature = infer_signature(np.zeros((1, size, size, 1), np.uint8), np.zeros((1, 1), np.float32))
        name = f"{self._target}-classifier"
        info = mlflow.keras.log_model(model, name="model", signature=signature, registered_model_name=name)
        mlflow.set_tag("registered_model", f"{name}/{info.registered_model_version}")
        logger.info("Model logged to MLflow and registered as %s (version %s)", name, info.registered_model_version)

    def _register_service(self, model, threshold: float) -> None:
        """Log and register the HTTP-serving pyfunc (base64 images in, probability and label out)."""
        import mlflow
        import pandas as pd
        from mlflow.models import infer_signature

        from cardio_kedro.serving import XrayClassifierService

        name = f"{self._target}-classifier-service"
        signature = infer_signature(
            pd.DataFrame({"image": ["aGVsbG8="]}), pd.DataFrame({"probability": [0.5], "label": [1]})
        )
        with tempfile.TemporaryDirectory() as tmp:
            model_file = Path(tmp) / "classifier.keras"
            model.save(model_file)
            info = mlflow.pyfunc.log_model(
                name="service",
                python_model=XrayClassifierService(),
                artifacts={"keras_model": str(model_file)},
                model_config={"threshold": threshold},
                signature=signature,
                registered_model_name=name,
            )
        mlflow.set_tag("registered_service", f"{name}/{info.registered_model_version}")
        logger.info(
            "Serving model registered as %s (version %s), threshold %.3f",
            name,
            info.registered_model_version,
            threshold,
        )


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
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        import mlflow

        run = mlflow.active_run()
        self._run_id = run.info.run_id if run is not None else None

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node) -> None:
        if dataset_name == METRICS_DATASET:
            self._metrics = data

    def _saved_file(self, name: str) -> Path | None:
        """The file this run saved for a versioned dataset, if it did."""
        config = self._catalog.config_resolver.resolve_pattern(name)
        inner = config.get("dataset", config)
        if not isinstance(inner, dict) or "filepath" not in inner:
            return None
        path = Path(inner["filepath"])
        path = path / self._save_version / path.name
        return path if path.exists() else None

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        lines = []
        outputs = pipeline.all_outputs()
        for name, what in (
            (MODEL_DATASET, "model"),
            ("evaluation_report", "report"),
            ("inference_predictions", "predictions"),
        ):
            path = self._saved_file(name) if name in outputs else None
            if path is not None:
                lines.append(f"{what}: {path}")
        if self._metrics is not None:
            test = self._metrics["test"]
            lines.append(
                f"test ROC AUC {fmt_auc(test['roc_auc'])}, sensitivity {fmt(test['sensitivity'])}, "
                f"specificity {fmt(test['specificity'])} at threshold {fmt(self._metrics['threshold']['value'])}"
            )
        if self._run_id:
            lines.append(f"MLflow run {self._run_id}: open it with 'kedro mlflow ui'")
        if lines:
            logger.info("Run summary:\n  %s", "\n  ".join(lines))
