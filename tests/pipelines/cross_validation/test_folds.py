"""k-fold assignment: patient-disjoint, stratified, seeded; several findings or too few positives refused."""

import numpy as np
import pandas as pd
import pytest

from cardio_kedro.common.errors import UserValueError
from cardio_kedro.pipelines.cross_validation.nodes import assign_folds
from tests.helpers import base_params


def _cohort(n_patients=300, rate=0.1, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    per_patient = rng.integers(1, 5, n_patients)
    patient = np.repeat(np.arange(n_patients), per_patient)
    positive_patient = rng.random(n_patients) < rate
    target = (positive_patient[patient] & (rng.random(len(patient)) < 0.7)).astype("int8")
    return pd.DataFrame(
        {"image_index": [f"{i}.png" for i in range(len(patient))], "patient_id": patient, "target": target}
    )


def _split(**overrides):
    return base_params("cross_validation") | overrides


def test_folds_are_patient_disjoint_and_stratified():
    cohort = _cohort()
    folds = assign_folds(cohort, "Cardiomegaly", _split(n_folds=5))
    assert set(folds["fold"]) == set(range(5)) and len(folds) == len(cohort)
    assert folds.groupby("patient_id")["fold"].nunique().max() == 1
    positive_patients = folds.groupby("patient_id").agg(fold=("fold", "first"), pos=("target", "max"))
    per_fold = positive_patients.groupby("fold")["pos"].sum()
    assert per_fold.max() - per_fold.min() <= 1, per_fold.to_dict()
    sizes = positive_patients.groupby("fold").size()
    assert sizes.max() - sizes.min() <= 2, sizes.to_dict()
    again = assign_folds(cohort, "Cardiomegaly", _split(n_folds=5))
    assert again["fold"].tolist() == folds["fold"].tolist()  # seeded
    other = assign_folds(cohort, "Cardiomegaly", _split(n_folds=5, seed=7))
    assert other["fold"].tolist() != folds["fold"].tolist()


def test_a_patient_with_many_positive_films_does_not_crowd_one_fold():
    # the real NIH cohort of ../shared has patients with 20, 10 and 9 Cardiomegaly films among 84
    cohort = _cohort(n_patients=200, rate=0.1, seed=1)
    crowd = pd.DataFrame(
        {
            "image_index": [f"p{i}_{j}.png" for i, n in enumerate((20, 10, 9)) for j in range(n)],
            "patient_id": [10_000 + i for i, n in enumerate((20, 10, 9)) for _ in range(n)],
            "target": 1,
        }
    )
    folds = assign_folds(pd.concat([cohort, crowd], ignore_index=True), "Cardiomegaly", _split(n_folds=5))
    assert folds.loc[folds["patient_id"] >= 10_000].groupby("patient_id")["fold"].first().nunique() == 3
    positives = folds.groupby("fold")["target"].sum()
    assert positives.max() - positives.min() <= 20, positives.to_dict()  # no fold beyond the largest patient's share
    assert positives.max() <= 20 + positives.sum() / 5, positives.to_dict()
    images = folds.groupby("fold").size()
    assert images.max() - images.min() <= 20, images.to_dict()


def test_several_findings_and_too_few_positives_are_refused():
    cohort = _cohort()
    with pytest.raises(UserValueError, match="one target finding"):
        assign_folds(cohort, ["Cardiomegaly", "Effusion"], _split())
    few = _cohort(n_patients=30, rate=0.05, seed=3)
    n_pos = int(few.groupby("patient_id")["target"].max().sum())
    with pytest.raises(UserValueError, match=f"{n_pos} positive of 30"):
        assign_folds(few, "Cardiomegaly", _split(n_folds=n_pos + 1))
