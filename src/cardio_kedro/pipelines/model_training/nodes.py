"""Nodes of the model_training pipeline: two-phase training of the attention classifier."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

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
from cardio_kedro.config import BaselineParams, ExternalParams, ModelTrainingParams, RebalanceParams
from cardio_kedro.datasets import RECALIBRATED_TAG, PixelCache
from cardio_kedro.evaluation.baseline import pixel_baseline_probability
from cardio_kedro.evaluation.calibration import (
    align_scores,
    apply_calibration,
    expected_calibration_error,
    fit_platt,
    fit_recalibration,
    prior_shift_offset,
    to_logit,
)
from cardio_kedro.evaluation.decision import choose_threshold
from cardio_kedro.modeling import (
    build_model,
    calibrate,
    ensemble,
    operating_threshold,
    recalibrated,
    with_auxiliary_findings,
    with_view_head,
)
from cardio_kedro.modeling.feeds import feed, predict_cached
from cardio_kedro.modeling.training import (
    HISTORY_METRICS,
    EpochMonitor,
    TrainingDiverged,
    averaged_weights,
    compile_model,
    distribution_scope,
    initialize_multi_host,
    monitored,
    process_shard,
    resolve_precision,
    set_trainable,
)

logger = logging.getLogger(__name__)
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
    train: pd.DataFrame, validation: pd.DataFrame, pixel_cache: PixelCache, config: ModelTrainingParams
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
    compiled = {
        "jit_compile": config.jit_compile,
        "clipnorm": config.gradient_clipnorm,
        "view_loss_weight": config.view_loss_weight,
        "auxiliary_loss_weight": config.auxiliary_loss_weight,
        "weight_averaging": config.weight_averaging,
        "label_smoothing": config.label_smoothing,
        "weight_decay": config.weight_decay,
        "finding_weights": finding_weights,
        "best_epoch_findings": None if config.best_epoch_findings == "all" else list(config.best_epoch_findings),
    }
    set_trainable(model, 0)
    compile_model(model, config.head.learning_rate, config.loss, **compiled)
    if config.head.epochs > 0:
        model.fit(
            **fit,
            epochs=config.head.epochs,
            # the averaging callback first: the monitor then keeps the averaged weights; a new one per phase
            callbacks=[*averaged_weights(config.weight_averaging), monitor, stop, plateau],
            verbose=config.verbose,
        )
    fine = config.fine_tune
    if fine.unfreeze_layers == 0 or fine.epochs == 0 or monitor.diverged:
        return
    monitor.phase = "fine_tune"
    logger.info("Fine-tuning the top %d backbone layer(s)", set_trainable(model, fine.unfreeze_layers))
    callbacks = [*averaged_weights(config.weight_averaging), monitor, stop]
    if fine.schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(fine.learning_rate, fine.epochs * steps_per_epoch, 0.01)
    else:
        learning_rate, callbacks = fine.learning_rate, [*callbacks, plateau]
    compile_model(model, learning_rate, config.loss, **compiled)
    done = len(monitor.records)
    model.fit(**fit, initial_epoch=done, epochs=done + fine.epochs, callbacks=callbacks, verbose=config.verbose)


def train_model(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    pixel_cache: PixelCache,
    rebalancing: dict,
    params: dict[str, Any],
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
    config = ModelTrainingParams.model_validate(params)
    _require_both_classes(train=train, validation=validation)
    findings = frame_findings(train)
    finding_weights = None if findings is None else {f: rebalancing["class_weight"][f] for f in findings}
    if config.distribution == "multi_host":
        train, validation, config = _multi_host_share(train, validation, config)
    previous_policy = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(resolve_precision(config.mixed_precision))
    try:
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
    finally:
        keras.mixed_precision.set_dtype_policy(previous_policy)
        keras.distribution.set_distribution(None)
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


def epoch_metrics(history: pd.DataFrame) -> dict[str, list[dict[str, float]]]:
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


def score_validation(
    classifier: keras.Model, validation: pd.DataFrame, pixel_cache: PixelCache, params: dict
) -> pd.DataFrame:
    """The trained network's raw score for every image of the validation split (natural prevalence);
    a multi-label model's as one ``score.<finding>`` column per finding, beside its ``target.<finding>``."""
    config = ModelTrainingParams.model_validate(params)
    _, score = predict_cached(classifier, pixel_cache.pixels(), pixel_cache.rows(validation["path"]), config.batch_size)
    findings = frame_findings(validation)
    if findings is None:
        return validation[["image_index", "patient_id", "target"]].assign(score=score)
    scores = {f"{SCORE_PREFIX}{f}": score[:, j] for j, f in enumerate(findings)}
    return validation[["image_index", "patient_id", *target_columns(findings)]].assign(**scores)


