"""Targets of a run: parsing ``target_findings``, label matrices, multi-label stratified patient splits."""

import numpy as np
import pandas as pd
import pytest

from cardio_kedro.cohort.findings import (
    findings_name,
    label_matrix,
    parse_target_findings,
    positive_weights,
    stratified_patient_split,
    target_columns,
)
from cardio_kedro.cohort.nih import NIH_FINDINGS
from cardio_kedro.common.errors import UserValueError
from tests.helpers import base_params, clean_rows


def test_target_findings_forms():
    assert parse_target_findings("Cardiomegaly") == ("Cardiomegaly",)
    # the command-line form and a YAML list give the findings in NIH's order
    assert parse_target_findings("Effusion|Cardiomegaly") == ("Cardiomegaly", "Effusion")
    assert parse_target_findings(["Edema", "Cardiomegaly", "Effusion"]) == ("Cardiomegaly", "Edema", "Effusion")
    assert parse_target_findings("all") == NIH_FINDINGS and len(NIH_FINDINGS) == 14
    assert findings_name("Cardiomegaly") == "Cardiomegaly"
    assert findings_name(["Effusion", "Cardiomegaly"]) == "Cardiomegaly+Effusion"
    assert findings_name("all") == "all-findings"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("Cardiomegally", r"\['Cardiomegally'\] not an NIH finding"),
        ("Cardiomegaly|Efusion", r"\['Efusion'\] not an NIH finding"),
        ([], "empty"),
        ("Edema|Edema", "twice"),
        (3, "must be a finding"),
    ],
)
def test_bad_target_findings_are_named(value, message):
    with pytest.raises(UserValueError, match=message):
        parse_target_findings(value)


def test_label_matrix_reads_nih_finding_labels():
    labels = pd.Series(["Cardiomegaly|Effusion", "No Finding", "Effusion", " Edema | Cardiomegaly"])
    matrix = label_matrix(labels, ("Cardiomegaly", "Edema", "Effusion"))
    assert list(matrix.columns) == target_columns(("Cardiomegaly", "Edema", "Effusion"))
    assert matrix.to_numpy().tolist() == [[1, 0, 1], [0, 0, 0], [0, 0, 1], [1, 1, 0]]


def test_positive_weights_are_negatives_per_positive():
    labels = pd.DataFrame({"target.Cardiomegaly": [1, 0, 0, 0], "target.Effusion": [1, 1, 0, 0]})
    assert positive_weights(labels) == {"Cardiomegaly": 3.0, "Effusion": 1.0}
    with pytest.raises(UserValueError, match="No positive image of Edema"):
        positive_weights(pd.DataFrame({"target.Edema": [0, 0]}))


def test_stratified_split_shares_out_every_finding_on_a_small_table():
    rng = np.random.default_rng(0)
    y = pd.DataFrame(rng.random((300, 4)) < [0.02, 0.05, 0.2, 0.4], columns=list("abcd")).astype(int)
    assign = stratified_patient_split(y, [0.7, 0.1, 0.2], np.random.default_rng(1))
    assert set(assign) == {0, 1, 2}
    assert np.bincount(assign).tolist() == pytest.approx([210, 30, 60], abs=3)
    for column in y:  # even the rarest finding (6 patients) has a positive in every split
        assert all(y[column][assign == s].sum() >= 1 for s in range(3)), column
    again = stratified_patient_split(y, [0.7, 0.1, 0.2], np.random.default_rng(1))
    assert np.array_equal(assign, again)


@pytest.mark.slow
def test_stratified_split_on_the_full_nih_label_table(shared_nih):
    from cardio_kedro.pipelines.data_processing.nodes import check_disjoint_patients, split_by_patient

    raw = pd.read_csv(shared_nih / "Data_Entry_2017_v2020.csv.gz")
    assert len(raw) == 112_120
    params = base_params("data_processing", workers=1)
    clean, report = clean_rows(raw, "all", params)
    assert report["positive_images_by_finding"]["Cardiomegaly"] == 2_776
    assert report["positive_images_by_finding"]["Hernia"] == 227
    frames = split_by_patient(clean, {}, "all", params["split"])
    check_disjoint_patients(*frames)
    assert sum(len(f) for f in frames) == 112_120
    patients = clean.groupby("patient_id")[target_columns(NIH_FINDINGS)].max().sum()
    fractions = params["split"]["fractions"]
    for frame, share in zip(frames, (fractions["train"], fractions["validation"], fractions["test"])):
        got = frame.groupby("patient_id")[target_columns(NIH_FINDINGS)].max().sum() / patients
        # every finding's patients are shared out within one percentage point of the split's share
        assert (abs(got - share) < 0.01).all(), got.round(3).to_dict()
        assert frame["patient_id"].nunique() == pytest.approx(share * clean["patient_id"].nunique(), rel=0.01)
