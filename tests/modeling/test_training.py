"""Training pieces: best weights restored, NaN stops training, freezing, losses."""

import math

import keras
import numpy as np
import pytest

from cardio_kedro.modeling import build_model
from cardio_kedro.modeling.training import EpochMonitor, compile_model, make_loss, set_trainable
from tests.helpers import TINY_MODEL


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
    assert [r["epoch"] for r in monitor.records] == [1, 2, 3, 4]


def test_nan_loss_stops_training_with_a_reason():
    model = _toy_model()
    model.compile(optimizer="adam", loss="mse")
    monitor = EpochMonitor(n_train=10)
    monitor.set_model(model)
    monitor.on_epoch_begin(0)
    monitor.on_epoch_end(0, {"loss": math.nan, "val_auc": 0.5})
    assert model.stop_training and "nan in epoch 1" in monitor.diverged


def test_set_trainable_freezes_all_but_the_top_layers():
    model = build_model(32, **TINY_MODEL)
    weighted = [layer for layer in model.get_layer("backbone").layers if layer.weights]
    assert set_trainable(model, 0) == 0 and not model.get_layer("backbone").trainable
    assert set_trainable(model, 2) == 2
    assert [layer.trainable for layer in weighted][-3:] == [False, True, True]
    assert set_trainable(model, "all") == len(weighted) and all(layer.trainable for layer in weighted)


def test_losses_by_name():
    assert isinstance(make_loss("focal"), keras.losses.BinaryFocalCrossentropy)
    assert isinstance(make_loss("binary_crossentropy"), keras.losses.BinaryCrossentropy)
    with pytest.raises(ValueError, match="loss must be"):
        make_loss("hinge")


def test_label_smoothing_moves_the_loss_minimum_off_certainty():
    y = np.ones((1, 1), np.float32)

    def loss_at(p: float, smoothing: float) -> float:
        return float(make_loss("binary_crossentropy", smoothing)(y, np.full((1, 1), p, np.float32)))

    assert loss_at(0.999, 0.0) < loss_at(0.95, 0.0)  # unsmoothed: the surer, the better
    assert loss_at(0.95, 0.1) < loss_at(0.999, 0.1)  # target 0.95: certainty now costs
    assert make_loss("focal", 0.1).label_smoothing == 0.1


def _one_step(weight_decay: float, shift: float) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One training step of a dense -> batch-norm -> dense network whose seeded initial weights are moved by
    ``shift``; its trainable variables (by path) before and after the step."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((3,))
    x = keras.layers.BatchNormalization(name="norm")(keras.layers.Dense(4, name="hidden")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="out")(x))
    for variable in model.trainable_variables:
        variable.assign(variable + shift)  # non-zero biases and offsets: a decay of them would show
    compile_model(model, 0.1, "binary_crossentropy", jit_compile=False, clipnorm=None, view_loss_weight=0.0,
                  weight_averaging=None, auxiliary_loss_weight=0.0, steps_per_execution=1, label_smoothing=0.0,
                  finding_weights=None, best_epoch_findings=None, weight_decay=weight_decay)  # fmt: skip
    before = {v.path: keras.ops.convert_to_numpy(v) for v in model.trainable_variables}
    rng = np.random.default_rng(0)
    model.train_on_batch(rng.normal(size=(8, 3)).astype("float32"), (rng.random((8, 1)) > 0.5).astype("float32"))
    return before, {v.path: keras.ops.convert_to_numpy(v) for v in model.trainable_variables}


def test_weight_decay_shrinks_kernels_only_by_learning_rate_times_decay():
    """Decoupled decay: the same step with decay 2 lands -lr x 2 x the starting kernel away from the step
    without; biases and the normalisation's scale and offset take the same step either way."""
    start, plain = _one_step(0.0, 0.5)
    same_start, decayed = _one_step(2.0, 0.5)
    assert all(np.array_equal(start[n], same_start[n]) for n in start)
    for name, value in plain.items():
        if name.endswith("kernel"):
            np.testing.assert_allclose(decayed[name] - value, -0.1 * 2.0 * start[name], rtol=1e-4, atol=1e-6)
        else:
            np.testing.assert_allclose(decayed[name], value, rtol=1e-6, atol=1e-7)
    assert {n.rsplit("/", 1)[-1] for n in plain} == {"kernel", "bias", "gamma", "beta"}
