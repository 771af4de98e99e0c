"""PixelCacheDataset: decode once, re-decode on change or new size, survive interrupted writes."""

import os

import cv2
import numpy as np
import pytest

import cardio_kedro.datasets.pixel_cache_dataset as pcd
from cardio_kedro.datasets import CacheRequest, PixelCacheDataset


@pytest.fixture
def images(tmp_path):
    paths = []
    for i in range(5):
        img = np.full((40, 40), 40 * i, np.uint8)
        path = tmp_path / "src" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(path), img)
        paths.append(str(path))
    return paths


@pytest.fixture
def decode_counter(monkeypatch):
    calls = []
    real = pcd.load_gray

    def counting(path, size):
        calls.append(path)
        return real(path, size)

    monkeypatch.setattr(pcd, "load_gray", counting)
    return calls


def test_decodes_each_image_once_per_size(tmp_path, images, decode_counter):
    ds = PixelCacheDataset(str(tmp_path / "cache"))
    ds.save(CacheRequest(images, 16, workers=1))
    assert len(decode_counter) == 5
    ds.save(CacheRequest(images[:3], 16, workers=1))
    assert len(decode_counter) == 5  # nothing decoded again
    cache = ds.load()["open"](16)
    pixels = cache.pixels()
    assert pixels.shape == (5, 16, 16)
    assert [int(pixels[r, 0, 0]) for r in cache.rows(images)] == [0, 40, 80, 120, 160]
    ds.save(CacheRequest(images, 8, workers=1))
    assert len(decode_counter) == 10  # a new size decodes again


def test_changed_file_is_decoded_again(tmp_path, images, decode_counter):
    ds = PixelCacheDataset(str(tmp_path / "cache"))
    ds.save(CacheRequest(images, 16, workers=1))
    cv2.imwrite(images[0], np.full((40, 40), 200, np.uint8))
    os.utime(images[0], ns=(1, 1))
    ds.save(CacheRequest(images, 16, workers=1))
    assert decode_counter.count(images[0]) == 2
    cache = ds.load()["open"](16)
    assert int(cache.pixels()[cache.rows([images[0]])[0], 0, 0]) == 200


def test_interrupted_write_leaves_a_valid_cache(tmp_path, images):
    ds = PixelCacheDataset(str(tmp_path / "cache"))
    ds.save(CacheRequest(images[:2], 16, workers=1))
    with open(tmp_path / "cache" / "16px" / "pixels.u8", "ab") as fh:
        fh.write(b"\x07" * 100)  # bytes of a run that died before updating the index
    ds.save(CacheRequest(images, 16, workers=1))
    cache = ds.load()["open"](16)
    assert (tmp_path / "cache" / "16px" / "pixels.u8").stat().st_size == 5 * 16 * 16
    assert [int(cache.pixels()[r, 0, 0]) for r in cache.rows(images)] == [0, 40, 80, 120, 160]


def test_failures_are_recorded_not_cached(tmp_path, images):
    bad = tmp_path / "src" / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    ds = PixelCacheDataset(str(tmp_path / "cache"))
    ds.save(CacheRequest([*images, str(bad)], 16, workers=1))
    cache = ds.load()["open"](16)
    assert len(cache.index) == 5
    assert cache.failures["source"].tolist() == [str(bad)]
    with pytest.raises(KeyError, match="not in the 16px pixel cache"):
        cache.rows([str(bad)])


def test_parallel_decoding_matches_serial(tmp_path, images):
    a, b = PixelCacheDataset(str(tmp_path / "a")), PixelCacheDataset(str(tmp_path / "b"))
    a.save(CacheRequest(images * 4, 16, workers=1))
    b.save(CacheRequest(images * 4, 16, workers=2))
    ca, cb = a.load()["open"](16), b.load()["open"](16)
    assert np.array_equal(ca.pixels()[ca.rows(images)], cb.pixels()[cb.rows(images)])
