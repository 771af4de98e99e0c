"""Nodes of the model_training pipeline: two-phase training of the attention classifier."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from typing import Any

import keras
import numpy as np
import pandas as pd

from .data import feed, split_arrays
from .model import build_model

logger = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


class EpochMonitor(keras.callbacks.Callback):
    """Keeps the best weights by ``val_auc`` across both phases, logs one line per epoch, stops on NaN.

    Per-epoch ``loss``, ``auc``, ``val_loss``, ``val_auc`` and ``lr`` go to the active MLflow run
    (step = epoch), if there is one. ``restore()`` puts the best epoch's weights back.
    """

    def __init__(self, n_train: int):
        super().__init__()
        self.n_train = n_train
        self.best_auc, self.best_epoch, self.best_weights = -math.inf, -1, None
        self.records: list[dict[str, Any]] = []
        self.phase = "head"
        self.diverged: str | None = None

    # No per-batch hook on purpose: one would make Keras fetch the loss every step and stall the
    # accelerator's asynchronous dispatch. NaN is caught at the end of the epoch.
    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        seconds = max(time.perf_counter() - self._start, 1e-9)
        record = {
            "epoch": epoch + 1,
            "phase": self.phase,
            "loss": float(logs.get("loss", np.nan)),
            "auc": float(logs.get("auc", np.nan)),
            "val_loss": float(logs.get("val_loss", np.nan)),
            "val_auc": float(logs.get("val_auc", np.nan)),
            "lr": lr,
            "epoch_seconds": seconds,
            "images_per_second": self.n_train / seconds,
        }
        if not math.isfinite(record["loss"]):
            self.diverged = f"loss became {record['loss']} in epoch {epoch + 1}"
            self.model.stop_training = True
        self.records.append(record)
        val_auc = record["val_auc"]
        improved = math.isfinite(val_auc) and val_auc > self.best_auc
        if improved:
            self.best_auc, self.best_epoch = val_auc, epoch + 1
            self.best_weights = self.model.get_weights()
        logger.info(
            "epoch %d (%s): loss %.4f auc %.4f | val_loss %.4f val_auc %.4f%s | lr %.2e | %.0f img/s",
            epoch + 1,
            self.phase,
            record["loss"],
            record["auc"],
            record["val_loss"],
            val_auc,
            " (best)" if improved else "",
            lr,
            record["images_per_second"],
        )
        _log_mlflow_metrics(record, step=epoch + 1)

    def restore(self) -> None:
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)
            logger.info("Restored the weights of epoch %d (val_auc %.4f)", self.best_epoch, self.best_auc)


def _log_mlflow_metrics(record: dict[str, Any], step: int) -> None:
    try:
        import mlflow
    except ImportError:  # pragma: no cover - mlflow is a dependency
        return
    if mlflow.active_run() is None:
        return
    metrics = {k: record[k] for k in ("loss", "auc", "val_loss", "val_auc", "lr", "images_per_second")}
    mlflow.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)}, step=step)


def resolve_precision(setting: str | None) -> str:
    """``auto`` -> ``mixed_bfloat16`` when an accelerator is present, else ``float32``."""
    if setting in (None, "auto"):
        devices = keras.distribution.list_devices()
        return "mixed_bfloat16" if any(not d.lower().startswith("cpu") for d in devices) else "float32"
    return setting


def distribution_scope(kind: str):
    """Context for building and training under ``single`` or ``data_parallel`` distribution."""
    if kind in (None, "single"):
        return contextlib.nullcontext()
    if kind != "data_parallel":
        raise ValueError(f"distribution must be 'single' or 'data_parallel', got '{kind}'")
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf  # the one backend-specific spot: TF's own strategy

        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        strategy = tf.distribute.MirroredStrategy([d.name for d in devices])
        logger.info("data_parallel: MirroredStrategy over %d replica(s)", strategy.num_replicas_in_sync)
        return strategy.scope()
    if backend == "jax":
        devices = keras.distribution.list_devices()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        logger.info("data_parallel: keras DataParallel over %d device(s)", len(devices))
        return contextlib.nullcontext()
    raise ValueError(f"data_parallel is supported on the tensorflow and jax backends, not {backend}")


def _loss(name: str):
    if name == "focal":
        return keras.losses.BinaryFocalCrossentropy(gamma=2.0)
    if name == "binary_crossentropy":
        return keras.losses.BinaryCrossentropy()
    raise ValueError(f"loss must be 'binary_crossentropy' or 'focal', got '{name}'")


def _set_trainable(model: keras.Model, unfreeze_layers: int | str) -> int:
    """Freeze the backbone except its top ``unfreeze_layers`` weighted layers (``all`` = every one)."""
    backbone = model.get_layer("backbone")
    weighted = [layer for layer in backbone.layers if layer.weights]
    n = len(weighted) if unfreeze_layers == "all" else int(unfreeze_layers)
    backbone.trainable = n > 0
    for i, layer in enumerate(weighted):
        layer.trainable = i >= len(weighted) - n
    return n


def _compile(model: keras.Model, learning_rate: float, params: dict[str, Any]) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=_loss(params.get("loss", "binary_crossentropy")),
        metrics=[keras.metrics.AUC(name="auc")],
        jit_compile=params.get("jit_compile", "auto"),
    )


def train_model(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    pixel_cache: dict,
    class_weights: dict,
    image_size: int,
    params: dict[str, Any],
) -> tuple[keras.Model, pd.DataFrame]:
    """Train the attention classifier in two phases and return it with the best epoch's weights.

    Phase ``head`` trains with the backbone frozen; phase ``fine_tune`` unfreezes the backbone's
    top ``unfreeze_layers`` layers at a lower learning rate (0 skips it). Images come from the
    pixel cache; ``class_weights`` apply when data_processing used ``strategy: class_weight``.
    """
    for name, frame in (("train", train), ("validation", validation)):
        positives = int(frame["target"].sum())
        if positives == 0 or positives == len(frame):
            raise ValueError(
                f"The {name} split has {positives} positive image(s) of {len(frame)}: training needs both "
                "classes. Check target_finding and the cohort's labels."
            )
    previous_policy = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(resolve_precision(params.get("mixed_precision", "auto")))
    try:
        return _train(train, validation, pixel_cache, class_weights, int(image_size), params)
    finally:
        keras.mixed_precision.set_dtype_policy(previous_policy)
        keras.distribution.set_distribution(None)


def _train(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    pixel_cache: dict,
    class_weights: dict,
    image_size: int,
    params: dict[str, Any],
) -> tuple[keras.Model, pd.DataFrame]:
    seed = int(params.get("seed", 42))
    keras.utils.set_random_seed(seed)
    precision = keras.mixed_precision.dtype_policy().name
    cache = pixel_cache["open"](int(image_size))
    pixels = cache.pixels()
    batch = int(params.get("batch_size", 32))
    train_rows, train_y = split_arrays(cache, train)
    val_rows, val_y = split_arrays(cache, validation)
    train_data = feed(pixels, train_rows, train_y, batch, params, shuffle=True, seed=seed)
    val_feed = feed(pixels, val_rows, val_y, batch, params)
    val_data = (val_feed["x"], val_feed["y"]) if "y" in val_feed else val_feed["x"]
    fit_kwargs = {"validation_data": val_data, "validation_batch_size": batch if "y" in val_feed else None}
    weights = class_weights.get("class_weight") or {}
    class_weight = {int(k): float(v) for k, v in weights.items()} if weights.get("1", 1.0) != 1.0 else None
    logger.info(
        "Training on %d images (%d positive), validating on %d; %s, precision %s, backend %s",
        len(train_y),
        int(train_y.sum()),
        len(val_y),
        params["model"].get("backbone"),
        precision,
        keras.backend.backend(),
    )
    with distribution_scope(params.get("distribution", "single")):
        model = build_model(int(image_size), params["model"])
        monitor = EpochMonitor(len(train_y))
        callbacks = [
            monitor,
            keras.callbacks.EarlyStopping(
                monitor="val_auc", mode="max", patience=int(params.get("early_stopping_patience", 5))
            ),
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_auc", mode="max", **params.get("reduce_lr", {"factor": 0.5, "patience": 2})
            ),
        ]
        head, fine = params.get("head", {}), params.get("fine_tune", {})
        epochs_head = int(head.get("epochs", 1))
        _set_trainable(model, 0)
        _compile(model, float(head.get("learning_rate", 1e-3)), params)
        verbose = int(params.get("verbose", 2))
        if epochs_head > 0:
            model.fit(
                **train_data,
                **fit_kwargs,
                epochs=epochs_head,
                callbacks=callbacks,
                class_weight=class_weight,
                verbose=verbose,
            )
        unfreeze = fine.get("unfreeze_layers", 0)
        if unfreeze and int(fine.get("epochs", 0)) > 0 and not monitor.diverged:
            monitor.phase = "fine_tune"
            n = _set_trainable(model, unfreeze)
            logger.info("Fine-tuning the top %d backbone layer(s)", n)
            _compile(model, float(fine.get("learning_rate", 1e-4)), params)
            done = len(monitor.records)
            model.fit(
                **train_data,
                **fit_kwargs,
                initial_epoch=done,
                epochs=done + int(fine["epochs"]),
                callbacks=callbacks,
                class_weight=class_weight,
                verbose=verbose,
            )
    if monitor.diverged:
        raise TrainingDiverged(
            f"Training stopped: the {monitor.diverged}. Lower the learning rate or check the inputs."
        )
    monitor.restore()
    history = pd.DataFrame(monitor.records)
    history["best"] = history["epoch"] == monitor.best_epoch
    return model, history
