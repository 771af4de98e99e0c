"""Batches from the memory-mapped pixel cache: never a PNG decode during training."""

from __future__ import annotations

import keras
import numpy as np


class CachedImages(keras.utils.PyDataset):
    """``(uint8 images (b, s, s, 1), float32 labels (b,))`` batches gathered from the pixel cache.

    ``labels`` may also be a tuple of arrays (one per model output): batches then carry a tuple.

    Rows are reshuffled at every epoch when ``shuffle`` is set (seeded: the same seed gives the same
    order). A batch comes in the order of its rows (what ``predict`` needs), read from the memory
    map in ascending cache order.
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
        multi = isinstance(labels, tuple)
        self.labels = tuple(np.asarray(y, np.float32) for y in labels) if multi else np.asarray(labels, np.float32)
        if any(len(y) != len(rows) for y in (self.labels if multi else (self.labels,))):
            raise ValueError("rows and labels differ in length")
        self.pixels, self.rows = pixels, np.asarray(rows, np.int64)
        self.batch_size, self.shuffle = int(batch_size), shuffle
        self._rng = np.random.default_rng(seed)
        self._order = self._rng.permutation(len(self.rows)) if shuffle else np.arange(len(self.rows))

    def __len__(self) -> int:
        return int(np.ceil(len(self.rows) / self.batch_size))

    def __getitem__(self, index: int):
        pick = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        labels = tuple(y[pick] for y in self.labels) if isinstance(self.labels, tuple) else self.labels[pick]
        return gather(self.pixels, self.rows[pick]), labels

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self._order = self._rng.permutation(len(self.rows))


def gather(pixels: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The rows of the cache as one in-RAM ``(n, s, s, 1)`` uint8 array, read in ascending cache order."""
    rows = np.asarray(rows, np.int64)
    order = np.argsort(rows, kind="stable")
    out = np.empty((len(rows), *pixels.shape[1:]), np.uint8)
    out[order] = pixels[rows[order]]
    return out[..., None]


def feed(
    pixels: np.ndarray,
    rows: np.ndarray,
    labels: np.ndarray | tuple[np.ndarray, ...],
    batch_size: int,
    *,
    loader: str,
    max_loader_memory_gb: float,
    loader_workers: int,
    shuffle: bool = False,
    seed: int = 0,
) -> dict:
    """``model.fit``-style inputs for one split, from the pixel cache.

    ``loader: memory`` gathers the split's rows from the memory map into RAM once (one forward
    pass over the cache) and lets Keras batch and shuffle the arrays, which keeps a GPU fed;
    ``stream`` reads each batch from the memory map (``CachedImages``), for splits larger than
    RAM; ``auto`` picks memory when the split fits in ``max_loader_memory_gb``.
    """
    if loader not in ("auto", "memory", "stream"):
        raise ValueError(f"loader must be 'auto', 'memory' or 'stream', got '{loader}'")
    nbytes = len(rows) * int(np.prod(pixels.shape[1:]))
    if loader == "memory" or (loader == "auto" and nbytes <= max_loader_memory_gb * 2**30):
        return {
            "x": gather(pixels, rows),
            "y": tuple(np.asarray(y, np.float32) for y in labels)
            if isinstance(labels, tuple)
            else np.asarray(labels, np.float32),
            "batch_size": batch_size,
            "shuffle": shuffle,
        }
    return {"x": CachedImages(pixels, rows, labels, batch_size, shuffle=shuffle, seed=seed, workers=loader_workers)}


PREDICT_CHUNK_BYTES = 256 * 2**20  # pixels gathered into RAM per predict() call of predict_cached


def predict_cached(model: keras.Model, pixels: np.ndarray, rows: np.ndarray, batch_size: int):
    """``(probability, raw score)`` for the given cache rows, a chunk of the memory map at a time:
    ``(N,)`` arrays for a binary model, ``(N, K)`` for a multi-label one.

    For a calibrated model the probability is calibrated and the score is the network's output
    before calibration; for an uncalibrated one both are that output.

    Each chunk (``PREDICT_CHUNK_BYTES`` of pixels) is gathered into RAM and scored by one
    ``predict()`` on the array. Two slowdowns measured at NIH scale are avoided that way: one
    ``predict()`` over a whole 22,400-image split ran at half the speed of 11,200 (TensorFlow), and a
    ``PyDataset`` input makes TensorFlow's generator op pin glibc's mmap threshold at 128 KB, after
    which every numpy array of more than 16,000 float64 in the process is mapped and unmapped anew
    (the reporting bootstrap ran 2-4x slower).
    """
    from .builder import with_score

    scorer, rows = with_score(model), np.asarray(rows, np.int64)
    columns = int(model.outputs[0].shape[-1])
    shape = (-1,) if columns == 1 else (-1, columns)
    per_chunk = max(int(batch_size), PREDICT_CHUNK_BYTES // max(int(np.prod(pixels.shape[1:])), 1))
    probability, score = [np.zeros(0).reshape(shape)], [np.zeros(0).reshape(shape)]
    for start in range(0, len(rows), per_chunk):
        out = scorer.predict(gather(pixels, rows[start : start + per_chunk]), batch_size=batch_size, verbose=0)
        probability.append(np.asarray(out[0], float).reshape(shape))
        score.append(np.asarray(out[1], float).reshape(shape))
    return np.concatenate(probability), np.concatenate(score)
