"""Decoded-once pixel cache: every image as ``size`` x ``size`` uint8, memory-mappable.

Layout under ``path``: one folder per image size (``64px/``, ``224px/`` ...) holding ``pixels.u8``
(rows of ``size * size`` bytes, append-only), ``index.parquet`` (source file, row, source shape,
file size and mtime) and ``failures.parquet`` (files that could not be decoded, with the reason).

The dataset only stores and loads: the ``decode_images`` node decodes and yields
``DecodedChunk``s, and every ``save`` appends one chunk. The pixels are flushed before the index is
replaced (atomically), so an interrupted run keeps every chunk saved so far and the next run
decodes only what is missing; bytes a dying run wrote past the index are cut off.
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from kedro.io import AbstractDataset, DatasetError

from cardio_kedro.common.errors import UserDatasetError

from ._files import atomic_file

INDEX_COLUMNS = ["source", "row", "src_height", "src_width", "nbytes", "mtime_ns"]
FAILURE_COLUMNS = ["source", "reason", "detail"]


@dataclass
class DecodedChunk:
    """Images decoded at ``size`` px, ready to append to the cache, and the files that failed."""

    size: int
    sources: list[str]
    pixels: np.ndarray  # (n, size, size) uint8
    src_shapes: np.ndarray  # (n, 2) source height, width
    stamps: np.ndarray  # (n, 2) source file size, mtime_ns
    failures: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=FAILURE_COLUMNS))

    def __post_init__(self) -> None:
        n = len(self.sources)
        if self.pixels.shape != (n, self.size, self.size) or self.pixels.dtype != np.uint8:
            raise ValueError(f"expected {n} uint8 rows of {self.size}x{self.size}, got {self.pixels.shape}")

    @classmethod
    def empty(cls, size: int) -> DecodedChunk:
        """A chunk with nothing in it (decoding found the cache complete)."""
        return cls(size, [], np.zeros((0, size, size), np.uint8), np.zeros((0, 2), int), np.zeros((0, 2), int))


@dataclass
class PixelCache:
    """Read access to the cache at one image size."""

    folder: Path
    size: int
    index: pd.DataFrame = field(repr=False)
    failures: pd.DataFrame = field(repr=False)

    def pixels(self) -> np.ndarray:
        """The whole cache as a read-only ``(rows, size, size)`` uint8 memory map."""
        n = int(self.index["row"].max()) + 1 if len(self.index) else 0
        if n == 0:
            return np.zeros((0, self.size, self.size), np.uint8)
        return np.memmap(self.folder / "pixels.u8", np.uint8, "r", shape=(n, self.size, self.size))

    def rows(self, sources: pd.Series | list[str]) -> np.ndarray:
        """Cache rows of the given source files; raises ``KeyError`` naming any that are not cached."""
        lookup = pd.Series(self.index["row"].to_numpy(), index=self.index["source"])
        sources = pd.Index(sources)
        missing = sources.difference(lookup.index)
        if len(missing):
            raise KeyError(
                f"{len(missing)} image(s) are not in the {self.size}px pixel cache, e.g. {missing[0]}: "
                "run the data_processing pipeline with this image_size first"
            )
        return lookup.loc[sources].to_numpy(np.int64)

    def images(self, sources: pd.Series | list[str]) -> np.ndarray:
        """The cached ``(n, size, size)`` pixels of the given source files, in their order."""
        return np.asarray(self.pixels()[self.rows(sources)])

    def source_shapes(self, sources: pd.Series | list[str]) -> np.ndarray:
        """``(n, 2)`` height and width of the source images before resizing."""
        shapes = self.index.set_index("source")[["src_height", "src_width"]]
        return shapes.loc[list(sources)].to_numpy()

    def check_room_for(self, n_images: int) -> None:
        """Refuse to start decoding ``n_images`` when the cache's disk cannot hold them (5% and 64 MiB to spare)."""
        folder = self.folder
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        needed = n_images * self.size * self.size
        free = shutil.disk_usage(folder).free
        if needed * 1.05 + 64 * 2**20 > free:
            raise UserDatasetError(
                f"The pixel cache {self.folder} needs about {needed / 2**20:,.1f} MiB for {n_images:,} images at "
                f"{self.size} px and its disk has {free / 2**20:,.0f} MiB free. Free space there, or run with a "
                "smaller image_size; nothing was decoded."
            )

    def is_current(self, sources: pd.Series, nbytes: pd.Series, mtime_ns: pd.Series) -> np.ndarray:
        """Which sources are cached from a file of this size and modification time (no decode needed)."""
        stamps = self.index.set_index("source")[["nbytes", "mtime_ns"]]
        known = stamps.reindex(pd.Index(sources))
        return (
            (known["nbytes"].to_numpy() == np.asarray(nbytes)) & (known["mtime_ns"].to_numpy() == np.asarray(mtime_ns))
        ).astype(bool)


