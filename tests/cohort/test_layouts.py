"""Cohort layouts on real pixels: the shared NIH images written as CheXpert, MIMIC-CXR-JPG, PadChest,
a hospital CSV export and a DICOM folder, each in that data set's own files, naming and quirks, then
read by data_processing up to the decoded model input table.

Each cohort keeps the NIH images' real labels (Cardiomegaly, Effusion), patients and views; the
decoded pixels must equal the NIH PNG's at the same size within one grey level (JPEG quality 100
and 16-bit storage are the only changes).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pydicom
import pytest
from kedro.runner import SequentialRunner
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from cardio_kedro.cohort import layouts
from cardio_kedro.cohort.imaging import load_gray, to_gray8
from cardio_kedro.common.errors import UserDatasetError
from cardio_kedro.datasets import CohortFolder, PixelCacheDataset
from cardio_kedro.pipelines.data_processing import create_pipeline
from tests.helpers import base_params, clean_rows, data_processing_catalog, read_layout

SIDE = 128  # px of the written images (the shared PNGs are 1024 px: shrunk once, so that writing stays fast)
DECODED = 32  # px the pipeline decodes to
N_IMAGES = 24
PIXEL_TOLERANCE = 1  # grey levels, after resizing to DECODED px (JPEG quality 100 rounds a little)


@pytest.fixture(scope="module")
def nih_rows(shared_nih) -> pd.DataFrame:
    """24 real NIH images (every Cardiomegaly one of the first ones in name order, the rest negatives),
    with their label rows and their pixels at SIDE px."""
    table = pd.read_csv(shared_nih / "sample" / "Data_Entry_2017.csv", dtype=str, keep_default_na=False)
    files = {p.name: p for p in (shared_nih / "sample").glob("images_*/images/*.png")}
    table = table[table["Image Index"].isin(files)].sort_values("Image Index")
    positive = table["Finding Labels"].str.contains("Cardiomegaly")
    chosen = pd.concat([table[positive].head(8), table[~positive].head(N_IMAGES - 8)]).reset_index(drop=True)
    chosen["pixels"] = [load_gray(files[name], SIDE)[0] for name in chosen["Image Index"]]
    return chosen


def _has(labels: str, finding: str) -> bool:
    return finding in labels.split("|")


def _expected(gray: np.ndarray) -> np.ndarray:
    return cv2.resize(gray, (DECODED, DECODED), interpolation=cv2.INTER_AREA)


def _decode(folder: Path, **cohort) -> dict:
    """data_processing from read_cohort to the model input table, on an in-memory catalog."""
    cache = PixelCacheDataset(str(folder.parent / f"cache-{folder.name}"), image_size=DECODED)
    catalog = data_processing_catalog(folder, cache, DECODED, **cohort)
    outputs = SequentialRunner().run(create_pipeline().to_nodes("select_decoded_images"), catalog)
    return {name: outputs[name].load() for name in ("model_input_table", "dropped_rows")} | {"cache": cache.load()}


def _pixels_of(result: dict, key: str) -> np.ndarray:
    table = result["model_input_table"]
    return np.asarray(result["cache"].images(table.loc[table["image_index"] == key, "path"].tolist())[0])


def _reasons(result: dict) -> dict[str, int]:
    return result["dropped_rows"]["reason"].value_counts().to_dict()


def _assert_same_pixels(result: dict, expected: dict[str, np.ndarray]) -> None:
    for key, gray in expected.items():
        diff = np.abs(_pixels_of(result, key).astype(int) - _expected(gray).astype(int))
        assert diff.max() <= PIXEL_TOLERANCE, f"{key}: max difference {diff.max()}"


# ---- CheXpert ------------------------------------------------------------------------------------
def _chexpert(root: Path, rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """CheXpert-v1.0-small: Path with the download's folder in front, a lateral film per study,
    -1 (uncertain) labels, blanks; valid.csv writes 1.0/0.0."""
    base = root / "CheXpert-v1.0-small"
    records, frontal = [], {}
    for i, row in rows.iterrows():
        split = "valid" if i >= 20 else "train"
        study = 1 + i % 2  # two studies per patient: the follow-up order comes from studyN
        rel = f"{split}/patient{int(row['Patient ID']):05d}/study{study}/view1_frontal.jpg"
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(base / rel), row["pixels"], [cv2.IMWRITE_JPEG_QUALITY, 100])
        frontal[rel] = row["pixels"]
        lateral = rel.replace("view1_frontal", "view2_lateral")
        cv2.imwrite(str(base / lateral), row["pixels"].T.copy())
        cardio = "1.0" if _has(row["Finding Labels"], "Cardiomegaly") else ("-1.0" if i == 9 else "")
        effusion = "1.0" if _has(row["Finding Labels"], "Effusion") else "0.0"
        for path, view in ((rel, "Frontal"), (lateral, "Lateral")):
            records.append(
                {
                    "Path": f"CheXpert-v1.0-small/{path}",
                    "Sex": {"M": "Male", "F": "Female"}[row["Patient Gender"]],
                    "Age": row["Patient Age"],
                    "Frontal/Lateral": view,
                    "AP/PA": row["View Position"] if view == "Frontal" else "",
                    "No Finding": "1.0" if row["Finding Labels"] == "No Finding" else "",
                    "Cardiomegaly": cardio,
                    "Pleural Effusion": effusion,
                    **{c: "" for c in layouts.CHEXPERT_TO_NIH if c not in ("Cardiomegaly", "Pleural Effusion")},
                    "_split": split,
                }
            )
    table = pd.DataFrame(records)
    for split, name in (("train", "train.csv"), ("valid", "valid.csv")):
        table[table["_split"] == split].drop(columns="_split").to_csv(base / name, index=False)
    return frontal


def test_chexpert_layout_reads_paths_views_and_uncertain_labels(tmp_path, nih_rows):
    frontal = _chexpert(tmp_path, nih_rows)
    folder = CohortFolder(str(tmp_path / "CheXpert-v1.0-small"))
    table, images, split = read_layout(folder, base_params("cohort", layout="chexpert"), 1)
    assert len(table) == N_IMAGES and set(table["Image Index"]) == set(frontal)  # laterals left out
    assert set(images["image_index"]) == set(frontal) and all(Path(p).is_file() for p in images["path"])
    assert set(table["View Position"]) <= {"PA", "AP"}
    assert len(split["test"]) == 4 and len(split["train_val"]) == 20  # valid.csv is CheXpert's test
    uncertain_key = next(k for k in frontal if f"patient{int(nih_rows.loc[9, 'Patient ID']):05d}/" in k)
    n_pos = int(nih_rows["Finding Labels"].str.contains("Cardiomegaly").sum())
    # the default leaves an uncertain Cardiomegaly out of its target (Irvin et al.: a class of its own)
    assert table.set_index("Image Index").loc[uncertain_key, "Uncertain Labels"] == "Cardiomegaly"
    ones, _, _ = read_layout(folder, base_params("cohort", layout="chexpert", uncertain="uones"), 1)
    cardio = ones.set_index("Image Index")["Finding Labels"].str.contains("Cardiomegaly")
    assert cardio[uncertain_key] and cardio.sum() == n_pos + 1  # uones: -1 is positive
    effusion = table["Finding Labels"].str.contains("Effusion").sum()
    assert effusion == nih_rows["Finding Labels"].str.contains("Effusion").sum()  # "Pleural Effusion" -> Effusion
    assert table.loc[table["Image Index"] == uncertain_key, "Follow-up #"].item() in {"0", "1"}

    zeros, _, _ = read_layout(folder, base_params("cohort", layout="chexpert", uncertain="uzeros"), 1)
    assert zeros["Finding Labels"].str.contains("Cardiomegaly").sum() == n_pos
    ignored, _, _ = read_layout(folder, base_params("cohort", layout="chexpert", uncertain="ignore"), 1)
    clean, report = clean_rows(ignored, "Cardiomegaly", base_params("data_processing"))
    assert report["uncertain_left_out"] == 1 and uncertain_key not in set(clean["image_index"])
    with_lateral, _, _ = read_layout(folder, base_params("cohort", layout="chexpert", include_lateral=True), 1)
    assert len(with_lateral) == 2 * N_IMAGES and (with_lateral["View Position"] == "LATERAL").sum() == N_IMAGES

    result = _decode(tmp_path / "CheXpert-v1.0-small", layout="chexpert", uncertain="uones")
    assert len(result["model_input_table"]) == N_IMAGES
    assert result["dropped_rows"]["reason"].value_counts().to_dict() == {"view_lateral": N_IMAGES}  # counted
    _assert_same_pixels(result, frontal)


def test_chexpert_files_that_do_not_match_say_which_file_and_column(tmp_path, nih_rows, shared_nih):
    _chexpert(tmp_path, nih_rows.head(6))
    root = tmp_path / "CheXpert-v1.0-small"
    train = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)
    train.loc[2, "Cardiomegaly"] = "2"
    train.to_csv(root / "train.csv", index=False)
    with pytest.raises(UserDatasetError, match=r"train.csv, line 4, column 'Cardiomegaly': '2'.*chexpert"):
        read_layout(CohortFolder(str(root)), base_params("cohort", layout="chexpert"), 1)
    train.drop(columns=["Frontal/Lateral"]).to_csv(root / "train.csv", index=False)
    with pytest.raises(UserDatasetError, match=r"train.csv has no column\(s\) \['Frontal/Lateral'\].*'chexpert'"):
        read_layout(CohortFolder(str(root)), base_params("cohort", layout="chexpert"), 1)
    with pytest.raises(UserDatasetError, match=r"No .*train.csv: the cohort.layout 'mimic_cxr_jpg'|mimic-cxr"):
        read_layout(CohortFolder(str(shared_nih / "sample")), base_params("cohort", layout="mimic_cxr_jpg"), 1)
    with pytest.raises(UserDatasetError, match=r"'chexpert' layout reads train.csv and/or valid.csv"):
        read_layout(CohortFolder(str(shared_nih / "sample")), base_params("cohort", layout="chexpert"), 1)


# ---- MIMIC-CXR-JPG -------------------------------------------------------------------------------
def _gz_csv(frame: pd.DataFrame, path: Path) -> None:
    with gzip.open(path, "wt") as fh:
        frame.to_csv(fh, index=False)


def test_mimic_layout_joins_studies_and_gives_the_official_split(tmp_path, nih_rows):
    root = tmp_path / "mimic-cxr-jpg"
    meta, labels, split, frontal = [], [], [], {}
    for i, row in nih_rows.iterrows():
        subject, study, dicom_id = 10000000 + int(row["Patient ID"]), 50000000 + i, f"{i:08x}-a1b2c3d4-e5f6a7b8"
        rel = f"files/p{str(subject)[:2]}/p{subject}/s{study}/{dicom_id}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / rel), row["pixels"], [cv2.IMWRITE_JPEG_QUALITY, 100])
        frontal[rel] = row["pixels"]
        meta.append(
            {
                "dicom_id": dicom_id,
                "subject_id": subject,
                "study_id": study,
                "ViewPosition": row["View Position"],
                "StudyDate": 21800101 + i,
                "StudyTime": "101010.000",
            }
        )
        lateral_id = dicom_id.replace("a1b2", "ffff")
        meta.append({**meta[-1], "dicom_id": lateral_id, "ViewPosition": "LATERAL"})
        cardio = "1.0" if _has(row["Finding Labels"], "Cardiomegaly") else ("-1.0" if i == 10 else "")
        labels.append(
            {
                "subject_id": subject,
                "study_id": study,
                "Cardiomegaly": cardio,
                **{c: "" for c in layouts.CHEXPERT_TO_NIH if c != "Cardiomegaly"},
            }
        )
        which = "test" if i % 6 == 0 else ("validate" if i % 6 == 1 else "train")
        split += [
            {"dicom_id": d, "study_id": study, "subject_id": subject, "split": which} for d in (dicom_id, lateral_id)
        ]
    _gz_csv(pd.DataFrame(meta), root / "mimic-cxr-2.0.0-metadata.csv.gz")
    _gz_csv(pd.DataFrame(labels), root / "mimic-cxr-2.0.0-chexpert.csv.gz")
    _gz_csv(pd.DataFrame(split), root / "mimic-cxr-2.0.0-split.csv.gz")

    ones = base_params("cohort", layout="mimic_cxr_jpg", uncertain="uones")
    table, images, official = read_layout(CohortFolder(str(root)), ones, 1)
    assert set(table["Image Index"]) == set(frontal) and len(images) == N_IMAGES
    n_pos = int(nih_rows["Finding Labels"].str.contains("Cardiomegaly").sum())
    assert table["Finding Labels"].str.contains("Cardiomegaly").sum() == n_pos + 1  # uones
    assert len(official["test"]) == 4 and len(official["train_val"]) == 20
    assert (table["Patient ID"].astype(int) - 10000000).astype(str).tolist() == nih_rows["Patient ID"].tolist()
    with pytest.raises(UserDatasetError, match="No .*mimic-cxr-2.0.0-negbio.csv: the cohort.layout 'mimic_cxr_jpg'"):
        read_layout(CohortFolder(str(root)), base_params("cohort", layout="mimic_cxr_jpg", mimic_labeler="negbio"), 1)

    result = _decode(root, layout="mimic_cxr_jpg")  # the default leaves the uncertain Cardiomegaly out: counted
    frontal = {k: v for k, v in frontal.items() if k in set(result["model_input_table"]["image_index"])}
    assert len(result["model_input_table"]) == N_IMAGES - 1
    assert _reasons(result) == {"view_lateral": N_IMAGES, "uncertain_label": 1}
    _assert_same_pixels(result, frontal)


# ---- PadChest ------------------------------------------------------------------------------------
PADCHEST_NAMES = {"Cardiomegaly": "cardiomegaly", "Effusion": "pleural effusion", "Infiltration": "infiltrates"}


def test_padchest_layout_maps_list_labels_and_reads_16_bit_pngs(tmp_path, nih_rows):
    root = tmp_path / "padchest"
    records, frontal = [], {}
    for i, row in nih_rows.iterrows():
        image_id = f"216840111366964012283393834152009033{i:03d}_00-{i:03d}-{i:03d}.png"
        folder = str(i % 3)
        (root / folder).mkdir(parents=True, exist_ok=True)
        stored = row["pixels"].astype(np.uint16) * 16 + 8  # 12-bit values in a 16-bit PNG, as PadChest's
        cv2.imwrite(str(root / folder / image_id), stored)
        frontal[f"{folder}/{image_id}"] = row["pixels"]
        names = [PADCHEST_NAMES[f] for f in PADCHEST_NAMES if _has(row["Finding Labels"], f)] or ["normal"]
        names += ["aortic elongation"] if i % 4 == 0 else []  # no NIH finding: not a label
        text = "[" + ", ".join(f"'{' ' if k else ''}{n}'" for k, n in enumerate(names)) + "]"  # PadChest's spaces
        records.append(
            {
                "ImageID": image_id,
                "ImageDir": f"{folder}.0" if i % 2 else folder,
                "StudyDate_DICOM": f"2015{1 + i % 12:02d}01",
                "StudyID": f"s{i}",
                "PatientID": f"{98765432109876543210 + int(row['Patient ID'])}",  # too long for an int64
                "PatientBirth": f"{2015 - int(row['Patient Age'])}.0",
                "PatientSex_DICOM": row["Patient Gender"],
                "ViewPosition_DICOM": "POSTEROANTERIOR",
                "Projection": row["View Position"] if i != 5 else "AP_horizontal",
                "MethodProjection": "Manual review of DICOM fields",
                "Labels": text,
            }
        )
    records.append({**records[0], "ImageID": "lateral.png", "Projection": "L"})
    records.append({**records[1], "ImageID": "blank.png", "Labels": ""})
    pd.DataFrame(records).to_csv(root / layouts.PADCHEST_TABLE, index=False)

    assert to_gray8(nih_rows.loc[0, "pixels"].astype(np.uint16) * 16 + 8).tolist() == nih_rows.loc[0, "pixels"].tolist()
    table, _, _ = read_layout(CohortFolder(str(root)), base_params("cohort", layout="padchest"), 1)
    assert len(table) == N_IMAGES and "lateral.png" not in set(table["Image Index"].str.split("/").str[-1])
    by_key = table.set_index("Image Index")
    for i, row in nih_rows.iterrows():
        key = next(k for k in frontal if f"-{i:03d}-{i:03d}.png" in k)
        for finding in ("Cardiomegaly", "Effusion", "Infiltration"):
            assert _has(by_key.loc[key, "Finding Labels"], finding) == _has(row["Finding Labels"], finding), key
        assert (
            by_key.loc[key, "Patient Age"] == row["Patient Age"]
            and by_key.loc[key, "Patient Gender"] == row["Patient Gender"]
        )
    assert table["Patient ID"].astype(int).between(1, N_IMAGES).all()  # long ids numbered 1..n

    result = _decode(root, layout="padchest")
    assert len(result["model_input_table"]) == N_IMAGES  # blank.png has no label: left out and counted, as the lateral
    assert _reasons(result) == {"no_labels": 1, "view_lateral": 1}
    _assert_same_pixels(result, frontal)


def test_padchest_label_cells_as_they_come():
    assert layouts.padchest_labels("['cardiomegaly', ' pleural effusion']") == ["cardiomegaly", "pleural effusion"]
    assert layouts.padchest_labels("[]") == [] and layouts.padchest_labels("") == []
    assert layouts.padchest_labels("['normal']") == ["normal"]
    assert layouts.padchest_labels("['chronic changes' 'kyphosis']") == ["chronic changes", "kyphosis"]


# ---- a hospital's CSV export ---------------------------------------------------------------------
def test_csv_layout_reads_the_named_columns(tmp_path, nih_rows):
    root = tmp_path / "export"
    records, frontal = [], {}
    for i, row in nih_rows.iterrows():
        rel = f"2026/{i:03d}/{row['Image Index']}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / rel), row["pixels"])
        frontal[rel] = row["pixels"]
        records.append(
            {
                "file": rel,
                "mrn": f"MRN-{row['Patient ID']}",
                "cardio": "yes" if _has(row["Finding Labels"], "Cardiomegaly") else "no",
                "proj": row["View Position"].lower(),
                "sex": row["Patient Gender"],
                "date": f"2026-01-{1 + i % 28:02d}",
            }
        )
    pd.DataFrame(records).to_csv(root / "labels.csv", index=False)
    spec = {
        "image_column": "file",
        "patient_column": "mrn",
        "findings": {"Cardiomegaly": "cardio"},
        "view_column": "proj",
        "sex_column": "sex",
        "study_column": "date",
    }
    table, _, _ = read_layout(CohortFolder(str(root)), base_params("cohort", layout="csv", table=spec), 1)
    assert (
        table["Finding Labels"].str.contains("Cardiomegaly").sum()
        == nih_rows["Finding Labels"].str.contains("Cardiomegaly").sum()
    )
    assert table["View Position"].tolist() == nih_rows["View Position"].tolist()
    result = _decode(root, layout="csv", table=spec)
    assert len(result["model_input_table"]) == N_IMAGES
    _assert_same_pixels(result, frontal)
    with pytest.raises(UserDatasetError, match=r"labels.csv has no column\(s\) \['patient'\].*'csv' layout"):
        read_layout(
            CohortFolder(str(root)), base_params("cohort", layout="csv", table={**spec, "patient_column": "patient"}), 1
        )


# ---- DICOM ---------------------------------------------------------------------------------------
def _write_dicom(gray: np.ndarray, path: Path, patient: str, view: str, sex: str, age: str, date: str) -> str:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.SOPInstanceUID = generate_uid()
    ds.Modality, ds.PatientID, ds.ViewPosition, ds.PatientSex, ds.PatientAge = "DX", patient, view, sex, age
    ds.StudyDate = date
    stored = (4095 - gray.astype(np.uint16) * 16).astype(np.uint16)  # 12-bit MONOCHROME1, as CR systems send
    ds.set_pixel_data(stored, photometric_interpretation="MONOCHROME1", bits_stored=12)
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 2055, 4080, "LINEAR_EXACT"  # [15, 4095] -> [0, 255]
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return ds.SOPInstanceUID


def test_dicom_layout_reads_headers_and_labels_keyed_by_sop_instance_uid(tmp_path, nih_rows):
    root = tmp_path / "pacs-export"
    records, frontal = [], {}
    for i, row in nih_rows.iterrows():
        rel = f"DICOM/{i // 8:08d}/{i:08d}"  # a DICOMDIR export: no file extension
        uid = _write_dicom(
            row["pixels"],
            root / rel,
            f"ANON{row['Patient ID']}",
            row["View Position"],
            row["Patient Gender"],
            f"{int(row['Patient Age']):03d}Y",
            f"2026{1 + i % 12:02d}01",
        )
        frontal[rel] = row["pixels"]
        records.append({"uid": uid, "cm": int(_has(row["Finding Labels"], "Cardiomegaly"))})
    report = Dataset()  # a structured report among the images: no pixels
    report.file_meta = FileMetaDataset()
    report.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    report.SOPClassUID, report.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.88.11", generate_uid()
    report.Modality, report.PatientID, report.StudyDate = "SR", "ANON1", "20260101"
    report.save_as(root / "DICOM" / "report", enforce_file_format=True)
    records.append({"uid": report.SOPInstanceUID, "cm": 0})
    (root / "DICOM" / "notes.bin").write_bytes(b"not a DICOM file")
    pd.DataFrame(records).to_csv(root / "labels.csv", index=False)
    spec = {"image_column": "uid", "dicom_key": "sop_instance_uid", "findings": {"Cardiomegaly": "cm"}}

    table, images, _ = read_layout(CohortFolder(str(root)), base_params("cohort", layout="dicom", table=spec), 1)
    assert len(table) == N_IMAGES and len(images) == N_IMAGES  # the report is left out by its header's Modality
    by_key = table.set_index("Image Index")
    for i, row in nih_rows.iterrows():
        key = f"DICOM/{i // 8:08d}/{i:08d}"
        assert (
            by_key.loc[key, "View Position"] == row["View Position"]
            and by_key.loc[key, "Patient Gender"] == row["Patient Gender"]
        )
        assert _has(by_key.loc[key, "Finding Labels"], "Cardiomegaly") == _has(row["Finding Labels"], "Cardiomegaly")
    clean, _ = clean_rows(table, "Cardiomegaly", base_params("data_processing"))
    assert clean.set_index("image_index").loc["DICOM/00000000/00000000", "age"] == float(nih_rows.loc[0, "Patient Age"])

    result = _decode(root, layout="dicom", table=spec)
    assert len(result["model_input_table"]) == N_IMAGES
    assert _reasons(result) == {"not_radiograph": 1}  # the report: a counted row, no crash
    _assert_same_pixels(result, frontal)
    pydicom.dcmread(root / "DICOM" / "00000000" / "00000000")  # the files are real DICOM Part 10 files
