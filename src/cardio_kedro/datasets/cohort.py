"""The parts of a cohort folder in the NIH ChestX-ray14 layout, one catalog dataset each.

A cohort folder holds ``Data_Entry_2017.csv`` (the label table), images anywhere below it (flat
``images/`` or the Kaggle ``images_00N/images/``) and, optionally, ``BBox_List_2017.csv`` and
NIH's official split lists. Every save (the phantom generator writes a cohort) is atomic.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Iterable
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

import fsspec
import pandas as pd
from kedro.io import AbstractDataset, DatasetError

from cardio_kedro.cohort import storage
from cardio_kedro.cohort.imaging import DICOM_SUFFIXES, IMAGE_SUFFIXES, is_dicom_path, read_header
from cardio_kedro.cohort.layouts import VINDR_COLUMNS, VINDR_TABLE, Cohort, vindr_boxes
from cardio_kedro.cohort.nih import (
    BOX_COLUMNS,
    LABEL_TABLE_COLUMNS,
    LABEL_TABLE_FILE,
    OFFICIAL_SPLIT_FILES,
    REQUIRED_LABEL_COLUMNS,
)
from cardio_kedro.cohort.storage import is_remote
from cardio_kedro.common.errors import UserDatasetError
from cardio_kedro.common.parallel import imap_progress

from ._files import atomic_file, atomic_folder, walk_files, write_files

logger = logging.getLogger(__name__)

NO_COHORT_HINT = (
    "Put the NIH ChestX-ray14 download there (Data_Entry_2017.csv and images_00N/images/*.png) or pass "
    "--params=cohort_dir=/path/to/cohort; for the offline demo run 'kedro run --pipelines=phantom_cohort'."
)


LABEL_CHUNK_ROWS = 50_000  # rows of a label table read at a time: memory stays bounded, whatever the file's size
MOSTLY_JUNK = 0.5  # a chunk with more bad rows than this is not a label table any more: refused at once
MIN_JUNK_ROWS = 100  # fewer bad rows are each a row to fix, named by line (a small table, a few typos)


def read_label_table(path: str | Path, storage_options: dict[str, Any] | None = None) -> pd.DataFrame:
    """Read an NIH ``Data_Entry_2017.csv``: the Kaggle file (trailing empty column) or the 2020 revision.

    The header's ``OriginalImage[Width,Height]`` contains a comma, so the header is matched by name
    and the values are read positionally. Every row needs an image name and an integer patient id
    (the split is by patient): a row without one is refused with its line number. The file is read
    ``LABEL_CHUNK_ROWS`` rows at a time, and a stretch that is mostly not label rows (a file that goes
    on as something else) is refused as soon as it is met, so neither time nor memory grow with the junk.
    """
    remote = is_remote(str(path))
    path = str(path) if remote else Path(path)
    options = {"storage_options": storage_options or {}} if remote else {}
    if remote:
        with fsspec.open(path, "rt", encoding="utf-8-sig", compression="infer", **(storage_options or {})) as fh:
            header = fh.readline(64 * 1024).strip()
    else:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8-sig", errors="replace") as fh:
            header = fh.readline(64 * 1024).strip()
    names = [n.strip() for n in header.split(",")]
    missing = [c for c in REQUIRED_LABEL_COLUMNS if c not in names]
    if missing:
        raise UserDatasetError(
            f"{path} lacks the required column(s) {missing}; expected the NIH header "
            f"starting with {', '.join(REQUIRED_LABEL_COLUMNS)}"
        )
    read = dict(dtype=str, keep_default_na=False, chunksize=LABEL_CHUNK_ROWS, encoding_errors="replace", **options)
    positional = names[: len(REQUIRED_LABEL_COLUMNS)] == list(REQUIRED_LABEL_COLUMNS)
    chunks, bad = [], {column: [] for column in IDENTIFIERS}
    try:
        with _read_rows(path, names, positional, read) as reader:
            for rows in reader:
                chunk = _label_columns(rows, positional)
                found = _bad_identifiers(chunk)
                _refuse_junk(chunk, found, path)
                chunks.append(chunk)
                for column, index in found.items():
                    bad[column].append(index)
    except pd.errors.ParserError as exc:  # a row with more fields than the header: where did the junk start?
        _refuse_junk_before(path, positional, names, read, str(exc))
        raise UserDatasetError(
            f"{path} stops being a label table: {exc} (the header has {len(names)} fields). Is the file cut, "
            "joined with another file, or not the data set's label table?"
        ) from None
    raw = pd.concat(chunks) if chunks else pd.DataFrame(columns=list(LABEL_TABLE_COLUMNS))
    _name_bad_rows(raw, {column: pd.Index([], dtype=int).append(found) for column, found in bad.items()}, path)
    return raw


IDENTIFIERS = ("Image Index", "Patient ID")  # every row needs both: an image name and an integer patient id


def _read_rows(path, names: list[str], positional: bool, read: dict):
    """``pd.read_csv`` of the table's rows: by position in the NIH order (the header's names are split by its
    commas), else by name (the required columns in another order, without the comma-split extras)."""
    if positional:
        return pd.read_csv(path, header=None, skiprows=1, names=range(len(names)), **read)
    return pd.read_csv(path, **read)


def _label_columns(rows: pd.DataFrame, positional: bool) -> pd.DataFrame:
    """Rows as read, in the label table's columns."""
    if positional:
        table = rows.iloc[:, : len(LABEL_TABLE_COLUMNS)]
        table.columns = list(LABEL_TABLE_COLUMNS[: table.shape[1]])
        return table
    return rows[[c for c in rows.columns if not str(c).startswith("Unnamed")]]


