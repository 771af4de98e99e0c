"""Training pieces: precision, distribution, loss, freezing, compiling, and the epoch monitor."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from typing import Any

import keras
import numpy as np
import pandas as pd

from cardio_kedro.modeling.builder import AUXILIARY_OUTPUT, VIEW_OUTPUT
from cardio_kedro.modeling.devices import accelerators, visible_devices

logger = logging.getLogger(__name__)

# variables (by name) that weight decay leaves alone: biases and the normalisation layers' scale and offset
NOT_DECAYED = ("bias", "gamma", "beta")
HISTORY_METRICS = ("loss", "auc", "val_loss", "val_auc", "val_view_accuracy", "lr", "images_per_second")


def _scored(name: str) -> str:
    """Keras' name for a figure of the ``score`` output of a two-output model: ``val_auc`` -> ``val_score_auc``."""
    return name.replace("val_", "val_score_") if name.startswith("val_") else f"score_{name}"


def epoch_figures(logs: dict[str, Any]) -> dict[str, float]:
    """The finding's figures of one epoch from Keras' logs, by the names the training history uses (``loss``,
    ``auc``, ``val_loss``, ``val_auc``, the view head's accuracy, ``val_auc.<finding>`` of a multi-label model)."""
    return {
        # with the auxiliary view output, Keras names the finding's figures score_*: those are recorded
        **{k: float(logs.get(_scored(k), logs.get(k, np.nan))) for k in ("loss", "auc", "val_loss", "val_auc")},
        **{k: float(logs[k]) for k in ("view_accuracy", "val_view_accuracy") if k in logs},
        **{k: float(v) for k, v in logs.items() if k.startswith("val_auc.")},  # per finding (multi-label)
    }


_EXTRA_CALLBACKS: list[keras.callbacks.Callback] = []  # added to every fit: what hooks set up (live MLflow metrics)


def add_callback(callback: keras.callbacks.Callback) -> None:
    """Add ``callback`` to every ``fit`` of the classifiers trained from now on, until ``remove_callback``."""
    _EXTRA_CALLBACKS.append(callback)


def remove_callback(callback: keras.callbacks.Callback) -> None:
    """Stop adding ``callback`` (no error if it was not added)."""
    if callback in _EXTRA_CALLBACKS:
        _EXTRA_CALLBACKS.remove(callback)


def extra_callbacks() -> list[keras.callbacks.Callback]:
    """The callbacks added from outside the training code (``add_callback``)."""
    return list(_EXTRA_CALLBACKS)


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


class EpochMonitor(keras.callbacks.Callback):
    """Keeps the best weights by ``val_auc`` (ties: lower ``val_loss``) across phases, logs each epoch, stops on NaN.

    ``records`` holds one dict per epoch (the training history); ``restore()`` puts the best
    epoch's weights back.
    """

    def __init__(self, n_train: int):
        super().__init__()
        self.n_train = n_train
        self.best_auc, self.best_loss, self.best_epoch, self.best_weights = -math.inf, math.inf, -1, None
        self.records: list[dict[str, Any]] = []
        self.phase = "head"
        self.diverged: str | None = None
        self._start = time.perf_counter()

    # No per-batch hook on purpose: one would make Keras fetch the loss every step and stall the
    # accelerator's asynchronous dispatch. NaN is caught at the end of the epoch.
    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        seconds = max(time.perf_counter() - self._start, 1e-9)
        record = {
            "epoch": epoch + 1,
            "phase": self.phase,
            **epoch_figures(logs),
            "lr": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
            "epoch_seconds": seconds,
            "images_per_second": self.n_train / seconds,
        }
        if not math.isfinite(record["loss"]):
            self.diverged = f"loss became {record['loss']} in epoch {epoch + 1}"
            self.model.stop_training = True
        self.records.append(record)
        improved = math.isfinite(record["val_auc"]) and (
            record["val_auc"] > self.best_auc
            # a tie (a separated validation split sits at AUC 1.0 for many epochs): the lower loss is better
            or (record["val_auc"] == self.best_auc and record["val_loss"] < self.best_loss)
        )
        if improved:
            self.best_auc, self.best_loss, self.best_epoch = record["val_auc"], record["val_loss"], epoch + 1
            self.best_weights = self.model.get_weights()
        logger.info(
            "epoch %d (%s): loss %.4f auc %.4f | val_loss %.4f val_auc %.4f%s | lr %.2e | %.0f img/s",
            epoch + 1,
            self.phase,
            record["loss"],
            record["auc"],
            record["val_loss"],
            record["val_auc"],
            " (best)" if improved else "",
            record["lr"],
            record["images_per_second"],
        )

    def restore(self) -> None:
        """Put the weights of the best epoch back (no-op before the first validated epoch)."""
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)
            logger.info("Restored the weights of epoch %d (val_auc %.4f)", self.best_epoch, self.best_auc)


