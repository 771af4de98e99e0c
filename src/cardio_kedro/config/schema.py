"""The parameter schema: one frozen pydantic model per parameter group, checked before any work starts.

The YAML files in ``conf/`` are the only source of values. A group's fields have no defaults, so a
key missing from the YAML is an error, not a silent fallback; unknown keys (typos) are errors too.
The only defaults are the runtime-only keys (``cohort_dir``, ``images_dir``, ``model_uri``, absent
unless given with ``--params``) and a sweep dimension's keys that its ``type`` does not use.
Rules that span groups (a multi-label model needs class weights, ...) live in ``ProjectParams``
and nowhere else.

Nodes receive their group as the plain dict Kedro loads (kedro-mlflow flattens only dicts into
MLflow parameters) and turn it into the typed model with ``Model.model_validate(params)``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cardio_kedro.cohort.findings import parse_target_findings
from cardio_kedro.cohort.layouts import CHEXPERT_TO_NIH, LAYOUTS, UNCERTAIN_POLICIES, VINDR_CONSENSUS
from cardio_kedro.cohort.nih import DRAWABLE_FINDINGS, NIH_FINDINGS

Finding = Literal[NIH_FINDINGS]
Backbone = Literal["vgg16", "densenet121", "efficientnetb0", "mobilenetv3small"]
Workers = Annotated[int | None, Field(ge=1, description="processes (null = every CPU core)")]
Seed = Annotated[int, Field(ge=0, description="random seed")]
# Runtime-only keys: given with --params, never in the YAML; their catalog entries use them.
RUNTIME_KEYS = {
    "cohort_dir": "the cohort folder (NIH layout)",
    "images_dir": "the folder of images the inference pipeline scores",
    "model_uri": "an MLflow model URI for the inference pipeline",
}
# The file that holds each group in conf/base (for messages about missing keys).
GROUP_FILES = {
    "phantoms": "parameters_phantom_cohort.yml",
    "cohort": "parameters_data_processing.yml",
    "data_processing": "parameters_data_processing.yml",
    "model_training": "parameters_model_training.yml",
    "cross_validation": "parameters_cross_validation.yml",
    "reporting": "parameters_reporting.yml",
    "inference": "parameters_inference.yml",
    "external": "parameters_external_validation.yml",
    "sweep": "parameters_sweep.yml",
}


class Group(BaseModel):
    """A parameter group: frozen, unknown keys rejected, no defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ---- phantom_cohort ------------------------------------------------------------------------------
class PhantomParams(Group):
    """``phantoms``: the offline demo cohort (synthetic radiographs in the NIH layout)."""

    generate_if_missing: bool = Field(description="a run that finds no cohort generates this one first")
    n_patients: int = Field(ge=10, description="patients drawn")
    mean_follow_ups: float = Field(ge=0, description="Poisson mean of follow-up images per patient")
    prevalence: float = Field(gt=0, lt=1, description="share of patients whose cardiothoracic ratio exceeds 0.5")
    ap_fraction: float = Field(ge=0, le=1, description="share of AP films (they magnify the heart by 12%)")
    drawn_findings: list[Literal[DRAWABLE_FINDINGS]] = Field(
        min_length=1,
        description="the findings drawn in the images, each with a box (Cardiomegaly first; others are labels only)",
    )
    ctr_spread: float = Field(
        gt=0, le=0.2, description="sd of a patient's cardiothoracic-ratio distance from the 0.5 cut-off (half-normal)"
    )
    reader_sd: float = Field(
        ge=0,
        le=0.1,
        description="sd of the reader's cardiothoracic-ratio error: near 0.5 the label is Phi((ctr - 0.5) / sd);"
        " 0 labels by the drawn ratio exactly",
    )
    native_size: int = Field(ge=32, le=4096, description="px of the written PNGs (NIH: 1024)")
    images_per_folder: int = Field(ge=1, description="images per images_00N/images/ folder")
    seed: Seed
    workers: Workers


