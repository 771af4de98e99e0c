"""The custom layers of the attention classifier, registered for ``safe_mode`` loading.

Backend-agnostic: only ``keras`` is imported, so ``KERAS_BACKEND=jax`` or ``torch`` runs the same
layers. Importing this module registers them (``cardio_kedro>XrayPreprocess`` ...).
"""

from __future__ import annotations

import math

import keras
from keras import layers, ops

CAFFE_MEAN = (103.939, 116.779, 123.68)  # BGR means of keras.applications' "caffe" mode
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)


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
        rotation: float,
        translation: float,
        zoom: float,
        brightness: float,
        contrast: float,
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


@keras.saving.register_keras_serializable(package="cardio_kedro")
class FindingAttentionPooling(layers.Layer):
    """One attention-weighted mean of the features per map: features ``(B, h, w, C)`` and maps
    ``(B, h, w, K)`` give ``(B, K, C)``, each row ``GAP(features * map_k) / GAP(map_k)`` as in
    ``AttentionPooling`` (the multi-label model: one map per finding)."""

    def __init__(self, epsilon: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def call(self, inputs):
        features, maps = inputs
        cells = ops.cast(ops.shape(features)[1] * ops.shape(features)[2], features.dtype)
        weighted = ops.einsum("bhwc,bhwk->bkc", features, ops.cast(maps, features.dtype)) / cells
        mass = ops.mean(ops.cast(maps, features.dtype), axis=(1, 2))  # (B, K)
        return weighted / (ops.expand_dims(mass, -1) + self.epsilon)

    def compute_output_shape(self, input_shapes):
        features_shape, maps_shape = input_shapes
        return (features_shape[0], maps_shape[-1], features_shape[-1])

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="cardio_kedro")
class SpatialSoftmax(layers.Layer):
    """Softmax over the cells of each channel of a map: the cells compete, and each channel sums to 1
    per image (one channel: the binary model's map; one per finding: the multi-label model's)."""

    def call(self, inputs):
        shape = ops.shape(inputs)
        flat = ops.reshape(inputs, (shape[0], -1, shape[-1]))
        return ops.reshape(ops.softmax(ops.cast(flat, "float32"), axis=1), shape)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="cardio_kedro")
class LogitMean(layers.Layer):
    """The mean of several networks' scores in logit space: ``sigmoid(mean_i logit(p_i))`` (an
    ensemble's score; the geometric mean of the odds). Each input is ``(B, K)`` probabilities."""

    def __init__(self, epsilon: float = 1e-7, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def call(self, inputs):
        logits = []
        for score in inputs:
            p = ops.clip(ops.cast(score, "float32"), self.epsilon, 1.0 - self.epsilon)
            logits.append(ops.log(p) - ops.log1p(-p))
        return ops.sigmoid(ops.mean(ops.stack(logits, axis=0), axis=0))

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="cardio_kedro")
class Calibration(layers.Layer):
    """The raw score made a calibrated probability, with the model's operating threshold.

    ``sigmoid(slope * logit(score) + intercept)``: the prior-shift correction and Platt scaling
    fitted on validation (``cardio_kedro.evaluation.calibration``). ``threshold`` is the operating point chosen
    on that calibrated scale. Both live in the saved model, so a model and its calibration and
    threshold cannot be separated. A multi-label model has one of each per finding (lists, in the
    order of ``findings``, the names of its output columns). ``quality_guard`` holds the image
    check fitted on the training films (``cardio_kedro.cohort.quality``), saved with the rest.
    """

    def __init__(
        self,
        slope: float | list[float],
        intercept: float | list[float],
        threshold: float | list[float],
        epsilon: float = 1e-7,
        findings: list[str] | None = None,
        quality_guard: dict | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.slope, self.intercept, self.threshold, self.epsilon = slope, intercept, threshold, epsilon
        self.findings = findings
        self.quality_guard = quality_guard  # cardio_kedro.cohort.quality.QualityGuard.to_config(), or None

    def call(self, inputs):
        p = ops.clip(ops.cast(inputs, "float32"), self.epsilon, 1.0 - self.epsilon)
        slope = ops.convert_to_tensor(self.slope, "float32")
        return ops.sigmoid(slope * (ops.log(p) - ops.log1p(-p)) + ops.convert_to_tensor(self.intercept, "float32"))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "slope": self.slope,
            "intercept": self.intercept,
            "threshold": self.threshold,
            "epsilon": self.epsilon,
            "findings": self.findings,
            "quality_guard": self.quality_guard,
        }
