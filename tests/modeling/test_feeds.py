"""Feeds from the pixel cache: batches, reshuffling, the in-memory and streaming loaders."""

import numpy as np
import pytest

from cardio_kedro.modeling.feeds import CachedImages, feed, gather

LOADER = {"loader": "auto", "max_loader_memory_gb": 8.0, "loader_workers": 1}


def test_batches_come_from_the_cache_and_reshuffle_per_epoch():
    pixels = np.arange(10, dtype=np.uint8)[:, None, None].repeat(4, 1).repeat(4, 2)
    data = CachedImages(pixels, np.arange(10), np.arange(10) % 2, batch_size=4, shuffle=True, seed=0)
    first = np.concatenate([data[i][0][:, 0, 0, 0] for i in range(len(data))])
    assert sorted(first.tolist()) == list(range(10)) and len(data) == 3
    data.on_epoch_end()
    second = np.concatenate([data[i][0][:, 0, 0, 0] for i in range(len(data))])
    assert sorted(second.tolist()) == list(range(10)) and not np.array_equal(first, second)
    x, y = data[0]
    assert x.dtype == np.uint8 and x.shape[1:] == (4, 4, 1)
    assert np.array_equal(y, x[:, 0, 0, 0] % 2)  # labels travel with their images


def test_memory_loader_gathers_rows_in_order_and_auto_falls_back_to_streaming():
    pixels = np.arange(10, dtype=np.uint8)[:, None, None].repeat(4, 1).repeat(4, 2)
    rows = np.array([7, 2, 9, 2])
    assert gather(pixels, rows)[:, 0, 0, 0].tolist() == [7, 2, 9, 2]
    labels = np.array([1, 0, 1, 0])
    in_ram = feed(pixels, rows, labels, 2, **LOADER, shuffle=True)
    assert in_ram["x"].shape == (4, 4, 4, 1) and in_ram["shuffle"] and in_ram["batch_size"] == 2
    streamed = feed(pixels, rows, labels, 2, **{**LOADER, "max_loader_memory_gb": 1e-9})
    assert isinstance(streamed["x"], CachedImages) and "y" not in streamed
    with pytest.raises(ValueError, match="loader must be"):
        feed(pixels, rows, labels, 2, **{**LOADER, "loader": "disk"})


def test_batches_keep_the_order_of_their_rows():
    """Prediction must line up with the table: rows out of cache order come back in the order asked."""
    pixels = np.arange(10, dtype=np.uint8)[:, None, None].repeat(4, 1).repeat(4, 2)
    rows = np.array([7, 2, 9, 0, 5])
    data = CachedImages(pixels, rows, np.zeros(5), batch_size=3)
    assert np.concatenate([data[i][0][:, 0, 0, 0] for i in range(len(data))]).tolist() == [7, 2, 9, 0, 5]


def test_predict_cached_in_chunks_gives_every_row_in_order(monkeypatch):
    import keras

    from cardio_kedro.modeling import feeds
    from cardio_kedro.modeling.builder import SCORE_LAYER

    pixels = np.arange(23 * 4 * 4, dtype=np.uint8).reshape(23, 4, 4) % 251
    inputs = keras.Input((4, 4, 1), dtype="uint8")
    mean = keras.layers.Lambda(lambda t: keras.ops.mean(keras.ops.cast(t, "float32"), axis=(1, 2, 3)))(inputs)
    model = keras.Model(inputs, keras.layers.Reshape((1,), name=SCORE_LAYER)(mean / 255.0))
    rows = np.array([22, 3, 3, 17, 0, 9, 11, 5, 21, 8, 1])
    monkeypatch.setattr(feeds, "PREDICT_CHUNK_BYTES", 4 * 16)  # 4 images of 4x4: 11 rows in chunks of 4, 4 and 3
    probability, score = feeds.predict_cached(model, pixels, rows, batch_size=2)
    expected = pixels[rows].reshape(len(rows), -1).mean(axis=1) / 255.0
    np.testing.assert_allclose(probability, expected, rtol=1e-5)
    np.testing.assert_allclose(score, expected, rtol=1e-5)  # an uncalibrated model: the score is the output