# ---- the cohort folder's layout (data_processing) -------------------------------------------------
class CohortTableParams(Group):
    """``cohort.table``: the label CSV of the ``csv`` and ``dicom`` layouts and its columns."""

    file: str = Field(min_length=1, description="the CSV, relative to cohort_dir")
    image_column: str = Field(
        min_length=1,
        description="csv: the image's path relative to cohort_dir; dicom: the file's path or its SOPInstanceUID",
    )
    dicom_key: Literal["path", "sop_instance_uid"] = Field(
        description="dicom: what image_column holds, the file's path relative to cohort_dir or the header's "
        "SOPInstanceUID"
    )
    patient_column: str | None = Field(description="csv: the patient id column (dicom reads PatientID)")
    findings: dict[Finding, str] = Field(
        min_length=1, description="NIH finding -> its column of 1/0 (true/false, yes/no, blank = 0)"
    )
    view_column: str | None = Field(description="csv: the view position column (PA, AP), or null")
    sex_column: str | None = Field(description="csv: the sex column (M/F), or null")
    age_column: str | None = Field(description="csv: the age column (years), or null")
    study_column: str | None = Field(description="csv: a column that orders a patient's studies (a date), or null")


class CohortParams(Group):
    """``cohort``: how the folder at ``cohort_dir`` is laid out (docs/data.md has one section per layout)."""

    layout: Literal[LAYOUTS] = Field(description="nih | chexpert | mimic_cxr_jpg | padchest | vindr | csv | dicom")
    uncertain: Literal[UNCERTAIN_POLICIES] | dict[str, Literal[UNCERTAIN_POLICIES]] = Field(
        description="chexpert, mimic_cxr_jpg: per finding (Atelectasis, Cardiomegaly, Consolidation, Edema, Effusion, "
        "Pneumonia, Pneumothorax), a -1 (uncertain) label is positive (uones), negative (uzeros), or leaves the image "
        "out of that finding's target (ignore); one word sets every finding"
    )
    include_lateral: bool = Field(description="chexpert, mimic_cxr_jpg, padchest: keep lateral films (as view LATERAL)")
    vindr_consensus: Literal[VINDR_CONSENSUS] = Field(
        description="vindr: a finding is the image's when any of its readers names it, or a majority of them"
    )
    mimic_labeler: Literal["chexpert", "negbio"] = Field(
        description="mimic_cxr_jpg: the label file, mimic-cxr-2.0.0-chexpert.csv or -negbio.csv"
    )
    table: CohortTableParams

    @model_validator(mode="after")
    def _uncertain_names_every_finding(self) -> CohortParams:
        if isinstance(self.uncertain, dict):
            wanted = set(CHEXPERT_TO_NIH.values())
            if set(self.uncertain) != wanted:
                raise ValueError(
                    f"uncertain names {sorted(self.uncertain)}: it takes one policy for each of {sorted(wanted)} "
                    "(or one word for all)"
                )
        return self

    @model_validator(mode="after")
    def _csv_has_patient(self) -> CohortParams:
        if self.layout == "csv" and not self.table.patient_column:
            raise ValueError("layout csv needs table.patient_column (the split is by patient)")
        return self


# ---- data_processing -----------------------------------------------------------------------------
class SplitFractions(Group):
    """Shares of patients per split; each above 0, together 1."""

    train: float = Field(gt=0, lt=1, description="share of patients in train")
    validation: float = Field(gt=0, lt=1, description="share of patients in validation")
    test: float = Field(gt=0, lt=1, description="share of patients in test")

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitFractions:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + validation + test must be 1, got {total:g}")
        return self


class SplitParams(Group):
    """``data_processing.split``: the patient-wise split."""

    method: Literal["random", "official"] = Field(
        description="random (patient-wise, stratified) or official (the data set's own test list); k folds are "
        "the cross_validation pipeline's (its own parameters: cross_validation.n_folds)"
    )
    fractions: SplitFractions
    seed: Seed


