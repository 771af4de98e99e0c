"""Cohort layouts: each public data set's own files turned into the project's cohort table.

A layout adapter takes ``read`` (a function that reads one CSV of the cohort folder by its relative
name, as strings) and ``files`` (every file below the folder: ``rel`` path and ``path``, with
``nbytes``/``mtime_ns`` for a store) and returns a ``Cohort``:

- ``table``: the NIH label-table columns (``Image Index`` is the image's key, its path relative
  to the cohort folder; ``Patient ID`` an integer; ``Follow-up #`` the study's order within the
  patient; ``Finding Labels`` the NIH findings the data set has, ``|``-joined, or ``No Finding``),
  plus ``Uncertain Labels`` (findings labelled uncertain, left out of their targets);
- ``images``: ``image_index`` (the same key) and ``path`` of each image file;
- ``official_split``: the data set's own split as ``{"train_val": keys, "test": keys}``, or ``{}``.

Only NIH findings are ever labels: each data set's names are mapped where they mean the same
(docs/data.md lists the mappings). Nothing here touches the disk.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pandas as pd

from cardio_kedro.cohort.nih import NIH_FINDINGS, NO_FINDING, REQUIRED_LABEL_COLUMNS
from cardio_kedro.common.errors import UserDatasetError

logger = logging.getLogger(__name__)

LAYOUTS = ("nih", "chexpert", "mimic_cxr_jpg", "padchest", "csv", "dicom")
UNCERTAIN_POLICIES = ("uones", "uzeros", "ignore")  # Irvin et al. 2019 (CheXpert)
UNCERTAIN_COLUMN = "Uncertain Labels"
Reader = Callable[[str], pd.DataFrame]

# CheXpert's 14 observations (the CheXpert labeler; MIMIC-CXR-JPG uses the same names) -> NIH findings.
# Enlarged Cardiomediastinum, Lung Opacity, Lung Lesion (mass or nodule), Pleural Other, Fracture and
# Support Devices have no NIH finding of the same meaning and are not mapped.
CHEXPERT_TO_NIH = {
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Consolidation": "Consolidation",
    "Edema": "Edema",
    "Pleural Effusion": "Effusion",
    "Pneumonia": "Pneumonia",
    "Pneumothorax": "Pneumothorax",
}
CHEXPERT_FILES = ("train.csv", "valid.csv")
CHEXPERT_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")

MIMIC_METADATA = "mimic-cxr-2.0.0-metadata.csv"
MIMIC_LABELS = {"chexpert": "mimic-cxr-2.0.0-chexpert.csv", "negbio": "mimic-cxr-2.0.0-negbio.csv"}
MIMIC_SPLIT = "mimic-cxr-2.0.0-split.csv"
MIMIC_FRONTAL = ("PA", "AP")

PADCHEST_TABLE = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
PADCHEST_COLUMNS = (
    "ImageID",
    "ImageDir",
    "StudyDate_DICOM",
    "PatientID",
    "PatientBirth",
    "PatientSex_DICOM",
    "Projection",
    "Labels",
)
PADCHEST_FRONTAL = ("PA", "AP", "AP_horizontal")
# PadChest's labels (Bustos et al. 2020, its UMLS-based tree) -> NIH findings; `normal` (none of
# them) reads as No Finding.
PADCHEST_TO_NIH = {
    "atelectasis": "Atelectasis",
    "lobar atelectasis": "Atelectasis",
    "laminar atelectasis": "Atelectasis",
    "segmental atelectasis": "Atelectasis",
    "total atelectasis": "Atelectasis",
    "round atelectasis": "Atelectasis",
    "cardiomegaly": "Cardiomegaly",
    "consolidation": "Consolidation",
    "pulmonary edema": "Edema",
    "pleural effusion": "Effusion",
    "loculated pleural effusion": "Effusion",
    "emphysema": "Emphysema",
    "pulmonary fibrosis": "Fibrosis",
    "hiatal hernia": "Hernia",
    "infiltrates": "Infiltration",
    "interstitial pattern": "Infiltration",
    "alveolar pattern": "Infiltration",
    "mass": "Mass",
    "pulmonary mass": "Mass",
    "nodule": "Nodule",
    "multiple nodules": "Nodule",
    "pleural thickening": "Pleural_Thickening",
    "apical pleural thickening": "Pleural_Thickening",
    "pneumonia": "Pneumonia",
    "pneumothorax": "Pneumothorax",
}


class Cohort(NamedTuple):
    """A cohort in the project's form (see the module docstring)."""

    table: pd.DataFrame
    images: pd.DataFrame
    official_split: dict


