"""A guard against images that are not frontal chest radiographs, checked before a model scores them.

Every frontal chest film has the same layout: a bright mediastinum and spine down the middle, dark
lungs either side, the diaphragm and abdomen bright below. The guard keeps the mean of the training
films' standardised 32 px images (the **template**) and scores an image by its correlation with it
(the images standardised to mean 0 and sd 1: a Pearson correlation of the pixels). A frontal film
correlates highly; an inverted one (bone dark) correlates as highly but negatively; a film rotated
by 90, 180 or 270 degrees correlates better with the template rotated the same way; a photograph,
a drawing, text or noise correlates with none of them. The threshold is the ``quantile`` of
held-out training films' correlations (1%: about 1 film in 100 flagged), at most ``max_threshold``,
stored with the model,
beside simpler checks: ``too_small`` (the source's shorter side below ``min_side`` px), ``blank``
(grey-level sd below ``blank_std``) and ``saturated`` (more than ``saturated_share`` of the pixels at
0 or 255). A lateral film has no template of its own here (the cohorts hold none): it reads as
``not_frontal_cxr``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd

OK = "ok"
LATERAL = "lateral"
# View positions that name a lateral film: DICOM's ViewPosition LL and RL, and the LATERAL the cohort
# layouts give CheXpert's, MIMIC-CXR's and PadChest's laterals (cardio_kedro.cohort.layouts).
LATERAL_VIEWS = frozenset({"LL", "RL", "LATERAL", "LAT"})
REASONS = ("not_frontal_cxr", "lateral", "inverted", "rotated", "blank", "saturated", "too_small")
GUARD_SIZE = 32  # px of the template
SATURATED_LEVELS = (1, 254)  # grey levels at or beyond which a pixel counts as saturated


def standardized(image: np.ndarray) -> np.ndarray:
    """A grey image at ``GUARD_SIZE`` px with mean 0 and sd 1 (all zeros for a flat image)."""
    small = image if image.shape == (GUARD_SIZE, GUARD_SIZE) else cv2.resize(
        np.ascontiguousarray(image), (GUARD_SIZE, GUARD_SIZE), interpolation=cv2.INTER_AREA
    )  # fmt: skip
    small = small.astype(np.float64)
    sd = small.std()
    return (small - small.mean()) / sd if sd > 0 else np.zeros_like(small)


def correlations(image: np.ndarray, template: np.ndarray) -> dict[str, float]:
    """The image's correlation with the template upright and with it rotated by 90, 180 and 270 degrees."""
    z = standardized(image)
    return {
        "upright": float((z * template).mean()),
        "rotated": max(float((z * np.rot90(template, k)).mean()) for k in (1, 2, 3)),
    }


@dataclass(frozen=True)
class QualityGuard:
    """The template and thresholds saved with a model (``to_config``/``from_config``)."""

    template: np.ndarray
    min_correlation: float
    min_side: int
    blank_std: float
    saturated_share: float

    def check(self, image: np.ndarray, source_shape: tuple[int, int] | None = None) -> str:
        """``ok``, or the first reason the image fails (``source_shape``: its size before resizing, if known)."""
        problem = self._image_problem(image, source_shape)
        if problem:
            return problem
        c = correlations(image, self.template)
        if c["upright"] >= self.min_correlation and c["upright"] >= c["rotated"]:
            return OK
        if -c["upright"] >= self.min_correlation:
            return "inverted"
        if c["rotated"] >= self.min_correlation and c["rotated"] > c["upright"]:
            return "rotated"
        return "not_frontal_cxr"

    def _image_problem(self, image: np.ndarray, source_shape: tuple[int, int] | None) -> str:
        """``too_small``, ``blank`` or ``saturated``, or ``""``."""
        if source_shape is not None and min(source_shape) < self.min_side:
            return "too_small"
        if float(image.std()) < self.blank_std:
            return "blank"
        low, high = SATURATED_LEVELS
        if float(np.mean((image <= low) | (image >= high))) > self.saturated_share:
            return "saturated"
        return ""

    def to_config(self) -> dict:
        return {
            "template": np.round(self.template, 4).tolist(),
            "min_correlation": float(self.min_correlation),
            "min_side": int(self.min_side),
            "blank_std": float(self.blank_std),
            "saturated_share": float(self.saturated_share),
        }

    @classmethod
    def from_config(cls, config: dict) -> QualityGuard:
        return cls(**{**config, "template": np.asarray(config["template"], np.float64)})


def view_problem(view: str | None) -> str | None:
    """``lateral`` when the film's own view position (a DICOM header, a data set's view column) says it is
    a lateral one, else ``None``: a lateral film is not what the model reads, whatever its pixels."""
    return LATERAL if view is not None and str(view).strip().upper() in LATERAL_VIEWS else None


def fit_quality_guard(
    train_images: np.ndarray,
    held_out_images: np.ndarray,
    quantile: float,
    max_threshold: float,
    min_side: int,
    blank_std: float,
    saturated_share: float,
) -> tuple[QualityGuard, dict]:
    """The template from ``train_images``, the correlation threshold at ``quantile`` of the held-out
    images' correlations, at most ``max_threshold``: training films far more alike than real ones
    (phantoms) would otherwise set it so high that their own variants (another finding drawn) fail.
    Returns the guard and what it flags among the held-out images."""
    mean = np.mean([standardized(img) for img in train_images], axis=0)
    template = (mean - mean.mean()) / mean.std()
    held = np.array([correlations(img, template)["upright"] for img in held_out_images])
    threshold = min(float(np.quantile(held, quantile)), max_threshold)
    guard = QualityGuard(template, threshold, min_side, blank_std, saturated_share)
    flags = [guard.check(img) for img in held_out_images]
    report = {
        "n_train": int(len(train_images)),
        "n_held_out": int(len(held_out_images)),
        "held_out_correlation": {q: float(np.quantile(held, q)) for q in (0.01, 0.05, 0.5)},
        "held_out_flag_rate": float(np.mean([f != OK for f in flags])),
        "held_out_flags": {r: int(sum(f == r for f in flags)) for r in REASONS if r in flags},
    }
    return guard, report


UNCHECKED = "unchecked"  # the verdict on an image scored by a model without a quality guard
PASSING = (OK, UNCHECKED)  # the verdicts of an image that gets a label


def verdict(
    guard: QualityGuard | None, image: np.ndarray, source_shape: tuple[int, int] | None, view: str | None
) -> str:
    """The quality verdict on one image: a film the model is not for by its own view (layout metadata, DICOM
    header), else the guard on its pixels; ``unchecked`` when the model has no guard."""
    return view_problem(view) or (guard.check(image, source_shape) if guard is not None else UNCHECKED)


def passing(quality: pd.Series) -> pd.Series:
    """Which verdicts of a predictions table let the image be labelled (``ok`` or ``unchecked``)."""
    return quality.isin(PASSING)
