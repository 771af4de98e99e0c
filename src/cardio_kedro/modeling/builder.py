"""The attention classifier: grayscale uint8 X-ray -> backbone -> attention-weighted pooling -> probability.

One builder, ``build_model``. The saved model takes raw pixels: scaling, augmentation (training
only) and the backbone's own preprocessing are layers of the model. Only ``keras`` is imported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
from keras import layers

from .layers import AttentionPooling, XrayAugment, XrayPreprocess

ATTENTION_LAYER = "attention_map"
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


def build_model(
    image_size: int,
    *,
    backbone: str,
    backbone_weights: str | None,
    backbone_width: float,
    backbone_batchnorm: bool,
    attention_units: Sequence[int],
    attention_activation: str,
    dense_units: int,
    dropout: float,
    augmentation: Mapping[str, float] | None,
) -> keras.Model:
    """Build the attention classifier.

    ``attention_units`` are the widths of the 1x1 convolutions from the backbone features down to
    the attention map (the last must be 1); ``augmentation`` is the keyword arguments of
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
    features_model = build_backbone(backbone, image_size, backbone_weights, backbone_width, backbone_batchnorm)
    features_model.name = "backbone"
    features = layers.BatchNormalization(name="feature_norm")(features_model(x))
    a = features
    for i, n in enumerate(units[:-1]):
        a = layers.Conv2D(n, 1, padding="same", activation=attention_activation, name=f"attention_conv{i + 1}")(a)
    mask = layers.Conv2D(1, 1, padding="same", activation="sigmoid", name=ATTENTION_LAYER)(a)
    pooled = AttentionPooling(name="attention_pooling")([features, mask])
    x = layers.Dropout(dropout, name="dropout1")(pooled)
    x = layers.Dense(dense_units, activation="relu", name="dense")(x)
    x = layers.Dropout(dropout, name="dropout2")(x)
    outputs = layers.Dense(1, activation="sigmoid", dtype="float32", name="probability")(x)
    return keras.Model(inputs, outputs, name=f"{backbone}_attention")