class RebalanceParams(Group):
    """``data_processing.rebalance``: train and validation class balance (test is never touched)."""

    strategy: Literal["undersample", "class_weight"] = Field(
        description="undersample (keep neg_per_pos negatives per positive) or class_weight (keep all, weight the loss)"
    )
    neg_per_pos: float = Field(gt=0, description="negatives kept per positive (3 -> 25% positive)")
    seed: Seed


class DataProcessingParams(Group):
    """``data_processing``: metadata rules, file checks and decoding, splits."""

    @field_validator("views")
    @classmethod
    def _some_view(cls, views):
        if isinstance(views, list) and (not views or len(set(views)) != len(views)):
            raise ValueError("views is all or a non-empty list of distinct view positions, e.g. [PA]")
        return views

    max_plausible_age: float = Field(gt=0, description="older ages are set to missing and flagged")
    views: Literal["all"] | list[Literal["PA", "AP"]] = Field(
        description="the films kept: all, or a list of view positions, e.g. [PA] (AP films magnify the heart); "
        "the data-quality report counts the rest"
    )
    workers: Workers
    split: SplitParams
    rebalance: RebalanceParams


# ---- model_training ------------------------------------------------------------------------------
class AugmentationParams(Group):
    """``model_training.model.augmentation``: jit-safe, training only."""

    rotation: float = Field(ge=0, le=45, description="degrees, drawn per image")
    translation: float = Field(ge=0, le=0.5, description="fraction of the side")
    zoom: float = Field(ge=0, lt=1, description="fraction")
    brightness: float = Field(ge=0, le=1, description="fraction of full scale")
    contrast: float = Field(ge=0, le=1, description="fraction")


class ModelParams(Group):
    """``model_training.model``: the attention classifier."""

    backbone: Backbone = Field(description="feature extractor under the attention head")
    backbone_weights: str | None = Field(
        description="imagenet (downloaded), null (random init) or the path of a local headless weights file (.h5)"
    )
    backbone_width: float = Field(gt=0, le=4, description="channel multiplier of VGG16 (1 = VGG16; not with imagenet)")
    backbone_batchnorm: bool = Field(description="VGG16-BN: BatchNorm after every convolution (not with imagenet)")
    batchnorm_momentum: float = Field(
        ge=0, lt=1, description="momentum of every BatchNorm's moving statistics (0.99 lags the weights by epochs)"
    )
    attention_stride: Literal[4, 8, 16, 32] = Field(
        description="the features the attention map is computed on: 32 = the last block (the seed), 16 or 8 = finer"
    )
    attention_context_stride: Literal[8, 16, 32] | None = Field(
        description="also the deeper features at this stride, upsampled to the map's resolution (null: none)"
    )
    attention_map: Literal["sigmoid", "softmax"] = Field(
        description="sigmoid: each cell in (0, 1) on its own (the seed); softmax: the cells share one unit of attention"
    )
    global_context: Literal["none", "mean", "max"] = Field(
        description="also pool the features over the whole image (mean or max) beside the attended ones: a "
        "global cue such as the film's view then need not draw the attention away from the finding; none: the seed"
    )
    attention_units: list[Annotated[int, Field(ge=1)]] = Field(
        min_length=1, description="1x1 convolution widths down to the attention map; the last is 1"
    )
    attention_activation: Literal["elu", "relu", "selu", "gelu", "swish", "tanh"] = Field(
        description="activation of the attention convolutions"
    )
    dense_units: int = Field(ge=1, description="units of the dense layer of the head")
    dropout: float = Field(ge=0, lt=1, description="dropout before and after the dense layer")
    augmentation: AugmentationParams | None = Field(description="training augmentation; null disables it")

    @field_validator("attention_units")
    @classmethod
    def _ends_with_the_map(cls, units: list[int]) -> list[int]:
        if units[-1] != 1:
            raise ValueError(f"the last entry is the 1-channel attention map and must be 1, got {units}")
        return units

    @field_validator("backbone_weights")
    @classmethod
    def _weights_form(cls, weights: str | None) -> str | None:
        if weights is not None and weights != "imagenet" and not weights.endswith(".h5"):
            raise ValueError(f"use imagenet, null or the path of a .h5 weights file, got {weights!r}")
        return weights

    @model_validator(mode="after")
    def _variants_need_vgg16_from_scratch(self) -> ModelParams:
        if (self.backbone_width != 1 or self.backbone_batchnorm) and (
            self.backbone != "vgg16" or self.backbone_weights == "imagenet"
        ):
            raise ValueError(
                "backbone_width other than 1 and backbone_batchnorm: true exist only for backbone vgg16 without "
                f"imagenet weights (got backbone {self.backbone}, weights {self.backbone_weights})"
            )
        return self


