"""MLflow hooks: what a run records that its catalog cannot declare, tags and model registration.

Parameters, metrics and artifacts are declared in conf/base/catalog.yml (kedro-mlflow datasets).
The other project hooks: ``preflight.py`` (checks before a run) and ``run_summary.py``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from cardio_kedro.cohort.findings import findings_name

logger = logging.getLogger(__name__)

MODEL_DATASETS = (
    "classifier",
    "cross_validation.classifier",
)  # registered as <finding>-classifier(-service) when the run that saved them finishes
RECALIBRATED_DATASET = (
    "external.recalibrated_classifier"  # a site's recalibrated classifier: a new version of the same name
)
PROMOTION_DATASET = "external.promotion"  # external.gates passed: @champion to the scored model when the run ends
MODEL_CARD_DATASET = "external.model_card"  # the scored model and cohort of an external validation run: run tags
FOLD_HISTORY_DATASET = (
    "cross_validation.fold_training_history"  # each fold model's epochs: the fold's nested run logs them
)
CV_METRICS_DATASET = "cross_validation.metrics"  # its per-fold figures: one nested MLflow run per fold
FOLD_FIGURES = ("auc", "baseline_auc", "threshold", "n_images", "n_patients", "n_positive")
TRAINING_PARAMS = "params:model_training"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


SWEEP_ENV = {"sweep.study": "CARDIO_SWEEP_STUDY", "sweep.trial": "CARDIO_SWEEP_TRIAL"}  # set by cardio_kedro.team.sweep
RUN_NAME_ENV = "CARDIO_RUN_NAME"  # the MLflow run's name (conf/base/mlflow.yml), set by cardio_kedro.team.sweep


def sweep_tags() -> dict[str, str]:
    """``sweep.study`` and ``sweep.trial`` of a run that a sweep worker started (none otherwise)."""
    return {tag: os.environ[var] for tag, var in SWEEP_ENV.items() if os.environ.get(var)}


def create_experiment(tracking_uri: str, name: str, kwargs: Any = None) -> None:
    """Create the experiment ``name`` unless it exists; safe when several processes do it at once."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri)
    if client.get_experiment_by_name(name) is not None:
        return
    try:
        client.create_experiment(
            name,
            artifact_location=getattr(kwargs, "artifact_location", None),
            tags=getattr(kwargs, "tags", None),
        )
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def registry_mismatch(client, name: str, local_versions: list[str]) -> str | None:
    """What a user should know when ``data/06_models`` holds trained versions (``local_versions``, the runs'
    save versions) that the registry's ``name`` does not: the registry was deleted or replaced, so its
    "latest" and the newest local model are different models. ``None`` when they agree."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name='{name}'")
    except MlflowException:
        versions = []
    registered = set()
    for version in versions:
        try:
            registered.add(client.get_run(version.run_id).data.tags.get("cardio.save_version"))
        except MlflowException:  # the version's run was deleted
            continue
    unknown = sorted(set(local_versions) - registered)
    if not unknown:
        return None
    return (
        f"data/06_models holds {len(unknown)} trained model(s) that the MLflow registry ({client.tracking_uri}) "
        f"does not know (newest {unknown[-1]}), and its {name} has {len(versions)} version(s): was mlflow.db "
        "deleted or replaced? Inference without a model_uri scores with the newest model in data/06_models; "
        f"models:/{name}/latest is the registry's newest, another model."
    )


def local_model_versions(folder: Path) -> list[str]:
    """The versions (run timestamps) of the trained model at ``folder`` (``data/06_models/classifier.keras``)."""
    from cardio_kedro.datasets.inference_model_dataset import model_versions

    return [version.name for version in model_versions(folder)]


class MlflowTagHooks:
    """Tags (``git.commit``; ``keras.backend`` and ``device`` when the run trains) and model registration.

    When a run that saved ``classifier`` (network + calibration + threshold) finishes, the model is logged
    in MLflow's Keras flavour and registered as ``<finding>-classifier``, and the HTTP-serving pyfunc around
    it as ``<finding>-classifier-service``; a run that fails registers nothing. An external validation run
    is tagged with the model it scored (``external.model``, ``external.registered_model``, ``external.model_version``,
    ``external.training_run_id``) and the cohort (``external.cohort``); its recalibrated classifier is
    registered as a new version of the scored model's name, the version tagged ``recalibrated_for``,
    ``recalibration`` and ``recalibrated_from``. A cross-validation run gets one nested run per fold
    (``fold 1``, ...) with that fold model's epochs and its out-of-fold figures (``cv_fold_auc``, ...).
    """

    def __init__(self) -> None:
        self._target = ""
        self._service_limits: dict = {}
        self._scored_model: dict | None = None
        self._fold_history = None
        self._pending: list = []  # registrations of this run's models, done when it finishes

    @hook_impl(tryfirst=True)  # before kedro-mlflow's own after_context_created looks the experiment up
    def after_context_created(self, context) -> None:
        """Create the store and the run's experiment before kedro-mlflow looks them up, so that runs starting
        together all find them; a local store's writes wait for a lock (``mlflow_store``).

        kedro-mlflow gets the experiment by name and creates it when it is missing: two runs starting
        at the same moment both miss it and the second create fails. Here the create comes first and
        an ``already exists`` answer means another run won the race, which is fine. A new local
        ``mlflow.db`` is built by one process at a time.
        """
        from kedro_mlflow.config.kedro_mlflow_config import KedroMlflowConfig

        from cardio_kedro.hooks.mlflow_store import install_sqlite_busy_timeout, store_initialisation_lock

        install_sqlite_busy_timeout()  # a locked mlflow.db is waited for, not a failed run
        config = KedroMlflowConfig.model_validate(context.config_loader["mlflow"])
        uri = config.server.mlflow_tracking_uri or ""
        experiment = config.tracking.experiment
        with store_initialisation_lock(uri):
            create_experiment(uri, experiment.name, experiment.create_experiment_kwargs)

    @hook_impl
    def before_pipeline_run(self, pipeline, catalog) -> None:
        import mlflow

        self._pending = []
        if mlflow.active_run() is None:  # tracking is off for this pipeline
            return
        self._target = findings_name(catalog.load("params:target_findings"))
        self._service_limits = dict(catalog.load("params:inference")["service"])
        tags = {"git.commit": _git_commit(), **sweep_tags()}
        if TRAINING_PARAMS in pipeline.inputs():
            import keras

            from cardio_kedro.modeling.devices import device_summary

            tags["keras.backend"] = keras.backend.backend()
            tags["device"] = device_summary()  # e.g. "backend jax on gpu:0 (NVIDIA H200)"
        mlflow.set_tags({k: v for k, v in tags.items() if v is not None})
        self._report_registry_mismatch(pipeline, catalog)

    def _report_registry_mismatch(self, pipeline, catalog) -> None:
        """Warn when training's models in data/06_models and the registry's versions disagree."""
        import mlflow

        from cardio_kedro.hooks.run_guard import versioned_filepath

        uses = pipeline.all_outputs() | pipeline.inputs()
        if not uses & {"classifier", "inference_model", "external.model"}:
            return
        folder = versioned_filepath(catalog, "classifier")
        problem = folder and registry_mismatch(
            mlflow.MlflowClient(), f"{self._target}-classifier", local_model_versions(folder)
        )
        if problem:
            logger.warning(problem)

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any) -> None:
        import mlflow

        if mlflow.active_run() is None:
            return
        if dataset_name in MODEL_DATASETS:  # registered when the run has finished (after_pipeline_run)
            self._pending.append(lambda model=data: self._register_trained(model))
        elif dataset_name == MODEL_CARD_DATASET:
            self._scored_model = data
            tags = {
                "external.cohort": data["cohort"]["name"],
                "external.cohort_dir": data["cohort"]["dir"],
                "external.model": data["model"],
                "external.registered_model": data["registered_name"],
                "external.model_version": data["registered_version"],
                "external.training_run_id": data["training_run_id"],
            }
            mlflow.set_tags({k: v for k, v in tags.items() if v is not None})
        elif dataset_name == PROMOTION_DATASET and data["promote"]:
            self._pending.append(lambda: self._promote(data))
        elif dataset_name == FOLD_HISTORY_DATASET:
            self._fold_history = data
        elif dataset_name == CV_METRICS_DATASET:
            self._log_fold_runs(data["folds"])
        elif dataset_name == RECALIBRATED_DATASET and data["model"] is not None:
            name = (self._scored_model or {}).get("registered_name") or f"{self._target}-classifier"
            self._pending.append(
                lambda: self._register_model(data["model"], name=name, artifact="recalibrated_model", tags=data["tags"])
            )

    @hook_impl(tryfirst=True)  # before kedro-mlflow ends the run
    def after_pipeline_run(self) -> None:
        """Register the run's models now that every node has finished: a run that fails after training
        (in its reporting, say) registers nothing, so "the newest registered" is always a finished run's."""
        pending, self._pending = self._pending, []
        for register in pending:
            register()

    @hook_impl
    def on_pipeline_error(self) -> None:
        if self._pending:
            logger.warning("The run failed: its %d model(s) were not registered in MLflow", len(self._pending))
        self._pending = []

    def _log_fold_runs(self, folds: list[dict]) -> None:
        """One nested run per fold under the cross-validation run: the fold model's epochs (step = epoch)
        and its figures on the fold it never saw, so MLflow compares the folds side by side."""
        import math
        import time

        import mlflow
        from mlflow.entities import Metric

        from cardio_kedro.modeling.training import HISTORY_METRICS

        history, now = self._fold_history, int(time.time() * 1000)
        for fold in folds:
            with mlflow.start_run(run_name=f"fold {fold['fold']}", nested=True, tags={"fold": str(fold["fold"])}):
                mlflow.log_metrics({f"cv_fold_{k}": float(fold[k]) for k in FOLD_FIGURES if fold[k] is not None})
                if history is None:
                    continue
                part = history[history["fold"] == fold["fold"] - 1]  # the history counts folds from 0
                if "member" in part:  # an ensemble per fold: its first member's epochs
                    part = part[part["member"] == 0]
                epochs = [
                    Metric(name, float(value), now, int(epoch))
                    for name in HISTORY_METRICS
                    if name in part
                    for epoch, value in zip(part["epoch"], part[name])
                    if math.isfinite(value)
                ]
                mlflow.MlflowClient().log_batch(mlflow.active_run().info.run_id, metrics=epochs)
        logger.info("MLflow: one nested run per fold (%d) under the cross-validation run", len(folds))

    def _register_model(
        self, model, name: str | None = None, artifact: str = "model", tags: dict[str, str] | None = None
    ) -> str:
        import keras
        import mlflow
        import numpy as np
        from mlflow.models import infer_signature

        from cardio_kedro.modeling.serving import serving_requirements

        size, outputs = int(model.inputs[0].shape[1]), int(model.outputs[0].shape[-1])
        signature = infer_signature(np.zeros((1, size, size, 1), np.uint8), np.zeros((1, outputs), np.float32))
        name = name or f"{self._target}-classifier"
        info = mlflow.keras.log_model(
            model,
            name=artifact,
            signature=signature,  # no input_example: MLflow 3.17's Keras flavour fails with one (mlflow#16183)
            registered_model_name=name,
            pip_requirements=serving_requirements(keras.backend.backend()),
        )
        version = info.registered_model_version
        for key, value in (tags or {}).items():
            mlflow.MlflowClient().set_model_version_tag(name, str(version), key, value)
        mlflow.set_tag(f"registered_{artifact}", f"{name}/{version}")
        logger.info("%s logged to MLflow and registered as %s (version %s)", artifact.replace("_", " ").capitalize(),
                    name, version)  # fmt: skip
        return str(version)

    def _register_trained(self, model) -> None:
        """A training run's classifier and its serving model, both versions given ``@candidate``."""
        from mlflow import MlflowClient

        from cardio_kedro.registry import CANDIDATE, set_candidate

        version = self._register_model(model)
        self._register_service(model)
        set_candidate(MlflowClient(), f"{self._target}-classifier", version)
        logger.info("%s-classifier/%s is @%s (python -m cardio_kedro.registry promote makes it @champion)",
                    self._target, version, CANDIDATE)  # fmt: skip

    def _promote(self, decision: dict) -> None:
        """``@champion`` to the version an external validation scored, when its gates passed and it asked to."""
        import mlflow

        from cardio_kedro.registry import promote

        run = mlflow.active_run()
        reason = f"external validation run {run.info.run_id if run else '?'}: {decision['reason']}"
        version = promote(mlflow.MlflowClient(), decision["registered_model"], decision["version"], reason)
        mlflow.set_tag("promoted", f"{decision['registered_model']}/{version}")
        logger.info("%s/%s promoted to @champion (every external gate passed)", decision["registered_model"], version)

    def _register_service(self, model) -> None:
        """Log and register the HTTP-serving pyfunc (base64 images in, probability and label out)."""
        import base64

        import keras
        import mlflow
        import numpy as np
        import pandas as pd
        from mlflow.models import infer_signature

        import cardio_kedro
        from cardio_kedro.modeling import encode_png, model_findings, operating_threshold
        from cardio_kedro.modeling.serving import XrayClassifierService, finding_outputs, serving_requirements

        name = f"{self._target}-classifier-service"
        size = int(model.inputs[0].shape[1])
        example = pd.DataFrame({"image": [base64.b64encode(encode_png(np.zeros((size, size, 3), np.uint8))).decode()]})
        threshold, findings = operating_threshold(model), model_findings(model)
        outputs = finding_outputs(np.full((1, len(findings or [0])), 0.5), threshold, findings)
        signature = infer_signature(example, outputs)
        with tempfile.TemporaryDirectory() as tmp:
            model_file = Path(tmp) / "classifier.keras"
            model.save(model_file)
            info = mlflow.pyfunc.log_model(
                name="service",
                python_model=XrayClassifierService(),
                artifacts={"keras_model": str(model_file)},
                signature=signature,
                input_example=example,
                model_config=self._service_limits,
                code_paths=[str(Path(cardio_kedro.__file__).parent)],  # the model carries the code that serves it
                registered_model_name=name,
                pip_requirements=serving_requirements(keras.backend.backend()),
            )
        mlflow.set_tag("registered_service", f"{name}/{info.registered_model_version}")
        logger.info(
            "Serving model registered as %s (version %s), threshold %s",
            name,
            info.registered_model_version,
            ", ".join(f"{t:.3f}" for t in np.atleast_1d(threshold)),
        )
