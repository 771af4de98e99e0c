"""Loading a saved classifier: the one place that registers the custom layers first."""

from __future__ import annotations

from pathlib import Path

import keras

from . import layers  # noqa: F401 - registers the custom layers for safe_mode loading


def load_model(path: str | Path) -> keras.Model:
    """Load a ``.keras`` classifier with ``safe_mode=True`` (only registered layers, no lambdas).

    Not compiled: a loaded classifier is for scoring, calibration and reporting, and its training
    loss and metrics (per-finding weights, per-finding AUCs) are not rebuilt; train a new one with
    the training pipeline."""
    return keras.saving.load_model(str(path), safe_mode=True, compile=False)