class HeadPhaseParams(Group):
    """``model_training.head``: phase 1, backbone frozen."""

    epochs: int = Field(ge=0, description="epochs (0 skips the phase)")
    learning_rate: float = Field(gt=0, lt=1, description="Adam learning rate")


class FineTuneParams(HeadPhaseParams):
    """``model_training.fine_tune``: phase 2, top of the backbone unfrozen."""

    unfreeze_layers: int | Literal["all"] = Field(
        description="weighted backbone layers unfrozen from the top, or all (0 skips the phase)"
    )
    schedule: Literal["cosine", "plateau"] = Field(
        description="cosine: the rate decays to 1% over the phase; plateau: halved when val_auc stalls (reduce_lr)"
    )

    @field_validator("unfreeze_layers", mode="before")
    @classmethod
    def _count_or_all(cls, value: Any) -> int | str:
        if value == "all" or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            return value
        raise ValueError(f"use a number of layers (0 or more) or 'all', got {value!r}")


class ReduceLrParams(Group):
    """``model_training.reduce_lr``: learning-rate decay on a val_auc plateau."""

    factor: float = Field(gt=0, lt=1, description="multiplier applied to the learning rate")
    patience: int = Field(ge=1, description="epochs without a better val_auc before it applies")


class CalibrationParams(Group):
    """``model_training.calibration``: from the score at the training prevalence to a probability."""

    method: Literal["platt", "prior_shift", "none"] = Field(
        description="platt: prior shift + Platt scaling fitted on the natural-prevalence validation split; "
        "prior_shift: the exact prior correction alone; none: the raw score"
    )
    shrinkage: float = Field(ge=0, description="platt: weight (in images) of the prior towards the prior shift alone")


class ThresholdParams(Group):
    """``model_training.threshold``: the operating threshold, on the calibrated scale, chosen on validation."""

    method: Literal["youden", "sensitivity", "ppv"] = Field(
        description="youden (max sensitivity + specificity), sensitivity or ppv (the target reached)"
    )
    target_sensitivity: float = Field(gt=0, le=1, description="used by method sensitivity")
    target_ppv: float = Field(gt=0, le=1, description="used by method ppv")


class CrossValidationParams(Group):
    """``cross_validation``: the folds, and how each fold's model (and the final one) holds out its validation."""

    n_folds: int = Field(
        ge=2,
        le=20,
        description="patient-wise folds, stratified on the target finding; each a namespace of the pipeline "
        "(fold_1, ...), built from the run's conf, --env and --params",
    )
    seed: Seed

    validation_fraction: float = Field(
        gt=0, lt=0.5, description="share of a fold's training patients held out for its best epoch and calibration"
    )
    fold_calibration: Literal["own", "shared", "aligned"] = Field(
        description="own: each fold model calibrated on its own validation part; shared: on the validation parts of "
        "every fold model, less the patients of the fold it scores (about five times the films: steadier on a "
        "small cohort, where one validation part holds a handful of positives); aligned: shared, after each fold "
        "model's scores are put on one scale (the quartiles of its validation part's logits onto those of all "
        "the validation parts; no label used), so that the pooled out-of-fold scores rank alike across folds"
    )
    members: int = Field(
        ge=1,
        le=10,
        description="networks trained per fold model (and for the final model), averaged in logit space: the "
        "same validation part, each with its own kept negatives and training seed. On a small cohort one "
        "network's ranking depends on its seed; the average is steadier (and takes members x the time). "
        "The cross_validation pipeline only",
    )


