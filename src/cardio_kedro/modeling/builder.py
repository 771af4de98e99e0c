"""The attention classifier: grayscale uint8 X-ray -> backbone -> attention-weighted pooling -> probability.

One builder, ``build_model``. The saved model takes raw pixels: scaling, augmentation (training
only) and the backbone's own preprocessing are layers of the model. Only ``keras`` is imported.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
from keras import layers

from cardio_kedro.cohort.quality import QualityGuard

from .layers import (
    AttentionPooling,
    Calibration,
    FindingAttentionPooling,
    LogitMean,
    SpatialSoftmax,
    XrayAugment,
    XrayPreprocess,
)

ATTENTION_LAYER = "attention_map"
VIEW_OUTPUT = "view"  # the auxiliary output of the training model (with_view_head)
AUXILIARY_OUTPUT = "auxiliary"  # the auxiliary findings of the training model (with_auxiliary_findings)
SCORE_LAYER = "score"  # the trained network's output: a score at the training prevalence
PROBABILITY_LAYER = "probability"  # the calibrated model's output (a Calibration layer)
MEMBER_PREFIX = "member_"  # an ensemble's networks (ensemble): member_0, member_1, ...
BACKBONE_PREPROCESSING = {
    "vgg16": "caffe",
    "densenet121": "torch",
    "efficientnetb0": "raw",
    "mobilenetv3small": "raw",
}
VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


def _vgg16(inputs, width: float, batchnorm: bool) -> keras.Model:
    """VGG16's convolutional blocks with ``width`` x the channels (1.0 = the original layout).

    ``batchnorm`` adds BatchNorm after each convolution (the VGG16-BN variant), which trains far
    more reliably from random initialisation.
    """
    x = inputs
    for b, (filters, convs) in enumerate(VGG16_BLOCKS, start=1):
        for c in range(1, convs + 1):
            name = f"block{b}_conv{c}"
            x = layers.Conv2D(
                max(4, int(round(filters * width))),
                3,
                padding="same",
                activation=None if batchnorm else "relu",
                use_bias=not batchnorm,
                name=name,
            )(x)
            if batchnorm:
                x = layers.BatchNormalization(name=f"{name}_bn")(x)
                x = layers.Activation("relu", name=f"{name}_relu")(x)
        x = layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
    suffix = ("_bn" if batchnorm else "") + (f"_w{width:g}" if width != 1 else "")
    return keras.Model(inputs, x, name=f"vgg16{suffix}")


def _application(name: str, shape: tuple[int, int, int], imagenet: bool) -> keras.Model:
    """A ``keras.applications`` backbone without its top, with ImageNet weights or random ones."""
    builders = {
        "vgg16": keras.applications.VGG16,
        "densenet121": keras.applications.DenseNet121,
        "efficientnetb0": keras.applications.EfficientNetB0,
        "mobilenetv3small": keras.applications.MobileNetV3Small,
    }
    kwargs: dict[str, Any] = {"include_top": False, "input_shape": shape}
    if name == "mobilenetv3small":
        kwargs["include_preprocessing"] = True
    if not imagenet:
        return builders[name](weights=None, **kwargs)
    try:
        return builders[name](weights="imagenet", **kwargs)
    except Exception as exc:
        raise RuntimeError(
            f"Could not fetch the ImageNet weights of {name} ({type(exc).__name__}: {exc}). Without "
            f"network access set backbone_weights to a local weights file of the headless {name} "
            f"or to null (random initialisation)."
        ) from exc


def build_backbone(name: str, image_size: int, weights: str | None, width: float, batchnorm: bool) -> keras.Model:
    """A headless backbone on ``image_size`` x ``image_size`` x 3 input.

    ``weights``: ``"imagenet"`` (downloaded by Keras), ``None`` (random init) or a path to a local
    weights file of the headless backbone (e.g. ``vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5``).
    """
    if name not in BACKBONE_PREPROCESSING:
        raise ValueError(f"backbone '{name}' is not supported; use one of {sorted(BACKBONE_PREPROCESSING)}")
    if (width != 1.0 or batchnorm) and (name != "vgg16" or weights == "imagenet"):
        raise ValueError("backbone_width other than 1 and backbone_batchnorm are for vgg16 without imagenet weights")
    local = weights if weights not in (None, "imagenet") else None
    if local is not None and not Path(local).is_file():
        raise FileNotFoundError(f"backbone_weights file '{local}' does not exist")
    shape = (image_size, image_size, 3)
    if name == "vgg16" and (width != 1.0 or batchnorm):
        model = _vgg16(keras.Input(shape), width, batchnorm)
    else:
        model = _application(name, shape, imagenet=weights == "imagenet")
    if local is not None:
        model.load_weights(local)
    return model


def feature_extractor(backbone: keras.Model, image_size: int, stride: int, context_stride: int | None) -> keras.Model:
    """The backbone's features at ``image_size / stride`` resolution, as a model named ``backbone``.

    ``stride`` 32 is the whole headless backbone (the last block's features, the seed's design);
    smaller strides stop at the deepest layer of that resolution (VGG16: 16 ``block5_conv3``,
    8 ``block4_conv3``, 4 ``block3_conv3``), so the attention map has 2x, 4x or 8x the cells per
    side. With ``context_stride`` the deepest layer at that coarser resolution is upsampled
    (bilinear) and concatenated: a fine map that still sees the deeper features.
    """
    if stride == 32 and context_stride is None:
        backbone.name = "backbone"
        return backbone
    fine = _deepest_at(backbone, image_size // stride)
    if context_stride is None:
        return keras.Model(backbone.inputs, fine, name="backbone")
    if context_stride <= stride:
        raise ValueError(
            f"attention_context_stride ({context_stride}) must be coarser than attention_stride ({stride})"
        )
    coarse = _deepest_at(backbone, image_size // context_stride)
    up = layers.UpSampling2D(context_stride // stride, interpolation="bilinear", name="context_upsample")(coarse)
    fused = layers.Concatenate(name="context_concat")([fine, up])
    return keras.Model(backbone.inputs, fused, name="backbone")


def _deepest_at(backbone: keras.Model, side: int):
    at_side = [layer for layer in backbone.layers if _spatial(layer) == (side, side)]
    if not at_side:
        raise ValueError(f"{backbone.name} has no layer at {side}x{side}")
    return at_side[-1].output


def _spatial(layer) -> tuple[int, int] | None:
    shape = getattr(layer, "output", None)
    shape = getattr(shape, "shape", None)
    return tuple(shape[1:3]) if shape is not None and len(shape) == 4 else None


def build_model(
    image_size: int,
    *,
    backbone: str,
    backbone_weights: str | None,
    backbone_width: float,
    backbone_batchnorm: bool,
    batchnorm_momentum: float,
    attention_stride: int,
    attention_context_stride: int | None,
    attention_map: str,
    global_context: str,
    attention_units: Sequence[int],
    attention_activation: str,
    dense_units: int,
    dropout: float,
    augmentation: Mapping[str, float] | None,
    findings: Sequence[str] | None = None,
) -> keras.Model:
    """Build the attention classifier.

    ``findings``: ``None`` or one finding builds the binary model (one map, one ``(B, 1)`` score).
    Several build the multi-label model on the same backbone and 1x1 convolutions: the last
    convolution gives one attention map per finding, each map pools the features for its own finding
    (``FindingAttentionPooling``), and each finding has its own dense head (``EinsumDense`` with a
    weight slice per finding), so the score is ``(B, K)`` in the order of ``findings``. Findings share
    evidence through the trunk; each still looks where its own sign is.

    ``attention_stride`` picks the backbone features the attention head looks at (32: the last
    block; 16 or 8: a finer map, see ``feature_extractor``). ``attention_units`` are the widths of
    the 1x1 convolutions from those features down to the attention map (the last must be 1).
    ``global_context`` (``mean`` or ``max``) adds the features pooled over the whole image beside the
    attended mean, so a global cue (the film's view, the patient's size) reaches the head without
    the attention map; ``none`` is the seed's head.
    ``batchnorm_momentum`` is set on every BatchNormalization layer (backbone and head): the moving
    statistics used for validation and inference then follow the weights within a few dozen steps.
    ``augmentation`` is the keyword arguments of
    ``XrayAugment`` (training only) or ``None``. The keyword names match the ``model_training.model``
    parameters, so ``build_model(size, **params.model.model_dump())`` works. Weights and augmentation
    draw from Keras' global random state: ``keras.utils.set_random_seed`` first makes a run repeatable.
    """
    units = list(attention_units)
    if not units or units[-1] != 1:
        raise ValueError(f"attention_units must end with 1 (the attention map), got {units}")
    inputs = keras.Input((image_size, image_size, 1), dtype="uint8", name="image")
    x = inputs
    if augmentation:
        x = XrayAugment(**augmentation, name="augment")(x)
    x = XrayPreprocess(BACKBONE_PREPROCESSING[backbone], name="preprocess")(x)
    features_model = feature_extractor(
        build_backbone(backbone, image_size, backbone_weights, backbone_width, backbone_batchnorm),
        image_size,
        attention_stride,
        attention_context_stride,
    )
    features = layers.BatchNormalization(name="feature_norm")(features_model(x))
    k = 1 if findings is None else len(findings)
    a = features
    for i, n in enumerate(units[:-1]):
        a = layers.Conv2D(n, 1, padding="same", activation=attention_activation, name=f"attention_conv{i + 1}")(a)
    if attention_map == "sigmoid":  # the seed's map: each cell in (0, 1) on its own
        mask = layers.Conv2D(k, 1, padding="same", activation="sigmoid", name=ATTENTION_LAYER)(a)
    elif attention_map == "softmax":  # the cells compete for one unit of attention (per map)
        logits = layers.Conv2D(k, 1, padding="same", name="attention_logits")(a)
        mask = SpatialSoftmax(name=ATTENTION_LAYER)(logits)
    else:
        raise ValueError(f"attention_map must be 'sigmoid' or 'softmax', got '{attention_map}'")
    if k == 1:
        outputs = _binary_head(features, mask, global_context, dropout, dense_units)
    else:
        outputs = _finding_heads(features, mask, global_context, dropout, dense_units, k)
    model = keras.Model(inputs, outputs, name=f"{backbone}_attention")
    for layer in _all_layers(model):
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = batchnorm_momentum
    return model


def _binary_head(features, mask, global_context: str, dropout: float, dense_units: int):
    pooled = AttentionPooling(name="attention_pooling")([features, mask])
    if global_context != "none":  # the whole image's mean or max features beside the attended ones
        pool = {"mean": layers.GlobalAveragePooling2D, "max": layers.GlobalMaxPooling2D}[global_context]
        pooled = layers.Concatenate(name="pooled")([pooled, pool(name="global_pool")(features)])
    x = layers.Dropout(dropout, name="dropout1")(pooled)
    x = layers.Dense(dense_units, activation="relu", name="dense")(x)
    x = layers.Dropout(dropout, name="dropout2")(x)
    return layers.Dense(1, activation="sigmoid", dtype="float32", name=SCORE_LAYER)(x)


def _finding_heads(features, maps, global_context: str, dropout: float, dense_units: int, k: int):
    pooled = FindingAttentionPooling(name="attention_pooling")([features, maps])  # (B, K, C)
    if global_context != "none":  # the same whole-image features beside every finding's attended ones
        pool = {"mean": layers.GlobalAveragePooling2D, "max": layers.GlobalMaxPooling2D}[global_context]
        whole = layers.RepeatVector(k, name="global_per_finding")(pool(name="global_pool")(features))
        pooled = layers.Concatenate(name="pooled")([pooled, whole])
    x = layers.Dropout(dropout, name="dropout1")(pooled)
    x = layers.EinsumDense("bkc,kcd->bkd", (k, dense_units), bias_axes="kd", activation="relu", name="dense")(x)
    x = layers.Dropout(dropout, name="dropout2")(x)
    return layers.EinsumDense(
        "bkd,kd->bk", (k,), bias_axes="k", activation="sigmoid", dtype="float32", name=SCORE_LAYER
    )(x)


def with_view_head(model: keras.Model) -> keras.Model:
    """A training model sharing ``model``'s weights with a second output, ``view`` (the probability of
    an AP film), read from the global-context branch.

    Trained with the view as an auxiliary target, the global branch carries the film's view, so the
    attention map is free for the finding: on AP films the heart looks larger (magnified), and a
    model that must learn the view otherwise spends its one attention map looking for it.
    """
    try:
        whole = model.get_layer("global_pool").output
    except ValueError:
        raise ValueError("the view head reads the global-context branch: use global_context mean or max") from None
    view = layers.Dense(1, activation="sigmoid", dtype="float32", name=VIEW_OUTPUT)(whole)
    return keras.Model(model.inputs, [model.outputs[0], view], name=f"{model.name}_with_view")


def with_auxiliary_findings(model: keras.Model, n_findings: int) -> keras.Model:
    """A training model sharing ``model``'s weights with one more output, ``auxiliary``: the
    probabilities of ``n_findings`` other findings, read from the features the finding's head reads
    (the attended ones, beside the global context where the model has it).

    Multi-task training on labels a cohort already has: the backbone and the attention learn from
    every finding's labels, not only from the target's few positives. The saved model keeps the
    finding's output only.
    """
    if n_findings < 1:
        raise ValueError(f"with_auxiliary_findings needs at least one finding, got {n_findings}")
    names = {layer.name for layer in model.layers}
    pooled = model.get_layer("pooled" if "pooled" in names else "attention_pooling").output
    x = layers.Dropout(0.5, name="auxiliary_dropout")(pooled)
    auxiliary = layers.Dense(n_findings, activation="sigmoid", dtype="float32", name=AUXILIARY_OUTPUT)(x)
    return keras.Model(model.inputs, [*model.outputs, auxiliary], name=f"{model.name}_with_auxiliary")


def ensemble(members: Sequence[keras.Model]) -> keras.Model:
    """One model averaging ``members`` (networks of ``build_model`` for the same input): its score is
    the mean of theirs in logit space (``LogitMean``, named ``score`` as a single network's), so
    ``calibrate``, ``with_score`` and ``recalibrated`` treat it as one network. Each member is kept
    whole as ``member_<i>``, returning its score and its attention map; ``scoring_model`` averages
    the maps. One member is returned as it is."""
    members = list(members)
    if not members:
        raise ValueError("an ensemble needs at least one member")
    if len(members) == 1:
        return members[0]
    image = keras.Input(members[0].inputs[0].shape[1:], dtype=members[0].inputs[0].dtype, name="image")
    outputs = [
        keras.Model(
            member.inputs, [member.outputs[0], member.get_layer(ATTENTION_LAYER).output], name=f"{MEMBER_PREFIX}{i}"
        )(image)
        for i, member in enumerate(members)
    ]
    score = LogitMean(name=SCORE_LAYER)([s for s, _ in outputs])
    return keras.Model(image, score, name=f"{members[0].name}_ensemble")


def ensemble_members(model: keras.Model) -> list[keras.Model]:
    """The members of an ``ensemble`` (each returning ``(score, attention map)``); ``[]`` for one network."""
    return [layer for layer in model.layers if isinstance(layer, keras.Model) and layer.name.startswith(MEMBER_PREFIX)]


def scoring_model(model: keras.Model, score: bool = False, attention: bool = False) -> keras.Model:
    """A model sharing ``model``'s weights that returns its output, then the raw score (``score``) and
    the attention map (``attention``; an ensemble's is the mean of its members' maps).

    An ensemble's members are called once each on a new input, so score, probability and maps come
    from one pass."""
    members = ensemble_members(model)
    if not members:
        extra = [model.get_layer(SCORE_LAYER).output] if score else []
        extra += [model.get_layer(ATTENTION_LAYER).output] if attention else []
        return keras.Model(model.inputs, [model.outputs[0], *extra])
    image = keras.Input(model.inputs[0].shape[1:], dtype=model.inputs[0].dtype, name="image")
    pairs = [member(image) for member in members]
    raw = model.get_layer(SCORE_LAYER)([s for s, _ in pairs])
    calibration = next((layer for layer in model.layers if isinstance(layer, Calibration)), None)
    outputs = [raw if calibration is None else calibration(raw)]
    outputs += [raw] if score else []
    outputs += [layers.Average(name=ATTENTION_LAYER)([a for _, a in pairs])] if attention else []
    return keras.Model(image, outputs)


def _all_layers(model: keras.Model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def calibrate(
    model: keras.Model,
    slope: float | list[float],
    intercept: float | list[float],
    threshold: float | list[float],
    findings: Sequence[str] | None = None,
    quality_guard: dict | None = None,
) -> keras.Model:
    """``model`` with a ``Calibration`` layer on its score: the deployable classifier.

    Its output is the calibrated probability; the raw score, the attention map and the operating
    threshold stay reachable (``with_score``, ``attention_model``, ``operating_threshold``). A
    multi-label model takes one slope, intercept and threshold per finding, in ``findings``' order;
    the names are saved in the layer (``model_findings``).
    """
    names = None if findings is None or len(findings) == 1 else list(findings)
    layer = Calibration(
        slope, intercept, threshold, findings=names, quality_guard=quality_guard, name=PROBABILITY_LAYER
    )
    probability = layer(model.outputs[0])
    return keras.Model(model.inputs, probability, name=f"{model.name}_calibrated")


def recalibrated(model: keras.Model, intercept: float, slope: float) -> keras.Model:
    """A calibrated binary ``model`` whose probability ``p`` becomes ``sigmoid(intercept + slope * logit p)``
    (a new site's recalibration, ``cardio_kedro.evaluation.calibration.fit_recalibration``).

    The update folds into the ``Calibration`` layer: its Platt slope and intercept become ``slope * s`` and
    ``slope * i + intercept``; the threshold moves the same way, so every image keeps its label (the
    operating point on the score is the model's own) while the probabilities are the new site's. The
    quality guard and the weights are shared with ``model``, which is left as it was.
    """
    layer = next((layer for layer in model.layers if isinstance(layer, Calibration)), None)
    if layer is None:
        raise ValueError("recalibration updates a calibrated classifier; this model has no Calibration layer")
    if layer.findings:
        raise ValueError(f"recalibration is for a binary classifier; this one has {len(layer.findings)} findings")
    threshold = 1 / (1 + math.exp(-(intercept + slope * math.log(layer.threshold / (1 - layer.threshold)))))
    score = keras.Model(model.inputs, model.get_layer(SCORE_LAYER).output, name=model.name.removesuffix("_calibrated"))
    return calibrate(
        score,
        float(slope * layer.slope),
        float(slope * layer.intercept + intercept),
        threshold,
        quality_guard=layer.quality_guard,
    )


def operating_threshold(model: keras.Model) -> float | list[float] | None:
    """The threshold saved with a calibrated model (one per finding for a multi-label model);
    ``None`` for a model without one."""
    layer = next((layer for layer in model.layers if isinstance(layer, Calibration)), None)
    if layer is None:
        return None
    return [float(t) for t in layer.threshold] if isinstance(layer.threshold, list) else float(layer.threshold)


def model_quality_guard(model: keras.Model) -> QualityGuard | None:
    """The image check saved with a calibrated model; ``None`` for a model trained without one."""
    layer = next((layer for layer in model.layers if isinstance(layer, Calibration)), None)
    config = None if layer is None else layer.quality_guard
    return None if config is None else QualityGuard.from_config(config)


def model_findings(model: keras.Model) -> list[str] | None:
    """The findings of a calibrated multi-label model's output columns; ``None`` for a binary model."""
    layer = next((layer for layer in model.layers if isinstance(layer, Calibration)), None)
    return None if layer is None else layer.findings


def with_score(model: keras.Model) -> keras.Model:
    """A model sharing ``model``'s weights that returns ``(probability, raw score)``.

    For an uncalibrated model both are the network's output.
    """
    return scoring_model(model, score=True)
