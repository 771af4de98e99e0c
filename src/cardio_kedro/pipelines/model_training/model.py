"""The attention classifier: grayscale uint8 X-ray -> backbone -> attention-weighted pooling -> probability.

Backend-agnostic: only ``keras`` is imported, so ``KERAS_BACKEND=jax`` or ``torch`` builds and trains
the same model. The saved model takes raw pixels: scaling, augmentation (training only) and the
backbone's own preprocessing are layers of the model.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import keras
from keras import layers, ops

ATTENTION_LAYER = "attention_map"
BACKBONE_PREPROCESSING = {
    "vgg16": "caffe",
    "densenet121": "torch",
    "efficientnetb0": "raw",
    "mobilenetv3small": "raw",
}
CAFFE_MEAN = (103.939, 116.779, 123.68)  # BGR means of keras.applications' "caffe" mode
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)
VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


@keras.saving.register_keras_serializable(package="cardio_kedro")
class XrayPreprocess(layers.Layer):
    """uint8 grayscale -> 3-channel float in the range the backbone was trained on.

    ``mode``: ``caffe`` (VGG: minus the BGR ImageNet mean), ``torch`` (DenseNet: [0, 1] then
    standardised), ``raw`` (EfficientNet/MobileNetV3 rescale internally: [0, 255]).
    """

    def __init__(self, mode: str = "caffe", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("caffe", "torch", "raw"):
            raise ValueError(f"unknown preprocessing mode '{mode}'")
        self.mode = mode

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        x = ops.concatenate([x, x, x], axis=-1)
        if self.mode == "caffe":
            return x - ops.convert_to_tensor(CAFFE_MEAN, dtype=self.compute_dtype)
        if self.mode == "torch":
            mean = ops.convert_to_tensor(TORCH_MEAN, dtype=self.compute_dtype)
            std = ops.convert_to_tensor(TORCH_STD, dtype=self.compute_dtype)
            return (x / 255.0 - mean) / std
        return x

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 3)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="cardio_kedro")
class XrayAugment(layers.Layer):
    """Jit-safe training augmentation: one random affine per image plus brightness and contrast.

    Rotation (degrees), translation (fraction of the side) and zoom (fraction) are drawn per image
    and applied with ``keras.ops.image.affine_transform``; no horizontal flip, since the heart's
    side matters. Unlike ``RandomRotation``/``RandomTranslation``/``RandomZoom`` this layer keeps
    XLA compilation on. Identity outside training.
    """

    def __init__(
        self,
        rotation: float = 5.0,
        translation: float = 0.05,
        zoom: float = 0.05,
        brightness: float = 0.1,
        contrast: float = 0.1,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.rotation, self.translation, self.zoom = rotation, translation, zoom
        self.brightness, self.contrast, self.seed = brightness, contrast, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training:
            return inputs
        x = ops.cast(inputs, "float32")
        batch = ops.shape(x)[0]
        height, width = ops.shape(x)[1], ops.shape(x)[2]

        def draw(limit):
            return keras.random.uniform((batch,), -limit, limit, seed=self.seed_generator)

        angle = draw(self.rotation * math.pi / 180.0)
        scale = 1.0 + draw(self.zoom)
        h, w = ops.cast(height, "float32"), ops.cast(width, "float32")
        tx, ty = draw(self.translation) * w, draw(self.translation) * h
        cos, sin = ops.cos(angle) / scale, ops.sin(angle) / scale
        cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
        transform = ops.stack(
            [
                cos,
                -sin,
                cx - cos * cx + sin * cy + tx,
                sin,
                cos,
                cy - sin * cx - cos * cy + ty,
                ops.zeros_like(cos),
                ops.zeros_like(cos),
            ],
            axis=1,
        )
        x = ops.image.affine_transform(x, transform, interpolation="bilinear", fill_mode="nearest")
        gain = ops.reshape(1.0 + draw(self.contrast), (-1, 1, 1, 1))
        shift = ops.reshape(draw(self.brightness) * 255.0, (-1, 1, 1, 1))
        mean = ops.mean(x, axis=(1, 2, 3), keepdims=True)
        x = ops.clip((x - mean) * gain + mean + shift, 0.0, 255.0)
        return ops.cast(x, inputs.dtype) if inputs.dtype == "uint8" else x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "rotation": self.rotation,
            "translation": self.translation,
            "zoom": self.zoom,
            "brightness": self.brightness,
            "contrast": self.contrast,
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package="cardio_kedro")
class AttentionPooling(layers.Layer):
    """``GAP(features * mask) / GAP(mask)``: the attention-weighted mean of the features.

    Dividing by the mask's mean undoes its scaling, so the head sees feature averages over the
    attended region whatever the mask's total mass.
    """

    def __init__(self, epsilon: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def call(self, inputs):
        features, mask = inputs
        weighted = ops.mean(features * mask, axis=(1, 2))
        mass = ops.mean(mask, axis=(1, 2))
        return weighted / (mass + self.epsilon)

    def compute_output_shape(self, input_shapes):
        features_shape, _ = input_shapes
        return (features_shape[0], features_shape[-1])

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


def _vgg16(inputs, width: float, batchnorm: bool = False):
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


def build_backbone(
    name: str, image_size: int, weights: str | None, width: float = 1.0, batchnorm: bool = False
) -> keras.Model:
    """A headless backbone on ``image_size`` x ``image_size`` x 3 input.

    ``weights``: ``"imagenet"`` (downloaded by Keras), ``None`` (random init) or a path to a local
    weights file of the headless backbone (e.g. ``vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5``).
    """
    shape = (image_size, image_size, 3)
    if name not in BACKBONE_PREPROCESSING:
        raise ValueError(f"backbone '{name}' is not supported; use one of {sorted(BACKBONE_PREPROCESSING)}")
    if (width != 1.0 or batchnorm) and (name != "vgg16" or weights == "imagenet"):
        raise ValueError("backbone_width other than 1 and backbone_batchnorm are for vgg16 without imagenet weights")
    local = weights if weights not in (None, "imagenet") else None
    if local is not None and not Path(local).is_file():
        raise FileNotFoundError(f"backbone_weights file '{local}' does not exist")
    if name == "vgg16" and (width != 1.0 or batchnorm):
        model = _vgg16(keras.Input(shape), width, batchnorm)
    else:
        builders = {
            "vgg16": keras.applications.VGG16,
            "densenet121": keras.applications.DenseNet121,
            "efficientnetb0": keras.applications.EfficientNetB0,
            "mobilenetv3small": keras.applications.MobileNetV3Small,
        }
        kwargs: dict[str, Any] = {"include_top": False, "input_shape": shape}
        if name == "mobilenetv3small":
            kwargs["include_preprocessing"] = True
        try:
            model = builders[name](weights="imagenet" if weights == "imagenet" else None, **kwargs)
        except Exception as exc:
            if weights != "imagenet":
                raise
            raise RuntimeError(
                f"Could not fetch the ImageNet weights of {name} ({type(exc).__name__}: {exc}). Without "
                f"network access set backbone_weights to a local weights file of the headless {name} "
                f"or to null (random initialisation)."
            ) from exc
    if local is not None:
        model.load_weights(local)
    return model


def build_model(image_size: int, params: dict[str, Any]) -> keras.Model:
    """Build the attention classifier from the ``model`` parameters.

    Keys: ``backbone``, ``backbone_weights``, ``backbone_width``, ``backbone_batchnorm`` (VGG16-BN for
    training from scratch), ``attention_units`` (1x1 conv
    widths, the last is the 1-channel map), ``attention_activation``, ``dense_units``, ``dropout``,
    ``augmentation`` (a dict for ``XrayAugment`` or null), ``seed``.
    """
    name = params.get("backbone", "vgg16")
    units = list(params.get("attention_units", [128, 32, 16, 1]))
    if units[-1] != 1:
        raise ValueError(f"attention_units must end with 1 (the attention map), got {units}")
    inputs = keras.Input((image_size, image_size, 1), dtype="uint8", name="image")
    x = inputs
    augmentation = params.get("augmentation")
    if augmentation:
        x = XrayAugment(**augmentation, seed=params.get("seed"), name="augment")(x)
    x = XrayPreprocess(BACKBONE_PREPROCESSING[name], name="preprocess")(x)
    backbone = build_backbone(
        name,
        image_size,
        params.get("backbone_weights"),
        float(params.get("backbone_width", 1.0)),
        bool(params.get("backbone_batchnorm", False)),
    )
    backbone.name = "backbone"
    features = backbone(x)
    features = layers.BatchNormalization(name="feature_norm")(features)
    a = features
    for i, n in enumerate(units[:-1]):
        a = layers.Conv2D(
            n, 1, padding="same", activation=params.get("attention_activation", "elu"), name=f"attention_conv{i + 1}"
        )(a)
    mask = layers.Conv2D(1, 1, padding="same", activation="sigmoid", name=ATTENTION_LAYER)(a)
    pooled = AttentionPooling(name="attention_pooling")([features, mask])
    dropout = float(params.get("dropout", 0.5))
    x = layers.Dropout(dropout, name="dropout1")(pooled)
    x = layers.Dense(int(params.get("dense_units", 128)), activation="relu", name="dense")(x)
    x = layers.Dropout(dropout, name="dropout2")(x)
    outputs = layers.Dense(1, activation="sigmoid", dtype="float32", name="probability")(x)
    return keras.Model(inputs, outputs, name=f"{name}_attention")


def attention_model(model: keras.Model) -> keras.Model:
    """A model sharing ``model``'s weights that returns ``(probability, attention_map)``."""
    return keras.Model(model.inputs, [model.outputs[0], model.get_layer(ATTENTION_LAYER).output])
