"""What MLflow shows while a run is going, and what it was run on.

- **Live epochs**: while a node trains a classifier (its inputs include ``params:model_training``), a
  Keras callback logs each epoch's figures to the run as it ends, as ``live/<figure>`` (a fold's as
  ``live/fold_<k>/<figure>``), step = epoch. An NIH run of hours shows its curves in the UI from the
  first epoch. The run's final record is unchanged: ``epoch_metrics`` still logs the training history
  (``val_auc``, ... with the best epoch restored) when training ends.
- **Datasets**: the split tables, the cohort (``model_input_table``), cross-validation's folds and an
  external cohort are logged as MLflow dataset inputs (``mlflow.log_input``) with MLflow's digest of
  their content and the file they were saved to, so two runs can be checked for having seen the same
  split (same digest) in the UI's *Datasets* column or with ``MlflowClient().get_run(id).inputs``.

Nodes never import mlflow: the callback comes from here, through ``modeling.training.add_callback``.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from kedro.framework.hooks import hook_impl

from cardio_kedro.hooks.mlflow_tags import TRAINING_PARAMS
from cardio_kedro.hooks.run_guard import saved_file

logger = logging.getLogger(__name__)

LIVE_PREFIX = "live/"
# the tables a run logs as MLflow dataset inputs, with the context MLflow shows beside each
INPUT_DATASETS = {
    "model_input_table": "cohort",
    "train_split": "training",
    "validation_split": "validation",
    "test_split": "test",
    "cross_validation.folds": "folds",
    "external.model_input_table": "external cohort",
}


def live_prefix(namespace: str | None) -> str:
    """``live/`` for a training node; ``live/fold_<k>/`` for a fold's (``cross_validation.fold_<k>``)."""
    last = (namespace or "").split(".")[-1]
    return f"{LIVE_PREFIX}{last}/" if last.startswith("fold_") else LIVE_PREFIX


def live_metrics_callback(run_id: str, prefix: str):
    """A Keras callback that logs each epoch's figures to the MLflow run ``run_id`` when the epoch ends."""
    import keras
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from cardio_kedro.modeling.training import epoch_figures

    class LiveMetrics(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.client, self.failed = MlflowClient(), False

        def on_epoch_end(self, epoch, logs=None):
            if self.failed:
                return
            now = int(time.time() * 1000)
            figures = {**epoch_figures(dict(logs or {})), "lr": _learning_rate(self.model)}
            metrics = [Metric(f"{prefix}{k}", v, now, epoch + 1) for k, v in figures.items() if math.isfinite(v)]
            try:
                self.client.log_batch(run_id, metrics=metrics)
            except Exception as exc:  # noqa: BLE001 - live figures are a view: training goes on without them
                self.failed = True
                logger.warning("Live epoch metrics stopped (%s); the run's final record is unaffected", exc)

    return LiveMetrics()


def _learning_rate(model) -> float:
    import keras

    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


class MlflowLiveHooks:
    """Live epoch figures during training and the run's dataset inputs (see the module docstring)."""

    def __init__(self) -> None:
        self._callback = None
        self._catalog = None
        self._save_version = ""

    @hook_impl
    def after_catalog_created(self, catalog, save_version: str) -> None:
        self._catalog, self._save_version = catalog, save_version

    @hook_impl
    def before_node_run(self, node, inputs: dict) -> None:
        import mlflow

        run = mlflow.active_run()
        if run is None or TRAINING_PARAMS not in inputs:
            return
        from cardio_kedro.modeling.training import add_callback

        self._callback = live_metrics_callback(run.info.run_id, live_prefix(node.namespace))
        add_callback(self._callback)

    def _remove_callback(self) -> None:
        if self._callback is not None:
            from cardio_kedro.modeling.training import remove_callback

            remove_callback(self._callback)
            self._callback = None

    @hook_impl
    def after_node_run(self) -> None:
        self._remove_callback()

    @hook_impl
    def on_node_error(self) -> None:
        self._remove_callback()

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any) -> None:
        import mlflow

        if dataset_name not in INPUT_DATASETS or mlflow.active_run() is None:
            return
        path = saved_file(self._catalog, dataset_name, self._save_version)
        source = dataset_name if path is None else str(path if "://" in str(path) else path.resolve())
        try:
            dataset = mlflow.data.from_pandas(data, source=source, name=dataset_name)
            mlflow.log_input(dataset, context=INPUT_DATASETS[dataset_name])
        except Exception as exc:  # noqa: BLE001 - the run's outputs do not depend on this record
            logger.warning("MLflow dataset input %s not logged: %s", dataset_name, exc)
