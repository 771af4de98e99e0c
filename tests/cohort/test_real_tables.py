"""The layouts on the data sets' own published tables (../shared/data/tables), with stand-in pixels at the paths the
tables name (real NIH thumbnails). Every expected count is derived here from the table itself, by a reading that
follows the data set's documentation in a few lines of pandas, not from the adapter's output.
"""

import os
import re
import shutil

import cv2
import numpy as np
import pandas as pd
import pytest
from kedro.runner import SequentialRunner

from cardio_kedro.cohort import layouts
from cardio_kedro.common.errors import UserValueError
from cardio_kedro.datasets import CohortFolder, PixelCacheDataset
from cardio_kedro.pipelines.data_processing import create_pipeline
from cardio_kedro.pipelines.data_processing.nodes import build_quality_report, read_cohort, split_by_patient
from tests.helpers import SHARED_NIH, base_params, data_processing_catalog

pytestmark = pytest.mark.slow  # the full published tables (like the full NIH label table): not in make test-fast

TABLES = SHARED_NIH.parent / "tables"
PADCHEST = TABLES / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz"
CHEXPERT = TABLES / "chexpert_train.csv.gz"
STAND_INS = 300


@pytest.fixture(scope="module")
def tables():
    if not PADCHEST.is_file() or not CHEXPERT.is_file():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but the published label tables are missing at {TABLES}")
        pytest.skip(f"published label tables not found at {TABLES}")
    return TABLES


def _thumbnails(n: int) -> list[np.ndarray]:
    paths = sorted((SHARED_NIH / "thumbs" / "images").glob("*.png"))[:n]
    return [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in paths]


def _stand_ins(root, keys: list[str], suffix_encoding: str) -> None:
    """A real NIH thumbnail at each of ``keys`` (relative paths), PNG or JPEG as the name says."""
    for key, pixels in zip(keys, _thumbnails(len(keys))):
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        ok, data = cv2.imencode(suffix_encoding, pixels)
        assert ok
        path.write_bytes(data.tobytes())


def _data_processing(folder, cohort: dict) -> dict:
    """data_processing from read_cohort to the data-quality report, on an in-memory catalog (32 px)."""
    cache = PixelCacheDataset(str(folder.parent / "cache"), image_size=32)
    catalog = data_processing_catalog(folder, cache, 32, **cohort)
    outputs = SequentialRunner().run(create_pipeline().to_nodes("select_decoded_images"), catalog)
    result = {name: outputs[name].load() for name in ("model_input_table", "dropped_rows", "label_report")}
    report = build_quality_report(result["label_report"], result["dropped_rows"], result["model_input_table"])
    return result | {"data_quality_report": report}


# ---- PadChest: Bustos et al. 2020 ------------------------------------------------------------------
# The PadChest tree's labels and sub-labels that mean an NIH finding (docs/data.md has the table).
PADCHEST_MEANS = {
    "Cardiomegaly": {"cardiomegaly"},
    "Effusion": {"pleural effusion", "loculated pleural effusion", "loculated fissural effusion", "hydropneumothorax"},
    "Pneumothorax": {"pneumothorax", "hydropneumothorax"},
    "Pneumonia": {"pneumonia", "atypical pneumonia"},
    "Fibrosis": {"pulmonary fibrosis", "post radiotherapy changes", "asbestosis signs"},
    "Nodule": {"nodule", "multiple nodules"},
}


def _padchest_reading(table: pd.DataFrame) -> pd.DataFrame:
    """The rows as PadChest's README describes them: frontal projections PA, AP, AP_horizontal; a row whose
    labels are `nan` has no report; `exclude` marks a film to exclude; `unchanged` and `suboptimal study`
    say nothing about findings."""
    labels = table["Labels"].str.strip()
    names = labels.map(lambda t: {n.strip().lower() for n in re.findall(r"'([^']*)'", t)} - {""})
    reason = pd.Series("", index=table.index)
    reason[table["Projection"] == "L"] = "view_lateral"
    for projection in ("COSTAL", "EXCLUDE", "UNK"):
        reason[table["Projection"] == projection] = f"view_{projection.lower()}"
    usable_view = reason == ""
    reason[usable_view & (labels == "nan")] = "no_report"
    reason[usable_view & (labels != "nan") & (names.map(len) == 0)] = "no_labels"
    reason[(reason == "") & names.map(lambda n: "exclude" in n)] = "excluded_by_padchest"
    only = names.map(lambda n: len(n) > 0 and n <= {"unchanged", "suboptimal study"})
    reason[(reason == "") & only & names.map(lambda n: "unchanged" in n)] = "unchanged_only"
    reason[(reason == "") & only] = "suboptimal_only"
    return pd.DataFrame({"reason": reason, "names": names})


