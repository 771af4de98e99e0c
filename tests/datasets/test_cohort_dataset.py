"""CohortDataset: both NIH CSV flavours, nested and flat image folders, clear errors, atomic writes."""

import pandas as pd
import pytest
from kedro.io import DatasetError

from cardio_kedro.datasets import CohortDataset
from cardio_kedro.datasets.cohort_dataset import read_metadata

HEADER_2020 = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
ROWS = [
    "00000001_000.png,Cardiomegaly|Emphysema,0,1,57,M,PA,2682,2749,0.143,0.143",
    "00000002_000.png,No Finding,0,2,081Y,F,AP,2500,2048,0.171,0.171",
]


def test_reads_the_2020_revision_and_the_kaggle_file(tmp_path):
    v2020 = tmp_path / "v2020.csv"
    v2020.write_text("\n".join([HEADER_2020, *ROWS]) + "\n")
    kaggle = tmp_path / "kaggle.csv"
    kaggle.write_text("\n".join([HEADER_2020 + ",", *[r + "," for r in ROWS]]) + "\n")
    a, b = read_metadata(v2020), read_metadata(kaggle)
    pd.testing.assert_frame_equal(a, b)
    assert a.loc[0, "Finding Labels"] == "Cardiomegaly|Emphysema"
    assert a.loc[1, "Patient Age"] == "081Y"
    assert a.shape == (2, 11)


def test_missing_required_column_is_named(tmp_path):
    bad = tmp_path / "Data_Entry_2017.csv"
    bad.write_text("Image Index,Finding Labels,Patient ID\nx.png,No Finding,1\n")
    with pytest.raises(DatasetError, match="Follow-up #"):
        read_metadata(bad)


def test_missing_cohort_says_what_to_do(tmp_path):
    with pytest.raises(DatasetError) as err:
        CohortDataset(str(tmp_path / "nowhere")).load()
    message = str(err.value)
    assert "cohort_dir" in message and "kedro run --pipeline=phantom_cohort" in message
    assert "\n" not in message


def test_finds_images_in_nested_and_flat_folders(tmp_path):
    root = tmp_path / "cohort"
    (root / "images_001" / "images").mkdir(parents=True)
    (root / "images").mkdir()
    (root / "images_001" / "images" / "a.png").write_bytes(b"x")
    (root / "images" / "b.PNG").write_bytes(b"x")
    (root / "Data_Entry_2017.csv").write_text(HEADER_2020 + "\n" + ROWS[0] + "\n")
    (root / "train_val_list.txt").write_text("a.png\n")
    (root / "test_list.txt").write_text("b.PNG\n")
    cohort = CohortDataset(str(root)).load()
    assert set(cohort["files"]) == {"a.png", "b.PNG"}
    assert cohort["official_split"] == {"train_val": ["a.png"], "test": ["b.PNG"]}
    assert cohort["bboxes"] is None


def test_failed_save_leaves_nothing(tmp_path):
    def images():
        yield "images_001/images/a.png", b"x"
        raise RuntimeError("renderer crashed")

    target = tmp_path / "phantom"
    with pytest.raises(DatasetError, match="renderer crashed"):
        CohortDataset(str(target)).save({"metadata": pd.DataFrame(), "images": images(), "bboxes": None})
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_phantom_cohort_round_trip(phantom_cohort_dir):
    cohort = CohortDataset(str(phantom_cohort_dir)).load()
    meta = cohort["metadata"]
    assert len(meta) == len(cohort["files"]) > 60
    assert (phantom_cohort_dir / "images_001" / "images").is_dir()
    boxes = cohort["bboxes"]
    assert set(boxes["finding"]) == {"Cardiomegaly"}
    assert set(boxes["image_index"]) == set(
        meta.loc[meta["Finding Labels"].str.contains("Cardiomegaly"), "Image Index"]
    )