# ---- shared pieces -------------------------------------------------------------------------------
def require_columns(frame: pd.DataFrame, columns, file: str, layout: str) -> None:
    """Refuse a table without the columns its layout has, naming the file, the columns and the layout."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise UserDatasetError(
            f"{file} has no column(s) {missing}, which the '{layout}' layout reads (its columns: "
            f"{list(frame.columns)[:12]}). Is cohort.layout right for this folder?"
        )


def patient_numbers(ids: pd.Series) -> pd.Series:
    """Integer patient ids: the ids themselves where all are integers, else 1..n in sorted order."""
    text = ids.astype(str).str.strip()
    if text.str.fullmatch(r"\d{1,18}").all():
        return text.astype("int64")
    codes = {value: i + 1 for i, value in enumerate(sorted(text.unique()))}
    return text.map(codes).astype("int64")


def finding_labels(positive: pd.DataFrame) -> pd.Series:
    """``A|B`` of the NIH findings (columns) that are 1 in each row, or ``No Finding``."""
    findings = [f for f in NIH_FINDINGS if f in positive.columns]
    if not findings:
        return pd.Series(NO_FINDING, index=positive.index)
    flags = positive[findings].fillna(0).astype(bool).to_numpy()
    names = np.asarray(findings, dtype=object)
    return pd.Series(["|".join(names[row]) or NO_FINDING for row in flags], index=positive.index)


def study_order(patient: pd.Series, study: pd.Series) -> pd.Series:
    """Each image's study rank within its patient, from 0 (``study`` sorts: a date, a number)."""
    frame = pd.DataFrame({"patient": patient.to_numpy(), "study": study.to_numpy()}, index=patient.index)
    return (frame.groupby("patient")["study"].rank(method="dense").fillna(1).astype(int) - 1).astype(str)


def label_values(values: pd.Series, policy: str) -> tuple[pd.Series, pd.Series]:
    """CheXpert-style labels (1, 0, -1 or blank, also ``1.0``) as (positive, uncertain) flags.

    ``uones``: -1 is positive; ``uzeros``: negative; ``ignore``: negative and flagged uncertain, so
    that the image is left out of that finding's targets. Blank means not mentioned: negative.
    Raises ``KeyError`` with the index of the first other value.
    """
    number = pd.to_numeric(values.astype(str).str.strip().replace("", "0"), errors="coerce")
    bad = ~number.isin([1, 0, -1])
    if bad.any():
        raise KeyError(values.index[bad][0])
    uncertain = number == -1
    positive = (number == 1) | (uncertain & (policy == "uones"))
    return positive, uncertain & (policy == "ignore")


