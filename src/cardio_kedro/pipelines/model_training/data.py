"""Batches from the memory-mapped pixel cache: never a PNG decode during training."""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd


class CachedImages(keras.utils.PyDataset):
    """``(uint8 images (b, s, s, 1), float32 labels (b,))`` batches gathered from the pixel cache.

    Rows are reshuffled at every epoch when ``shuffle`` is set (seeded: the same seed gives the same
    order); each batch reads its rows in ascending cache order so the memory map is read forwards.
    """

    def __init__(
        self,
        pixels: np.ndarray,
        rows: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if len(rows) != len(labels):
            raise ValueError("rows and labels differ in length")
        self.pixels, self.rows = pixels, np.asarray(rows, np.int64)
        self.labels = np.asarray(labels, np.float32)
        self.batch_size, self.shuffle = int(batch_size), shuffle
        self._rng = np.random.default_rng(seed)
        self._order = self._rng.permutation(len(self.rows)) if shuffle else np.arange(len(self.rows))

    def __len__(self) -> int:
        return int(np.ceil(len(self.rows) / self.batch_size))

    def __getitem__(self, index: int):
        pick = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        pick = pick[np.argsort(self.rows[pick], kind="stable")]
        rows = self.rows[pick]
        return self.pixels[rows][..., None], self.labels[pick]

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self._order = self._rng.permutation(len(self.rows))


def split_arrays(cache, table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Cache rows and labels of a split table (``path`` and ``target`` columns)."""
    return cache.rows(table["path"]), table["target"].to_numpy(np.float32)
