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

from cardio_kedro.cohort.imaging import NOT_IMAGE_MODALITIES, NOT_RADIOGRAPH_MODALITIES
from cardio_kedro.cohort.nih import NIH_FINDINGS, NO_FINDING, OTHER_FINDING, REQUIRED_LABEL_COLUMNS
from cardio_kedro.common.errors import UserDatasetError

logger = logging.getLogger(__name__)

LAYOUTS = ("nih", "chexpert", "mimic_cxr_jpg", "padchest", "vindr", "csv", "dicom")
VINDR_CONSENSUS = ("any", "majority")  # a finding of an image: named by one of its readers, or by most of them
UNCERTAIN_POLICIES = ("uones", "uzeros", "ignore")  # Irvin et al. 2019 (CheXpert)
UncertainPolicy = str | dict[str, str]  # one policy for every finding, or one per NIH finding
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
# observations CheXpert reads as abnormal with no NIH finding of the same meaning: a film positive for one of them
# and for no mapped finding is "Other Finding", not "No Finding" (Support Devices are no finding: CheXpert's own
# No Finding allows them)
CHEXPERT_OTHER = ("Enlarged Cardiomediastinum", "Lung Opacity", "Lung Lesion", "Pleural Other", "Fracture")
CHEXPERT_FILES = ("train.csv", "valid.csv")
CHEXPERT_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")

MIMIC_METADATA = "mimic-cxr-2.0.0-metadata.csv"
MIMIC_LABELS = {"chexpert": "mimic-cxr-2.0.0-chexpert.csv", "negbio": "mimic-cxr-2.0.0-negbio.csv"}
MIMIC_SPLIT = "mimic-cxr-2.0.0-split.csv"
MIMIC_FRONTAL = ("PA", "AP")
MIMIC_LATERAL = ("LATERAL", "LL", "XTABLE LATERAL")  # other ViewPositions (AP AXIAL, decubitus, LAO, ...) are left out

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
    # sub-labels of PadChest's tree under a mapped finding, where they mean the same (docs/data.md)
    "atelectasis basal": "Atelectasis",
    "atypical pneumonia": "Pneumonia",
    "air bronchogram": "Consolidation",
    "loculated fissural effusion": "Effusion",
    "calcified pleural thickening": "Pleural_Thickening",
    "reticular interstitial pattern": "Infiltration",
    "reticulonodular interstitial pattern": "Infiltration",
    "ground glass pattern": "Infiltration",
    "miliary opacities": "Infiltration",
    "post radiotherapy changes": "Fibrosis",
    "asbestosis signs": "Fibrosis",
}
# a sub-label under two mapped findings
PADCHEST_TO_SEVERAL = {"hydropneumothorax": ("Effusion", "Pneumothorax")}
# PadChest's labels that say the row has no usable reading: the row is left out with this reason
PADCHEST_UNUSABLE = {"exclude": "excluded_by_padchest"}
# labels that say nothing about findings: a row with these alone is left out (neither normal nor a finding)
PADCHEST_NOT_A_READING = {"unchanged": "unchanged_only", "suboptimal study": "suboptimal_only"}
PADCHEST_PROJECTIONS = {"PA": "PA", "AP": "AP", "AP_horizontal": "AP", "L": "LATERAL"}  # COSTAL, EXCLUDE, UNK: out


class Cohort(NamedTuple):
    """A cohort in the project's form (see the module docstring), with the rows the layout left out
    (``image_index``, ``reason``, ``detail``: a view the model is not for, a row the data set marks as
    unusable or unreported) and the label policy that made the labels (for the reports)."""

    table: pd.DataFrame
    images: pd.DataFrame
    official_split: dict
    left_out: pd.DataFrame | None = None
    label_policy: dict | None = None