def _assemble(
    keys: pd.Series,
    patient: pd.Series,
    follow_up: pd.Series,
    age: pd.Series,
    sex: pd.Series,
    view: pd.Series,
    positive: pd.DataFrame,
    uncertain: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The NIH-form table (strings, as the NIH reader gives) from the adapter's columns."""
    table = pd.DataFrame(
        {
            "Image Index": keys.astype(str).to_numpy(),
            "Finding Labels": finding_labels(positive).to_numpy(),
            "Follow-up #": follow_up.astype(str).to_numpy(),
            "Patient ID": patient_numbers(patient).astype(str).to_numpy(),
            "Patient Age": age.fillna("").astype(str).to_numpy(),
            "Patient Gender": sex.fillna("").astype(str).to_numpy(),
            "View Position": view.fillna("").astype(str).to_numpy(),
        }
    )
    if uncertain is not None:
        table[UNCERTAIN_COLUMN] = finding_labels(uncertain).replace(NO_FINDING, "").to_numpy()
    return table[[*REQUIRED_LABEL_COLUMNS, *([UNCERTAIN_COLUMN] if uncertain is not None else [])]]


def image_index(keys: pd.Series, files: pd.DataFrame) -> pd.DataFrame:
    """The files of ``keys`` (relative paths), with a store's ``nbytes``/``mtime_ns`` where listed."""
    wanted = files[files["rel"].isin(set(keys))]
    return wanted.rename(columns={"rel": "image_index"}).reset_index(drop=True)


def _mapped_labels(
    table: pd.DataFrame, mapping: dict[str, str], policy: str, file: str, layout: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Positive and uncertain flags per NIH finding from the data set's label columns."""
    require_columns(table, mapping, file, layout)
    positive, uncertain = pd.DataFrame(index=table.index), pd.DataFrame(index=table.index)
    for column, finding in mapping.items():
        try:
            pos, unc = label_values(table[column], policy)
        except KeyError as exc:
            line = exc.args[0]
            raise UserDatasetError(
                f"{file}, line {line + 2}, column '{column}': {table.loc[line, column]!r}; the '{layout}' layout "
                "reads 1, 0, -1 or blank"
            ) from None
        positive[finding] = pos | positive.get(finding, False)
        uncertain[finding] = unc | uncertain.get(finding, False)
    return positive, uncertain


# ---- CheXpert ------------------------------------------------------------------------------------
def _under_cohort(paths: pd.Series, files: pd.DataFrame) -> pd.Series:
    """CheXpert's ``Path`` starts with the download's folder name (``CheXpert-v1.0-small/train/...``):
    the path relative to the cohort folder is the one that exists, as written or without that prefix."""
    known = set(files["rel"])
    stripped = paths.str.split("/", n=1).str[-1]
    return paths.where(paths.isin(known), stripped)


def chexpert(read: Reader, files: pd.DataFrame, uncertain: str, include_lateral: bool) -> Cohort:
    """CheXpert (Irvin et al. 2019): ``train.csv`` and ``valid.csv`` (``valid.csv`` is the official test).

    ``Path`` names patient and study (``patient00001/study2/view1_frontal.jpg``); labels are 1, 0,
    -1 (uncertain) or blank, ``uncertain`` says what -1 means. Lateral films are left out unless
    ``include_lateral`` (their view is then ``LATERAL``).
    """
    parts, positives, unsures = [], [], []
    for name in CHEXPERT_FILES:
        try:
            frame = read(name)
        except FileNotFoundError:
            continue
        require_columns(frame, CHEXPERT_COLUMNS, name, "chexpert")
        positive, unsure = _mapped_labels(frame, CHEXPERT_TO_NIH, uncertain, name, "chexpert")
        parts.append(frame.assign(_file=name, _line=np.arange(len(frame))))
        positives.append(positive)
        unsures.append(unsure)
    if not parts:
        raise UserDatasetError(f"The 'chexpert' layout reads {' and/or '.join(CHEXPERT_FILES)}: neither is there")
    raw = pd.concat(parts, ignore_index=True)
    positive = pd.concat(positives, ignore_index=True)
    unsure = pd.concat(unsures, ignore_index=True)
    path = raw["Path"].str.strip().str.replace("\\", "/", regex=False)
    ids = path.str.extract(r"patient(\d+)/study(\d+)/")
    bad = ids[0].isna()
    if bad.any():
        row = raw[bad].iloc[0]
        raise UserDatasetError(
            f"{row['_file']}, line {row['_line'] + 2}, column 'Path': {row['Path']!r} names no "
            "patientNNNNN/studyN/ folder, as the 'chexpert' layout expects"
        )
    frontal = raw["Frontal/Lateral"].str.strip().str.lower() == "frontal"
    keep = frontal | include_lateral
    raw, path, ids, positive, unsure, frontal = (x[keep] for x in (raw, path, ids, positive, unsure, frontal))
    keys = _under_cohort(path, files)
    view = raw["AP/PA"].str.strip().str.upper().where(frontal, "LATERAL")
    sex = raw["Sex"].str.strip().str[:1].str.upper().where(raw["Sex"].str.strip().isin(["Male", "Female"]), "")
    table = _assemble(keys, ids[0], study_order(ids[0], ids[1].astype(int)), raw["Age"], sex, view, positive, unsure)
    test = keys[raw["_file"] == "valid.csv"].tolist()
    split = {"train_val": keys[raw["_file"] == "train.csv"].tolist(), "test": test} if test else {}
    return Cohort(table, image_index(keys, files), split)


# ---- MIMIC-CXR-JPG -------------------------------------------------------------------------------
def mimic_cxr_jpg(read: Reader, files: pd.DataFrame, labeler: str, uncertain: str, include_lateral: bool) -> Cohort:
    """MIMIC-CXR-JPG 2.0 (Johnson et al. 2019): the metadata, labels (CheXpert or NegBio labeler, per
    study) and split tables; images at ``files/pNN/pSUBJECT/sSTUDY/DICOM_ID.jpg``.

    The split table's ``test`` is the official test, ``train`` and ``validate`` are train_val.
    MIMIC-CXR-JPG has no sex or age (they are in MIMIC-IV): those columns stay blank.
    """
    meta = read(MIMIC_METADATA)
    require_columns(
        meta, ("dicom_id", "subject_id", "study_id", "ViewPosition", "StudyDate"), MIMIC_METADATA, "mimic_cxr_jpg"
    )
    labels_file = MIMIC_LABELS[labeler]
    labels = read(labels_file)
    require_columns(labels, ("subject_id", "study_id", *CHEXPERT_TO_NIH), labels_file, "mimic_cxr_jpg")
    positive, unsure = _mapped_labels(labels, CHEXPERT_TO_NIH, uncertain, labels_file, "mimic_cxr_jpg")
    study_labels = pd.concat(
        [labels[["study_id"]], positive.add_prefix("pos."), unsure.add_prefix("unc.")], axis=1
    ).drop_duplicates("study_id")
    view = meta["ViewPosition"].str.strip().str.upper()
    frontal = view.isin(MIMIC_FRONTAL)
    meta = meta[frontal | include_lateral].assign(_view=view.where(frontal, "LATERAL"))
    merged = meta.merge(study_labels, on="study_id", how="left")
    no_label = merged["pos.Cardiomegaly"].isna()
    merged = merged[~no_label].reset_index(drop=True)  # a study the labeler did not read: no labels
    subject = merged["subject_id"].str.strip()
    keys = (
        "files/p"
        + subject.str[:2]
        + "/p"
        + subject
        + "/s"
        + merged["study_id"].str.strip()
        + "/"
        + merged["dicom_id"].str.strip()
        + ".jpg"
    )
    time = merged["StudyDate"].str.strip() + merged.get("StudyTime", pd.Series("", index=merged.index)).str.strip()
    positive = merged.filter(like="pos.").rename(columns=lambda c: c[4:]).astype(bool)
    unsure = merged.filter(like="unc.").rename(columns=lambda c: c[4:]).astype(bool)
    blank = pd.Series("", index=merged.index)
    table = _assemble(keys, subject, study_order(subject, time), blank, blank, merged["_view"], positive, unsure)
    split: dict = {}
    try:
        official = read(MIMIC_SPLIT)
    except FileNotFoundError:
        official = None
    if official is not None:
        require_columns(official, ("dicom_id", "split"), MIMIC_SPLIT, "mimic_cxr_jpg")
        which = merged["dicom_id"].str.strip().map(official.set_index("dicom_id")["split"].str.strip())
        split = {"train_val": keys[which.isin(["train", "validate"])].tolist(), "test": keys[which == "test"].tolist()}
    return Cohort(table, image_index(keys, files), split)


# ---- PadChest ------------------------------------------------------------------------------------
def padchest_labels(text: str) -> list[str]:
    """PadChest's ``Labels`` cell (a Python-style list such as ``['cardiomegaly', ' pleural effusion']``,
    or ``[]``, or blank) as clean lower-case names."""
    text = str(text).strip()
    if not text or text.lower() == "nan":
        return []
    quoted = re.findall(r"'([^']*)'", text)  # also the rows without commas between the names
    values = quoted if quoted else text.strip("[]").split(",")
    return [v.strip().lower() for v in values if v.strip()]


def padchest(read: Reader, files: pd.DataFrame, include_lateral: bool) -> Cohort:
    """PadChest (Bustos et al. 2020): one CSV, images at ``ImageDir/ImageID`` (16-bit PNGs).

    ``Labels`` lists the findings of a study's report; names are mapped by ``PADCHEST_TO_NIH``.
    Age is the study year minus ``PatientBirth``; ``Projection`` PA, AP, AP_horizontal are frontal.
    """
    raw = read(PADCHEST_TABLE)
    require_columns(raw, PADCHEST_COLUMNS, PADCHEST_TABLE, "padchest")
    frontal = raw["Projection"].str.strip().isin(PADCHEST_FRONTAL)
    raw = raw[frontal | include_lateral].reset_index(drop=True)
    projection = raw["Projection"].str.strip()
    frontal = projection.isin(PADCHEST_FRONTAL)
    names = raw["Labels"].map(padchest_labels)
    positive = pd.DataFrame(
        {f: names.map(lambda ns, f=f: any(PADCHEST_TO_NIH.get(n) == f for n in ns)) for f in NIH_FINDINGS}
    )
    folder = raw["ImageDir"].str.strip().str.replace(r"\.0$", "", regex=True)
    keys = folder + "/" + raw["ImageID"].str.strip()
    year = pd.to_numeric(raw["StudyDate_DICOM"].str.strip().str[:4], errors="coerce")
    born = pd.to_numeric(raw["PatientBirth"].str.strip(), errors="coerce")
    age = (year - born).round().astype("Int64").astype(str).replace("<NA>", "")
    sex = raw["PatientSex_DICOM"].str.strip().str.upper().where(lambda s: s.isin(["M", "F"]), "")
    view = projection.str.upper().replace("AP_HORIZONTAL", "AP").where(frontal, "LATERAL")
    patient = raw["PatientID"]
    table = _assemble(keys, patient, study_order(patient, raw["StudyDate_DICOM"]), age, sex, view, positive)
    return Cohort(table, image_index(keys, files), {})


# ---- a hospital's export: a CSV of file and labels -----------------------------------------------
def table_positive(frame: pd.DataFrame, findings: dict[str, str], file: str, layout: str) -> pd.DataFrame:
    """0/1 flags per NIH finding from the columns ``findings`` names (1, 0, true/false, yes/no, blank = 0)."""
    require_columns(frame, findings.values(), file, layout)
    positive = pd.DataFrame(index=frame.index)
    truth = {
        "1": True,
        "1.0": True,
        "true": True,
        "yes": True,
        "0": False,
        "0.0": False,
        "false": False,
        "no": False,
        "": False,
    }
    for finding, column in findings.items():
        value = frame[column].astype(str).str.strip().str.lower().map(truth)
        if value.isna().any():
            line = int(value.index[value.isna()][0])
            raise UserDatasetError(
                f"{file}, line {line + 2}, column '{column}': {frame.loc[line, column]!r}; the '{layout}' "
                "layout reads 1/0, true/false, yes/no or blank"
            )
        positive[finding] = value.astype(bool)
    return positive


def _optional(frame: pd.DataFrame, column: str | None) -> pd.Series:
    return frame[column].astype(str).str.strip() if column else pd.Series("", index=frame.index)


def csv_table(read: Reader, files: pd.DataFrame, spec) -> Cohort:
    """A folder plus a CSV: ``spec`` (``cohort.table``) names the file and its columns.

    The image column holds paths relative to the cohort folder; the finding columns hold 1/0.
    """
    raw = read(spec.file)
    optional = [c for c in (spec.view_column, spec.sex_column, spec.age_column, spec.study_column) if c]
    require_columns(raw, [spec.image_column, spec.patient_column, *optional], spec.file, "csv")
    positive = table_positive(raw, spec.findings, spec.file, "csv")
    keys = (
        raw[spec.image_column].str.strip().str.replace("\\", "/", regex=False).str.replace(r"^(\./)+", "", regex=True)
    )
    patient = raw[spec.patient_column].str.strip()
    blank = patient == ""
    if blank.any():
        line = int(raw.index[blank][0])
        raise UserDatasetError(
            f"{spec.file}, line {line + 2}, column '{spec.patient_column}': blank; a patient is required"
        )
    study = _optional(raw, spec.study_column)
    order = study_order(patient, study) if spec.study_column else pd.Series("0", index=raw.index)
    table = _assemble(
        keys,
        patient,
        order,
        _optional(raw, spec.age_column),
        _optional(raw, spec.sex_column).str[:1].str.upper(),
        _optional(raw, spec.view_column).str.upper(),
        positive,
    )
    return Cohort(table, image_index(keys, files), {})


# ---- DICOM ---------------------------------------------------------------------------------------
def dicom_folder(read: Reader, files: pd.DataFrame, headers: pd.DataFrame, spec) -> Cohort:
    """A folder of DICOM files (any names): patient, study date, view, sex and age from each header
    (``headers``: ``rel`` and the header fields), labels from ``spec.file`` keyed by ``spec.dicom_key``
    (``path``: the file's path relative to the folder; ``sop_instance_uid``: the header's SOPInstanceUID).

    A file the label table does not name is left out (the log counts them); a header without
    PatientID is refused with the file's name.
    """
    unreadable = headers["error"] != ""
    if unreadable.any():
        logger.warning("%d file(s) are not readable DICOM and are left out, e.g. %s: %s", int(unreadable.sum()),
                       headers.loc[unreadable, "rel"].iloc[0], headers.loc[unreadable, "error"].iloc[0])  # fmt: skip
        headers = headers[~unreadable]
    raw = read(spec.file)
    require_columns(raw, [spec.image_column], spec.file, "dicom")
    positive = table_positive(raw, spec.findings, spec.file, "dicom").assign(_key=raw[spec.image_column].str.strip())
    join = "rel" if spec.dicom_key == "path" else "SOPInstanceUID"
    merged = headers.merge(positive, left_on=join, right_on="_key", how="inner")
    if len(merged) < len(headers):
        logger.warning("%d DICOM file(s) have no row in %s and are left out", len(headers) - len(merged), spec.file)
    if merged.empty:
        raise UserDatasetError(
            f"No row of {spec.file} (column '{spec.image_column}', keyed by {spec.dicom_key}) names one of the "
            f"{len(headers)} DICOM file(s) found; e.g. {headers[join].head(2).tolist()}"
        )
    no_patient = merged["PatientID"].str.strip() == ""
    if no_patient.any():
        raise UserDatasetError(
            f"{merged.loc[no_patient, 'rel'].iloc[0]}: the DICOM header has no PatientID ({int(no_patient.sum())} "
            "file(s) like this); the split is by patient: fill PatientID or leave the files out of the label table"
        )
    view = merged["ViewPosition"].str.strip().str.upper()
    sex = merged["PatientSex"].str.strip().str.upper().where(lambda s: s.isin(["M", "F"]), "")
    table = _assemble(
        merged["rel"],
        merged["PatientID"],
        study_order(merged["PatientID"], merged["StudyDate"]),
        merged["PatientAge"],
        sex,
        view,
        merged[list(spec.findings)],
    )
    return Cohort(table, image_index(merged["rel"], files), {})