def test_padchest_real_table_counts_every_finding_view_and_left_out_film(tables, tmp_path):
    root = tmp_path / "padchest"
    root.mkdir()
    (root / PADCHEST.name).symlink_to(PADCHEST)
    table = pd.read_csv(PADCHEST, dtype=str, keep_default_na=False)
    expected = _padchest_reading(table)
    keys = table["ImageDir"].str.replace(r"\.0$", "", regex=True) + "/" + table["ImageID"]
    kept = expected["reason"] == ""
    # stand-ins: kept films (Cardiomegaly ones first), and a few the layout must leave out whatever their file
    order = expected.index[kept & expected["names"].map(lambda n: "cardiomegaly" in n)][:60].tolist()
    order += expected.index[kept].difference(order)[: STAND_INS - 80].tolist()
    order += expected.index[expected["reason"] == "no_report"][:20].tolist()
    _stand_ins(root, keys[order].tolist(), ".png")

    result = _data_processing(root, {"layout": "padchest"})
    dropped = result["dropped_rows"]["reason"].value_counts().to_dict()
    for reason, count in expected.loc[~kept, "reason"].value_counts().items():
        assert dropped.get(reason) == count, (reason, dropped.get(reason), count)
    assert dropped["no_report"] == 79 and dropped["view_costal"] + dropped["view_exclude"] + dropped["view_unk"] == 649
    with_file = set(keys[order])
    assert dropped["missing"] == int((kept & ~keys.isin(with_file)).sum())  # kept rows without a stand-in file

    decoded = result["model_input_table"]
    assert len(decoded) == int((kept & keys.isin(with_file)).sum())
    by_key = decoded.set_index("image_index")
    scored = keys.isin(set(decoded["image_index"])) & kept
    names = expected.loc[scored, "names"].set_axis(keys[scored])
    for finding, labels in PADCHEST_MEANS.items():
        want = names.map(lambda n, labels=labels: bool(n & labels))
        got = by_key.loc[want.index, "labels"].str.split("|").map(lambda f, finding=finding: finding in f)
        assert (got == want).all(), finding
    assert int(by_key["target"].sum()) == int(names.map(lambda n: "cardiomegaly" in n).sum()) >= 50
    views = table.loc[keys.isin(set(decoded["image_index"])), "Projection"].replace("AP_horizontal", "AP")
    assert by_key["view"].value_counts().to_dict() == views.value_counts().to_dict()
    quality = result["data_quality_report"]
    assert quality["dropped_by_reason"]["no_report"]["count"] == 79  # of the 103 `nan` rows, the frontal ones
    assert "sub-labels" in quality["label_policy"]["labels"] and quality["label_policy"]["layout"] == "padchest"


def test_padchest_include_lateral_keeps_l_and_never_calls_other_projections_lateral(tables, tmp_path):
    root = tmp_path / "padchest"
    root.mkdir()
    (root / PADCHEST.name).symlink_to(PADCHEST)
    table = pd.read_csv(PADCHEST, dtype=str, keep_default_na=False)
    cohort, _, _, left_out, _ = read_cohort(CohortFolder(str(root)), base_params("cohort", layout="padchest",
                                                                                  include_lateral=True), 1)  # fmt: skip
    lateral_keys = set(cohort.loc[cohort["View Position"] == "LATERAL", "Image Index"].str.split("/").str[-1])
    assert lateral_keys <= set(table.loc[table["Projection"] == "L", "ImageID"])
    counts = left_out["reason"].value_counts()
    assert "view_lateral" not in counts and counts["view_costal"] == (table["Projection"] == "COSTAL").sum()