class QualityGuardParams(Group):
    """``model_training.quality_guard``: the check of each image before scoring (cardio_kedro.cohort.quality)."""

    held_out_quantile: float = Field(
        gt=0, lt=0.2, description="share of held-out training films below the template-correlation threshold"
    )
    max_threshold: float = Field(
        gt=0, lt=1, description="cap on that threshold (training films far more alike than real ones: phantoms)"
    )
    min_side: int = Field(ge=1, description="px: a source image with a shorter side is too_small")
    blank_std: float = Field(ge=0, description="grey-level sd below which an image is blank")
    saturated_share: float = Field(gt=0, le=1, description="share of pixels at 0 or 255 above which it is saturated")


class ModelTrainingParams(Group):
    """``model_training``: two-phase training from the pixel cache."""

    model: ModelParams
    seed: Seed
    batch_size: int = Field(ge=1, description="images per batch")
    head: HeadPhaseParams
    fine_tune: FineTuneParams
    quality_guard: QualityGuardParams
    loss: Literal["binary_crossentropy", "focal"] = Field(description="training loss")
    label_smoothing: float = Field(
        ge=0, lt=0.5, description="targets pulled towards 0.5 by this much in the finding's loss (0: none)"
    )
    weight_decay: float = Field(
        ge=0,
        lt=100,
        description="decoupled weight decay (AdamW): each step shrinks the kernels by learning rate x this (0: none; "
        "biases and normalisation scales are left alone)",
    )
    gradient_clipnorm: float | None = Field(gt=0, description="cap on the global gradient norm of a step (null: none)")
    weight_averaging: float | None = Field(
        gt=0,
        lt=1,
        description="momentum of an exponential moving average of the weights, which validation, the best epoch "
        "and the saved model use (null: the raw weights)",
    )
    view_loss_weight: float = Field(
        ge=0,
        description="weight of an auxiliary target during training, the film's view (AP or PA) read from the "
        "global-context branch, so the attention map need not look for the view (0: none)",
    )
    auxiliary_findings: list[Finding] = Field(
        description="NIH findings trained as extra outputs beside the target finding (multi-task: labels the "
        "table already has), read from the attended and global features; the saved model has the target's "
        "output only ([]: none; on the command line one string, `Effusion|Edema`)"
    )
    auxiliary_loss_weight: float = Field(ge=0, description="weight of the auxiliary findings' mean loss")
    early_stopping_patience: int = Field(ge=1, description="epochs without a better val_auc before stopping")
    keep_weights: Literal["best", "last"] = Field(
        description="the weights the model keeps: those of the best val_auc epoch, or of the last epoch (on a small "
        "validation part the best epoch is mostly noise)"
    )
    best_epoch_findings: Literal["all"] | list[Finding] = Field(
        description="several target findings: the findings whose mean validation AUC picks the best epoch "
        "(all: every target finding); each finding is still trained, logged and reported"
    )
    max_batches_per_epoch: int | None = Field(
        ge=1,
        description="cap on the training batches of an epoch, for rehearsals and smoke runs (null: the whole split)",
    )
    reduce_lr: ReduceLrParams
    calibration: CalibrationParams
    threshold: ThresholdParams
    mixed_precision: Literal["auto", "float32", "mixed_bfloat16"] = Field(
        description="auto: mixed_bfloat16 with an accelerator, float32 on CPU"
    )
    distribution: Literal["single", "data_parallel", "multi_host"] = Field(
        description="data_parallel: every local accelerator; multi_host: every device of every process "
        "(JAX; python -m cardio_kedro.team.multihost, docs/scaling_out.md)"
    )
    require_accelerator: bool = Field(
        description="stop before any data is read when the Keras backend sees no GPU or TPU (a run meant for an "
        "accelerator never falls back to hours on the CPU)"
    )
    jit_compile: bool | Literal["auto"] = Field(description="XLA compilation (auto: where the backend uses it)")
    loader: Literal["auto", "memory", "stream"] = Field(
        description="memory: the split in RAM once; stream: batches from the memory map; auto: memory if it fits"
    )
    max_loader_memory_gb: float = Field(gt=0, description="loader auto uses memory for splits up to this size")
    loader_workers: int = Field(ge=1, description="threads reading batches with loader stream")
    verbose: Literal[0, 1, 2] = Field(description="Keras progress: 0 silent, 1 bar, 2 a line per epoch")

    @field_validator("auxiliary_findings", mode="before")
    @classmethod
    def _pipe_separated(cls, value: Any) -> Any:
        if isinstance(value, str):  # `Effusion|Edema`, the form that fits kedro run --params
            return [part.strip() for part in value.split("|") if part.strip()]
        return value

    @model_validator(mode="after")
    def _some_training(self) -> ModelTrainingParams:
        fine_tunes = self.fine_tune.epochs > 0 and self.fine_tune.unfreeze_layers != 0
        if self.head.epochs == 0 and not fine_tunes:
            raise ValueError("head.epochs is 0 and fine_tune is skipped: nothing would be trained")
        if self.view_loss_weight > 0 and self.model.global_context == "none":
            raise ValueError("view_loss_weight > 0 reads the global-context branch: set model.global_context to mean")
        return self


