"""PixelCacheDataset with the decode_images node: decode once, again on change or new size, survive interruptions."""

import os

import cv2
import numpy as np
import pandas as pd
import pytest

import cardio_kedro.pipelines.data_processing.nodes as dp
from cardio_kedro.cohort import storage
from cardio_kedro.datasets import DecodedChunk, PixelCacheDataset
from tests.helpers import base_params


@pytest.fixture
def images(tmp_path):
    paths = []
    for i in range(5):
        path = tmp_path / "src" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(path), np.full((40, 40), 40 * i, np.uint8))
        paths.append(str(path))
    return paths


@pytest.fixture
def decode_counter(monkeypatch):
    calls = []
    real = storage.try_load_gray  # the local decoder that storage.image_loader hands the decoding node

    def counting(path, size):
        calls.append(path)
        return real(path, size)

    monkeypatch.setattr(storage, "try_load_gray", counting)
    return calls


def resolved(paths: list[str]) -> pd.DataFrame:
    stats = [os.stat(p) for p in paths]
    return pd.DataFrame(
        {"path": paths, "nbytes": [s.st_size for s in stats], "mtime_ns": [s.st_mtime_ns for s in stats]}
    )


def decode(root, paths: list[str], size: int, workers: int = 1):
    """What a run of the decode_images node does: read the cache, decode what is missing, save each chunk."""
    dataset = PixelCacheDataset(str(root), image_size=size)
    params = base_params("data_processing", workers=workers)
    for chunk in dp.decode_images(resolved(paths), dataset.load(), size, params, {}):
        dataset.save(chunk)
    return dataset.load()


def test_decodes_each_image_once_per_size(tmp_path, images, decode_counter):
    decode(tmp_path / "cache", images, 16)
    assert len(decode_counter) == 5
    cache = decode(tmp_path / "cache", images[:3], 16)
    assert len(decode_counter) == 5  # nothing decoded again
    assert cache.size == 16 and cache.pixels().shape == (5, 16, 16)
    assert [int(px[0, 0]) for px in cache.images(images)] == [0, 40, 80, 120, 160]
    decode(tmp_path / "cache", images, 8)
    assert len(decode_counter) == 10  # a new size decodes again


def test_changed_file_is_decoded_again(tmp_path, images, decode_counter):
    decode(tmp_path / "cache", images, 16)
    cv2.imwrite(images[0], np.full((40, 40), 200, np.uint8))
    os.utime(images[0], ns=(1, 1))
    cache = decode(tmp_path / "cache", images, 16)
    assert decode_counter.count(images[0]) == 2
    assert int(cache.images([images[0]])[0, 0, 0]) == 200


def test_interrupted_write_leaves_a_valid_cache(tmp_path, images):
    decode(tmp_path / "cache", images[:2], 16)
    with open(tmp_path / "cache" / "16px" / "pixels.u8", "ab") as fh:
        fh.write(b"\x07" * 100)  # bytes of a run that died before updating the index
    cache = decode(tmp_path / "cache", images, 16)
    assert (tmp_path / "cache" / "16px" / "pixels.u8").stat().st_size == 5 * 16 * 16
    assert [int(px[0, 0]) for px in cache.images(images)] == [0, 40, 80, 120, 160]


def test_every_saved_chunk_survives_a_run_that_dies_later(tmp_path, images, monkeypatch):
    monkeypatch.setattr(dp, "CHUNK_BYTES", 1)  # the smallest chunks: 64 images each
    copies = []
    for i, p in enumerate(images * 30):  # 150 distinct files
        copy = tmp_path / "many" / f"{i}.png"
        copy.parent.mkdir(exist_ok=True)
        copy.write_bytes(open(p, "rb").read())
        copies.append(str(copy))
    dataset = PixelCacheDataset(str(tmp_path / "cache"), image_size=16)
    chunks = dp.decode_images(resolved(copies), dataset.load(), 16, base_params("data_processing", workers=1), {})
    dataset.save(next(chunks))  # the run dies after its first chunk
    assert len(dataset.load().index) == 64
    decode_again = decode(tmp_path / "cache", copies, 16)
    assert len(decode_again.index) == 150 and decode_again.pixels().shape[0] == 150