# ---- CheXpert: Irvin et al. 2019 -------------------------------------------------------------------
def test_chexpert_real_table_counts_views_uncertain_labels_and_the_policy(tables, tmp_path):
    root = tmp_path / "CheXpert-v1.0-small"
    root.mkdir()
    (root / "train.csv.gz").symlink_to(CHEXPERT)
    table = pd.read_csv(CHEXPERT, dtype=str, keep_default_na=False)
    frontal = (table["Frontal/Lateral"] == "Frontal") & table["AP/PA"].isin(["AP", "PA"])
    value = {c: pd.to_numeric(table[c], errors="coerce") for c in ("Cardiomegaly", "Edema", "Atelectasis")}
    keys = table["Path"].str.split("/", n=1).str[1]
    cardio = frontal & (value["Cardiomegaly"] == 1)
    negative = frontal & ~cardio & (value["Cardiomegaly"] != -1)
    order = table.index[cardio][:60].tolist() + table.index[negative][: STAND_INS - 60].tolist()
    _stand_ins(root, keys[order].tolist(), ".jpg")

    result = _data_processing(root, {"layout": "chexpert"})
    dropped = result["dropped_rows"]["reason"].value_counts().to_dict()
    assert dropped["view_lateral"] == int((table["Frontal/Lateral"] == "Lateral").sum()) == 32387
    assert dropped["view_not_ap_pa"] == int(((table["Frontal/Lateral"] == "Frontal") & ~frontal).sum()) == 17
    # Cardiomegaly's uncertain mentions are left out of its target (the default policy), counted
    assert dropped["uncertain_label"] == int((frontal & (value["Cardiomegaly"] == -1)).sum())
    usable = frontal & (value["Cardiomegaly"] != -1)
    assert dropped["missing"] == int((usable & ~table.index.isin(order)).sum())
    decoded = result["model_input_table"].set_index("image_index")
    assert len(decoded) == len(order) and int(decoded["target"].sum()) == 60
    # Atelectasis and Edema: uncertain is positive; the others: only a 1 is
    picked = table.loc[order].set_axis(keys[order])
    for column, finding in (("Atelectasis", "Atelectasis"), ("Edema", "Edema"), ("Consolidation", "Consolidation")):
        number = pd.to_numeric(picked[column], errors="coerce")
        want = number.isin([1, -1]) if finding in ("Atelectasis", "Edema") else number == 1
        got = decoded.loc[picked.index, "labels"].str.split("|").map(lambda f, finding=finding: finding in f)
        assert (got == want).all(), finding
    # "No Finding" only where CheXpert finds nothing that an NIH finding or another observation means
    other = picked[list(layouts.CHEXPERT_OTHER)].apply(pd.to_numeric, errors="coerce").eq(1).any(axis=1)
    no_nih = ~decoded.loc[picked.index, "labels"].str.split("|").map(lambda f: bool(set(f) & set(layouts.NIH_FINDINGS)))
    assert (decoded.loc[picked.index, "labels"] == "Other Finding").sum() == int((other & no_nih).sum()) > 0
    policy = result["data_quality_report"]["label_policy"]["uncertain"]
    assert policy["Cardiomegaly"] == "ignore" and policy["Atelectasis"] == policy["Edema"] == "uones"


def test_chexpert_without_valid_csv_names_chexperts_own_split_file(tables, tmp_path):
    decoded = pd.DataFrame({"image_index": [f"{i}.jpg" for i in range(40)], "patient_id": range(40),
                            "target": [i % 3 == 0 for i in range(40)]}).astype({"target": int})  # fmt: skip
    params = base_params("data_processing")["split"] | {"method": "official"}
    with pytest.raises(UserValueError, match="valid.csv beside train.csv"):
        split_by_patient(decoded, {}, "Cardiomegaly", params)
    shutil.rmtree(tmp_path, ignore_errors=True)


# ---- VinDr-CXR: Nguyen et al. 2022 (the Kaggle release's train.csv) ------------------------------------
VINDR = TABLES / "vinbigdata-train.csv.gz"
VINDR_MEANS = {"Cardiomegaly": "Cardiomegaly", "Effusion": "Pleural effusion", "Pneumothorax": "Pneumothorax",
               "Fibrosis": "Pulmonary fibrosis", "Atelectasis": "Atelectasis"}  # fmt: skip