# ---- reporting -----------------------------------------------------------------------------------
class BaselineParams(Group):
    """``reporting.baseline``: the reference every report compares the model with."""

    image_size: int = Field(ge=4, le=128, description="px of the downsampled images the logistic regression reads")
    regularization: float = Field(gt=0, description="inverse L2 strength (C) of the logistic regression")


class ReportingParams(Group):
    """``reporting``: metrics, plots and the HTML report."""

    batch_size: int = Field(ge=1, description="images per prediction batch")
    n_bootstrap: int = Field(ge=0, description="patient-level bootstrap resamples for confidence intervals")
    roc_band_max_resamples: int = Field(
        ge=0, description="the ROC plot's 95% band draws n_bootstrap resamples, at most this many"
    )
    original_neg_per_pos: float = Field(gt=0, description="negatives per positive of the 3:1 comparison test set")
    subgroup_min_per_class: int = Field(ge=1, description="fewer cases of a class in a subgroup: not scored")
    examples_per_class: int = Field(ge=1, description="example images per class")
    heatmaps_per_group: int = Field(ge=1, description="images per TP/FP/FN/TN row of the heat-map grid")
    calibration_bins: int = Field(ge=2, description="equal-width bins of the ECE and the reliability diagram")
    baseline: BaselineParams
    seed: Seed


# ---- inference -----------------------------------------------------------------------------------
class ServiceParams(Group):
    """``inference.service``: limits of the HTTP service, saved with the registered service model."""

    max_images_per_request: int = Field(ge=1, description="images one request may hold (more: a 400)")
    max_request_mib: float = Field(gt=0, description="MiB of encoded images one request may hold (more: a 400)")


class InferenceParams(Group):
    """``inference``: scoring a folder of images, and the HTTP service's limits."""

    batch_size: int = Field(ge=1, description="images per prediction batch")
    workers: Workers
    heatmaps: bool = Field(description="also write attention overlays")
    threshold: float | None = Field(
        gt=0,
        lt=1,
        description="null: the threshold saved with the model; a number: this one (needed for a model without)",
    )
    score_flagged: bool = Field(
        description="also report the probability of images the quality guard flags (they never get a label)"
    )
    service: ServiceParams


# ---- external_validation -------------------------------------------------------------------------
RECALIBRATION_METHODS = ("none", "intercept", "logistic")


