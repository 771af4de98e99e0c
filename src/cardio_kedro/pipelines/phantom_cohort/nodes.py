"""Nodes of the phantom_cohort pipeline: the offline demo cohort."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import cv2
import pandas as pd

from cardio_kedro.parallel import imap_progress
from cardio_kedro.phantoms import heart_box, render_phantom, sample_cohort

PHANTOM_COLUMNS = ["ctr", "thorax", "heart_height", "heart_offset", "apex", "diaphragm", "body"]


def _render_png(row: dict, size: int) -> bytes:
    ok, buf = cv2.imencode(".png", render_phantom(row, size), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:  # pragma: no cover - cv2 always encodes uint8 gray
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def _image_stream(drawn: pd.DataFrame, size: int, per_folder: int, workers: int | None) -> Iterator:
    rows = drawn.to_dict("records")
    pngs = imap_progress(partial(_render_png, size=size), rows, len(rows), "Rendering phantoms", workers=workers)
    for i, (row, png) in enumerate(zip(rows, pngs)):
        yield f"images_{i // per_folder + 1:03d}/images/{row['Image Index']}", png


def generate_phantom_cohort(params: dict[str, Any]) -> dict:
    """Draw a phantom cohort and return it lazily for ``CohortDataset`` to write.

    The metadata has the NIH columns (the cardiothoracic ratio is kept as ``CTR`` for reference);
    the bounding-box table holds each Cardiomegaly image's heart box in the native pixel frame.
    Images are rendered in parallel while the dataset writes them, so memory stays flat.
    """
    size = int(params.get("native_size", 1024))
    drawn = sample_cohort(
        n_patients=int(params["n_patients"]),
        prevalence=float(params["prevalence"]),
        mean_follow_ups=float(params.get("mean_follow_ups", 0.5)),
        seed=int(params.get("seed", 0)),
        ap_fraction=float(params.get("ap_fraction", 0.4)),
    )
    metadata = drawn[
        ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender", "View Position"]
    ].copy()
    metadata["OriginalImage[Width"] = size
    metadata["Height]"] = size
    metadata["OriginalImagePixelSpacing[x"] = round(0.143 * 1024 / size, 4)
    metadata["y]"] = metadata["OriginalImagePixelSpacing[x"]
    metadata["CTR"] = drawn["ctr"].round(4)
    positive = drawn["Finding Labels"].str.contains("Cardiomegaly")
    boxes = [heart_box(r, size) for r in drawn[positive].to_dict("records")]
    bboxes = pd.DataFrame(boxes, columns=["Bbox [x", "y", "w", "h]"])
    bboxes.insert(0, "Finding Label", "Cardiomegaly")
    bboxes.insert(0, "Image Index", drawn.loc[positive, "Image Index"].to_numpy())
    per_folder = int(params.get("images_per_folder", 10000))
    return {
        "metadata": metadata,
        "bboxes": bboxes.round(2),
        "images": _image_stream(drawn, size, per_folder, params.get("workers")),
    }