def _calibration_map(
    scores: np.ndarray, target: np.ndarray, prevalence: dict, config: ModelTrainingParams
) -> tuple[float, float, float]:
    """``(slope, intercept, prior-shift offset)`` of the calibration ``config.calibration`` asks for."""
    offset = prior_shift_offset(prevalence["trained"], prevalence["natural"])
    method = config.calibration.method
    if method == "platt":
        return (*fit_platt(scores, target, offset, config.calibration.shrinkage), offset)
    return (1.0, offset, offset) if method == "prior_shift" else (1.0, 0.0, offset)


def _calibrate_one(
    y: np.ndarray, raw: np.ndarray, prevalence: dict, config: ModelTrainingParams, bins: int, name: str = ""
) -> dict[str, Any]:
    """One finding's calibration and threshold on validation: the report entry."""
    slope, intercept, offset = _calibration_map(raw, y, prevalence, config)
    calibrated = apply_calibration(raw, slope, intercept)
    t = config.threshold
    threshold = choose_threshold(y, calibrated, t.method, t.target_sensitivity, t.target_ppv)
    logger.info(
        "Calibration%s (%s): slope %.3f, intercept %.3f (prior shift %.3f); threshold %.3f (%s)%s",
        f" of {name}" if name else "",
        config.calibration.method,
        slope,
        intercept,
        offset,
        threshold["value"],
        t.method,
        "; the validation split is separated: every threshold between the classes ties"
        if threshold["validation_separated"]
        else "",
    )
    return {
        **config.calibration.model_dump(),
        "prevalence": prevalence,
        "prior_shift_offset": offset,
        "slope": slope,
        "intercept": intercept,
        "threshold": {**threshold, **t.model_dump(), "chosen_on": "validation", "scale": "calibrated"},
        "validation": {
            "n_images": int(len(y)),
            "n_positive": int(y.sum()),
            "ece_raw": expected_calibration_error(y, raw, bins),
            "ece_calibrated": expected_calibration_error(y, calibrated, bins),
        },
    }


def fit_quality_guard(
    train: pd.DataFrame, held_out: pd.DataFrame, pixel_cache: PixelCache, params: dict[str, Any]
) -> dict:
    """The image check saved with the model (``cardio_kedro.cohort.quality``): the template from the
    training films, the correlation threshold from held-out training films (the validation split).
    Returns ``{"guard": its config, "report": what it flags among the held-out films}``."""
    config = ModelTrainingParams.model_validate(params).quality_guard
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


def fit_quality_guard_on_folds(folds: pd.DataFrame, pixel_cache: PixelCache, params: dict[str, Any]) -> dict:
    """``fit_quality_guard`` for cross-validation: the template from folds 2..n, the threshold from fold 1."""
    return fit_quality_guard(folds[folds["fold"] != 0], folds[folds["fold"] == 0], pixel_cache, params)