def _bad_identifiers(raw: pd.DataFrame) -> dict[str, pd.Index]:
    """Rows without an image name, and rows without an integer patient id (by column)."""
    checks = {
        "Image Index": raw["Image Index"].str.strip() != "",
        "Patient ID": raw["Patient ID"].str.strip().str.fullmatch(r"\d+"),
    }
    return {column: raw.index[~ok.fillna(False).astype(bool)] for column, ok in checks.items()}


def _refuse_junk(chunk: pd.DataFrame, bad: dict[str, pd.Index], path) -> None:
    """Refuse a stretch of the file that is mostly not label rows (``bad``: its rows by missing identifier),
    naming where it starts."""
    rows = bad["Image Index"].union(bad["Patient ID"])
    if len(rows) >= MIN_JUNK_ROWS and len(rows) > MOSTLY_JUNK * len(chunk):
        first = int(rows[0])
        sample = " | ".join(str(v) for v in chunk.loc[first].tolist() if isinstance(v, str) and v)[:80]
        sample = "".join(c if c.isprintable() else "?" for c in sample)  # junk may be binary
        raise UserDatasetError(
            f"{path}, from line {first + 2}: {len(rows)} of the {len(chunk)} rows there have no image name or no "
            f"integer patient id (line {first + 2} reads {sample!r}): the file stops looking like a label table, "
            "so reading stopped there. Is it cut, joined with another file, or not the data set's label table?"
        )


def _refuse_junk_before(path, positional: bool, names: list[str], read: dict, parser_error: str) -> None:
    """Where a row with too many fields stopped the parser, the rows before it read again, skipping such rows:
    a stretch of junk among them is named from its first line (``_refuse_junk``)."""
    import re

    line = re.search(r"line (\d+)", parser_error)
    if line is None:
        return
    again = {**read, "chunksize": None, "nrows": min(int(line.group(1)), LABEL_CHUNK_ROWS), "on_bad_lines": "skip"}
    try:
        head = _label_columns(_read_rows(path, names, positional, again), positional)
    except pd.errors.ParserError:
        return
    _refuse_junk(head, _bad_identifiers(head), path)


def _name_bad_rows(raw: pd.DataFrame, bad: dict[str, pd.Index], path: Path) -> None:
    """Refuse rows without an image name or an integer patient id (``bad``, by column), naming the file, line
    and column."""
    for column, rows in bad.items():
        if len(rows):
            first = int(rows[0])
            value = raw.loc[first, column]
            value = "" if not isinstance(value, str) else value
            raise UserDatasetError(
                f"{path}, line {first + 2} (image '{raw.loc[first, 'Image Index']}'), column '{column}': "
                f"{'blank' if not value.strip() else repr(value)}; "
                f"{'an image name' if column == 'Image Index' else 'an integer patient id'} is required "
                f"({len(rows)} row(s) like this). Fix or remove the row(s)."
            )


def read_box_list(path: str | Path, storage_options: dict[str, Any] | None = None) -> pd.DataFrame:
    """Read NIH's ``BBox_List_2017.csv`` into ``image_index, finding, x, y, w, h``."""
    options = {"storage_options": storage_options or {}} if is_remote(str(path)) else {}
    try:
        raw = pd.read_csv(path, header=None, skiprows=1, usecols=range(len(BOX_COLUMNS)), **options)
    except pd.errors.EmptyDataError:  # header only: no boxes
        return pd.DataFrame(columns=list(BOX_COLUMNS))
    raw.columns = list(BOX_COLUMNS)
    return raw


