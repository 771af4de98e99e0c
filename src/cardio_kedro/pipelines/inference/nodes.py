"""Nodes of the inference pipeline: score a folder of images with a trained classifier."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cardio_kedro.cohort.imaging import is_dicom_path, read_header
from cardio_kedro.cohort.quality import PASSING, passing, verdict
from cardio_kedro.cohort.storage import image_loader, is_remote
from cardio_kedro.common.errors import UserValueError
from cardio_kedro.common.parallel import imap_progress
from cardio_kedro.config import InferenceParams, as_params
from cardio_kedro.modeling import (
    encode_png,
    model_findings,
    model_quality_guard,
    overlay,
    scoring_model,
)

logger = logging.getLogger(__name__)


def _batches(
    images: pd.DataFrame, size: int, config: InferenceParams, storage_options: dict[str, Any] | None = None
) -> Iterator[tuple[list[str], list]]:
    """``(files, decoded)`` batches; files are decoded on every core while earlier batches are scored.
    Objects of a store (``s3://...``) are read once each with ``storage_options``."""
    paths = images["path"].tolist()
    decoded = imap_progress(
        image_loader(paths, size, storage_options),
        paths,
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


def _score_batch(scorer, pixels: list[np.ndarray], heatmaps: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Calibrated probabilities and raw scores ``(n, K)`` (K = 1 for a binary model) and, with
    ``heatmaps``, attention maps ``(n, h, w, K)`` of a batch."""
    out = scorer.predict_on_batch(np.stack(pixels)[..., None])  # predict() would rebuild its data pipeline per call
    probability = np.asarray(out[0], float)
    k = probability.shape[-1]
    maps = np.asarray(out[2]) if heatmaps else None
    return probability.reshape(-1, k), np.asarray(out[1], float).reshape(-1, k), maps


def _scorer(model, heatmaps: bool):
    """One model returning ``(probability, score[, attention map])``, sharing ``model``'s weights."""
    return scoring_model(model, score=True, attention=heatmaps)


def overlay_names(files: list[str]) -> dict[str, str]:
    """The overlay PNG name of each file: ``a.jpg`` -> ``a.png``, unless another file of the same folder
    would get the same name (``a.jpg`` and ``a.png``): then each keeps its full name, ``a.jpg.png``."""
    default = {file: str(Path(file).with_suffix(".png")) for file in files}
    counts = Counter(default.values())
    return {file: name if counts[name] == 1 else f"{file}.png" for file, name in default.items()}


def _threshold(model_info: dict, config: InferenceParams) -> float | list[float]:
    """The threshold saved with the model (one per finding for a multi-label model), or the explicit
    ``inference.threshold`` (then for every finding); never another model's."""
    if config.threshold is not None:
        if model_info["threshold"] is not None:
            logger.warning(
                "inference.threshold %.3f replaces the threshold(s) %s saved with model %s",
                config.threshold,
                model_info["threshold"],
                model_info["version"],
            )
        return config.threshold
    if model_info["threshold"] is None:
        raise UserValueError(
            f"Model {model_info['version']} ({model_info['source']}) has no threshold of its own: it is not a "
            "calibrated classifier (the training pipeline's calibrate_classifier node saves one). Score it with an "
            "explicit threshold, --params=inference.threshold=<probability>, or use a calibrated model."
        )
    return model_info["threshold"]


def dicom_view(path: str) -> str | None:
    """The ViewPosition of a local DICOM file (``None`` for other files, and for objects of a store)."""
    if is_remote(path) or not is_dicom_path(path):
        return None
    return read_header(path)["ViewPosition"] or None


def _row(
    file: str, probability: np.ndarray, score: np.ndarray, thresholds: np.ndarray, findings, error, quality: str | None,
    score_flagged: bool,
) -> dict:  # fmt: skip
    """One output row: the binary model's columns, or a probability, label, threshold and score per finding.
    A flagged image (``quality`` not ``ok``) gets no label, and its probability only with ``score_flagged``."""
    labelled = error is None and quality in PASSING
    scored = error is None and (labelled or score_flagged)
    if not findings:
        columns = {
            "probability": float(probability[0]) if scored else None,
            "label": int(probability[0] >= thresholds[0]) if labelled else None,
            "threshold": float(thresholds[0]),
            "score": float(score[0]) if scored else None,
        }
    else:
        columns = {}
        for j, finding in enumerate(findings):
            columns[f"probability.{finding}"] = float(probability[j]) if scored else None
            columns[f"label.{finding}"] = int(probability[j] >= thresholds[j]) if labelled else None
        for j, finding in enumerate(findings):
            columns[f"threshold.{finding}"] = float(thresholds[j])
            columns[f"score.{finding}"] = float(score[j]) if scored else None
    return {"file": file, **columns, "quality": quality, "error": str(error) if error is not None else None}


def score_images(
    images: pd.DataFrame, model_info: dict, params: dict[str, Any], storage_options: dict[str, Any]
) -> tuple[pd.DataFrame, dict]:
    """Calibrated probability, label and raw score for every file; unreadable files become rows with an ``error``.

    The label uses the threshold saved with the model (or an explicit ``inference.threshold``).
    Each image is checked by the model's quality guard first (``quality``: ``ok`` or the reason, such
    as ``rotated`` or ``not_frontal_cxr``; ``lateral`` for a DICOM whose ViewPosition is LL or RL); a
    flagged image gets no label, and its probability only with ``inference.score_flagged``.
    Files are decoded on every core and scored in batches as they arrive (memory stays flat);
    with ``heatmaps: true`` the attention overlay of every scored image is returned as
    ``{file.png: PNG bytes}``. ``storage_options`` (``inference_storage``) open images in object storage.
    A multi-label model gives ``probability.<finding>``, ``label.<finding>`` (at that finding's own
    threshold), ``threshold.<finding>`` and ``score.<finding>`` columns, and one overlay per finding,
    ``file.<finding>.png``.
    """
    config = as_params(InferenceParams, params)
    if images.empty:
        raise UserValueError("The images folder holds no PNG, JPEG or DICOM file: nothing to score")
    model, version = model_info["model"], model_info["version"]
    findings = model_findings(model)
    k = len(findings) if findings else 1
    thresholds = np.broadcast_to(np.asarray(_threshold(model_info, config), float), (k,))
    scorer, rows, overlays = _scorer(model, config.heatmaps), [], {}
    guard = model_quality_guard(model)
    if guard is None:
        logger.warning("Model %s has no quality guard (trained before it): images are scored unchecked", version)
    names = overlay_names(images["file"].tolist())
    paths = dict(zip(images["file"], images["path"]))
    for files, decoded in _batches(images, int(model.inputs[0].shape[1]), config, storage_options):
        ok = [i for i, (_, _, error) in enumerate(decoded) if error is None]
        probs, scores = np.full((len(files), k), np.nan), np.full((len(files), k), np.nan)
        if ok:
            probs[ok], scores[ok], maps = _score_batch(scorer, [decoded[i][0] for i in ok], config.heatmaps)
            for j, i in enumerate(ok if maps is not None else []):
                for c in range(k):
                    name = names[files[i]] if not findings else names[files[i]][:-4] + f".{findings[c]}.png"
                    overlays[name] = encode_png(overlay(decoded[i][0], maps[j][..., c]))
        for file, probability, score, (pixels, shape, error) in zip(files, probs, scores, decoded):
            if error is not None:
                quality = None
            else:  # a lateral DICOM by its header, else the guard's verdict on the pixels
                quality = verdict(guard, pixels, shape, dicom_view(paths[file]))
            row = _row(file, probability, score, thresholds, findings, error, quality, config.score_flagged)
            rows.append({**row, "model_version": version})
    table = pd.DataFrame(rows)
    labels = [c for c in table.columns if c == "label" or c.startswith("label.")]
    table = table.astype(dict.fromkeys(labels, "Int64"))  # 0/1, empty for unreadable files
    table = table[[c for c in table.columns if c not in ("model_version", "error")] + ["model_version", "error"]]
    n_err = int(table["error"].notna().sum())
    flagged = table["quality"].dropna()
    flagged = flagged[~passing(flagged)].value_counts()
    logger.info(
        "Scored %d image(s) with model %s (threshold %s): %s positive, %d unreadable, %d flagged by the quality "
        "guard%s",
        len(table) - n_err,
        version,
        ", ".join(f"{t:.3f}" for t in thresholds),
        ", ".join(str(int((table[c] == 1).sum())) for c in labels),
        n_err,
        int(flagged.sum()),
        f" ({', '.join(f'{k} {v}' for k, v in flagged.items())}; no label)" if len(flagged) else "",
    )
    return table, overlays