def resolve_precision(setting: str) -> str:
    """``auto`` -> ``mixed_bfloat16`` when an accelerator is present, else ``float32``."""
    if setting == "auto":
        return "mixed_bfloat16" if accelerators(visible_devices()) else "float32"
    return setting


MULTI_HOST_ENV = (
    "KERAS_DISTRIBUTION_JOB_ADDRESSES",
    "KERAS_DISTRIBUTION_NUM_PROCESSES",
    "KERAS_DISTRIBUTION_PROCESS_ID",
)


@contextlib.contextmanager
def keras_state(precision: str, clear_after: bool = False):
    """Keras's global state for a block of work: the dtype policy of ``precision`` (``resolve_precision``)
    inside it; after it (also on failure) the previous policy and no distribution, and with
    ``clear_after`` a cleared session (a fold model's graph is not kept beside the next one's)."""
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(resolve_precision(precision))
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
        keras.distribution.set_distribution(None)
        if clear_after:
            keras.backend.clear_session()


def initialize_multi_host() -> tuple[int, int]:
    """Join the JAX distributed runtime (``keras.distribution.initialize``) once; ``(process id, count)``.

    The coordinator's address, the number of processes and this process's id come from
    ``KERAS_DISTRIBUTION_JOB_ADDRESSES``, ``KERAS_DISTRIBUTION_NUM_PROCESSES`` and
    ``KERAS_DISTRIBUTION_PROCESS_ID`` (docs/scaling_out.md shows them set from Slurm or by hand).
    It must run before JAX computes anything in this process.
    """
    if keras.backend.backend() != "jax":
        raise ValueError(
            f"model_training.distribution multi_host needs the JAX backend (KERAS_BACKEND=jax), not "
            f"{keras.backend.backend()}: Keras 3 does not support TensorFlow's MultiWorkerMirroredStrategy"
        )
    missing = [name for name in MULTI_HOST_ENV if not os.environ.get(name)]
    if missing:
        raise ValueError(f"model_training.distribution multi_host: set {', '.join(missing)} (docs/scaling_out.md)")
    import jax

    if not jax.distributed.is_initialized():
        keras.distribution.initialize()
    return jax.process_index(), jax.process_count()


