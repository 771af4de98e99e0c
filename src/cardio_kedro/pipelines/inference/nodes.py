"""Nodes of the inference pipeline: score a folder of images with a trained classifier."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cardio_kedro.config import InferenceParams
from cardio_kedro.imaging import try_load_gray
from cardio_kedro.modeling import attention_model, encode_png, overlay
from cardio_kedro.parallel import imap_progress

logger = logging.getLogger(__name__)


def _batches(images: pd.DataFrame, size: int, config: InferenceParams) -> Iterator[tuple[list[str], list]]:
    """``(files, decoded)`` batches; files are decoded on every core while earlier batches are scored."""
    decoded = imap_progress(
        partial(try_load_gray, size=size),
        images["path"].tolist(),
        total=len(images),
        what="Decoding and scoring images",
        workers=config.workers,
    )
    files = images["file"].tolist()
    for start in range(0, len(files), config.batch_size):
        chunk = files[start : start + config.batch_size]
        yield chunk, [next(decoded) for _ in chunk]
    for _ in decoded:  # let the worker pool shut down cleanly
        pass


def _score_batch(model, pixels: list[np.ndarray], heatmaps: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Probabilities of a batch and, with ``heatmaps``, its attention maps."""
    x = np.stack(pixels)[..., None]
    if not heatmaps:
        return np.asarray(model.predict(x, verbose=0)).reshape(-1), None
    probability, maps = attention_model(model).predict(x, verbose=0)
    return np.asarray(probability).reshape(-1), np.asarray(maps)[..., 0]


def score_images(images: pd.DataFrame, model_info: dict, params: dict[str, Any]) -> tuple[pd.DataFrame, dict]:
    """Probability and label for every file; unreadable files become rows with an ``error``.

    Files are decoded on every core and scored in batches as they arrive (memory stays flat);
    with ``heatmaps: true`` the attention overlay of every scored image is returned as
    ``{file.png: PNG bytes}``.
    """
    config = InferenceParams.model_validate(params)
    if images.empty:
        raise ValueError("The images folder holds no PNG, JPEG or DICOM file: nothing to score")
    model, threshold, version = model_info["model"], float(model_info["threshold"]), model_info["version"]
    rows, overlays = [], {}
    for files, decoded in _batches(images, int(model.inputs[0].shape[1]), config):
        ok = [i for i, (_, _, error) in enumerate(decoded) if error is None]
        probs = np.full(len(files), np.nan)
        if ok:
            probs[ok], maps = _score_batch(model, [decoded[i][0] for i in ok], config.heatmaps)
            for j, i in enumerate(ok if maps is not None else []):
                overlays[str(Path(files[i]).with_suffix(".png"))] = encode_png(overlay(decoded[i][0], maps[j]))
        for file, probability, (_, _, error) in zip(files, probs, decoded):
            scored = error is None
            rows.append(
                {
                    "file": file,
                    "probability": float(probability) if scored else None,
                    "label": int(probability >= threshold) if scored else None,
                    "threshold": threshold,
                    "model_version": version,
                    "error": str(error) if error is not None else None,
                }
            )
    table = pd.DataFrame(rows)
    n_err = int(table["error"].notna().sum())
    logger.info(
        "Scored %d image(s) with model %s (threshold %.3f): %d positive, %d unreadable",
        len(table) - n_err,
        version,
        threshold,
        int((table["label"] == 1).sum()),
        n_err,
    )
    return table, overlays
