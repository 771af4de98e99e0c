"""Fitting the classifier, shared by the pipelines that train one (model_training, cross_validation).

``train_classifier`` trains the attention classifier in two phases from the pixel cache;
``score_images`` gives its raw scores; ``fit_guard`` fits the quality guard saved with a model;
``fit_with_held_out_validation`` trains on a pool with a patient-wise validation part of it (one
network or an ensemble) and calibrates on that part. Node functions call these with validated
parameter groups (``cardio_kedro.config``).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Protocol

import keras
import numpy as np
import pandas as pd
from scipy.special import expit

from cardio_kedro.cohort import quality
from cardio_kedro.cohort.findings import (
    SCORE_PREFIX,
    TARGET_PREFIX,
    label_matrix,
    stratified_patient_split,
    target_columns,
)
from cardio_kedro.cohort.sampling import rebalance_binary
from cardio_kedro.common.errors import UserValueError
from cardio_kedro.config import (
    BaselineParams,
    CrossValidationParams,
    ModelTrainingParams,
    QualityGuardParams,
    RebalanceParams,
)
from cardio_kedro.evaluation.baseline import pixel_baseline_probability
from cardio_kedro.evaluation.calibration import calibration_entry, to_logit

from .builder import build_model, ensemble, with_auxiliary_findings, with_view_head
from .feeds import feed, predict_cached
from .training import (
    HISTORY_METRICS,
    EpochMonitor,
    TrainingDiverged,
    averaged_weights,
    compile_model,
    distribution_scope,
    extra_callbacks,
    initialize_multi_host,
    keras_state,
    monitored,
    process_shard,
    set_trainable,
)

logger = logging.getLogger(__name__)


class PixelSource(Protocol):
    """What fitting reads of a pixel cache (``cardio_kedro.datasets.PixelCache``)."""

    size: int

    def pixels(self) -> np.ndarray: ...
    def rows(self, paths: pd.Series) -> np.ndarray: ...
    def images(self, paths: pd.Series) -> np.ndarray: ...


WEAK_GUARD = 0.2  # a template-correlation threshold below this separates frontal films from little (real NIH: 0.43)


def frame_findings(frame: pd.DataFrame) -> tuple[str, ...] | None:
    """The findings of a multi-label split (its ``target.<finding>`` columns); ``None`` for a binary one."""
    found = tuple(c.removeprefix(TARGET_PREFIX) for c in frame.columns if c.startswith(TARGET_PREFIX))
    return found or None


def _target_columns(frame: pd.DataFrame) -> list[str]:
    findings = frame_findings(frame)
    return ["target"] if findings is None else target_columns(findings)


def _require_both_classes(**splits: pd.DataFrame) -> None:
    for name, frame in splits.items():
        for column in _target_columns(frame):
            positives = int(frame[column].sum())
            if positives == 0 or positives == len(frame):
                what = "" if column == "target" else f" of {column.removeprefix(TARGET_PREFIX)}"
                raise UserValueError(
                    f"The {name} split has {positives} positive image(s){what} of {len(frame)}: training needs "
                    "both classes. Check target_findings and the cohort's labels."
                )


def _labels(frame: pd.DataFrame, config: ModelTrainingParams) -> np.ndarray | tuple[np.ndarray, ...]:
    """The finding's labels (``(N, K)`` for K findings); with ``view_loss_weight`` > 0 also the
    view's (1: AP), and with ``auxiliary_findings`` their ``(N, A)`` labels, in the training model's
    output order."""
    findings = frame_findings(frame)
    target = frame["target" if findings is None else target_columns(findings)].to_numpy(np.float32)
    extra = []
    if config.view_loss_weight > 0:
        extra.append((frame["view"].astype(str).str.upper() == "AP").to_numpy(np.float32))
    if config.auxiliary_findings:
        extra.append(auxiliary_labels(frame, config.auxiliary_findings))
    return (target, *extra) if extra else target


def auxiliary_labels(frame: pd.DataFrame, findings: list[str]) -> np.ndarray:
    """``(N, A)`` 0/1 labels of ``findings`` read from the ``labels`` column (NIH's ``A|B`` form)."""
    if "labels" not in frame.columns:
        raise UserValueError(
            "model_training.auxiliary_findings reads each image's labels (the 'labels' column of the model input "
            "table), which this table has not: set model_training.auxiliary_findings to []"
        )
    return label_matrix(frame["labels"].fillna(""), findings).to_numpy(np.float32)


def _fit_inputs(
    train: pd.DataFrame, validation: pd.DataFrame, pixel_cache: PixelSource, config: ModelTrainingParams
) -> dict[str, Any]:
    """``model.fit`` keyword arguments for both splits, read from the pixel cache."""
    pixels = pixel_cache.pixels()
    loader = {
        "loader": config.loader,
        "max_loader_memory_gb": config.max_loader_memory_gb,
        "loader_workers": config.loader_workers,
    }
    train_data = feed(
        pixels,
        pixel_cache.rows(train["path"]),
        _labels(train, config),
        config.batch_size,
        **loader,
        shuffle=True,
        seed=config.seed,
    )
    val = feed(
        pixels,
        pixel_cache.rows(validation["path"]),
        _labels(validation, config),
        config.batch_size,
        **loader,
    )
    in_memory = "y" in val
    return {
        **train_data,
        "validation_data": (val["x"], val["y"]) if in_memory else val["x"],
        "validation_batch_size": config.batch_size if in_memory else None,
    }


def _class_weight(rebalancing: dict) -> dict[int, float] | None:
    """Keras ``class_weight`` from data_processing's weights (``None`` when they are all 1, and for a
    multi-label model, whose per-finding weights are in its loss)."""
    if isinstance(next(iter(rebalancing["class_weight"].values())), dict):
        return None
    weights = {int(k): float(v) for k, v in rebalancing["class_weight"].items()}
    return None if all(w == 1.0 for w in weights.values()) else weights


def compile_options(
    config: ModelTrainingParams, finding_weights: dict[str, dict[str, float]] | None = None
) -> dict[str, Any]:
    """``compile_model``'s keyword arguments as ``model_training`` sets them (every one: none has a default);
    ``finding_weights``: a multi-label model's per-finding class weights."""
    return {
        "jit_compile": config.jit_compile,
        "clipnorm": config.gradient_clipnorm,
        "view_loss_weight": config.view_loss_weight,
        "auxiliary_loss_weight": config.auxiliary_loss_weight,
        "weight_averaging": config.weight_averaging,
        "steps_per_execution": 1,
        "label_smoothing": config.label_smoothing,
        "weight_decay": config.weight_decay,
        "finding_weights": finding_weights,
        "best_epoch_findings": None if config.best_epoch_findings == "all" else list(config.best_epoch_findings),
    }


def _run_phases(
    model: keras.Model,
    fit: dict[str, Any],
    monitor: EpochMonitor,
    steps_per_epoch: int,
    config: ModelTrainingParams,
    finding_weights: dict[str, dict[str, float]] | None = None,
) -> None:
    """Phase ``head`` (backbone frozen), then ``fine_tune`` (top backbone layers unfrozen).

    The fine-tuning learning rate follows ``fine_tune.schedule``: ``cosine`` decays it to 1% over
    the phase's epochs (the last epochs take small steps, so the best epoch is rarely a spike);
    ``plateau`` halves it when val_auc stalls (``reduce_lr``).
    """
    stop = keras.callbacks.EarlyStopping(monitor=monitored(model), mode="max", patience=config.early_stopping_patience)
    plateau = keras.callbacks.ReduceLROnPlateau(
        monitor=monitored(model), mode="max", factor=config.reduce_lr.factor, patience=config.reduce_lr.patience
    )
    compiled = compile_options(config, finding_weights)
    set_trainable(model, 0)
    compile_model(model, config.head.learning_rate, config.loss, **compiled)
    if config.head.epochs > 0:
        model.fit(
            **fit,
            epochs=config.head.epochs,
            # the averaging callback first: the monitor then keeps the averaged weights; a new one per phase
            callbacks=[*averaged_weights(config.weight_averaging), monitor, stop, plateau, *extra_callbacks()],
            verbose=config.verbose,
        )
    fine = config.fine_tune
    if fine.unfreeze_layers == 0 or fine.epochs == 0 or monitor.diverged:
        return
    monitor.phase = "fine_tune"
    logger.info("Fine-tuning the top %d backbone layer(s)", set_trainable(model, fine.unfreeze_layers))
    callbacks = [*averaged_weights(config.weight_averaging), monitor, stop, *extra_callbacks()]
    if fine.schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(fine.learning_rate, fine.epochs * steps_per_epoch, 0.01)
    else:
        learning_rate, callbacks = fine.learning_rate, [*callbacks, plateau]
    compile_model(model, learning_rate, config.loss, **compiled)
    done = len(monitor.records)
    model.fit(**fit, initial_epoch=done, epochs=done + fine.epochs, callbacks=callbacks, verbose=config.verbose)


def train_classifier(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    pixel_cache: PixelSource,
    rebalancing: dict,
    config: ModelTrainingParams,
) -> tuple[keras.Model, pd.DataFrame]:
    """Train the attention classifier in two phases and return it with the best epoch's weights.

    Phase ``head`` trains with the backbone frozen; phase ``fine_tune`` unfreezes the backbone's
    top ``unfreeze_layers`` layers (0 skips it). Images come from the pixel cache; the model sees
    them at the cache's size. The class weights of ``rebalancing`` apply when data_processing used
    ``strategy: class_weight``. Returns the (uncalibrated) model and its per-epoch history.

    Splits with ``target.<finding>`` columns (several ``target_findings``) train the multi-label
    model: one output column per finding, each finding's positives weighted by its own class weights,
    the best epoch chosen on the mean of the findings' validation AUCs, each finding's validation AUC
    in the history (``val_auc.<finding>``).
    """
    _require_both_classes(train=train, validation=validation)
    findings = frame_findings(train)
    finding_weights = None if findings is None else {f: rebalancing["class_weight"][f] for f in findings}
    if config.distribution == "multi_host":
        train, validation, config = _multi_host_share(train, validation, config)
    with keras_state(config.mixed_precision):
        keras.utils.set_random_seed(config.seed)
        fit = _fit_inputs(train, validation, pixel_cache, config)
        fit["class_weight"] = _class_weight(rebalancing)
        logger.info(
            "Training on %d images (%d positive), validating on %d; %s at %d px, precision %s, backend %s",
            len(train),
            int(train["target"].sum()),
            len(validation),
            config.model.backbone,
            pixel_cache.size,
            keras.mixed_precision.dtype_policy().name,
            keras.backend.backend(),
        )
        with distribution_scope(config.distribution):
            model = build_model(pixel_cache.size, **config.model.model_dump(), findings=findings)
            trainer = with_view_head(model) if config.view_loss_weight > 0 else model  # shares model's weights
            if config.auxiliary_findings:
                trainer = with_auxiliary_findings(trainer, len(config.auxiliary_findings))
                logger.info("Auxiliary findings trained beside the target: %s", ", ".join(config.auxiliary_findings))
            steps = math.ceil(len(train) / config.batch_size)
            if config.max_batches_per_epoch is not None and config.max_batches_per_epoch < steps:
                steps = fit["steps_per_epoch"] = config.max_batches_per_epoch
                logger.info("Each epoch trains on %d batches (model_training.max_batches_per_epoch)", steps)
            monitor = EpochMonitor(min(len(train), steps * config.batch_size))
            _run_phases(trainer, fit, monitor, steps, config, finding_weights)
    if monitor.diverged:
        raise TrainingDiverged(
            f"Training stopped: the {monitor.diverged}. Lower the learning rate or check the inputs."
        )
    if config.keep_weights == "best":
        monitor.restore()
    if config.distribution == "multi_host":  # the next nodes run in process 0 alone: a model of its own
        replicated = model
        model = build_model(pixel_cache.size, **config.model.model_dump(), findings=findings)
        model.set_weights(replicated.get_weights())
    history = pd.DataFrame(monitor.records)
    kept = monitor.best_epoch if config.keep_weights == "best" else int(history["epoch"].max())
    history["best"] = history["epoch"] == kept  # the epoch whose weights the model keeps
    return model, history


def _multi_host_share(
    train: pd.DataFrame, validation: pd.DataFrame, config: ModelTrainingParams
) -> tuple[pd.DataFrame, pd.DataFrame, ModelTrainingParams]:
    """This process's shards of both splits and its share of the batch (``distribution: multi_host``)."""
    index, count = initialize_multi_host()
    if config.batch_size % count:
        raise UserValueError(
            f"model_training.batch_size {config.batch_size} does not split over {count} processes: "
            f"use a multiple of {count} (each process takes batch_size / {count} images a step)"
        )
    shards = process_shard(train, config.seed), process_shard(validation, config.seed + 1)
    logger.info(
        "multi_host: process %d of %d trains on %d of %d images and validates on %d of %d, %d a step",
        index,
        count,
        len(shards[0]),
        len(train),
        len(shards[1]),
        len(validation),
        config.batch_size // count,
    )
    return *shards, config.model_copy(update={"batch_size": config.batch_size // count})


def history_metrics(history: pd.DataFrame) -> dict[str, list[dict[str, float]]]:
    """The per-epoch history as MLflow metric histories (step = epoch), finite values only, and
    ``best_epoch``: the epoch whose weights were kept (a sweep reads its objective there). An
    ensemble's history (a ``member`` column) logs its first member's epochs."""
    if "member" in history:
        history = history[history["member"] == 0]
    names = [*HISTORY_METRICS, *(c for c in history.columns if c.startswith("val_auc."))]  # + per finding
    metrics = {
        name: [{"value": float(v), "step": int(e)} for e, v in zip(history["epoch"], history[name]) if math.isfinite(v)]
        for name in names
        if name in history
    }
    if "best" in history and history["best"].any():
        metrics["best_epoch"] = [{"value": float(history.loc[history["best"], "epoch"].iloc[0]), "step": 0}]
    return {name: values for name, values in metrics.items() if values}


def score_images(
    classifier: keras.Model, frame: pd.DataFrame, pixel_cache: PixelSource, batch_size: int
) -> pd.DataFrame:
    """The network's raw score for every image of ``frame``; a multi-label model's as one
    ``score.<finding>`` column per finding, beside its ``target.<finding>``."""
    _, score = predict_cached(classifier, pixel_cache.pixels(), pixel_cache.rows(frame["path"]), batch_size)
    findings = frame_findings(frame)
    if findings is None:
        return frame[["image_index", "patient_id", "target"]].assign(score=score)
    scores = {f"{SCORE_PREFIX}{f}": score[:, j] for j, f in enumerate(findings)}
    return frame[["image_index", "patient_id", *target_columns(findings)]].assign(**scores)


def fit_guard(
    train: pd.DataFrame, held_out: pd.DataFrame, pixel_cache: PixelSource, config: QualityGuardParams
) -> dict:
    """The image check saved with the model (``cardio_kedro.cohort.quality``): the template from the
    training films, the correlation threshold from held-out training films (the validation split).
    Returns ``{"guard": its config, "report": what it flags among the held-out films}``."""
    guard, report = quality.fit_quality_guard(
        pixel_cache.images(train["path"]),
        pixel_cache.images(held_out["path"]),
        config.held_out_quantile,
        config.max_threshold,
        config.min_side,
        config.blank_std,
        config.saturated_share,
    )
    logger.info(
        "Quality guard: template from %d films, correlation threshold %.3f; flags %.1f%% of %d held-out films %s",
        report["n_train"], guard.min_correlation, 100 * report["held_out_flag_rate"], report["n_held_out"],
        report["held_out_flags"],
    )  # fmt: skip
    if guard.min_correlation < WEAK_GUARD:
        logger.warning(
            "Quality guard: held-out films correlate with the template at %.3f only (1%% quantile): the training "
            "films share no frontal layout (not chest films, or mixed views), so the guard flags little",
            guard.min_correlation,
        )
    return {"guard": guard.to_config(), "report": report}


def hold_out_patients(
    frame: pd.DataFrame, fraction: float, rng: np.random.Generator
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``frame`` split by patient into training and a held-out ``fraction`` (stratified on ``target``)."""
    patient_labels = frame.groupby("patient_id")[["target"]].max()
    codes = pd.Series(stratified_patient_split(patient_labels, [1 - fraction, fraction], rng), patient_labels.index)
    held = frame["patient_id"].map(codes).to_numpy() == 1
    return frame[~held].reset_index(drop=True), frame[held].reset_index(drop=True)


MEMBER_SEED_STEP = 1009  # member m of an ensemble trains with model_training.seed + m x this


def fit_with_held_out_validation(
    pool: pd.DataFrame,
    pixel_cache: PixelSource,
    rebalance: RebalanceParams,
    config: ModelTrainingParams,
    cross_validation: CrossValidationParams,
    calibration_bins: int,
    seed: int,
) -> tuple[keras.Model, pd.DataFrame, dict, list[pd.DataFrame], dict, pd.DataFrame]:
    """Train on ``pool`` with a patient-wise validation part of it (best epoch, and this model's own
    calibration on it). With ``cross_validation.members`` above 1, that many networks on the same
    validation part, each with its own kept negatives and training seed, averaged (``ensemble``).
    Returns the model, its history (a ``member`` column for an ensemble), the rebalancing, each
    member's rebalanced training images, the calibration entry and the validation part's raw scores."""
    rng = np.random.default_rng(seed)
    train, validation = hold_out_patients(pool, cross_validation.validation_fraction, rng)
    n = cross_validation.members
    networks, histories, kept, rebalancings = [], [], [], []
    for m in range(n):
        member_rng = rng if m == 0 else np.random.default_rng([seed, m])  # member 0: the single network's draw
        train_b, validation_b, rebalancing = rebalance_binary(
            train, validation, rebalance.strategy, rebalance.neg_per_pos, member_rng
        )
        if n > 1:
            logger.info("Member %d/%d of the ensemble", m + 1, n)
        member = config if m == 0 else config.model_copy(update={"seed": config.seed + MEMBER_SEED_STEP * m})
        network, history = train_classifier(train_b, validation_b, pixel_cache, rebalancing, member)
        networks.append(network)
        histories.append(history.assign(member=m) if n > 1 else history)
        kept.append(train_b)
        rebalancings.append(rebalancing)
    model = ensemble(networks)
    scores = score_images(model, validation, pixel_cache, config.batch_size)
    rebalancing = rebalancings[0]
    entry = calibration_entry(
        scores["target"].to_numpy(),
        scores["score"].to_numpy(),
        rebalancing["prevalence"],
        config.calibration,
        config.threshold,
        calibration_bins,
    )
    return model, pd.concat(histories, ignore_index=True), rebalancing, kept, entry, scores


def ensemble_baseline(
    kept: list[pd.DataFrame], images: np.ndarray, pixel_cache: PixelSource, baseline: BaselineParams
) -> np.ndarray:
    """The pixel baseline scored the way the model is: one fit per member's training images, averaged
    in logit space (one member: its fit)."""
    fits = [
        pixel_baseline_probability(
            pixel_cache.images(train_b["path"]),
            train_b["target"].to_numpy(),
            images,
            baseline.image_size,
            baseline.regularization,
        )
        for train_b in kept
    ]
    if len(fits) == 1:
        return fits[0]
    return expit(np.mean([to_logit(p) for p in fits], axis=0))
