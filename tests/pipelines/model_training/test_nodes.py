"""train_model: loss goes down, best weights restored, clear errors, reproducible, data_parallel on 2 CPUs."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cardio_kedro.evaluation.calibration import apply_calibration
from cardio_kedro.modeling.fitting import auxiliary_labels
from cardio_kedro.pipelines.model_training.nodes import (
    calibrate_classifier,
    epoch_metrics,
    score_validation,
    train_model,
)
from tests.helpers import NO_REBALANCING, base_params, tiny_params

CALIBRATION_BINS = base_params("reporting")["calibration_bins"]

NO_WEIGHTS = NO_REBALANCING


def test_training_on_a_learnable_set_lowers_the_loss(toy_cache):
    params = tiny_params(fine_tune={"epochs": 5, "learning_rate": 2e-3}, loader="stream")
    model, history = train_model(toy_cache["train"], toy_cache["validation"], toy_cache["cache"], NO_WEIGHTS, params)
    assert list(history["phase"]) == ["head"] + ["fine_tune"] * 5
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]
    assert history["best"].sum() == 1
    assert set(history.columns) >= {"epoch", "loss", "auc", "val_loss", "val_auc", "lr", "images_per_second"}
    assert model.inputs[0].shape[1] == 32  # the size of the pixel cache
    # trained with the auxiliary view target (conf/base), returned without it: one output, the finding's
    assert len(model.outputs) == 1 and history["val_view_accuracy"].notna().all()
    assert history["val_auc"].notna().all() and history["val_loss"].notna().all()


@pytest.mark.parametrize("loader", ["memory", "stream"])
def test_without_the_view_target_nothing_about_views_is_recorded(toy_cache, loader):
    params = tiny_params(fine_tune={"epochs": 1}, view_loss_weight=0.0, loader=loader)
    model, history = train_model(toy_cache["train"], toy_cache["validation"], toy_cache["cache"], NO_WEIGHTS, params)
    assert "val_view_accuracy" not in history and history["val_auc"].notna().all() and len(model.outputs) == 1


def test_auxiliary_findings_are_read_from_the_labels_column():
    frame = pd.DataFrame({"labels": ["Effusion|Edema", "No Finding", "Cardiomegaly|Effusion", None]})
    np.testing.assert_array_equal(auxiliary_labels(frame, ["Edema", "Effusion"]), [[1, 1], [0, 0], [0, 1], [0, 0]])
    with pytest.raises(ValueError, match="'labels' column"):
        auxiliary_labels(frame.rename(columns={"labels": "findings"}), ["Edema"])


def test_auxiliary_findings_train_beside_the_target_and_are_not_saved(toy_cache):
    # the toy labels: every second image has an 'Effusion' (not in the pixels: the loss cannot fit it well)
    train, validation = (
        toy_cache[k].assign(labels=np.where(np.arange(len(toy_cache[k])) % 2, "Effusion", "No Finding"))
        for k in ("train", "validation")
    )
    params = tiny_params(fine_tune={"epochs": 2, "learning_rate": 2e-3}, auxiliary_findings=["Effusion"])
    model, history = train_model(train, validation, toy_cache["cache"], NO_WEIGHTS, params)
    assert len(model.outputs) == 1 and model.output_names == ["score"]
    # the finding's own figures are recorded (Keras names them score_* with three outputs)
    assert history["val_auc"].notna().all() and history["val_view_accuracy"].notna().all()
    assert history["val_auc"].max() > 0.8  # the target is still learnt
    plain, _ = train_model(
        train, validation, toy_cache["cache"], NO_WEIGHTS, tiny_params(fine_tune={"epochs": 2, "learning_rate": 2e-3})
    )
    x = toy_cache["cache"].images(validation["path"])[..., None]
    assert not np.allclose(model.predict(x, verbose=0), plain.predict(x, verbose=0), atol=1e-4)  # it changed training


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
    kept = history.assign(best=[False, True])
    assert epoch_metrics(kept)["best_epoch"] == [{"value": 2.0, "step": 0}]
    # an ensemble's history (a member column): the first member's epochs, one value per step
    members = pd.concat([kept.assign(member=0), kept.assign(member=1, loss=[0.9, 0.8], best=[True, False])])
    assert epoch_metrics(members)["loss"] == [{"value": 0.7, "step": 1}, {"value": 0.5, "step": 2}]
    assert epoch_metrics(members)["best_epoch"] == [{"value": 2.0, "step": 0}]


@pytest.mark.gpu_smoke
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


def test_calibration_and_threshold_are_fitted_on_validation_and_saved_in_the_model(toy_cache, tmp_path):
    from cardio_kedro.datasets import KerasModelDataset
    from cardio_kedro.modeling import operating_threshold, with_score

    params = tiny_params(fine_tune={"epochs": 2})
    model, _ = train_model(toy_cache["train"], toy_cache["validation"], toy_cache["cache"], NO_WEIGHTS, params)
    scores = score_validation(model, toy_cache["validation"], toy_cache["cache"], params)
    assert list(scores.columns) == ["image_index", "patient_id", "target", "score"]
    rebalancing = {**NO_WEIGHTS, "prevalence": {"natural": 0.05, "trained": 1 / 3}}
    calibrated, report = calibrate_classifier(model, scores, rebalancing, params, CALIBRATION_BINS, None)
    assert report["prior_shift_offset"] < 0  # read at 5% prevalence, scores learnt at 33% come down
    assert report["threshold"]["chosen_on"] == "validation" and report["threshold"]["scale"] == "calibrated"
    saved = KerasModelDataset(str(tmp_path / "classifier.keras"))
    saved.save(calibrated)
    again = saved.load()
    assert operating_threshold(again) == report["threshold"]["value"]
    x = toy_cache["cache"].images(toy_cache["validation"]["path"])[..., None]
    probability, score = (np.asarray(a).reshape(-1) for a in with_score(again).predict(x, verbose=0))
    np.testing.assert_allclose(score, scores["score"], rtol=1e-5, atol=1e-6)
    expected = apply_calibration(scores["score"], report["slope"], report["intercept"])
    np.testing.assert_allclose(probability, expected, rtol=1e-4, atol=1e-6)
    prior_only = calibrate_classifier(
        model,
        scores,
        rebalancing,
        {**params, "calibration": {"method": "prior_shift", "shrinkage": 0}},
        CALIBRATION_BINS,
        None,
    )[1]
    assert prior_only["slope"] == 1.0 and prior_only["intercept"] == prior_only["prior_shift_offset"]


@pytest.mark.slow  # two trainings, about 14 s
def test_weight_averaging_validates_and_keeps_the_averaged_weights(toy_cache):
    """The same seed with and without averaging: the raw last step differs from the moving average."""
    args = (toy_cache["train"], toy_cache["validation"], toy_cache["cache"], NO_WEIGHTS)
    raw, raw_history = train_model(*args, tiny_params(fine_tune={"epochs": 2}, weight_averaging=None))
    averaged, history = train_model(*args, tiny_params(fine_tune={"epochs": 2}, weight_averaging=0.5))
    assert raw_history["loss"].iloc[0] == pytest.approx(history["loss"].iloc[0], rel=1e-6)  # same first epoch
    assert history["val_loss"].iloc[-1] != pytest.approx(raw_history["val_loss"].iloc[-1], rel=1e-6)
    dense_raw, dense_avg = raw.get_layer("dense").get_weights()[0], averaged.get_layer("dense").get_weights()[0]
    assert not np.allclose(dense_raw, dense_avg)


@pytest.mark.parametrize("loader", ["memory", "stream"])
def test_max_batches_per_epoch_caps_every_epoch(toy_cache, loader):
    params = tiny_params(fine_tune={"epochs": 0}, view_loss_weight=0.0, loader=loader, max_batches_per_epoch=2)
    params["head"]["epochs"] = 3
    model, history = train_model(toy_cache["train"], toy_cache["validation"], toy_cache["cache"], NO_WEIGHTS, params)
    assert len(toy_cache["train"]) > 2 * params["batch_size"]  # the cap is what stops the epochs
    assert int(model.optimizer.iterations.numpy()) == 3 * 2 and len(history) == 3


def test_keep_weights_last_keeps_the_schedules_end_not_the_best_epoch(toy_cache, monkeypatch):
    """keep_weights: best puts the best val_auc epoch's weights back; last keeps the final epoch's, and the
    history marks that epoch as the one kept."""
    from cardio_kedro.modeling import training

    restored = []
    original = training.EpochMonitor.restore

    def recording(self):
        restored.append(self.best_epoch)
        original(self)

    monkeypatch.setattr(training.EpochMonitor, "restore", recording)
    args = (toy_cache["train"], toy_cache["validation"], toy_cache["cache"], NO_WEIGHTS)
    _, best = train_model(*args, tiny_params(fine_tune={"epochs": 2}))
    assert len(restored) == 1 and best.loc[best["best"], "epoch"].tolist() == [restored[0]]
    _, last = train_model(*args, tiny_params(fine_tune={"epochs": 2}, keep_weights="last"))
    assert len(restored) == 1  # not restored
    assert last.loc[last["best"], "epoch"].tolist() == [int(last["epoch"].max())]
