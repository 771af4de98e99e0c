"""Facts about the NIH ChestX-ray14 data set: findings, label rates, file names and columns."""

from __future__ import annotations

NIH_FINDINGS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Effusion",
    "Emphysema",
    "Fibrosis",
    "Hernia",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pleural_Thickening",
    "Pneumonia",
    "Pneumothorax",
)
NO_FINDING = "No Finding"
# a film another data set reads as abnormal in a way none of the 14 NIH findings means (CheXpert's Lung Opacity,
# PadChest's COPD signs, ...): not "No Finding", and never a target (the layouts write it; docs/data.md)
OTHER_FINDING = "Other Finding"
# The findings the phantom renderer (cohort/phantoms.py) draws, each with a visible sign and a box as
# NIH's BBox_List_2017.csv has them; the other nine are labels only.
DRAWABLE_FINDINGS: tuple[str, ...] = ("Cardiomegaly", "Effusion", "Mass", "Nodule", "Pneumothorax")

# Share of NIH ChestX-ray14 images carrying each finding (Data_Entry_2017, 112,120 images).
NIH_MARGINAL_RATES: dict[str, float] = {
    "Atelectasis": 0.1031,
    "Cardiomegaly": 0.0248,
    "Consolidation": 0.0416,
    "Edema": 0.0205,
    "Effusion": 0.1188,
    "Emphysema": 0.0224,
    "Fibrosis": 0.0150,
    "Hernia": 0.0020,
    "Infiltration": 0.1774,
    "Mass": 0.0516,
    "Nodule": 0.0565,
    "Pleural_Thickening": 0.0302,
    "Pneumonia": 0.0128,
    "Pneumothorax": 0.0473,
}

LABEL_TABLE_FILE = "Data_Entry_2017.csv"
BOX_LIST_FILE = "BBox_List_2017.csv"
OFFICIAL_SPLIT_FILES = {"train_val": "train_val_list.txt", "test": "test_list.txt"}

# The columns of Data_Entry_2017.csv. The file's header writes the last four as
# "OriginalImage[Width,Height]" and "OriginalImagePixelSpacing[x,y]" (commas inside the names).
LABEL_TABLE_COLUMNS = (
    "Image Index",
    "Finding Labels",
    "Follow-up #",
    "Patient ID",
    "Patient Age",
    "Patient Gender",
    "View Position",
    "OriginalImage Width",
    "OriginalImage Height",
    "OriginalImagePixelSpacing x",
    "OriginalImagePixelSpacing y",
)
REQUIRED_LABEL_COLUMNS = LABEL_TABLE_COLUMNS[:7]
BOX_COLUMNS = ("image_index", "finding", "x", "y", "w", "h")