def left_out_rows(keys, reason, detail="") -> pd.DataFrame:
    """The rows a run leaves out (``image_index``, ``reason``, ``detail``): ``keys`` their image keys; ``reason``
    and ``detail`` one word for all or one per key (a Series, a list)."""
    keys = [str(k) for k in keys]

    def column(value) -> list[str]:
        return [value] * len(keys) if isinstance(value, str) else [str(v) for v in value]

    return pd.DataFrame({"image_index": keys, "reason": column(reason), "detail": column(detail)}, dtype=object)


def log_left_out(layout: str, left_out: pd.DataFrame) -> None:
    """One log line: how many rows the layout left out, by reason."""
    if len(left_out):
        counts = left_out["reason"].value_counts()
        logger.info("%s layout: left out %d row(s): %s", layout, len(left_out),
                    ", ".join(f"{k} {v}" for k, v in counts.items()))  # fmt: skip


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


def finding_labels(positive: pd.DataFrame, other: pd.Series | None = None) -> pd.Series:
    """``A|B`` of the NIH findings (columns) that are 1 in each row; else ``Other Finding`` where ``other`` (the
    data set reads the film as abnormal in a way no NIH finding means), or ``No Finding``."""
    empty = NO_FINDING if other is None else other.map({True: OTHER_FINDING, False: NO_FINDING})
    findings = [f for f in NIH_FINDINGS if f in positive.columns]
    if not findings:
        return pd.Series(empty, index=positive.index)
    flags = positive[findings].fillna(0).astype(bool).to_numpy()
    names = np.asarray(findings, dtype=object)
    empty = np.broadcast_to(np.asarray(empty, dtype=object), len(flags))
    return pd.Series(["|".join(names[row]) or e for row, e in zip(flags, empty)], index=positive.index)


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
    other: pd.Series | None = None,
) -> pd.DataFrame:
    """The NIH-form table (strings, as the NIH reader gives) from the adapter's columns."""
    table = pd.DataFrame(
        {
            "Image Index": keys.astype(str).to_numpy(),
            "Finding Labels": finding_labels(positive, other).to_numpy(),
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


def uncertain_policies(policy: UncertainPolicy, findings) -> dict[str, str]:
    """``{finding: policy}`` for ``findings``: a single policy applies to every one."""
    if isinstance(policy, str):
        return dict.fromkeys(findings, policy)
    return {finding: policy[finding] for finding in findings}


def _mapped_labels(
    table: pd.DataFrame, mapping: dict[str, str], policy: UncertainPolicy, file: str, layout: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Positive and uncertain flags per NIH finding from the data set's label columns (``policy``: what -1
    means, for every finding or per finding)."""
    require_columns(table, mapping, file, layout)
    policies = uncertain_policies(policy, mapping.values())
    positive, uncertain = pd.DataFrame(index=table.index), pd.DataFrame(index=table.index)
    for column, finding in mapping.items():
        try:
            pos, unc = label_values(table[column], policies[finding])
        except KeyError as exc:
            line = exc.args[0]
            raise UserDatasetError(
                f"{file}, line {line + 2}, column '{column}': {table.loc[line, column]!r}; the '{layout}' layout "
                "reads 1, 0, -1 or blank"
            ) from None
        positive[finding] = pos | positive.get(finding, False)
        uncertain[finding] = unc | uncertain.get(finding, False)
    return positive, uncertain


def _positive_in(frame: pd.DataFrame, columns) -> pd.Series:
    """Rows with a 1 in any of ``columns`` that the frame has (CheXpert's 1.0; blank, 0, -1: no)."""
    flags = pd.Series(False, index=frame.index)
    for column in columns:
        if column in frame:
            flags |= pd.to_numeric(frame[column].astype(str).str.strip(), errors="coerce") == 1
    return flags


# ---- CheXpert ------------------------------------------------------------------------------------
def _under_cohort(paths: pd.Series, files: pd.DataFrame) -> pd.Series:
    """CheXpert's ``Path`` starts with the download's folder name (``CheXpert-v1.0-small/train/...``):
    the path relative to the cohort folder is the one that exists, as written or without that prefix."""
    known = set(files["rel"])
    stripped = paths.str.split("/", n=1).str[-1]
    return paths.where(paths.isin(known), stripped)


CHEXPERT_FRONTAL_VIEWS = ("AP", "PA")


def chexpert(read: Reader, files: pd.DataFrame, uncertain: UncertainPolicy, include_lateral: bool) -> Cohort:
    """CheXpert (Irvin et al. 2019): ``train.csv`` and ``valid.csv`` (``valid.csv`` is the official test).

    ``Path`` names patient and study (``patient00001/study2/view1_frontal.jpg``); labels are 1, 0,
    -1 (uncertain) or blank, ``uncertain`` says what -1 means (per finding). Lateral films are left out
    unless ``include_lateral`` (their view is then ``LATERAL``); a film CheXpert calls frontal whose
    ``AP/PA`` is LL or RL (a lateral decubitus) is left out too. Every row left out is counted with its reason.
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
    ap_pa = raw["AP/PA"].str.strip().str.upper()
    frontal = raw["Frontal/Lateral"].str.strip().str.lower() == "frontal"
    decubitus = frontal & ~ap_pa.isin(CHEXPERT_FRONTAL_VIEWS)
    lateral = ~frontal
    reason = (
        pd.Series("", index=raw.index)
        .mask(decubitus, "view_not_ap_pa")
        .mask(lateral & ~include_lateral, "view_lateral")
    )
    keys_all = _under_cohort(path, files)
    out = reason != ""
    detail = "Frontal/Lateral " + raw.loc[out, "Frontal/Lateral"] + ", AP/PA " + raw.loc[out, "AP/PA"]
    left_out = left_out_rows(keys_all[out], reason[out], detail)
    keep = ~out
    raw, ids, positive, unsure, frontal, ap_pa = (x[keep] for x in (raw, ids, positive, unsure, frontal, ap_pa))
    keys = keys_all[keep]
    view = ap_pa.where(frontal, "LATERAL")
    sex = raw["Sex"].str.strip().str[:1].str.upper().where(raw["Sex"].str.strip().isin(["Male", "Female"]), "")
    other = _positive_in(raw, CHEXPERT_OTHER)
    order = study_order(ids[0], ids[1].astype(int))
    table = _assemble(keys, ids[0], order, raw["Age"], sex, view, positive, unsure, other)
    test = keys[raw["_file"] == "valid.csv"].tolist()
    split = {"train_val": keys[raw["_file"] == "train.csv"].tolist(), "test": test} if test else {}
    log_left_out("chexpert", left_out)
    policy = {"uncertain": uncertain_policies(uncertain, CHEXPERT_TO_NIH.values())}
    return Cohort(table, image_index(keys, files), split, left_out, policy)


# ---- MIMIC-CXR-JPG -------------------------------------------------------------------------------
def mimic_cxr_jpg(
    read: Reader, files: pd.DataFrame, labeler: str, uncertain: UncertainPolicy, include_lateral: bool
) -> Cohort:
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
    frontal, lateral = view.isin(MIMIC_FRONTAL), view.isin(MIMIC_LATERAL)
    meta = meta.assign(_view=view.where(frontal, "LATERAL"), _key=_mimic_keys(meta))
    reason = pd.Series("", index=meta.index).mask(~frontal & ~lateral, "view_other")
    reason = reason.mask(lateral & ~include_lateral, "view_lateral")
    merged = meta.merge(study_labels, on="study_id", how="left")
    reason = reason.to_numpy()
    reason = np.where((reason == "") & merged["pos.Cardiomegaly"].isna().to_numpy(), "not_labelled", reason)
    out = reason != ""
    left_out = left_out_rows(
        merged.loc[out, "_key"], pd.Series(reason[out]), "ViewPosition " + merged.loc[out, "ViewPosition"]
    )
    merged = merged[~out].reset_index(drop=True)  # a study the labeler did not read: no labels
    subject = merged["subject_id"].str.strip()
    keys = merged["_key"]
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
    log_left_out("mimic_cxr_jpg", left_out)
    policy = {"uncertain": uncertain_policies(uncertain, CHEXPERT_TO_NIH.values()), "labeler": labeler}
    return Cohort(table, image_index(keys, files), split, left_out, policy)


def _mimic_keys(meta: pd.DataFrame) -> pd.Series:
    """``files/pNN/pSUBJECT/sSTUDY/DICOM_ID.jpg`` of each metadata row."""
    subject = meta["subject_id"].str.strip()
    return (
        "files/p"
        + subject.str[:2]
        + "/p"
        + subject
        + "/s"
        + meta["study_id"].str.strip()
        + "/"
        + (meta["dicom_id"].str.strip() + ".jpg")
    )


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


def padchest_findings(names: list[str]) -> set[str]:
    """The NIH findings of one row's PadChest labels (sub-labels mapped to their parent)."""
    found = {PADCHEST_TO_NIH[n] for n in names if n in PADCHEST_TO_NIH}
    for n in names:
        found.update(PADCHEST_TO_SEVERAL.get(n, ()))
    return found


def _padchest_unusable(cell: str, names: list[str]) -> str:
    """Why a row's labels cannot be read as normal or abnormal, or ``""``."""
    if str(cell).strip().lower() == "nan":
        return "no_report"  # PadChest's rows whose report was not labelled
    if not names:
        return "no_labels"
    for name, reason in PADCHEST_UNUSABLE.items():
        if name in names:
            return reason
    rest = set(names) - set(PADCHEST_NOT_A_READING)
    if not rest:
        return PADCHEST_NOT_A_READING["unchanged" if "unchanged" in names else "suboptimal study"]
    return ""


def padchest(read: Reader, files: pd.DataFrame, include_lateral: bool) -> Cohort:
    """PadChest (Bustos et al. 2020): one CSV, images at ``ImageDir/ImageID`` (16-bit PNGs).

    ``Labels`` lists the findings of a study's report; names (and their sub-labels) are mapped by
    ``PADCHEST_TO_NIH``. Age is the study year minus ``PatientBirth``; ``Projection`` PA, AP, AP_horizontal
    are frontal, L lateral (kept with ``include_lateral``); COSTAL (rib series), EXCLUDE and UNK are left out.
    A row without a report (``nan``), with no label, marked ``exclude``, or with only ``unchanged`` or
    ``suboptimal study`` is left out too: it is neither normal nor abnormal. Each is counted with its reason.
    """
    raw = read(PADCHEST_TABLE)
    require_columns(raw, PADCHEST_COLUMNS, PADCHEST_TABLE, "padchest")
    folder = raw["ImageDir"].str.strip().str.replace(r"\.0$", "", regex=True)
    keys_all = folder + "/" + raw["ImageID"].str.strip()
    projection = raw["Projection"].str.strip()
    view = projection.map(PADCHEST_PROJECTIONS)
    names = raw["Labels"].map(padchest_labels)
    reason = pd.Series("view_" + projection.str.lower(), index=raw.index).where(view.isna(), "")
    reason = reason.mask((view == "LATERAL") & ~include_lateral, "view_lateral")
    unusable = pd.Series([_padchest_unusable(c, n) for c, n in zip(raw["Labels"], names)], index=raw.index)
    reason = reason.mask((reason == "") & (unusable != ""), unusable)
    out = reason != ""
    detail = "Projection " + projection[out] + ", Labels " + raw.loc[out, "Labels"]
    left_out = left_out_rows(keys_all[out], reason[out], detail)
    keep = ~out
    raw, names, view, keys = raw[keep], names[keep], view[keep], keys_all[keep]
    findings = names.map(padchest_findings)
    positive = pd.DataFrame({f: findings.map(lambda fs, f=f: f in fs) for f in NIH_FINDINGS}, index=raw.index)
    other = names.map(lambda ns: bool(set(ns) - {"normal"} - set(PADCHEST_NOT_A_READING)))
    year = pd.to_numeric(raw["StudyDate_DICOM"].str.strip().str[:4], errors="coerce")
    born = pd.to_numeric(raw["PatientBirth"].str.strip(), errors="coerce")
    age = (year - born).round().astype("Int64").astype(str).replace("<NA>", "")
    sex = raw["PatientSex_DICOM"].str.strip().str.upper().where(lambda s: s.isin(["M", "F"]), "")
    patient = raw["PatientID"]
    order = study_order(patient, raw["StudyDate_DICOM"])
    table = _assemble(keys, patient, order, age, sex, view, positive, other=other)
    log_left_out("padchest", left_out)
    policy = {"labels": "PadChest's Labels with their sub-labels mapped to the NIH parent (docs/data.md)"}
    return Cohort(table, image_index(keys, files), {}, left_out, policy)


# ---- VinDr-CXR -------------------------------------------------------------------------------------
VINDR_TABLE = "train.csv"
VINDR_COLUMNS = ("image_id", "class_name", "rad_id", "x_min", "y_min", "x_max", "y_max")
# VinDr-CXR's local labels (Nguyen et al. 2022) -> NIH findings, where they mean the same
VINDR_TO_NIH = {
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Consolidation": "Consolidation",
    "Infiltration": "Infiltration",
    "Pleural effusion": "Effusion",
    "Pleural thickening": "Pleural_Thickening",
    "Pneumothorax": "Pneumothorax",
    "Pulmonary fibrosis": "Fibrosis",
}
# abnormal, with no NIH finding of the same meaning (Nodule/Mass is one class for two NIH findings)
VINDR_OTHER = ("Aortic enlargement", "Calcification", "ILD", "Lung Opacity", "Nodule/Mass", "Other lesion")


def vindr_keys(image_ids: pd.Series, known: set[str]) -> pd.Series:
    """Each VinDr ``image_id``'s file below the cohort folder: ``train/ID.dicom`` (the release's layout), or
    ``ID.dicom``/``.dcm`` where that is what exists; ``train/ID.dicom`` when none does (then counted missing)."""

    def key(image_id: str) -> str:
        for candidate in (f"train/{image_id}.dicom", f"train/{image_id}.dcm", f"{image_id}.dicom", f"{image_id}.dcm"):
            if candidate in known:
                return candidate
        return f"train/{image_id}.dicom"

    return image_ids.map(key)


def vindr_votes(raw: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Per image: how many of its readers named each class (columns), and how many readers read it."""
    frame = pd.DataFrame({"image": raw["image_id"].str.strip(), "reader": raw["rad_id"].str.strip(),
                          "label": raw["class_name"].str.strip()})  # fmt: skip
    readers = frame.groupby("image")["reader"].nunique()
    votes = frame.drop_duplicates().groupby(["image", "label"]).size().unstack(fill_value=0)
    return votes, readers


def vindr_named(votes: pd.DataFrame, readers: pd.Series, label: str, consensus: str) -> pd.Series:
    """Images whose readers named ``label``: by one of them (``any``) or by more than half (``majority``)."""
    count = votes[label] if label in votes else pd.Series(0, index=votes.index)
    needed = 1 if consensus == "any" else readers.reindex(votes.index) // 2 + 1
    return count >= needed


def vindr(
    read: Reader, files: pd.DataFrame, read_headers: Callable[[pd.DataFrame], pd.DataFrame], consensus: str
) -> Cohort:
    """VinDr-CXR (Nguyen et al. 2022), as released on Kaggle: ``train.csv`` (one row per reader and finding, three
    readers an image, boxes in pixels) and DICOMs ``train/IMAGE_ID.dicom`` (many MONOCHROME1, read through their
    LUTs like any DICOM). A finding is the image's when its readers name it by ``consensus`` (``any`` reader, or
    a ``majority``). VinDr-CXR publishes no patient identity: each film is its own patient. Sex and age come from
    the DICOM headers where they hold them (``read_headers``: the files' ``rel`` and header fields).
    """
    raw = read(VINDR_TABLE)
    require_columns(raw, VINDR_COLUMNS, VINDR_TABLE, "vindr")
    votes, readers = vindr_votes(raw)
    positive = pd.DataFrame({finding: vindr_named(votes, readers, label, consensus)
                             for label, finding in VINDR_TO_NIH.items()}, index=votes.index)  # fmt: skip
    other = pd.concat([vindr_named(votes, readers, label, consensus) for label in VINDR_OTHER], axis=1).any(axis=1)
    image_ids = pd.Series(votes.index, index=votes.index)
    keys = vindr_keys(image_ids, set(files["rel"]))
    headers = read_headers(files[files["rel"].isin(set(keys))])
    header = headers.set_index("rel") if len(headers) else pd.DataFrame(columns=["PatientSex", "PatientAge"])
    sex = keys.map(header.get("PatientSex", pd.Series(dtype=str))).fillna("").str.strip().str.upper()
    sex = sex.where(sex.isin(["M", "F"]), "")
    age = keys.map(header.get("PatientAge", pd.Series(dtype=str))).fillna("").str.extract(r"^0*(\d+)Y?$")[0]
    view = keys.map(header.get("ViewPosition", pd.Series(dtype=str))).fillna("").str.strip().str.upper()
    view = view.where(view != "", "PA")  # VinDr-CXR's films are posteroanterior; a header that says otherwise wins
    table = _assemble(keys, image_ids, pd.Series("0", index=keys.index), age.fillna(""), sex, view, positive,
                      other=other)  # fmt: skip
    policy = {"consensus": consensus, "readers_per_image": {str(k): int(v) for k, v in readers.value_counts().items()}}
    return Cohort(table.reset_index(drop=True), image_index(keys, files), {}, None, policy)


def vindr_boxes(raw: pd.DataFrame, known: set[str]) -> pd.DataFrame:
    """The readers' boxes as ``image_index, finding, x, y, w, h`` (NIH's box list columns, NIH finding names),
    one box per image and finding: the box that holds every reader's box of it."""
    frame = raw[raw["class_name"].str.strip().isin(VINDR_TO_NIH)].copy()
    for column in ("x_min", "y_min", "x_max", "y_max"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame = frame.dropna(subset=["x_min", "y_min", "x_max", "y_max"])
    frame["finding"] = frame["class_name"].str.strip().map(VINDR_TO_NIH)
    frame["image_id"] = frame["image_id"].str.strip()
    box = frame.groupby(["image_id", "finding"]).agg(x0=("x_min", "min"), y0=("y_min", "min"), x1=("x_max", "max"),
                                                      y1=("y_max", "max")).reset_index()  # fmt: skip
    return pd.DataFrame(
        {
            "image_index": vindr_keys(box["image_id"], known),
            "finding": box["finding"],
            "x": box["x0"],
            "y": box["y0"],
            "w": box["x1"] - box["x0"],
            "h": box["y1"] - box["y0"],
        }
    )


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
    modality = headers.get("Modality", pd.Series("", index=headers.index)).fillna("").str.strip().str.upper()
    not_radiograph = ~unreadable & modality.isin(NOT_RADIOGRAPH_MODALITIES | NOT_IMAGE_MODALITIES)
    reason = pd.Series("", index=headers.index).mask(unreadable, "not_dicom").mask(not_radiograph, "not_radiograph")
    detail = headers["error"].where(unreadable, "Modality " + modality)
    out = reason != ""
    left_out = left_out_rows(headers.loc[out, "rel"], reason[out], detail[out])
    if out.any():
        logger.warning("%d file(s) are not readable DICOM radiographs and are left out, e.g. %s: %s", int(out.sum()),
                       headers.loc[out, "rel"].iloc[0], detail[out].iloc[0])  # fmt: skip
    headers = headers[~out]
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
    return Cohort(table, image_index(merged["rel"], files), {}, left_out, {"labels": f"the columns of {spec.file}"})