def calibrate_classifier(
    classifier: keras.Model,
    validation_scores: pd.DataFrame,
    rebalancing: dict,
    params: dict[str, Any],
    calibration_bins: int,
    quality_guard: dict | None,
) -> tuple[keras.Model, dict]:
    """The deployable classifier: the network, its calibration and its operating threshold in one model.

    The calibration reads scores learnt at the rebalanced prevalence at the natural one (the exact
    prior shift) and, with ``method: platt``, fits Platt scaling on the validation split's scores
    (natural prevalence), shrunk towards the prior shift. The threshold is then chosen on the
    calibrated validation probabilities. Test images are never used. Returns the model and a report.
    A multi-label model gets one calibration and one threshold per finding; the report then holds
    ``findings`` and one entry per finding under ``by_finding``.
    """
    config = ModelTrainingParams.model_validate(params)
    guard = None if quality_guard is None else quality_guard["guard"]
    findings = frame_findings(validation_scores)
    if findings is None:
        y, raw = validation_scores["target"].to_numpy(), validation_scores["score"].to_numpy()
        report = _calibrate_one(y, raw, rebalancing["prevalence"], config, calibration_bins)
        threshold = report["threshold"]["value"]
        return calibrate(classifier, report["slope"], report["intercept"], threshold, quality_guard=guard), report
    prevalence = rebalancing["prevalence"]
    by_finding = {
        f: _calibrate_one(
            validation_scores[f"{TARGET_PREFIX}{f}"].to_numpy(),
            validation_scores[f"{SCORE_PREFIX}{f}"].to_numpy(),
            {"natural": prevalence["natural"][f], "trained": prevalence["trained"][f]},
            config,
            calibration_bins,
            f,
        )
        for f in findings
    }
    calibrated = calibrate(
        classifier,
        [by_finding[f]["slope"] for f in findings],
        [by_finding[f]["intercept"] for f in findings],
        [by_finding[f]["threshold"]["value"] for f in findings],
        findings=findings,
        quality_guard=guard,
    )
    return calibrated, {"findings": list(findings), "by_finding": by_finding}


# ---- cross-validation (data_processing.split.method: kfold) ----------------------------------------
OUT_OF_FOLD_COLUMNS = ["image_index", "patient_id", "path", "sex", "view", "age", "target", "fold"]


def _hold_out_patients(
    frame: pd.DataFrame, fraction: float, rng: np.random.Generator
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``frame`` split by patient into training and a held-out ``fraction`` (stratified on ``target``)."""
    patient_labels = frame.groupby("patient_id")[["target"]].max()
    codes = pd.Series(stratified_patient_split(patient_labels, [1 - fraction, fraction], rng), patient_labels.index)
    held = frame["patient_id"].map(codes).to_numpy() == 1
    return frame[~held].reset_index(drop=True), frame[held].reset_index(drop=True)


MEMBER_SEED_STEP = 1009  # member m of an ensemble trains with model_training.seed + m x this


def _fit_with_held_out_validation(
    pool: pd.DataFrame,
    pixel_cache: PixelCache,
    rebalance: RebalanceParams,
    params: dict[str, Any],
    calibration_bins: int,
    seed: int,
) -> tuple[keras.Model, pd.DataFrame, dict, list[pd.DataFrame], dict, pd.DataFrame]:
    """Train on ``pool`` with a patient-wise validation part of it (best epoch, and this model's own
    calibration on it). With ``cross_validation.members`` above 1, that many networks on the same
    validation part, each with its own kept negatives and training seed, averaged (``ensemble``).
    Returns the model, its history (a ``member`` column for an ensemble), the rebalancing, each
    member's rebalanced training images, the calibration entry and the validation part's raw scores."""
    config = ModelTrainingParams.model_validate(params)
    rng = np.random.default_rng(seed)
    train, validation = _hold_out_patients(pool, config.cross_validation.validation_fraction, rng)
    n = config.cross_validation.members
    networks, histories, kept, rebalancings = [], [], [], []
    for m in range(n):
        member_rng = rng if m == 0 else np.random.default_rng([seed, m])  # member 0: the single network's draw
        train_b, validation_b, rebalancing = rebalance_binary(
            train, validation, rebalance.strategy, rebalance.neg_per_pos, member_rng
        )
        if n > 1:
            logger.info("Member %d/%d of the ensemble", m + 1, n)
        member_params = params if m == 0 else {**params, "seed": config.seed + MEMBER_SEED_STEP * m}
        network, history = train_model(train_b, validation_b, pixel_cache, rebalancing, member_params)
        networks.append(network)
        histories.append(history.assign(member=m) if n > 1 else history)
        kept.append(train_b)
        rebalancings.append(rebalancing)
    model = ensemble(networks)
    scores = score_validation(model, validation, pixel_cache, params)
    rebalancing = rebalancings[0]
    entry = _calibrate_one(
        scores["target"].to_numpy(), scores["score"].to_numpy(), rebalancing["prevalence"], config, calibration_bins
    )
    return model, pd.concat(histories, ignore_index=True), rebalancing, kept, entry, scores


def _ensemble_baseline(kept: list[pd.DataFrame], images: np.ndarray, pixel_cache: PixelCache, baseline) -> np.ndarray:
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


def shared_fold_calibration(
    validation_scores: list[pd.DataFrame], held_patients: set, prevalence: dict, config: ModelTrainingParams, bins: int
) -> dict[str, Any]:
    """One fold model's calibration fitted on the validation parts of every fold model (each scored
    by its own model), less the images of ``held_patients``, the fold it is to score: none of that
    fold's labels is seen, and the map rests on about five validation parts instead of one."""
    pooled = pd.concat(validation_scores, ignore_index=True)
    pooled = pooled[~pooled["patient_id"].isin(held_patients)]
    return _calibrate_one(pooled["target"].to_numpy(), pooled["score"].to_numpy(), prevalence, config, bins, "shared")