def process_shard(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """This process's share of ``frame`` under ``multi_host``: the rows shuffled with ``seed`` (the same
    order in every process), every process-count-th row from this process's index, all shares equally
    long (a batch step is collective: every process takes as many as the others)."""
    import jax

    index, count = jax.process_index(), jax.process_count()
    order = np.random.default_rng(seed).permutation(len(frame))
    share = len(frame) // count
    return frame.iloc[order[index::count][:share]].reset_index(drop=True)


def distribution_scope(kind: str):
    """Context for building and training under ``single``, ``data_parallel`` or ``multi_host`` distribution."""
    if kind == "single":
        return contextlib.nullcontext()
    if kind == "multi_host":
        initialize_multi_host()
        distribution = keras.distribution.DataParallel(devices=keras.distribution.list_devices())
        distribution.auto_shard_dataset = False  # each process feeds its own shard (process_shard)
        keras.distribution.set_distribution(distribution)
        return contextlib.nullcontext()
    if kind != "data_parallel":
        raise ValueError(f"distribution must be 'single', 'data_parallel' or 'multi_host', got '{kind}'")
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


def make_loss(name: str, label_smoothing: float = 0.0) -> keras.losses.Loss:
    """``binary_crossentropy`` or ``focal`` (binary focal cross-entropy, gamma 2), with the targets
    smoothed towards 0.5 by ``label_smoothing`` (0: none)."""
    if name == "focal":
        return keras.losses.BinaryFocalCrossentropy(gamma=2.0, label_smoothing=label_smoothing)
    if name == "binary_crossentropy":
        return keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing)
    raise ValueError(f"loss must be 'binary_crossentropy' or 'focal', got '{name}'")