class _RemoteAware:
    """A cohort dataset whose path may be an fsspec URL (``s3://...``), read with ``credentials``."""

    def _init_location(self, location: str, credentials: dict[str, Any] | None) -> None:
        self._remote = is_remote(location)
        self._url = location.rstrip("/") if self._remote else None
        self._storage_options = dict(credentials or {})

    def _refuse_remote_write(self) -> None:
        if self._remote:
            raise UserDatasetError(
                f"Writing a cohort to object storage ({self._url}) is not supported: generate it locally "
                "(kedro run --pipelines=phantom_cohort) and upload the folder"
            )


class _CohortFile(_RemoteAware, AbstractDataset[pd.DataFrame, pd.DataFrame]):
    """A CSV file of the cohort folder (local, written atomically; or an object in a store)."""

    def __init__(
        self, filepath: str, credentials: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None
    ):
        self._init_location(str(filepath), credentials)
        self._filepath = self._url if self._remote else Path(filepath)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}

    def _is_file(self) -> bool:
        return storage.exists(self._url, self._storage_options) if self._remote else self._filepath.is_file()

    def _exists(self) -> bool:
        return self._is_file()

    def _save(self, table: pd.DataFrame) -> None:
        self._refuse_remote_write()
        with atomic_file(self._filepath, ".csv") as tmp:
            table.to_csv(tmp, index=False)


class LabelTableDataset(_CohortFile):
    """``Data_Entry_2017.csv`` as a DataFrame of strings with the NIH column names."""

    def _load(self) -> pd.DataFrame:
        if self._remote:
            if not self._is_file():
                raise UserDatasetError(f"No label table at '{self._url}' (or no access to it). {NO_COHORT_HINT}")
            return read_label_table(self._url, self._storage_options)
        if not self._filepath.is_file():
            folder = self._filepath.parent
            where = "folder does not exist" if not folder.exists() else f"no {self._filepath.name} in it"
            raise UserDatasetError(f"No cohort at '{folder}' ({where}). {NO_COHORT_HINT}")
        return read_label_table(self._filepath)


class BoxListDataset(_CohortFile):
    """``BBox_List_2017.csv`` as ``image_index, finding, x, y, w, h`` (empty when the cohort has none). A VinDr-CXR
    folder has no such file: its readers' boxes in ``train.csv`` are read instead (``layouts.vindr_boxes``)."""

    def _load(self) -> pd.DataFrame:
        if not self._is_file():
            vindr = None if self._remote else self._vindr_boxes()
            if vindr is not None:
                logger.info("Boxes from the VinDr-CXR readers (train.csv): %d images", vindr["image_index"].nunique())
                return vindr
            logger.info("No %s in the cohort: attention localization is skipped", str(self._filepath).rsplit("/")[-1])
            return pd.DataFrame(columns=list(BOX_COLUMNS))
        return read_box_list(self._filepath, self._storage_options)

    def _vindr_boxes(self) -> pd.DataFrame | None:
        folder = self._filepath.parent
        table = next((p for p in (folder / VINDR_TABLE, folder / f"{VINDR_TABLE}.gz") if p.is_file()), None)
        if table is None:
            return None
        header = pd.read_csv(table, dtype=str, keep_default_na=False, nrows=0)
        if not set(VINDR_COLUMNS) <= set(header.columns):
            return None
        raw = pd.read_csv(table, dtype=str, keep_default_na=False)
        known = {(f / n).relative_to(folder).as_posix() for f, n in walk_files(folder)}
        return vindr_boxes(raw, known)


class OfficialSplitDataset(_RemoteAware, AbstractDataset[None, dict]):
    """NIH's ``train_val_list.txt`` and ``test_list.txt`` as ``{"train_val": [...], "test": [...]}``.

    Loads ``{}`` when the cohort folder does not have both lists.
    """

    def __init__(self, path: str, credentials: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None):
        self._init_location(str(path), credentials)
        self._path = Path(path)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"path": self._url or str(self._path)}

    def _load(self) -> dict:
        if self._remote:
            urls = {key: storage.join(self._url, name) for key, name in OFFICIAL_SPLIT_FILES.items()}
            if not all(storage.exists(u, self._storage_options) for u in urls.values()):
                return {}
            return {key: storage.read_bytes(u, self._storage_options).decode().split() for key, u in urls.items()}
        files = {key: self._path / name for key, name in OFFICIAL_SPLIT_FILES.items()}
        if not all(p.is_file() for p in files.values()):
            return {}
        return {key: p.read_text().split() for key, p in files.items()}

    def _save(self, data: None) -> None:
        raise DatasetError("OfficialSplitDataset is read-only")