def _dicom_stand_in(path, pixels: np.ndarray, monochrome1: bool) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.SOPInstanceUID = generate_uid()
    ds.Modality, ds.PatientSex, ds.PatientAge = "DX", "F" if monochrome1 else "M", "054Y"
    stored = (255 - pixels) if monochrome1 else pixels  # MONOCHROME1: bright is low
    ds.set_pixel_data(stored.astype(np.uint8), photometric_interpretation="MONOCHROME1" if monochrome1 else
                      "MONOCHROME2", bits_stored=8)  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def test_vindr_real_table_reads_three_readers_by_consensus_boxes_and_monochrome1(tables, tmp_path):
    root = tmp_path / "vindr"
    root.mkdir()
    (root / "train.csv.gz").symlink_to(VINDR)
    raw = pd.read_csv(VINDR, dtype=str, keep_default_na=False)
    # the reading of the data set's description: three readers an image; a finding is the image's when two name it
    readers = raw.groupby("image_id")["rad_id"].nunique()
    named = raw.drop_duplicates(["image_id", "rad_id", "class_name"]).groupby(["image_id", "class_name"]).size()
    majority = {f: set(named.xs(c, level="class_name")[lambda n: n >= 2].index) for f, c in VINDR_MEANS.items()}
    anyone = {f: set(named.xs(c, level="class_name").index) for f, c in VINDR_MEANS.items()}
    assert readers.value_counts().to_dict() == {3: 15000}
    assert len(majority["Cardiomegaly"]) < len(anyone["Cardiomegaly"])
    images = sorted(readers.index)
    cardio = sorted(majority["Cardiomegaly"])[:40]
    picked = cardio + [i for i in images if i not in anyone["Cardiomegaly"]][: 120 - len(cardio)]
    thumbs = _thumbnails(len(picked))
    for k, (image_id, pixels) in enumerate(zip(picked, thumbs)):
        _dicom_stand_in(root / "train" / f"{image_id}.dicom", pixels, monochrome1=k % 2 == 0)

    cohort, files, _, left_out, policy = read_cohort(CohortFolder(str(root)), base_params("cohort", layout="vindr"), 1)
    assert len(cohort) == 15000 and policy["consensus"] == "majority" and left_out is not None
    labels = cohort.set_index(cohort["Image Index"].str[len("train/") : -len(".dicom")])["Finding Labels"]
    for finding, ids in majority.items():
        assert set(labels.index[labels.str.split("|").map(lambda f, finding=finding: finding in f)]) == ids, finding
    any_params = base_params("cohort", layout="vindr", vindr_consensus="any")
    any_cohort, *_ = read_cohort(CohortFolder(str(root)), any_params, 1)
    assert any_cohort["Finding Labels"].str.contains("Cardiomegaly").sum() == len(anyone["Cardiomegaly"])

    result = _data_processing(root, {"layout": "vindr"})
    decoded = result["model_input_table"].set_index("image_index")
    assert len(decoded) == len(picked) and int(decoded["target"].sum()) == len(cardio)
    assert result["dropped_rows"]["reason"].value_counts().to_dict() == {"missing": 15000 - len(picked)}
    assert set(decoded.loc[[f"train/{i}.dicom" for i in picked[::2]], "sex"]) == {"F"}  # from the headers
    # MONOCHROME1 stand-ins decode bone-bright, as their MONOCHROME2 twins would
    cache = PixelCacheDataset(str(root.parent / "cache"), image_size=32).load()
    first = cache.images([decoded.loc[f"train/{picked[0]}.dicom", "path"]])[0]
    expected = cv2.resize(thumbs[0], (32, 32), interpolation=cv2.INTER_AREA)
    assert np.corrcoef(np.asarray(first, float).ravel(), expected.astype(float).ravel())[0, 1] > 0.95

    from cardio_kedro.datasets import BoxListDataset

    boxes = BoxListDataset(str(root / "BBox_List_2017.csv")).load()
    cardio_boxes = boxes[boxes["finding"] == "Cardiomegaly"]
    assert cardio_boxes["image_index"].nunique() == len(anyone["Cardiomegaly"]) == len(cardio_boxes)
    assert (cardio_boxes[["w", "h"]] > 0).all().all()
