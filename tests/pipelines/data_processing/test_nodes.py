"""data_processing nodes on small phantom cohorts and hand-made tables."""

import numpy as np
import pandas as pd
import pytest

from cardio_kedro.cohort.findings import target_columns
from cardio_kedro.datasets import ImageFileIndexDataset, LabelTableDataset, PixelCacheDataset
from cardio_kedro.pipelines.data_processing.nodes import (
    build_quality_report,
    check_disjoint_patients,
    clean_metadata,
    decode_images,
    rebalance,
    resolve_image_files,
    select_decoded_images,
    split_by_patient,
)
from tests.helpers import base_params, clean_rows

PARAMS = base_params("data_processing", workers=1)
SPLIT = base_params("data_processing", split={"seed": 1})["split"]
REBALANCE = base_params("data_processing", rebalance={"seed": 0})["rebalance"]


def _table(n_patients=200, pos_share=0.2, images_per_patient=2, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for pid in range(1, n_patients + 1):
        pos = rng.random() < pos_share
        sex = "M" if rng.random() < 0.5 else "F"
        for k in range(images_per_patient):
            rows.append(
                {
                    "image_index": f"{pid:08d}_{k:03d}.png",
                    "patient_id": pid,
                    "target": int(pos and k == 0),
                    "sex": sex,
                    "path": f"/x/{pid}_{k}.png",
                }
            )
    return pd.DataFrame(rows)


def _labels(cohort_dir):
    return LabelTableDataset(str(cohort_dir / "Data_Entry_2017.csv")).load()


def test_clean_metadata_types_target_and_age_rule(phantom_cohort_dir):
    labels = _labels(phantom_cohort_dir)
    labels.loc[0, "Patient Age"] = "148"
    labels.loc[1, "Finding Labels"] = "Effusion|Mystery_Finding"
    clean, report = clean_rows(labels, "Cardiomegaly", PARAMS)
    assert clean["patient_id"].dtype == "int64" and clean["target"].isin([0, 1]).all()
    assert np.isnan(clean.loc[0, "age"]) and clean.loc[0, "age_implausible"]
    assert report["implausible_ages"] == 1 and report["unknown_labels"] == ["Mystery_Finding"]
    expected = labels["Finding Labels"].str.split("|").apply(lambda s: "Cardiomegaly" in s)
    assert (clean["target"] == expected.astype(int)).all()
    effusion, _ = clean_rows(labels, "Effusion", PARAMS)
    assert effusion.loc[1, "target"] == 1
    assert effusion["target"].sum() == labels["Finding Labels"].str.contains("Effusion").sum()


@pytest.mark.parametrize("views", [["PA"], ["AP"], ["PA", "AP"]])
def test_views_keep_those_films_and_the_report_counts_the_rest(phantom_cohort_dir, views):
    labels = _labels(phantom_cohort_dir)
    labels.loc[0, "View Position"] = "LL"  # a lateral film: neither view
    every, report_all = clean_rows(labels, "Cardiomegaly", PARAMS)
    kept, report = clean_rows(labels, "Cardiomegaly", {**PARAMS, "views": views})
    assert set(kept["view"]) == set(views) and len(kept) == every["view"].isin(views).sum()
    other = every.loc[~every["view"].isin(views), "view"].value_counts().to_dict()
    assert report["view_filter"] == {"views": views, "removed_images": len(every) - len(kept), "removed_by_view": other}
    assert report_all["view_filter"]["removed_images"] == 0 and len(every) == len(labels)


def test_views_that_keep_nothing_or_repeat_are_refused(phantom_cohort_dir):
    from cardio_kedro.config import DataProcessingParams

    labels = _labels(phantom_cohort_dir).assign(**{"View Position": "PA"})
    with pytest.raises(ValueError, match=r"views = \['AP'\] keeps no image: the cohort's view positions are \['PA'\]"):
        clean_rows(labels, "Cardiomegaly", {**PARAMS, "views": ["AP"]})
    for bad in ([], ["PA", "PA"], ["LATERAL"], "PA"):
        with pytest.raises(ValueError):
            DataProcessingParams.model_validate({**PARAMS, "views": bad})


def test_unknown_target_finding_is_refused(phantom_cohort_dir):
    with pytest.raises(ValueError, match="not an NIH finding"):
        clean_rows(_labels(phantom_cohort_dir), "Cardiomegally", PARAMS)


def test_resolve_decode_select_and_quality_report(phantom_cohort_dir, tmp_path):
    clean, labels = clean_rows(_labels(phantom_cohort_dir), "Cardiomegaly", PARAMS)
    files = ImageFileIndexDataset(str(phantom_cohort_dir)).load()
    files = files[files["image_index"] != clean.loc[0, "image_index"]]  # a row whose PNG is missing
    resolved, problems = resolve_image_files(clean, files, PARAMS)
    assert len(resolved) == len(clean) - 1 and problems["reason"].tolist() == ["missing"]
    assert (resolved["nbytes"] > 0).all() and (resolved["mtime_ns"] > 0).all()
    cache = PixelCacheDataset(str(tmp_path / "cache"), image_size=32)
    for chunk in decode_images(resolved, cache.load(), 32, PARAMS, {}):
        cache.save(chunk)
    decoded, dropped = select_decoded_images(resolved, cache.load(), problems, problems.iloc[:0])
    assert len(decoded) == len(resolved) and decoded["src_width"].eq(64).all()
    assert "nbytes" not in decoded
    report = build_quality_report(labels, dropped, decoded)
    assert report["dropped_by_reason"]["missing"]["count"] == 1
    assert report["dropped_by_reason"]["missing"]["examples"] == [clean.loc[0, "image_index"]]
    assert report["usable_images"] == len(decoded)


def test_image_size_that_differs_from_the_cache_entry_is_refused(tmp_path):
    cache = PixelCacheDataset(str(tmp_path / "cache"), image_size=32)
    with pytest.raises(ValueError, match="globals.yml"):
        next(decode_images(pd.DataFrame(columns=["path", "nbytes", "mtime_ns"]), cache.load(), 64, PARAMS, {}))


def test_patient_wise_split_is_disjoint_stratified_and_seeded():
    table = _table()
    train, val, test = split_by_patient(table, {}, "Cardiomegaly", SPLIT)
    check_disjoint_patients(train, val, test)
    assert len(train) + len(val) + len(test) == len(table)
    n_patients = table["patient_id"].nunique()
    assert abs(train["patient_id"].nunique() / n_patients - 0.7) < 0.03
    for part in (train, val, test):  # each split keeps the positive-patient share
        share = part.groupby("patient_id")["target"].max().mean()
        assert abs(share - table.groupby("patient_id")["target"].max().mean()) < 0.06
    again = split_by_patient(table, {}, "Cardiomegaly", SPLIT)
    assert again[2]["image_index"].tolist() == test["image_index"].tolist()
    other = split_by_patient(table, {}, "Cardiomegaly", {**SPLIT, "seed": 2})
    assert other[2]["image_index"].tolist() != test["image_index"].tolist()


def test_disjoint_check_catches_a_shared_patient():
    table = _table(10)
    with pytest.raises(AssertionError, match="Patient 1"):
        check_disjoint_patients(table.iloc[:2], table.iloc[1:3])


def test_too_few_positive_patients_is_a_clear_error():
    table = _table(50, pos_share=0.0)
    table.loc[0, "target"] = 1
    with pytest.raises(ValueError, match=r"Too few patients with Cardiomegaly \(1\)"):
        split_by_patient(table, {}, "Cardiomegaly", SPLIT)


def test_official_split_uses_nih_lists():
    table = _table(40)
    test_ids = table.loc[table["patient_id"] <= 10, "image_index"].tolist()
    official = {"test": test_ids, "train_val": table.loc[table["patient_id"] > 10, "image_index"].tolist()}
    table.loc[table["patient_id"].isin([1, 11, 12, 13]), "target"] = 1
    params = {**SPLIT, "method": "official"}
    train, val, test = split_by_patient(table, official, "Cardiomegaly", params)
    assert sorted(test["image_index"]) == sorted(test_ids)
    check_disjoint_patients(train, val, test)
    with pytest.raises(ValueError, match="train_val_list.txt"):
        split_by_patient(table, {}, "Cardiomegaly", params)


def test_rebalance_to_three_negatives_per_positive_matching_sex():
    train, val = _table(400, seed=3), _table(100, seed=4)
    train.loc[train["target"] == 1, "sex"] = np.where(np.arange((train["target"] == 1).sum()) % 4 == 0, "F", "M")
    tb, vb, weights = rebalance(train, val, "Cardiomegaly", REBALANCE)
    for before, after in ((train, tb), (val, vb)):
        assert after["target"].sum() == before["target"].sum()
        assert (after["target"] == 0).sum() == 3 * after["target"].sum()
        assert set(after["image_index"]) <= set(before["image_index"])
    neg_f = (tb.loc[tb["target"] == 0, "sex"] == "F").mean()
    pos_f = (tb.loc[tb["target"] == 1, "sex"] == "F").mean()
    assert abs(neg_f - pos_f) < 0.03
    assert weights["class_weight"] == {"0": 1.0, "1": 1.0}
    assert weights["prevalence"] == {"natural": train["target"].mean(), "trained": 0.25}


def test_class_weight_strategy_keeps_everything():
    train, val = _table(200, seed=5), _table(50, seed=6)
    tb, vb, weights = rebalance(train, val, "Cardiomegaly", {**REBALANCE, "strategy": "class_weight"})
    assert len(tb) == len(train) and len(vb) == len(val)
    assert sorted(tb["image_index"]) == sorted(train["image_index"])
    pos = train["target"].mean()
    assert weights["class_weight"]["1"] == pytest.approx(0.5 / pos)
    assert weights["class_weight"]["0"] == pytest.approx(0.5 / (1 - pos))
    assert weights["prevalence"]["trained"] == 0.5  # weighted classes: the loss sees them as balanced


# ---- several target findings ----------------------------------------------------------------------
FINDINGS = ["Cardiomegaly", "Effusion", "Edema"]


def _multi_table(n_patients=300, rates=(0.2, 0.3, 0.05), seed=0):
    rng = np.random.default_rng(seed)
    table = _table(n_patients, pos_share=0.0, seed=seed)
    labels = pd.DataFrame(rng.random((len(table), 3)) < rates, columns=target_columns(FINDINGS)).astype("int8")
    table = pd.concat([table, labels], axis=1)
    table["target"] = labels.max(axis=1)
    return table


def test_clean_metadata_with_several_findings_has_a_column_per_finding(phantom_cohort_dir):
    labels = _labels(phantom_cohort_dir)
    clean, report = clean_rows(labels, "Effusion|Cardiomegaly|Edema", PARAMS)
    for finding in FINDINGS:
        expected = labels["Finding Labels"].str.split("|").apply(lambda s, f=finding: f in s).astype(int)
        assert (clean[f"target.{finding}"] == expected).all()
        assert report["positive_images_by_finding"][finding] == expected.sum()
    assert (clean["target"] == clean[target_columns(FINDINGS)].max(axis=1)).all()
    single, _ = clean_rows(labels, "Cardiomegaly", PARAMS)
    assert not any(c.startswith("target.") for c in single.columns)  # the binary mode's table is unchanged


def test_several_findings_split_stratified_and_patient_disjoint():
    table = _multi_table()
    frames = split_by_patient(table, {}, "|".join(FINDINGS), SPLIT)
    check_disjoint_patients(*frames)
    patients = table.groupby("patient_id")[target_columns(FINDINGS)].max().sum()
    for frame, share in zip(frames, (0.7, 0.1, 0.2)):
        got = frame.groupby("patient_id")[target_columns(FINDINGS)].max().sum() / patients
        assert (abs(got - share) < 0.03).all(), got.to_dict()


def test_a_finding_with_too_few_patients_is_named():
    table = _multi_table(rates=(0.2, 0.3, 0.0))
    table.loc[table["patient_id"].isin([1, 2]), "target.Edema"] = 1
    with pytest.raises(ValueError, match=r"Too few patients with Edema \(2\).*leave it out of target_findings"):
        split_by_patient(table, {}, FINDINGS, SPLIT)


def test_several_findings_get_per_finding_weights_and_no_undersampling():
    train, val = _multi_table(seed=1), _multi_table(100, seed=2)
    tb, vb, weights = rebalance(train, val, FINDINGS, {**REBALANCE, "strategy": "class_weight"})
    assert sorted(tb["image_index"]) == sorted(train["image_index"]) and vb.equals(val)
    for finding in FINDINGS:
        pos = train[f"target.{finding}"].mean()
        assert weights["class_weight"][finding]["1"] == pytest.approx(0.5 / pos)
        assert weights["class_weight"][finding]["0"] == pytest.approx(0.5 / (1 - pos))
        assert weights["prevalence"]["natural"][finding] == pytest.approx(pos)
    # the rarer the finding, the heavier its positives
    ratio = {f: w["1"] / w["0"] for f, w in weights["class_weight"].items()}
    assert ratio["Edema"] > ratio["Cardiomegaly"] > ratio["Effusion"]


def test_an_image_under_two_patients_is_counted_and_named(caplog):
    labels = pd.DataFrame(
        {
            "Image Index": ["a.png", "b.png", "a.png", "b.png"],
            "Finding Labels": ["Cardiomegaly", "No Finding", "Cardiomegaly", "No Finding"],
            "Follow-up #": "0",
            "Patient ID": ["1", "2", "7", "2"],
            "Patient Age": "50",
            "Patient Gender": "M",
            "View Position": "PA",
        }
    )
    nothing = pd.DataFrame({"image_index": [], "reason": [], "detail": []}, dtype=str)
    clean, _, left_out = clean_metadata(labels, nothing, {"layout": "nih"}, "Cardiomegaly", PARAMS)
    assert list(clean["image_index"]) == ["a.png", "b.png"] and list(clean["patient_id"]) == [1, 2]
    assert list(left_out["reason"]) == ["duplicate_row", "duplicate_row"]
    assert "under patient 7 (the first row's patient 1 is kept)" in left_out["detail"].iloc[0]
    assert "1 under another patient than its first row, e.g. a.png" in caplog.text
