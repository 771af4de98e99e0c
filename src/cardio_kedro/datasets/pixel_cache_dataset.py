"""Decoded-once pixel cache: every image as ``size`` x ``size`` uint8, memory-mappable.

Layout under ``path``: one folder per image size (``64px/``, ``224px/`` ...) holding ``pixels.u8``
(rows of ``size * size`` bytes, append-only) and ``index.parquet`` (source file, row, source shape,
file size and mtime). The index is replaced atomically after the pixels are flushed, so an
interrupted run leaves the previous index valid and its extra bytes are cut off on the next write.
A source file is decoded again only if it is new, changed (size or mtime) or the image size changes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from kedro.io import AbstractDataset

from cardio_kedro.imaging import ImageError, load_gray
from cardio_kedro.parallel import imap_progress

logger = logging.getLogger(__name__)

INDEX_COLUMNS = ["source", "row", "src_height", "src_width", "nbytes", "mtime_ns"]


@dataclass
class CacheRequest:
    """What a node asks the cache to hold: these source files at this size (decoded lazily on save)."""

    sources: list[str]
    size: int
    workers: int | None = None


@dataclass
class PixelCache:
    """Read access to the cache at one image size."""

    root: Path
    size: int
    index: pd.DataFrame = field(repr=False)
    failures: pd.DataFrame = field(repr=False)

    @property
    def folder(self) -> Path:
        return self.root / f"{self.size}px"

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


def _file_stamp(source: str) -> tuple[int, int]:
    st = os.stat(source)
    return st.st_size, st.st_mtime_ns


_FDS: dict[str, int] = {}


def _decode_into(job: tuple[str, int, int, str]) -> tuple[str, int, tuple[int, int], str]:
    """Worker: decode one image and write it straight into its row of ``pixels.u8``.

    Writing in the worker (``os.pwrite`` at a preassigned offset) keeps the pixels off the
    inter-process pipe and the parent free, which is what lets decoding scale with the cores.
    """
    source, size, row, target = job
    try:
        pixels, shape = load_gray(source, size)
    except ImageError as exc:
        return source, row, (0, 0), f"{exc.reason}|{exc}"
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a data-quality entry
        return source, row, (0, 0), f"corrupt|{source}: {exc}"
    fd = _FDS.get(target)
    if fd is None:
        fd = _FDS[target] = os.open(target, os.O_WRONLY)
    os.pwrite(fd, np.ascontiguousarray(pixels, np.uint8).tobytes(), row * size * size)
    return source, row, shape, ""


class PixelCacheDataset(AbstractDataset[CacheRequest, dict]):
    """Catalog entry for the pixel cache; ``load`` gives a size -> ``PixelCache`` accessor."""

    def __init__(self, path: str, metadata: dict[str, Any] | None = None):
        self._root = Path(path)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._root)}

    def _exists(self) -> bool:
        return self._root.is_dir()

    def open(self, size: int) -> PixelCache:
        """The cache at ``size`` px (empty if nothing was cached at that size yet)."""
        folder = self._root / f"{size}px"
        index_file, failures_file = folder / "index.parquet", folder / "failures.parquet"
        index = pd.read_parquet(index_file) if index_file.is_file() else pd.DataFrame(columns=INDEX_COLUMNS)
        failures = (
            pd.read_parquet(failures_file)
            if failures_file.is_file()
            else pd.DataFrame(columns=["source", "reason", "detail"])
        )
        return PixelCache(self._root, size, index, failures)

    def _load(self) -> dict:
        return {"open": self.open, "root": str(self._root)}

    def _save(self, request: CacheRequest) -> None:
        cache = self.open(request.size)
        folder = cache.folder
        folder.mkdir(parents=True, exist_ok=True)
        index = cache.index.set_index("source", drop=False)
        todo = []
        for source in dict.fromkeys(request.sources):
            try:
                stamp = _file_stamp(source)
            except OSError:
                stamp = (-1, -1)
            if source in index.index and tuple(index.loc[source, ["nbytes", "mtime_ns"]]) == stamp:
                continue
            todo.append((source, stamp))
        logger.info(
            "Pixel cache %s: %d of %d image(s) already decoded, %d to decode",
            folder,
            len(request.sources) - len(todo),
            len(request.sources),
            len(todo),
        )
        if not todo:
            return
        n_rows = int(index["row"].max()) + 1 if len(index) else 0
        row_bytes = request.size * request.size
        target = folder / "pixels.u8"
        with target.open("ab") as fh:
            fh.truncate(n_rows * row_bytes)  # drop bytes an interrupted run left past the index
            fh.truncate((n_rows + len(todo)) * row_bytes)  # one preassigned row per image to decode
        stamps = dict(todo)
        jobs = [(source, request.size, n_rows + i, str(target)) for i, (source, _) in enumerate(todo)]
        new_rows, failures = [], []
        results = imap_progress(
            _decode_into,
            jobs,
            total=len(jobs),
            what=f"Decoding images to {request.size}px",
            workers=request.workers,
        )
        for source, row, shape, error in results:
            if error:
                reason, detail = error.split("|", 1)
                failures.append({"source": source, "reason": reason, "detail": detail})
                continue
            nbytes, mtime = stamps[source]
            new_rows.append([source, row, shape[0], shape[1], nbytes, mtime])
        in_process_fd = _FDS.pop(str(target), None)  # workers=1 decodes in this process
        if in_process_fd is not None:
            os.close(in_process_fd)
        fd = os.open(target, os.O_WRONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        new_index = pd.DataFrame(new_rows, columns=INDEX_COLUMNS)
        kept = cache.index[~cache.index["source"].isin(new_index["source"])]
        merged = pd.concat([kept, new_index], ignore_index=True) if len(kept) else new_index
        merged = merged.astype({"row": "int64", "src_height": "int64", "src_width": "int64"})
        _atomic_parquet(merged, folder / "index.parquet")
        _atomic_parquet(pd.DataFrame(failures, columns=["source", "reason", "detail"]), folder / "failures.parquet")


def _atomic_parquet(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)