def _read(path: Path, columns: list[str]) -> pd.DataFrame:
    return pd.read_parquet(path) if path.is_file() else pd.DataFrame(columns=columns)


def _write(frame: pd.DataFrame, path: Path) -> None:
    with atomic_file(path, ".parquet") as tmp:
        frame.to_parquet(tmp, index=False)


class PixelCacheDataset(AbstractDataset[DecodedChunk, PixelCache]):
    """The pixel cache at ``image_size`` px: ``load`` gives a ``PixelCache``, ``save`` appends a ``DecodedChunk``."""

    def __init__(self, path: str, image_size: int, metadata: dict[str, Any] | None = None):
        self._root = Path(path)
        self._size = int(image_size)
        self.metadata = metadata

    @property
    def folder(self) -> Path:
        return self._root / f"{self._size}px"

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._root), "image_size": self._size}

    def _exists(self) -> bool:
        return (self.folder / "index.parquet").is_file()

    def _load(self) -> PixelCache:
        return PixelCache(
            self.folder,
            self._size,
            _read(self.folder / "index.parquet", INDEX_COLUMNS),
            _read(self.folder / "failures.parquet", FAILURE_COLUMNS),
        )

    def _save(self, chunk: DecodedChunk) -> None:
        if chunk.size != self._size:
            raise DatasetError(f"A {chunk.size}px chunk cannot go into the {self._size}px pixel cache at {self.folder}")
        cache = self._load()
        self.folder.mkdir(parents=True, exist_ok=True)
        if not chunk.sources and chunk.failures.empty:  # nothing new: leave the files as they are
            if not self._exists():
                _write(cache.index, self.folder / "index.parquet")
            return
        n_rows = int(cache.index["row"].max()) + 1 if len(cache.index) else 0
        target = self.folder / "pixels.u8"
        kept_bytes = n_rows * self._size * self._size
        with target.open("ab") as fh:
            fh.truncate(kept_bytes)  # bytes a dying run wrote past the index
            try:
                fh.write(np.ascontiguousarray(chunk.pixels).tobytes())
                fh.flush()
                os.fsync(fh.fileno())
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                fh.truncate(kept_bytes)  # no partial chunk left behind to keep the disk full
                raise UserDatasetError(
                    f"No space left on the disk of the pixel cache {self.folder} while appending "
                    f"{chunk.pixels.nbytes / 2**20:.0f} MiB: the {n_rows} images cached before are kept, the "
                    "partial chunk was removed. Free space there (or give data/04_feature more room) and run "
                    "again: only the images not cached yet are decoded."
                ) from None
        new = pd.DataFrame(
            {
                "source": chunk.sources,
                "row": np.arange(n_rows, n_rows + len(chunk.sources), dtype=np.int64),
                "src_height": chunk.src_shapes[:, 0].astype(np.int64),
                "src_width": chunk.src_shapes[:, 1].astype(np.int64),
                "nbytes": chunk.stamps[:, 0].astype(np.int64),
                "mtime_ns": chunk.stamps[:, 1].astype(np.int64),
            }
        )
        kept = cache.index[~cache.index["source"].isin(new["source"])]
        _write(pd.concat([kept, new], ignore_index=True) if len(kept) else new, self.folder / "index.parquet")
        touched = set(chunk.sources) | set(chunk.failures["source"])
        old_failures = cache.failures[~cache.failures["source"].isin(touched)]
        parts = [f for f in (old_failures, chunk.failures) if len(f)]
        failures = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=FAILURE_COLUMNS)
        _write(failures.astype(str), self.folder / "failures.parquet")
