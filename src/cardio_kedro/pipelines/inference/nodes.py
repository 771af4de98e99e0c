"""Nodes of the inference pipeline: score a folder of images with a trained classifier."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from cardio_kedro.imaging import read_any
from cardio_kedro.parallel import imap_progress
from cardio_kedro.pipelines.model_training.model import attention_model

logger = logging.getLogger(__name__)


def overlay_png(image: np.ndarray, attention: np.ndarray) -> bytes:
    """The image with its (per-image normalised) attention map blended over it, as PNG bytes."""
    size = image.shape[0]
    heat = cv2.resize(attention.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    heat = (heat - heat.min()) / max(float(heat.max() - heat.min()), 1e-6)
    colour = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
    blended = cv2.addWeighted(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), 0.6, colour, 0.4, 0)
    ok, buf = cv2.imencode(".png", blended)
    return buf.tobytes()


def score_images(images: pd.DataFrame, model_info: dict, params: dict[str, Any]) -> tuple[pd.DataFrame, dict]:
    """Probability and label for every file; unreadable files become rows with an ``error``.

    Files are decoded on every core (``workers``) and scored in batches as they arrive (memory
    stays flat); with ``heatmaps: true`` the
    attention overlay of every scored image is returned as ``{file.png: PNG bytes}``.
    """
    if images.empty:
        raise ValueError("The images folder holds no PNG, JPEG or DICOM file: nothing to score")
    model = model_info["model"]
    size = int(model.inputs[0].shape[1])
    threshold = float(model_info["threshold"])
    batch = int(params.get("batch_size", 64))
    heatmaps = bool(params.get("heatmaps", False))
    scorer = attention_model(model) if heatmaps else model
    rows, overlays = [], {}
    decoded_stream = imap_progress(
        partial(read_any, size=size),
        images["path"].tolist(),
        total=len(images),
        what="Decoding and scoring images",
        workers=params.get("workers"),
    )
    files = images["file"].tolist()
    for start in range(0, len(files), batch):
        chunk = files[start : start + batch]
        decoded = [next(decoded_stream) for _ in chunk]
        ok = [i for i, (px, _) in enumerate(decoded) if px is not None]
        probs = np.full(len(chunk), np.nan)
        if ok:
            x = np.stack([decoded[i][0] for i in ok])[..., None]
            out = scorer.predict(x, verbose=0)
            p, maps = (out[0], np.asarray(out[1])[..., 0]) if heatmaps else (out, None)
            probs[ok] = np.asarray(p).reshape(-1)
            if heatmaps:
                for j, i in enumerate(ok):
                    overlays[str(Path(chunk[i]).with_suffix(".png"))] = overlay_png(decoded[i][0], maps[j])
        for i, (file, (_, error)) in enumerate(zip(chunk, decoded)):
            scored = not error
            rows.append(
                {
                    "file": file,
                    "probability": float(probs[i]) if scored else None,
                    "label": int(probs[i] >= threshold) if scored else None,
                    "threshold": threshold,
                    "model_version": model_info["version"],
                    "error": error or None,
                }
            )
    for _ in decoded_stream:  # let the worker pool shut down cleanly
        pass
    table = pd.DataFrame(rows)
    n_err = int(table["error"].notna().sum())
    logger.info(
        "Scored %d image(s) with model %s (threshold %.3f): %d positive, %d unreadable",
        len(table) - n_err,
        model_info["version"],
        threshold,
        int((table["label"] == 1).sum()),
        n_err,
    )
    return table, overlays
