"""Nodes of the phantom_cohort pipeline: the offline demo cohort."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import cv2
import pandas as pd

from cardio_kedro.cohort.nih import REQUIRED_LABEL_COLUMNS
from cardio_kedro.cohort.phantoms import finding_box, render_phantom, sample_cohort
from cardio_kedro.common.parallel import imap_progress
from cardio_kedro.config import PhantomParams, as_params


def _render_png(row: dict, size: int) -> bytes:
    ok, buf = cv2.imencode(".png", render_phantom(row, size), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise RuntimeError(f"PNG encoding of phantom {row['Image Index']} failed")
    return buf.tobytes()


def _image_stream(drawn: pd.DataFrame, config: PhantomParams) -> Iterator[tuple[str, bytes]]:
    rows = drawn.to_dict("records")
    render = partial(_render_png, size=config.native_size)
    pngs = imap_progress(render, rows, len(rows), "Rendering phantoms", workers=config.workers)
    for i, (row, png) in enumerate(zip(rows, pngs)):
        yield f"images_{i // config.images_per_folder + 1:03d}/images/{row['Image Index']}", png


def _label_table(drawn: pd.DataFrame, size: int) -> pd.DataFrame:
    """The NIH columns (``OriginalImage[Width,Height]`` written as two header cells, as NIH does) plus ``CTR``
    and ``Reader P`` (the probability that a reader calls Cardiomegaly: the true calibrated probability)."""
    labels = drawn[list(REQUIRED_LABEL_COLUMNS)].copy()
    labels["OriginalImage[Width"] = size
    labels["Height]"] = size
    labels["OriginalImagePixelSpacing[x"] = round(0.143 * 1024 / size, 4)
    labels["y]"] = labels["OriginalImagePixelSpacing[x"]
    labels["CTR"] = drawn["ctr"].round(4)  # the drawn cardiothoracic ratio, for reference
    labels["Reader P"] = drawn["p_cardiomegaly"].round(4)
    return labels


def _box_list(drawn: pd.DataFrame, size: int, findings: list[str]) -> pd.DataFrame:
    """The box of every drawn finding on every image labelled with it (the heart's for Cardiomegaly),
    in the native pixel frame, in NIH's box-list layout."""
    frames = []
    for finding in findings:
        positive = drawn["Finding Labels"].str.split("|").apply(lambda labels, f=finding: f in labels)
        rows = drawn[positive]
        boxes = pd.DataFrame(
            [finding_box(r, finding, size) for r in rows.to_dict("records")], columns=["Bbox [x", "y", "w", "h]"]
        )
        boxes.insert(0, "Finding Label", finding)
        boxes.insert(0, "Image Index", rows["Image Index"].to_numpy())
        frames.append(boxes)
    return pd.concat(frames, ignore_index=True).round(2)


def generate_phantom_cohort(params: dict[str, Any]) -> tuple[Iterator[tuple[str, bytes]], pd.DataFrame, pd.DataFrame]:
    """Draw a phantom cohort: its images, its box list and its label table.

    The images come as a lazy stream that is rendered on every core while the dataset writes
    it, so memory stays flat. The label table is saved last: a cohort whose generation failed
    has no label table and counts as missing.
    """
    config = as_params(PhantomParams, params)
    drawn = sample_cohort(
        n_patients=config.n_patients,
        prevalence=config.prevalence,
        mean_follow_ups=config.mean_follow_ups,
        seed=config.seed,
        ap_fraction=config.ap_fraction,
        reader_sd=config.reader_sd,
        ctr_spread=config.ctr_spread,
        drawn_findings=config.drawn_findings,
    )
    size = config.native_size
    return _image_stream(drawn, config), _box_list(drawn, size, config.drawn_findings), _label_table(drawn, size)