class ImageFileIndexDataset(_RemoteAware, AbstractDataset[Iterable[tuple[str, bytes]], pd.DataFrame]):
    """The image files below a cohort folder, at any depth.

    ``load`` returns ``image_index`` (file name) and ``path`` for every PNG/JPEG, the first one
    found when a name occurs twice. ``save`` takes ``(relative path, PNG bytes)`` pairs (a lazy
    stream is fine) and writes them into a temporary folder that replaces the same-named folders
    of the cohort only when every file is written.
    """

    def __init__(self, path: str, credentials: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None):
        self._init_location(str(path), credentials)
        self._path = Path(path)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"path": self._url or str(self._path)}

    def _exists(self) -> bool:
        return storage.exists(self._url, self._storage_options) if self._remote else self._path.is_dir()

    def _load_remote(self) -> pd.DataFrame:
        """The listing gives each object's size and time: ``nbytes`` and ``mtime_ns`` come with it."""
        rows: dict[str, tuple[str, int, int]] = {}
        for url, nbytes, mtime_ns in storage.list_files(self._url, self._storage_options):
            name = url.rsplit("/", 1)[-1]
            if name.lower().endswith(IMAGE_SUFFIXES):
                rows.setdefault(name, (url, nbytes, mtime_ns))
        if not rows:
            raise UserDatasetError(f"No images below '{self._url}' (or no access to it). {NO_COHORT_HINT}")
        urls, nbytes, mtimes = zip(*rows.values())
        return pd.DataFrame({"image_index": list(rows), "path": urls, "nbytes": nbytes, "mtime_ns": mtimes})

    def _load(self) -> pd.DataFrame:
        if self._remote:
            return self._load_remote()
        if not self._path.is_dir():
            raise UserDatasetError(f"No cohort folder at '{self._path}'. {NO_COHORT_HINT}")
        files: dict[str, str] = {}
        for folder, name in walk_files(self._path):  # follows symlinked folders, once each
            if name.lower().endswith(IMAGE_SUFFIXES):
                files.setdefault(name, str(folder / name))
        return pd.DataFrame({"image_index": list(files), "path": list(files.values())})

    def _save(self, images: Iterable[tuple[str, bytes]]) -> None:
        self._refuse_remote_write()
        with atomic_folder(self._path) as tmp:
            n = write_files(tmp, images)
        logger.info("Wrote %d image(s) to %s", n, PurePosixPath(self._path))


def _header_of(path: str, storage_options: dict[str, Any] | None = None) -> dict[str, str]:
    """One DICOM file's header fields (a worker's job: a path, or an object of a store)."""
    return read_header(storage.read_bytes(path, storage_options) if is_remote(path) else path)


