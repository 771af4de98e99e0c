"""Where the model looks: attention maps at image resolution and heat-map overlays."""

from __future__ import annotations

import cv2
import keras
import numpy as np

from .builder import scoring_model


def attention_model(model: keras.Model) -> keras.Model:
    """A model sharing ``model``'s weights that returns ``(probability, attention_map)`` (an ensemble's:
    the mean of its members' maps)."""
    return scoring_model(model, attention=True)


def upsample(maps: np.ndarray, size: int) -> np.ndarray:
    """``(n, h, w)`` attention maps resized (bilinear) to ``(n, size, size)`` float32."""
    maps = np.asarray(maps, np.float32)
    return np.stack([cv2.resize(m, (size, size), interpolation=cv2.INTER_LINEAR) for m in maps])


def predict_with_attention(model: keras.Model, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities ``(n,)`` and attention maps ``(n, size, size)`` at the image size for uint8 ``(n, size, size)``."""
    probability, maps = attention_model(model).predict(pixels[..., None], verbose=0)
    return np.asarray(probability, float).reshape(-1), upsample(np.asarray(maps)[..., 0], pixels.shape[1])


def predict_finding_maps(model: keras.Model, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A multi-label model's probabilities ``(n, K)`` and its per-finding attention maps
    ``(n, size, size, K)`` at the image size, for uint8 ``(n, size, size)``."""
    probability, maps = attention_model(model).predict(pixels[..., None], verbose=0)
    maps = np.asarray(maps, np.float32)
    size = pixels.shape[1]
    upsampled = np.stack([upsample(maps[..., j], size) for j in range(maps.shape[-1])], axis=-1)
    return np.asarray(probability, float), upsampled


def overlay(image: np.ndarray, attention: np.ndarray) -> np.ndarray:
    """The grayscale ``image`` with its attention blended over it (jet), as an RGB uint8 array.

    The map is normalised per image (its own minimum to maximum): the overlay shows where this
    model looks in this image, not how strongly compared with other images.
    """
    size = image.shape[0]
    heat = attention.astype(np.float32)
    if heat.shape != image.shape:
        heat = cv2.resize(heat, (size, size), interpolation=cv2.INTER_LINEAR)
    heat = (heat - heat.min()) / max(float(heat.max() - heat.min()), 1e-6)
    colour = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
    blended = cv2.addWeighted(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), 0.6, colour, 0.4, 0)
    return cv2.cvtColor(blended, cv2.COLOR_BGR2RGB)


def encode_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an RGB uint8 image."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"PNG encoding failed for an image of shape {rgb.shape}")
    return buf.tobytes()