class PromotionGates(Group):
    """``external.gates``: what an external validation must show before it may promote the scored model."""

    auc_lower_bound: float = Field(ge=0, le=1, description="the external ROC AUC's 95% CI lower bound must reach this")
    observed_expected: tuple[float, float] = Field(
        description="calibration-in-the-large: observed / expected (O/E) must lie in [low, high]"
    )
    beats_baseline: bool = Field(
        description="the paired AUC difference against the pixel baseline must have its CI above 0"
    )

    @model_validator(mode="after")
    def _ordered(self) -> PromotionGates:
        low, high = self.observed_expected
        if not 0 < low <= 1 <= high:
            raise ValueError(f"observed_expected {list(self.observed_expected)}: a band [low, high] around 1")
        return self


class ExternalParams(Group):
    """``external``: a second cohort scored by a trained model (``kedro run --pipelines=external_validation``)."""

    cohort_dir: str | None = Field(
        description="the external cohort's folder or fsspec URL (--params=external.cohort_dir=DIR; the catalog "
        "reads it too)"
    )
    name: str | None = Field(
        description="the cohort's name in the report, the MLflow tags and a recalibrated model's tags "
        "(null: the folder's name)"
    )
    cohort: CohortParams = Field(description="the external folder's layout: the keys of `cohort` (docs/data.md)")
    recalibrate: Literal[RECALIBRATION_METHODS] = Field(
        description="none | intercept (a new intercept: calibration-in-the-large) | logistic (a new slope and "
        "intercept): Steyerberg's updating methods, fitted on update_fraction of the patients"
    )
    update_fraction: float = Field(
        gt=0,
        lt=1,
        description="recalibrate: share of the external patients the recalibration is fitted on (stratified, "
        "patient-wise); the rest evaluates it",
    )
    include_flagged: bool = Field(
        description="also score images the model's quality guard flags (deployed, they get no label)"
    )
    seed: Seed
    promote: bool = Field(
        description="give the scored registered model the @champion alias when every gate passes (the run "
        "must finish); inference, the service and external validation then use it"
    )
    gates: PromotionGates = Field(description="what promotion requires (external.promote)")


# ---- sweep ---------------------------------------------------------------------------------------
class SweepDimension(Group):
    """One parameter of a sweep's search space: a number range or a list of choices."""

    type: Literal["float", "int", "categorical"] = Field(description="how the values are drawn")
    low: float | None = Field(default=None, description="float/int: the smallest value")
    high: float | None = Field(default=None, description="float/int: the largest value")
    log: bool = Field(default=False, description="float/int: draw on a log scale")
    choices: list[Any] | None = Field(default=None, description="categorical: the values")

    @model_validator(mode="after")
    def _complete(self) -> SweepDimension:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical dimension needs a non-empty 'choices' list")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"a {self.type} dimension needs low < high, got low {self.low}, high {self.high}")
        elif self.log and self.low <= 0:
            raise ValueError(f"a log-scale dimension needs low > 0, got {self.low}")
        return self


class SweepParams(Group):
    """``sweep``: an Optuna study whose trials are training runs (``python -m cardio_kedro.team.sweep``)."""

    study_name: str = Field(min_length=1, description="the Optuna study; workers with the same name share it")
    objective: str = Field(
        description="the MLflow metric of a run to optimise, at the restored best epoch (a validation metric)"
    )
    direction: Literal["maximize", "minimize"] = Field(description="maximize (AUC) or minimize (a loss)")
    sampler: Literal["tpe", "random"] = Field(description="how trials choose their parameters")
    trials_per_worker: int = Field(ge=0, description="trials each worker runs (0: only mark dead workers' trials)")
    heartbeat_s: int = Field(ge=1, description="a worker's heartbeat; a trial silent for 2x this is marked failed")
    space: dict[str, SweepDimension] = Field(description="dotted parameter -> dimension; each trial draws every one")

    @field_validator("objective")
    @classmethod
    def _never_test(cls, value: str) -> str:
        if value.startswith("test"):
            raise ValueError(f"'{value}' is measured on the test split: optimise a validation metric (val_auc)")
        return value