class CohortFolder:
    """A cohort folder as the layout adapters read it (``cardio_kedro.cohort.layouts``).

    ``read_csv`` reads one table by its relative name (a ``.gz`` beside it too), ``files`` lists every
    file below the folder, ``dicom_headers`` reads the headers of DICOM files on every core, and
    ``nih`` reads the NIH layout with the datasets above.
    """

    def __init__(self, root: str, storage_options: dict[str, Any] | None = None):
        self.root = root.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.remote = is_remote(self.root)

    def _location(self, rel: str) -> str:
        return storage.join(self.root, rel) if self.remote else str(Path(self.root) / rel)

    def _exists(self, location: str) -> bool:
        return storage.exists(location, self.storage_options) if self.remote else Path(location).is_file()

    def read_csv(self, rel: str) -> pd.DataFrame:
        """The CSV ``rel`` (or ``rel.gz``) as strings, blanks as ``""``; ``FileNotFoundError`` when neither is there."""
        for name in (rel, f"{rel}.gz"):
            location = self._location(name)
            if self._exists(location):
                options = {"storage_options": self.storage_options} if self.remote else {}
                try:
                    return pd.read_csv(location, dtype=str, keep_default_na=False, compression="infer", **options)
                except (pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError) as exc:
                    raise UserDatasetError(f"{location} is not a readable CSV file: {exc}") from None
        raise FileNotFoundError(self._location(rel))

    def require_folder(self) -> None:
        """Refuse a cohort folder that is not there, with what to do."""
        there = storage.exists(self.root, self.storage_options) if self.remote else Path(self.root).is_dir()
        if not there:
            raise UserDatasetError(f"No cohort folder at '{self.root}'. {NO_COHORT_HINT}")

    def files(self) -> pd.DataFrame:
        """``rel`` (POSIX path below the folder) and ``path`` of every file; a store adds ``nbytes``, ``mtime_ns``."""
        self.require_folder()
        if self.remote:
            listed = list(storage.list_files(self.root, self.storage_options))
            urls = [u for u, _, _ in listed]
            return pd.DataFrame(
                {
                    "rel": [u[len(self.root) + 1 :] for u in urls],
                    "path": urls,
                    "nbytes": [n for _, n, _ in listed],
                    "mtime_ns": [m for _, _, m in listed],
                }
            )
        root = Path(self.root)
        paths = [folder / name for folder, name in walk_files(root)]
        return pd.DataFrame({"rel": [p.relative_to(root).as_posix() for p in paths], "path": [str(p) for p in paths]})

    def dicom_headers(self, files: pd.DataFrame, workers: int | None) -> pd.DataFrame:
        """The DICOM files among ``files`` (``.dcm``/``.dicom``, or no image suffix and the ``DICM`` magic)
        with their header fields (``cardio_kedro.cohort.imaging.read_header``), read on ``workers`` processes."""
        suffix = files["rel"].str.lower()
        named = suffix.str.endswith(DICOM_SUFFIXES)
        chosen = named
        if not self.remote:  # files without a DICOM suffix (DICOMDIR exports) are sniffed; in a store, named ones only
            others = ~named & ~suffix.str.endswith((*IMAGE_SUFFIXES, ".csv", ".gz", ".txt", ".json", ".xml"))
            chosen = named | (others & files["path"].map(is_dicom_path))
        candidates = files[chosen].reset_index(drop=True)
        reader = partial(_header_of, storage_options=self.storage_options or None)
        headers = list(
            imap_progress(
                reader, candidates["path"].tolist(), len(candidates), "Reading DICOM headers", workers, chunksize=64
            )
        )
        table = pd.DataFrame(headers, index=candidates.index) if headers else pd.DataFrame(columns=["error"])
        return pd.concat([candidates[["rel", "path"]], table], axis=1)

    def nih(self) -> Cohort:
        """The NIH layout: ``Data_Entry_2017.csv``, images found by file name, NIH's split lists."""
        credentials = self.storage_options or None
        table = LabelTableDataset(self._location(LABEL_TABLE_FILE), credentials).load()
        images = ImageFileIndexDataset(self.root, credentials).load()
        return Cohort(table, images, OfficialSplitDataset(self.root, credentials).load())


class CohortFolderDataset(_RemoteAware, AbstractDataset[None, CohortFolder]):
    """The cohort folder at ``path`` (local or an fsspec URL), loaded as a ``CohortFolder`` that the
    ``read_cohort`` node reads in the layout ``cohort.layout`` names."""

    def __init__(self, path: str, credentials: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None):
        self._init_location(str(path), credentials)
        self._path = str(path)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"path": self._path}

    def _exists(self) -> bool:
        if self._remote:
            return storage.exists(self._url, self._storage_options)
        return Path(self._path).is_dir()

    def _load(self) -> CohortFolder:
        return CohortFolder(self._url or self._path, self._storage_options)

    def _save(self, data: None) -> None:
        raise DatasetError(
            "CohortFolderDataset is read-only: the phantom_cohort pipeline writes cohort_labels and cohort_images"
        )


class CohortStorageDataset(AbstractDataset[None, dict]):
    """The storage options (``credentials``) of a cohort in object storage, for the decoding node.

    Loads ``{}`` for a local cohort. The options stay in memory: they go to the decoding workers,
    never into a saved table.
    """

    def __init__(
        self, path: str | None, credentials: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None
    ):
        self._path = str(path) if path else None
        self._credentials = dict(credentials or {})
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"path": self._path, "credentials": "***" if self._credentials else None}

    def _load(self) -> dict:
        return self._credentials if self._path and is_remote(self._path) else {}

    def _save(self, data: None) -> None:
        raise DatasetError("CohortStorageDataset is read-only")
