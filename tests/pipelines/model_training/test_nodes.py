"""Training: loss goes down, best weights restored, clear errors, reproducible, data_parallel on 2 CPUs."""

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from cardio_kedro.pipelines.model_training.data import CachedImages, feed, gather
from cardio_kedro.pipelines.model_training.nodes import EpochMonitor, train_model

from .conftest import tiny_params

NO_WEIGHTS = {"strategy": "undersample", "class_weight": {"0": 1.0, "1": 1.0}}


def test_training_on_a_learnable_set_lowers_the_loss(toy_cache):
    params = tiny_params(fine_tune={"epochs": 5, "learning_rate": 2e-3, "unfreeze_layers": "all"}, loader="stream")
    model, history = train_model(
        toy_cache["train"], toy_cache["validation"], toy_cache["dataset"].load(), NO_WEIGHTS, 32, params
    )
    assert list(history["phase"]) == ["head"] + ["fine_tune"] * 5
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]
    assert history["best"].sum() == 1
    assert set(history.columns) >= {"epoch", "loss", "auc", "val_loss", "val_auc", "lr", "images_per_second"}


def test_same_seed_gives_the_same_first_epoch_loss(toy_cache):
    params = tiny_params(fine_tune={"epochs": 0}, loader="memory")
    runs = [
        train_model(toy_cache["train"], toy_cache["validation"], toy_cache["dataset"].load(), NO_WEIGHTS, 32, params)[1]
        for _ in range(2)
    ]
    assert runs[0]["loss"].iloc[0] == pytest.approx(runs[1]["loss"].iloc[0], rel=1e-6)


def test_a_split_without_positives_is_a_clear_error(toy_cache):
    train = toy_cache["train"].assign(target=0)
    with pytest.raises(ValueError, match="train split has 0 positive"):
        train_model(train, toy_cache["validation"], toy_cache["dataset"].load(), NO_WEIGHTS, 32, tiny_params())


def _toy_model():
    inputs = keras.Input((2,))
    return keras.Model(inputs, keras.layers.Dense(1)(inputs))


def test_the_best_epochs_weights_are_restored():
    model = _toy_model()
    monitor = EpochMonitor(n_train=10)
    monitor.set_model(model)
    model.compile(optimizer="adam", loss="mse")
    snapshots = []
    for epoch, val_auc in enumerate([0.6, 0.9, 0.7, 0.8]):
        model.set_weights([np.full_like(w, epoch) for w in model.get_weights()])
        snapshots.append([w.copy() for w in model.get_weights()])
        monitor.on_epoch_begin(epoch)
        monitor.on_epoch_end(epoch, {"loss": 1.0, "val_auc": val_auc})
    monitor.restore()
    for restored, best in zip(model.get_weights(), snapshots[1], strict=True):
        np.testing.assert_array_equal(restored, best)
    assert monitor.best_epoch == 2


def test_nan_loss_stops_training_with_a_reason():
    model = _toy_model()
    model.compile(optimizer="adam", loss="mse")
    monitor = EpochMonitor(n_train=10)
    monitor.set_model(model)
    monitor.on_epoch_begin(0)
    monitor.on_epoch_end(0, {"loss": math.nan, "val_auc": 0.5})
    assert model.stop_training and "nan in epoch 1" in monitor.diverged


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


def test_data_parallel_trains_on_two_logical_cpu_devices(toy_cache, tmp_path):
    table_dir = tmp_path / "tables"
    table_dir.mkdir()
    toy_cache["train"].to_parquet(table_dir / "train.parquet")
    toy_cache["validation"].to_parquet(table_dir / "validation.parquet")
    script = textwrap.dedent(f"""
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import logging
        logging.basicConfig(level=logging.INFO)
        import pandas as pd
        from cardio_kedro.datasets import PixelCacheDataset
        from cardio_kedro.pipelines.model_training.nodes import train_model
        from tests.pipelines.model_training.conftest import tiny_params
        params = tiny_params(distribution="data_parallel", fine_tune={{"epochs": 1, "unfreeze_layers": "all"}})
        model, history = train_model(pd.read_parquet("{table_dir}/train.parquet"),
                                     pd.read_parquet("{table_dir}/validation.parquet"),
                                     PixelCacheDataset("{toy_cache["dataset"]._root}").load(),
                                     {{"class_weight": {{"0": 1.0, "1": 1.0}}}}, 32, params)
        print("EPOCHS", len(history))
    """)
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "MirroredStrategy over 2 replica(s)" in out.stderr
    assert "EPOCHS 2" in out.stdout


def test_memory_loader_gathers_rows_in_order_and_auto_falls_back_to_streaming():
    pixels = np.arange(10, dtype=np.uint8)[:, None, None].repeat(4, 1).repeat(4, 2)
    rows = np.array([7, 2, 9, 2])
    assert gather(pixels, rows)[:, 0, 0, 0].tolist() == [7, 2, 9, 2]
    labels = np.array([1, 0, 1, 0])
    in_ram = feed(pixels, rows, labels, 2, {"loader": "auto"}, shuffle=True)
    assert in_ram["x"].shape == (4, 4, 4, 1) and in_ram["shuffle"] and in_ram["batch_size"] == 2
    streamed = feed(pixels, rows, labels, 2, {"loader": "auto", "max_loader_memory_gb": 1e-9})
    assert isinstance(streamed["x"], CachedImages) and "y" not in streamed
    with pytest.raises(ValueError, match="loader must be"):
        feed(pixels, rows, labels, 2, {"loader": "disk"})