def align_fold_scores(validation_scores: list[pd.DataFrame], column: str = "score") -> list[tuple[float, float]]:
    """One ``(slope, intercept)`` logit map per fold model that puts the quartiles of its scores
    (``column``) on its own validation part onto those of all the validation parts pooled
    (``align_scores``; no label is used). Networks trained alike end on differently spread scores;
    pooled as they are, a fold whose scores run high ranks its negatives above another fold's
    positives, and the pooled out-of-fold AUC falls below every fold's own."""
    reference = pd.concat(validation_scores, ignore_index=True)[column].to_numpy()
    return [align_scores(part[column].to_numpy(), reference) for part in validation_scores]


def cross_validate(
    folds: pd.DataFrame,
    pixel_cache: PixelCache,
    rebalance_params: dict[str, Any],
    params: dict[str, Any],
    baseline_params: dict[str, Any],
    calibration_bins: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train one model per fold on the other folds and score the fold it never saw.

    Each fold model holds out ``cross_validation.validation_fraction`` of its training patients for
    its best epoch and its calibration and threshold: fitted on its own validation part
    (``fold_calibration: own``), or on every fold model's validation part less the patients of the
    fold it scores (``shared``, ``shared_fold_calibration``), with ``aligned`` after each fold model's
    scores are put on one scale (``align_fold_scores``). The held-out fold's probabilities are
    therefore never from a model (or a calibration) that saw those images. The pixel baseline is
    fitted on the same rebalanced training images and scores the same fold (and the fold model's
    validation part, for its own alignment).

    Returns the pooled out-of-fold predictions and the folds' training histories (a ``fold`` column).
    The predictions hold ``raw_score`` (the fold model's network), ``score`` (on the pooled scale:
    aligned with ``aligned``, else raw; the final model's out-of-fold calibration is fitted on it),
    ``probability`` and ``fold_threshold`` (the fold's calibration), ``baseline_probability``, and
    ``ranking_score`` / ``baseline_ranking_score``, what the pooled AUCs rank by: with ``aligned`` the
    aligned scores (one monotone scale for every fold, as the deployed model has one calibration for
    every image), else the probabilities. Per-fold calibrations fitted without the scored fold shift
    folds rich in positives down (their calibration data are poor in them), which reorders the pool.
    """
    config = ModelTrainingParams.model_validate(params)
    rebalance = RebalanceParams.model_validate(rebalance_params)
    baseline = BaselineParams.model_validate(baseline_params)
    n_folds = int(folds["fold"].max()) + 1
    predictions, histories, started = [], [], time.monotonic()
    entries, validation_scores, prevalences = [], [], []
    for k in range(n_folds):
        held, pool = folds[folds["fold"] == k], folds[folds["fold"] != k]
        logger.info(
            "Fold %d/%d: training on %d images (%d positive), scoring %d (%d positive)",
            k + 1, n_folds, len(pool), int(pool["target"].sum()), len(held), int(held["target"].sum()),
        )  # fmt: skip
        model, history, rebalancing, kept, entry, scores = _fit_with_held_out_validation(
            pool, pixel_cache, rebalance, params, calibration_bins, config.seed + k
        )
        _, raw = predict_cached(model, pixel_cache.pixels(), pixel_cache.rows(held["path"]), config.batch_size)
        validation_paths = pool.set_index("image_index").loc[scores["image_index"], "path"]
        scored = pixel_cache.images(pd.concat([held["path"], validation_paths], ignore_index=True))
        reference = _ensemble_baseline(kept, scored, pixel_cache, baseline)
        predictions.append(held[OUT_OF_FOLD_COLUMNS].assign(score=raw, baseline_probability=reference[: len(held)]))
        entries.append(entry)
        validation_scores.append(scores.assign(baseline_score=reference[len(held) :]))
        prevalences.append(rebalancing["prevalence"])
        histories.append(history.assign(fold=k))
        elapsed = time.monotonic() - started
        left = elapsed / (k + 1) * (n_folds - k)  # the other folds and the final model
        keras.backend.clear_session()
        logger.info(
            "Fold %d/%d done in %.0f s; about %.0f s left (%d fold(s) and the final model)",
            k + 1, n_folds, elapsed / (k + 1), left, n_folds - k - 1,
        )  # fmt: skip
    aligned = config.cross_validation.fold_calibration == "aligned"
    predictions = [part.assign(raw_score=part["score"]) for part in predictions]
    if aligned:
        maps, baseline_maps = (
            align_fold_scores(validation_scores),
            align_fold_scores(validation_scores, "baseline_score"),
        )
        for k, (slope, intercept) in enumerate(maps):
            logger.info(
                "Fold %d's scores aligned to the pooled validation scale: logit x %.3f %+.3f", k + 1, slope, intercept
            )
        validation_scores = [
            part.assign(score=apply_calibration(part["score"].to_numpy(), *m))
            for part, m in zip(validation_scores, maps)
        ]
        predictions = [
            part.assign(
                score=apply_calibration(part["raw_score"].to_numpy(), *m),
                baseline_ranking_score=apply_calibration(part["baseline_probability"].to_numpy(), *b),
            )
            for part, m, b in zip(predictions, maps, baseline_maps)
        ]
    if config.cross_validation.fold_calibration in ("shared", "aligned"):
        entries = [
            shared_fold_calibration(validation_scores, set(part["patient_id"]), prevalence, config, calibration_bins)
            for part, prevalence in zip(predictions, prevalences)
        ]
    predictions = [
        part.assign(
            probability=apply_calibration(part["score"].to_numpy(), entry["slope"], entry["intercept"]),
            fold_threshold=entry["threshold"]["value"],
        )
        for part, entry in zip(predictions, entries)
    ]
    out = pd.concat(predictions, ignore_index=True)
    if aligned:
        out["ranking_score"] = out["score"]
    else:
        out["ranking_score"], out["baseline_ranking_score"] = out["probability"], out["baseline_probability"]
    return out, pd.concat(histories, ignore_index=True)


def train_final_model(
    folds: pd.DataFrame,
    pixel_cache: PixelCache,
    rebalance_params: dict[str, Any],
    params: dict[str, Any],
    calibration_bins: int,
) -> tuple[keras.Model, pd.DataFrame, dict]:
    """The model to deploy: trained on every fold (its validation part held out the same way), an
    ensemble of ``cross_validation.members`` networks as each fold model is; it is calibrated from the
    out-of-fold predictions (``calibrate_from_out_of_fold``)."""
    config = ModelTrainingParams.model_validate(params)
    rebalance = RebalanceParams.model_validate(rebalance_params)
    logger.info("Final model: training on all %d images", len(folds))
    model, history, rebalancing, *_ = _fit_with_held_out_validation(
        folds, pixel_cache, rebalance, params, calibration_bins, config.seed
    )
    return model, history, rebalancing


def calibrate_from_out_of_fold(
    classifier: keras.Model,
    out_of_fold: pd.DataFrame,
    rebalancing: dict,
    params: dict[str, Any],
    calibration_bins: int,
    quality_guard: dict,
    pixel_cache: PixelCache,
) -> tuple[keras.Model, dict]:
    """The final model's calibration and threshold, fitted on the pooled out-of-fold raw scores:
    every image once, each scored by a model that never saw it (the final model saw them all, so
    its own scores on them would be optimistic). The prior shift is the final model's own.

    The out-of-fold scores come from the fold models, not from the final model, and networks trained
    alike can stop at epochs whose scores spread very differently (on 970 real NIH thumbnails, a final
    model whose scores spanned 0.26-0.29 beside fold scores of 0-0.99). So the final model's scores on
    the same images are first put on the out-of-fold scale, quartiles onto quartiles in logit space
    (``align_scores``: its ranking, no label, decides), and the out-of-fold calibration then applies;
    the alignment folds into the ``Calibration`` layer and is recorded as ``score_alignment``.
    """
    config = ModelTrainingParams.model_validate(params)
    y, oof = out_of_fold["target"].to_numpy(), out_of_fold["score"].to_numpy()
    rows = pixel_cache.rows(out_of_fold["path"])
    _, final = predict_cached(classifier, pixel_cache.pixels(), rows, config.batch_size)
    align_slope, align_intercept = align_scores(final, oof)
    report = _calibrate_one(y, oof, rebalancing["prevalence"], config, calibration_bins)
    slope, intercept = report["slope"] * align_slope, report["slope"] * align_intercept + report["intercept"]
    report["threshold"]["chosen_on"] = "out_of_fold"
    report["fitted_on"] = "out_of_fold"
    report["score_alignment"] = {
        "slope": align_slope,
        "intercept": align_intercept,
        "final_score_quartiles": np.quantile(final, [0.25, 0.5, 0.75]).tolist(),
        "out_of_fold_score_quartiles": np.quantile(oof, [0.25, 0.5, 0.75]).tolist(),
        "calibration_slope": slope,
        "calibration_intercept": intercept,
    }
    log = logger.warning if not 0.5 <= align_slope <= 2 else logger.info
    log(
        "Final model's scores aligned to the out-of-fold scale: logit x %.3f %+.3f (quartiles %s against %s)%s",
        align_slope, align_intercept, np.round(np.quantile(final, [0.25, 0.5, 0.75]), 3).tolist(),
        np.round(np.quantile(oof, [0.25, 0.5, 0.75]), 3).tolist(),
        "; its scores spread very differently from the fold models'" if log is logger.warning else "",
    )  # fmt: skip
    guard = None if quality_guard is None else quality_guard["guard"]
    return calibrate(classifier, slope, intercept, report["threshold"]["value"], quality_guard=guard), report


def fit_site_recalibration(model_info: dict, predictions: pd.DataFrame, card: dict, params: dict[str, Any]):
    """``external.recalibrate``: the model's probabilities updated for the external site, fitted on the
    ``update`` part of its patients (``intercept``: a new calibration-in-the-large; ``logistic``: a new
    slope too; Steyerberg's updating methods), folded into a copy of the model's ``Calibration`` layer.

    Returns the recalibration (method, intercept, slope, the threshold on the new scale, what it was
    fitted on) and ``{"model": the recalibrated classifier or None, "tags": ...}``: the hooks register it
    as a new version of the model's registered name, tagged with the cohort; the scored model is untouched.
    """
    config = ExternalParams.model_validate(params)
    record = {"method": config.recalibrate, "intercept": 0.0, "slope": 1.0, "threshold": card["threshold"]}
    if config.recalibrate == "none":
        return record, {"model": None, "tags": {}}
    update = predictions[predictions["part"] == "update"]
    if not config.include_flagged:
        update = update[update["quality"].isin(["ok", "unchecked"])]
    y = update["target"].to_numpy()
    try:
        intercept, slope = fit_recalibration(update["probability"].to_numpy(), y, config.recalibrate)
    except ValueError as exc:
        advice = (
            f" The update part is {len(update)} films of {update['patient_id'].nunique()} patients "
            f"(external.update_fraction={config.update_fraction}): raise update_fraction so that it holds positive "
            "and negative films, or run with external.recalibrate=none (the model as it is)."
        )
        raise UserValueError(f"external.recalibrate={config.recalibrate}: {exc}.{advice}") from None
    model = recalibrated(model_info["model"], intercept, slope)
    record.update(
        intercept=intercept,
        slope=slope,
        threshold=operating_threshold(model),
        fitted_on={"n_images": int(len(update)), "n_patients": int(update["patient_id"].nunique()),
                   "n_positive": int(y.sum())},
    )  # fmt: skip
    logger.info(
        "Recalibrated (%s) on %d external images (%d positive): logit p' = %.3f + %.3f logit p; threshold %.3f -> %.3f",
        config.recalibrate, len(update), int(y.sum()), intercept, slope, card["threshold"], record["threshold"],
    )  # fmt: skip
    tags = {
        RECALIBRATED_TAG: card["cohort"]["name"],
        "recalibration": config.recalibrate,
        "recalibrated_from": card["model"],
        "recalibration_intercept": f"{intercept:.6g}",
        "recalibration_slope": f"{slope:.6g}",
    }
    return record, {"model": model, "tags": tags}