@keras.saving.register_keras_serializable(package="cardio_kedro")
class WeightedBinaryCrossentropy(keras.losses.Loss):
    """Binary cross-entropy over ``(B, K)`` findings, each finding's positives and negatives weighted
    by its own pair (``positive_weights[k]``, ``negative_weights[k]``: data_processing's per-finding
    class weights), averaged over the findings. Targets are smoothed towards 0.5 by ``label_smoothing``."""

    def __init__(
        self,
        positive_weights: list[float],
        negative_weights: list[float],
        label_smoothing: float = 0.0,
        epsilon: float = 1e-7,
        name: str = "weighted_binary_crossentropy",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.positive_weights, self.negative_weights = list(positive_weights), list(negative_weights)
        self.label_smoothing, self.epsilon = label_smoothing, epsilon

    def call(self, y_true, y_pred):
        y = keras.ops.cast(y_true, "float32")
        weight = y * keras.ops.convert_to_tensor(self.positive_weights) + (1.0 - y) * keras.ops.convert_to_tensor(
            self.negative_weights
        )
        y = y * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        p = keras.ops.clip(keras.ops.cast(y_pred, "float32"), self.epsilon, 1.0 - self.epsilon)
        return keras.ops.mean(-weight * (y * keras.ops.log(p) + (1.0 - y) * keras.ops.log1p(-p)), axis=-1)

    def get_config(self):
        return {
            **super().get_config(),
            "positive_weights": self.positive_weights,
            "negative_weights": self.negative_weights,
            "label_smoothing": self.label_smoothing,
            "epsilon": self.epsilon,
        }


@keras.saving.register_keras_serializable(package="cardio_kedro")
class FindingAUC(keras.metrics.AUC):
    """ROC AUC of one column (``index``) of a multi-label output: the per-finding figure of each epoch."""

    def __init__(self, index: int, **kwargs):
        super().__init__(**kwargs)
        self.index = index

    def update_state(self, y_true, y_pred, sample_weight=None):
        super().update_state(y_true[:, self.index], y_pred[:, self.index], sample_weight)

    def get_config(self):
        return {**super().get_config(), "index": self.index}


def finding_metric_name(finding: str) -> str:
    """The per-epoch metric of one finding: ``auc.Cardiomegaly`` (Keras logs ``val_auc.Cardiomegaly``)."""
    return f"auc.{finding}"


def set_trainable(model: keras.Model, unfreeze_layers: int | str) -> int:
    """Freeze the backbone except its top ``unfreeze_layers`` weighted layers (``all`` = every one).

    Returns how many weighted layers are trainable.
    """
    backbone = model.get_layer("backbone")
    weighted = [layer for layer in backbone.layers if layer.weights]
    n = len(weighted) if unfreeze_layers == "all" else int(unfreeze_layers)
    backbone.trainable = n > 0
    for i, layer in enumerate(weighted):
        layer.trainable = i >= len(weighted) - n
    return n


def compile_model(
    model: keras.Model,
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule,
    loss: str,
    *,
    jit_compile,
    clipnorm: float | None,
    view_loss_weight: float,
    weight_averaging: float | None,
    auxiliary_loss_weight: float,
    steps_per_execution: int,
    label_smoothing: float,
    finding_weights: dict[str, dict[str, float]] | None,
    best_epoch_findings: list[str] | None,
    weight_decay: float,
) -> None:
    """Adam at ``learning_rate`` (a number or a schedule), the named loss, AUC as the metric.

    ``clipnorm`` caps the global norm of each step's gradients (``None``: no cap): one batch with a
    huge gradient can otherwise throw a nearly converged network back by an epoch. A model with the
    auxiliary ``view`` output (``with_view_head``) also gets binary cross-entropy on the view,
    weighted by ``view_loss_weight``, and its accuracy; one with the ``auxiliary`` findings output
    (``with_auxiliary_findings``) their mean binary cross-entropy, weighted by
    ``auxiliary_loss_weight``. ``weight_averaging`` keeps an exponential
    moving average of the weights with that momentum (see ``averaged_weights``). ``steps_per_execution``
    batches run per call of the compiled step. ``label_smoothing`` applies to the finding's loss.
    ``weight_decay`` is decoupled (AdamW): each step multiplies every kernel by
    ``1 - learning_rate * weight_decay``; biases and normalisation parameters are not decayed (0: none).
    ``finding_weights`` (finding -> ``{"0": w, "1": w}``, in the output's column order) compiles a
    multi-label model: the per-finding weighted loss, ``auc`` as the mean of the findings' AUCs (what
    the best epoch is chosen on; of ``best_epoch_findings`` only, when given) and one ``auc.<finding>``
    per finding.
    """
    if finding_weights is not None:
        findings = list(finding_weights)
        losses = WeightedBinaryCrossentropy(
            [finding_weights[f]["1"] for f in findings], [finding_weights[f]["0"] for f in findings], label_smoothing
        )
        weights = None
        chosen = findings if best_epoch_findings is None else best_epoch_findings
        metrics = [
            keras.metrics.AUC(
                multi_label=True,
                num_labels=len(findings),
                label_weights=[float(f in chosen) for f in findings],
                name="auc",
            ),
            *(FindingAUC(j, name=finding_metric_name(f)) for j, f in enumerate(findings)),
        ]
    elif len(model.outputs) == 1:
        losses, weights, metrics = make_loss(loss, label_smoothing), None, [keras.metrics.AUC(name="auc")]
    else:  # the finding's output first, then the auxiliary ones (by name)
        extra = {
            VIEW_OUTPUT: (view_loss_weight, [keras.metrics.BinaryAccuracy(name="accuracy")]),
            AUXILIARY_OUTPUT: (auxiliary_loss_weight, []),
        }
        names = model.output_names[1:]
        losses = [make_loss(loss, label_smoothing), *("binary_crossentropy" for _ in names)]
        weights = [1.0, *(extra[n][0] for n in names)]
        metrics = [[keras.metrics.AUC(name="auc")], *(extra[n][1] for n in names)]
    optimizer = keras.optimizers.Adam(
        learning_rate,
        global_clipnorm=clipnorm,
        use_ema=weight_averaging is not None,
        ema_momentum=weight_averaging or 0.99,
        weight_decay=weight_decay or None,
    )
    if weight_decay:
        optimizer.exclude_from_weight_decay(var_names=list(NOT_DECAYED))
    model.compile(
        optimizer=optimizer,
        loss=losses,
        loss_weights=weights,
        metrics=metrics,
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )


def averaged_weights(weight_averaging: float | None) -> list[keras.callbacks.Callback]:
    """With weight averaging, the callback that puts the averaged weights in the model for validation
    and at each epoch's end (so the epoch monitor keeps them as the best); list it first."""
    return [] if weight_averaging is None else [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)]


def monitored(model: keras.Model) -> str:
    """The name Keras gives the validation AUC of the finding for ``model`` (one output or two)."""
    return "val_auc" if len(model.outputs) == 1 else _scored("val_auc")
