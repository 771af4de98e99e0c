"""data_processing end to end through Kedro sessions: real NIH metadata and images, bad input, caching."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from cardio_kedro.datasets.cohort import read_label_table
from cardio_kedro.pipelines.data_processing.nodes import (
    check_disjoint_patients,
    rebalance,
    split_by_patient,
)
from tests.helpers import base_params, clean_rows, make_phantom_cohort, run_pipeline


def latest(project: Path, pattern: str) -> Path:
    """The newest version file of a versioned dataset under ``project/data``."""
    versions = sorted((project / "data").glob(pattern + "/*/*"))
    assert versions, f"no saved version of {pattern}"
    return versions[-1]


def test_real_nih_metadata_splits_by_patient_and_rebalances_3_to_1(shared_nih):
    raw = read_label_table(shared_nih / "Data_Entry_2017_v2020.csv.gz")
    params = base_params("data_processing")
    clean, report = clean_rows(raw, "Cardiomegaly", params)
    assert len(clean) == 112_120
    assert clean["patient_id"].nunique() == 30_805
    assert int(clean["target"].sum()) == 2_776
    # the 2020 revision corrected NIH's impossible ages (the Kaggle file has some > 100)
    assert report["implausible_ages"] == int((pd.to_numeric(raw["Patient Age"]) > 100).sum())
    assert report["unknown_labels"] == []
    clean["path"] = clean["image_index"]
    train, val, test = split_by_patient(clean, {}, "Cardiomegaly", params["split"])
    check_disjoint_patients(train, val, test)
    assert len(train) + len(val) + len(test) == 112_120
    train_b, val_b, _ = rebalance(train, val, "Cardiomegaly", params["rebalance"])
    assert (train_b["target"] == 0).sum() == 3 * train_b["target"].sum()
    assert train_b["target"].sum() == train["target"].sum()
    assert abs(test["target"].mean() - 2_776 / 112_120) < 0.005  # natural prevalence kept


def test_the_views_filter_on_the_real_label_table(shared_nih):
    raw = read_label_table(shared_nih / "Data_Entry_2017_v2020.csv.gz")
    pa, report = clean_rows(raw, "Cardiomegaly", base_params("data_processing", views=["PA"]))
    assert len(pa) == 67_310 and set(pa["view"]) == {"PA"}
    assert report["view_filter"] == {"views": ["PA"], "removed_images": 44_810, "removed_by_view": {"AP": 44_810}}
    ap, _ = clean_rows(raw, "all", base_params("data_processing", views=["AP"]))
    assert len(ap) == 44_810 and ap["target.Cardiomegaly"].sum() + pa["target"].sum() == 2_776


@pytest.mark.kedro_session
def test_real_nih_images_run_through_data_processing(shared_nih, tiny_project):
    sample = shared_nih / "sample"
    run_pipeline(tiny_project, "data_processing", runtime_params={"cohort_dir": str(sample)})
    table = pd.read_parquet(latest(tiny_project, "03_primary/model_input_table.parquet"))
    assert len(table) == 200 and table["target"].sum() == 18
    assert table["src_width"].eq(1024).all()
    report = json.loads(latest(tiny_project, "08_reporting/data_quality_report.json").read_text())
    assert report["dropped_rows"] == 0
    splits = [
        pd.read_parquet(latest(tiny_project, f"05_model_input/{s}_split.parquet"))
        for s in ("train", "validation", "test")
    ]
    check_disjoint_patients(*splits)
    assert sum(len(s) for s in splits) == 200
    assert not (sample / "Data_Entry_2017.csv").with_name("pixels.u8").exists()  # nothing written into shared/


@pytest.mark.kedro_session
def test_bad_files_become_quality_entries(tiny_project, phantom_cohort_dir):
    cohort = tiny_project / "bad_cohort"
    shutil.copytree(phantom_cohort_dir, cohort)
    pngs = sorted(cohort.glob("images_*/images/*.png"))
    pngs[0].unlink()
    pngs[1].write_bytes(pngs[1].read_bytes()[:200])
    pngs[2].write_text("this is not an image")
    run_pipeline(tiny_project, "data_processing", runtime_params={"cohort_dir": str(cohort)})
    report = json.loads(latest(tiny_project, "08_reporting/data_quality_report.json").read_text())
    reasons = {k: v["count"] for k, v in report["dropped_by_reason"].items()}
    assert reasons == {"missing": 1, "truncated": 1, "not_an_image": 1}
    assert report["dropped_by_reason"]["missing"]["examples"] == [pngs[0].name]
    table = pd.read_parquet(latest(tiny_project, "03_primary/model_input_table.parquet"))
    assert not set(table["image_index"]) & {p.name for p in pngs[:3]}


@pytest.mark.kedro_session
def test_missing_csv_or_column_fails_clearly_and_writes_nothing(tiny_project, tmp_path):
    from kedro.io import DatasetError

    empty = tmp_path / "empty_cohort"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no Data_Entry_2017.csv in it"):
        run_pipeline(tiny_project, "data_processing", runtime_params={"cohort_dir": str(empty)})
    (empty / "Data_Entry_2017.csv").write_text("Image Index,Finding Labels,Patient ID\nx.png,No Finding,1\n")
    with pytest.raises(DatasetError, match="Patient Age"):
        run_pipeline(tiny_project, "data_processing", runtime_params={"cohort_dir": str(empty)})
    assert not list((tiny_project / "data").rglob("*.parquet"))


@pytest.mark.kedro_session
def test_too_few_positives_fails_before_any_split_is_written(tiny_project, tmp_path):
    cohort = tmp_path / "rare"
    make_phantom_cohort(cohort, n_patients=12, prevalence=0.08, seed=1)
    with pytest.raises(ValueError, match="patient"):
        run_pipeline(tiny_project, "data_processing", runtime_params={"cohort_dir": str(cohort)})
    assert not list((tiny_project / "data").glob("05_model_input/*_split.parquet/*/*"))


@pytest.mark.kedro_session
def test_other_split_parameters_do_not_decode_again(tiny_project, phantom_cohort_dir):
    params = {"cohort_dir": str(phantom_cohort_dir)}
    run_pipeline(tiny_project, "data_processing", runtime_params=params)
    pixels = tiny_project / "data/04_feature/pixel_cache/32px/pixels.u8"
    stamp = (pixels.stat().st_mtime_ns, pixels.stat().st_size)
    first_test = pd.read_parquet(latest(tiny_project, "05_model_input/test_split.parquet"))
    run_pipeline(tiny_project, "data_processing", runtime_params={**params, "data_processing": {"split": {"seed": 7}}})
    assert (pixels.stat().st_mtime_ns, pixels.stat().st_size) == stamp
    second_test = pd.read_parquet(latest(tiny_project, "05_model_input/test_split.parquet"))
    assert set(first_test["image_index"]) != set(second_test["image_index"])  # the split did change
    run_pipeline(tiny_project, "data_processing", runtime_params={**params, "image_size": 48})
    assert (tiny_project / "data/04_feature/pixel_cache/48px/pixels.u8").stat().st_size > 0
