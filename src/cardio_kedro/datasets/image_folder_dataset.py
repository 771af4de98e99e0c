"""A folder of images to score (any nesting), and a versioned folder of PNGs (heat-map overlays)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset, AbstractVersionedDataset, DatasetError, Version

from cardio_kedro.cohort.imaging import DICOM_SUFFIXES, IMAGE_SUFFIXES
from cardio_kedro.cohort.storage import filesystem, is_remote, list_files
from cardio_kedro.common.errors import UserDatasetError

from ._files import atomic_folder, version_exists, walk_files, write_files

SCORED_SUFFIXES = IMAGE_SUFFIXES + DICOM_SUFFIXES


class ImageFolderDataset(AbstractDataset[None, pd.DataFrame]):
    """``load`` lists the images under ``path`` (any depth) as ``file`` (relative) and ``path``."""

    def __init__(
        self, path: str | None, credentials: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None
    ):
        self._url = str(path).rstrip("/") if path and is_remote(str(path)) else None
        self._path = Path(path) if path else None
        self._storage_options = dict(credentials or {})
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"path": self._url or str(self._path)}

    def _load_remote(self) -> pd.DataFrame:
        """The objects below an fsspec URL (``s3://bucket/batch``): ``file`` relative to it, ``path`` the URL."""
        urls = [
            url
            for url, _, _ in list_files(self._url, self._storage_options)
            if url.lower().endswith(SCORED_SUFFIXES) or "." not in url.rsplit("/", 1)[-1]
        ]
        fs, root = filesystem(self._url, self._storage_options)
        files = [fs._strip_protocol(url)[len(root) :].lstrip("/") for url in urls]
        return pd.DataFrame({"file": files, "path": urls})

    def _load(self) -> pd.DataFrame:
        if self._path is None:
            raise UserDatasetError("No images folder given: run with --params=images_dir=/path/to/images")
        if self._url:
            return self._load_remote()
        if not self._path.is_dir():
            raise UserDatasetError(f"The images folder '{self._path}' does not exist")
        files = sorted(
            folder / name
            for folder, name in walk_files(self._path, skip_hidden=False)  # follows symlinked folders, once each
            if name.lower().endswith(SCORED_SUFFIXES) or "." not in name
        )
        return pd.DataFrame({"file": [str(f.relative_to(self._path)) for f in files], "path": [str(f) for f in files]})

    def _save(self, data: None) -> None:
        raise DatasetError("ImageFolderDataset is read-only")


class PngFolderDataset(AbstractVersionedDataset[dict, dict]):
    """Versioned folder of PNG files: saves ``{relative name: PNG bytes}``, loads the same."""

    def __init__(self, path: str, version: Version | None = None, metadata: dict[str, Any] | None = None):
        super().__init__(filepath=PurePosixPath(path), version=version, exists_function=lambda p: Path(p).exists())
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._filepath), "version": self._version}

    def _load(self) -> dict:
        root = Path(self._get_load_path())
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}

    def _save(self, images: dict) -> None:
        with atomic_folder(Path(self._get_save_path())) as tmp:
            write_files(tmp, images.items())

    def _exists(self) -> bool:
        return version_exists(self)
