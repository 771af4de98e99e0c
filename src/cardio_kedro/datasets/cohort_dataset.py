"""A chest-X-ray cohort folder in the NIH ChestX-ray14 layout, as one catalog dataset."""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset, DatasetError

logger = logging.getLogger(__name__)

METADATA_FILE = "Data_Entry_2017.csv"
BBOX_FILE = "BBox_List_2017.csv"
OFFICIAL_LISTS = {"train_val": "train_val_list.txt", "test": "test_list.txt"}
METADATA_COLUMNS = [
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
]
REQUIRED_COLUMNS = METADATA_COLUMNS[:7]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


def read_metadata(path: str | Path) -> pd.DataFrame:
    """Read an NIH ``Data_Entry_2017.csv``: the Kaggle file (trailing empty column) or the 2020 revision.

    The header's ``OriginalImage[Width,Height]`` contains a comma, so the header is matched by name
    and the values are read positionally.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8-sig") as fh:
        header = fh.readline().strip()
    names = [n.strip() for n in header.split(",")]
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise DatasetError(
            f"{path} lacks the required column(s) {missing}; expected the NIH header "
            f"starting with {', '.join(REQUIRED_COLUMNS)}"
        )
    if names[:7] == REQUIRED_COLUMNS:
        raw = pd.read_csv(path, header=None, skiprows=1, dtype=str, keep_default_na=False)
        raw = raw.iloc[:, : len(METADATA_COLUMNS)]
        raw.columns = METADATA_COLUMNS[: raw.shape[1]]
    else:  # the required columns in another order, without the comma-split extras
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
        raw = raw[[c for c in raw.columns if not c.startswith("Unnamed")]]
    return raw


def read_bboxes(path: str | Path) -> pd.DataFrame:
    """Read NIH's ``BBox_List_2017.csv`` into ``image_index, finding, x, y, w, h``."""
    names = ["image_index", "finding", "x", "y", "w", "h"]
    try:
        raw = pd.read_csv(path, header=None, skiprows=1, usecols=range(6))
    except pd.errors.EmptyDataError:  # header only: no boxes
        return pd.DataFrame(columns=names)
    raw.columns = names
    return raw


class CohortDataset(AbstractDataset[dict, dict]):
    """A cohort folder: ``Data_Entry_2017.csv`` and images anywhere below it.

    ``load`` returns ``{"root", "metadata", "files", "bboxes", "official_split"}`` where ``files``
    maps each image file name to its path (flat ``images/`` or Kaggle ``images_00N/images/``).
    ``save`` writes a cohort (used for the phantoms) into a temporary folder that is renamed into
    place only when complete, so a failed generation never leaves a half-written cohort.
    """

    def __init__(self, path: str, metadata: dict[str, Any] | None = None):
        self._path = Path(path)
        self.metadata = metadata
        self._loaded: dict | None = None  # one walk of the image folders per run, not one per consumer

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}

    def _exists(self) -> bool:
        return (self._path / METADATA_FILE).is_file()

    def _load(self) -> dict:
        if self._loaded is None:
            self._loaded = self._read()
        return self._loaded

    def _read(self) -> dict:
        csv = self._path / METADATA_FILE
        if not csv.is_file():
            where = "folder does not exist" if not self._path.exists() else f"no {METADATA_FILE} in it"
            raise DatasetError(
                f"No cohort at '{self._path}' ({where}). Put the NIH ChestX-ray14 download there "
                f"(Data_Entry_2017.csv and images_00N/images/*.png) or pass "
                f"--params=cohort_dir=/path/to/cohort; for the offline demo run "
                f"'kedro run --pipeline=phantom_cohort'."
            )
        files: dict[str, str] = {}
        for dirpath, _, names in os.walk(self._path):
            for name in names:
                if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                    files.setdefault(name, str(Path(dirpath) / name))
        bbox = self._path / BBOX_FILE
        official = {
            key: (self._path / name).read_text().split()
            for key, name in OFFICIAL_LISTS.items()
            if (self._path / name).is_file()
        }
        return {
            "root": str(self._path.resolve()),
            "metadata": read_metadata(csv),
            "files": files,
            "bboxes": read_bboxes(bbox) if bbox.is_file() else None,
            "official_split": official if len(official) == 2 else None,
        }

    def _save(self, data: dict) -> None:
        """Write ``{"metadata": DataFrame, "images": iterable of (relative path, encoded bytes),
        "bboxes": DataFrame or None}``."""
        self._loaded = None
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_name(f".{self._path.name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            tmp.mkdir()
            self._write_images(tmp, data["images"])
            bboxes = data.get("bboxes")
            if bboxes is not None:
                bboxes.to_csv(tmp / BBOX_FILE, index=False)
            data["metadata"].to_csv(tmp / METADATA_FILE, index=False)
            if self._path.exists():
                shutil.rmtree(self._path)
            tmp.rename(self._path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        logger.info("Cohort written to %s", self._path)

    @staticmethod
    def _write_images(root: Path, images: Iterable[tuple[str, bytes]]) -> None:
        for rel, payload in images:
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(payload)
