"""The image-quality guard on real films and real negatives.

Fitted as training fits it (template from training films, threshold from held-out ones) on the real
NIH cohort of ../shared (1,170 films); judged on other held-out films (target: at most 2% flagged)
and on what is not a frontal film (target: at least 95% flagged): those films inverted, rotated by
90, 180 and 270 degrees, and images that are not radiographs at all (photographs and drawings that
matplotlib and scikit-learn ship, an MRI slice, rendered text, noise), besides blank, saturated and
too-small images.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from cardio_kedro.cohort.imaging import load_gray
from cardio_kedro.cohort.quality import OK, QualityGuard, fit_quality_guard
from tests.helpers import PROJECT_ROOT as ROOT

SIZE = 64  # px the demo model sees
MAX_FLAGGED_FILMS = 0.02
MIN_FLAGGED_BAD = 0.95
GUARD = dict(quantile=0.01, max_threshold=0.35, min_side=32, blank_std=2.0, saturated_share=0.5)


@pytest.fixture(scope="module")
def films(shared_nih) -> np.ndarray:
    paths = sorted((shared_nih / "sample").glob("images_*/images/*.png")) + sorted(
        (shared_nih / "thumbs" / "images").glob("*.png")
    )
    return np.stack([load_gray(p, SIZE)[0] for p in paths])


@pytest.fixture(scope="module")
def fitted(films):
    """Template on 60% of the films, threshold on 20%, judged on the last 20% (never seen by either)."""
    order = np.random.default_rng(0).permutation(len(films))
    train, held, test = np.split(order, [int(0.6 * len(films)), int(0.8 * len(films))])
    guard, report = fit_quality_guard(films[train], films[held], **GUARD)
    return guard, report, films[test]


def _non_radiographs(rng) -> list[np.ndarray]:
    """benchmarks/quality_guard.py's photographs, drawings, MRI, text and noise (one list for both)."""
    spec = importlib.util.spec_from_file_location("quality_guard", ROOT / "benchmarks" / "quality_guard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.non_radiographs(rng, SIZE)


def _flag_rate(guard: QualityGuard, images, shape=None) -> float:
    return float(np.mean([guard.check(img, shape) != OK for img in images]))


def test_real_frontal_films_pass_and_what_is_not_one_is_flagged(fitted):
    guard, report, test = fitted
    assert report["held_out_flag_rate"] <= MAX_FLAGGED_FILMS
    assert _flag_rate(guard, test) <= MAX_FLAGGED_FILMS
    inverted = [255 - img for img in test]
    assert _flag_rate(guard, inverted) >= MIN_FLAGGED_BAD
    assert np.mean([guard.check(img) == "inverted" for img in inverted]) >= MIN_FLAGGED_BAD
    for k in (1, 2, 3):
        rotated = [np.ascontiguousarray(np.rot90(img, k)) for img in test]
        assert np.mean([guard.check(img) == "rotated" for img in rotated]) >= MIN_FLAGGED_BAD, f"{90 * k} degrees"
    others = _non_radiographs(np.random.default_rng(1))
    assert len(others) >= 150 and _flag_rate(guard, others) >= MIN_FLAGGED_BAD


def test_blank_saturated_and_too_small_images_say_so(fitted):
    guard, _, test = fitted
    assert guard.check(np.full((SIZE, SIZE), 128, np.uint8)) == "blank"
    noisy_flat = np.clip(128 + np.random.default_rng(0).normal(0, 1, (SIZE, SIZE)), 0, 255).astype(np.uint8)
    assert guard.check(noisy_flat) == "blank"
    burnt = test[0].copy()
    burnt[:, : int(0.7 * SIZE)] = 255
    assert guard.check(burnt) == "saturated"
    assert guard.check(test[0], source_shape=(24, 24)) == "too_small"
    assert guard.check(test[0], source_shape=(1024, 1024)) == OK or guard.check(test[1], (1024, 1024)) == OK


def test_the_guard_survives_its_config(fitted):
    guard, _, test = fitted
    again = QualityGuard.from_config(guard.to_config())
    assert [again.check(img) for img in test[:50]] == [guard.check(img) for img in test[:50]]


@pytest.mark.parametrize(
    ("view", "expected"),
    [
        ("LL", "lateral"),
        ("rl", "lateral"),
        (" LATERAL ", "lateral"),
        ("PA", None),
        ("AP", None),
        ("", None),
        (None, None),
    ],  # fmt: skip
)
def test_a_film_whose_own_view_says_lateral_is_flagged(view, expected):
    """DICOM's ViewPosition (LL, RL) and the layouts' LATERAL name a lateral film; frontal views and none do not."""
    from cardio_kedro.cohort.quality import view_problem

    assert view_problem(view) == expected


def test_one_verdict_for_every_scorer():
    """The quality verdict the inference pipeline, the external validation and the service give: the view first,
    then the guard, ``unchecked`` without one; ``ok`` and ``unchecked`` are the verdicts that get a label."""
    import pandas as pd

    from cardio_kedro.cohort.quality import PASSING, UNCHECKED, passing, verdict

    blank = np.full((32, 32), 128, np.uint8)
    assert verdict(None, blank, (32, 32), "LL") == "lateral"
    assert verdict(None, blank, (32, 32), "PA") == UNCHECKED
    guard = QualityGuard(template=np.zeros((32, 32)), min_correlation=0.3, min_side=64, blank_std=2.0,
                         saturated_share=0.5)  # fmt: skip
    assert verdict(guard, blank, (1024, 1024), None) == guard.check(blank, (1024, 1024)) != OK
    assert list(passing(pd.Series([OK, UNCHECKED, "blank", "lateral"]))) == [True, True, False, False]
    assert set(PASSING) == {OK, UNCHECKED}
