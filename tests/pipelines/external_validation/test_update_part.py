"""The external cohort's parts: recalibration is fitted on some patients and judged on the others."""

import pytest

from cardio_kedro.common.errors import UserValueError
from cardio_kedro.pipelines.external_validation.nodes import assign_update_part
from tests.helpers import base_params
from tests.pipelines.cross_validation.test_folds import _cohort


def _external(**overrides):
    return base_params("external", cohort_dir="/data/site_b", **overrides)


def test_parts_are_patient_disjoint_stratified_and_sized_by_update_fraction():
    cohort = _cohort(n_patients=400, rate=0.15)
    parted = assign_update_part(cohort, "Cardiomegaly", _external(recalibrate="intercept", update_fraction=0.3))
    assert set(parted["part"]) == {"update", "evaluation"} and len(parted) == len(cohort)
    assert parted.groupby("patient_id")["part"].nunique().max() == 1
    patients = parted.groupby("patient_id").agg(part=("part", "first"), positive=("target", "max"))
    share = patients.groupby("part").size() / len(patients)
    assert share["update"] == pytest.approx(0.3, abs=0.01)
    positive_share = patients.groupby("part")["positive"].sum() / patients["positive"].sum()
    assert positive_share["update"] == pytest.approx(0.3, abs=0.03)
    again = assign_update_part(cohort, "Cardiomegaly", _external(recalibrate="intercept", update_fraction=0.3))
    assert again["part"].tolist() == parted["part"].tolist()  # seeded
    other = assign_update_part(cohort, "Cardiomegaly", _external(recalibrate="intercept", update_fraction=0.3, seed=5))
    assert other["part"].tolist() != parted["part"].tolist()


def test_without_recalibration_every_image_evaluates_and_bad_cohorts_are_refused():
    cohort = _cohort(n_patients=50)
    assert set(assign_update_part(cohort, "Cardiomegaly", _external())["part"]) == {"evaluation"}
    with pytest.raises(UserValueError, match="binary classifier"):
        assign_update_part(cohort, ["Cardiomegaly", "Effusion"], _external())
    one_positive = cohort.assign(target=0)
    one_positive.loc[0, "target"] = 1
    with pytest.raises(UserValueError, match="at least 2 positive and 2 negative patients"):
        assign_update_part(one_positive, "Cardiomegaly", _external(recalibrate="logistic"))
