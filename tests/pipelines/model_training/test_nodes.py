"""train_model: loss goes down, best weights restored, clear errors, reproducible, data_parallel on 2 CPUs."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from cardio_kedro.pipelines.model_training.nodes import epoch_metrics, train_model
from tests.helpers import tiny_params

NO_WEIGHTS = {"strategy": "undersample", "class_weight": {"0": 1.0, "1": 1.0}}


def test_training_on_a_learnable_set_lowers_the_loss(toy_cache):
    params = tiny_params(fine_tune={"epochs": 5, "learning_rate": 2e-3}, loader="stream")
    model, history = train_model(toy_cache["train"], toy_cache["validation"], toy_cache["cache"], NO_WEIGHTS, params)
    assert list(history["phase"]) == ["head"] + ["fine_tune"] * 5
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]
    assert history["best"].sum() == 1
    assert set(history.columns) >= {"epoch", "loss", "auc", "val_loss", "val_auc", "lr", "images_per_second"}
    assert model.inputs[0].shape[1] == 32  # the size of the pixel cache


def test_same_seed_gives_the_same_first_epoch_loss(toy_cache):
    params = tiny_params(fine_tune={"epochs": 0}, loader="memory")
    runs = [
        train_model(toy_cache["train"], toy_cache["validation"], toy_cache["cache"], NO_WEIGHTS, params)[1]
        for _ in range(2)
    ]
    assert runs[0]["loss"].iloc[0] == pytest.approx(runs[1]["loss"].iloc[0], rel=1e-6)


def test_a_split_without_positives_is_a_clear_error(toy_cache):
    train = toy_cache["train"].assign(target=0)
    with pytest.raises(ValueError, match="train split has 0 positive"):
        train_model(train, toy_cache["validation"], toy_cache["cache"], NO_WEIGHTS, tiny_params())


def test_a_misspelt_parameter_is_refused_by_the_node(toy_cache):
    params = tiny_params()
    params["fine_tune"]["epoch"] = 3
    with pytest.raises(ValueError, match="fine_tune.epoch"):
        train_model(toy_cache["train"], toy_cache["validation"], toy_cache["cache"], NO_WEIGHTS, params)


def test_epoch_metrics_are_mlflow_histories_by_epoch():
    history = pd.DataFrame(
        {"epoch": [1, 2], "loss": [0.7, 0.5], "val_auc": [0.6, float("nan")], "phase": ["head", "fine_tune"]}
    )
    assert epoch_metrics(history) == {
        "loss": [{"value": 0.7, "step": 1}, {"value": 0.5, "step": 2}],
        "val_auc": [{"value": 0.6, "step": 1}],
    }


@pytest.mark.slow
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
        from tests.helpers import tiny_params
        params = tiny_params(distribution="data_parallel", fine_tune={{"epochs": 1}})
        cache = PixelCacheDataset("{toy_cache["dataset"].folder.parent}", image_size=32).load()
        model, history = train_model(pd.read_parquet("{table_dir}/train.parquet"),
                                     pd.read_parquet("{table_dir}/validation.parquet"),
                                     cache, {{"class_weight": {{"0": 1.0, "1": 1.0}}}}, params)
        print("EPOCHS", len(history))
    """)
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "MirroredStrategy over 2 replica(s)" in out.stderr
    assert "EPOCHS 2" in out.stdout