# ---- everything ----------------------------------------------------------------------------------
class ProjectParams(Group):
    """The whole parameter tree."""

    target_findings: str | list[str] = Field(
        description="what the model learns (set it in globals.yml): one NIH finding (the binary mode), several "
        "(a list, or one string such as `Cardiomegaly|Effusion|Edema`) or `all` (the 14 NIH findings)"
    )

    @field_validator("target_findings")
    @classmethod
    def _known_findings(cls, value: str | list[str]) -> str | list[str]:
        parse_target_findings(value)
        return value

    @property
    def findings(self) -> tuple[str, ...]:
        """The findings ``target_findings`` names, in NIH's order."""
        return parse_target_findings(self.target_findings)

    image_size: int = Field(ge=32, le=2048, description="px the model sees (set it in globals.yml)")
    phantoms: PhantomParams
    cohort: CohortParams
    data_processing: DataProcessingParams
    model_training: ModelTrainingParams
    cross_validation: CrossValidationParams
    reporting: ReportingParams
    inference: InferenceParams
    external: ExternalParams
    sweep: SweepParams
    cohort_dir: str | None = Field(default=None, description=RUNTIME_KEYS["cohort_dir"])
    images_dir: str | None = Field(default=None, description=RUNTIME_KEYS["images_dir"])
    model_uri: str | None = Field(default=None, description=RUNTIME_KEYS["model_uri"])

    @model_validator(mode="after")
    def _multi_label_settings(self) -> ProjectParams:
        findings = parse_target_findings(self.target_findings)
        if len(findings) == 1:
            return self
        wrong = []
        if self.data_processing.rebalance.strategy != "class_weight":
            wrong.append("data_processing.rebalance.strategy=class_weight (per-finding positive weights)")
        if self.model_training.view_loss_weight > 0:
            wrong.append("model_training.view_loss_weight=0")
        if self.model_training.loss != "binary_crossentropy":
            wrong.append("model_training.loss=binary_crossentropy")
        chosen = self.model_training.best_epoch_findings
        if chosen != "all" and not set(chosen) <= set(findings):
            outside = sorted(set(chosen) - set(findings))
            wrong.append(f"model_training.best_epoch_findings among target_findings (not {outside})")
        if wrong:
            raise ValueError(
                f"target_findings names {len(findings)} findings, and a multi-label model needs "
                f"{', '.join(wrong)} (conf/multilabel sets them all: --env=multilabel)"
            )
        return self

    @model_validator(mode="after")
    def _view_target_needs_undersampling(self) -> ProjectParams:
        if self.model_training.view_loss_weight > 0 and self.data_processing.rebalance.strategy == "class_weight":
            raise ValueError(
                "model_training.view_loss_weight > 0 and data_processing.rebalance.strategy class_weight do not "
                "combine (Keras weights the classes of a one-output model only): set one of them differently"
            )
        return self

    @model_validator(mode="after")
    def _auxiliary_findings(self) -> ProjectParams:
        auxiliary = self.model_training.auxiliary_findings
        if not auxiliary:
            return self
        findings = parse_target_findings(self.target_findings)
        if len(findings) > 1:
            raise ValueError(
                f"model_training.auxiliary_findings {auxiliary} are for one target finding; target_findings names "
                f"{len(findings)}, which a multi-label model learns already: set auxiliary_findings to []"
            )
        if set(auxiliary) & set(findings):
            raise ValueError(
                f"model_training.auxiliary_findings {auxiliary} names the target finding {findings[0]}: list the "
                "other findings only"
            )
        if len(set(auxiliary)) != len(auxiliary):
            raise ValueError(f"model_training.auxiliary_findings {auxiliary} names a finding twice")
        if self.data_processing.rebalance.strategy == "class_weight":
            raise ValueError(
                "model_training.auxiliary_findings and data_processing.rebalance.strategy class_weight do not "
                "combine (Keras weights the classes of a one-output model only): set one of them differently"
            )
        return self