def test_failures_are_recorded_not_cached(tmp_path, images):
    bad = tmp_path / "src" / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    cache = decode(tmp_path / "cache", [*images, str(bad)], 16)
    assert len(cache.index) == 5
    assert cache.failures["source"].tolist() == [str(bad)]
    with pytest.raises(KeyError, match="not in the 16px pixel cache"):
        cache.rows([str(bad)])


def test_parallel_decoding_matches_serial(tmp_path, images):
    a = decode(tmp_path / "a", images * 4, 16, workers=1)
    b = decode(tmp_path / "b", images * 4, 16, workers=2)
    assert np.array_equal(a.images(images), b.images(images))


def test_a_chunk_of_another_size_is_refused(tmp_path):
    dataset = PixelCacheDataset(str(tmp_path / "cache"), image_size=16)
    with pytest.raises(Exception, match="32px chunk cannot go into the 16px pixel cache"):
        dataset.save(DecodedChunk.empty(32))


def test_the_index_is_as_readable_as_the_pixels(tmp_path):
    cache = PixelCacheDataset(str(tmp_path / "cache"), image_size=8)
    n = 2
    cache.save(
        DecodedChunk(8, ["a.png", "b.png"], np.zeros((n, 8, 8), np.uint8), np.full((n, 2), 8), np.ones((n, 2), int))
    )
    files = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "cache").rglob("*") if p.is_file()}
    assert len(set(files.values())) == 1 and files[next(iter(files))] & 0o044, files  # one mode, readable by others


FULL_DISK = """
import json, sys
import numpy as np
from cardio_kedro.common.errors import UserError
from cardio_kedro.datasets import DecodedChunk, PixelCacheDataset
from cardio_kedro.datasets.pixel_cache_dataset import PixelCache

root = sys.argv[1]
dataset = PixelCacheDataset(path=root, image_size=64)

def chunk(first, n):
    sources = [f"/src/{i}.png" for i in range(first, first + n)]
    pixels = np.full((n, 64, 64), 7, np.uint8)
    return DecodedChunk(64, sources, pixels, np.full((n, 2), 64), np.ones((n, 2), np.int64))

out = {}
try:
    dataset.load().check_room_for(1000)  # 4 MiB on a 1 MiB disk
except UserError as exc:
    out["preflight"] = str(exc)
dataset.save(chunk(0, 100))  # 400 KiB: fits
try:
    dataset.save(chunk(100, 300))  # 1.2 MiB more: the disk fills during the write
except UserError as exc:
    out["full"] = str(exc)
out["pixel_bytes"] = (dataset.folder / "pixels.u8").stat().st_size
out["cached"] = len(dataset.load().index)
print(json.dumps(out))
"""


def test_a_full_disk_keeps_the_cache_as_it_was_and_says_so(tmp_path):
    """On a real 1 MiB file system (tmpfs in a private mount namespace): the cache refuses to start what it
    cannot hold, and a write that fills the disk leaves no partial chunk behind (formerly 86 KB stayed)."""
    import json
    import shutil
    import subprocess
    import sys

    assert shutil.which("unshare"), "util-linux's unshare is needed to mount a small file system"
    cache = tmp_path / "cache"
    cache.mkdir()
    script = f'mount -t tmpfs -o size=1m tmpfs "{cache}" && exec "{sys.executable}" -c "$0" "{cache}"'
    command = ["unshare", "-rm", "sh", "-c", script, FULL_DISK]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300, cwd=os.getcwd())
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert "needs about 3.9 MiB for 1,000 images at 64 px" in out["preflight"] and "MiB free" in out["preflight"]
    assert out["full"].startswith("No space left on the disk of the pixel cache")
    assert "the 100 images cached before are kept" in out["full"]
    assert out["pixel_bytes"] == 100 * 64 * 64 and out["cached"] == 100
