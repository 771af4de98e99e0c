"""The reference model every report compares the network with: logistic regression on pixels."""

from __future__ import annotations

import cv2
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def pixel_features(images: np.ndarray, size: int) -> np.ndarray:
    """``(N, size * size)`` downsampled pixels (area interpolation) of ``(N, H, W)`` grey images."""
    return np.stack([cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA) for img in images]).reshape(
        len(images), -1
    )


def fit_pixel_baseline(images: np.ndarray, y: np.ndarray, size: int, regularization: float):
    """Logistic regression on standardised ``size`` px pixels; ``predict_proba`` scores new images' features."""
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=regularization, max_iter=2000))
    return reference.fit(pixel_features(images, size), np.asarray(y))


def pixel_baseline_probability(
    train_images: np.ndarray, y: np.ndarray, test_images: np.ndarray, size: int, regularization: float
) -> np.ndarray:
    """The baseline fitted on ``train_images`` and its probability for each of ``test_images``."""
    reference = fit_pixel_baseline(train_images, y, size, regularization)
    return reference.predict_proba(pixel_features(test_images, size))[:, 1]
