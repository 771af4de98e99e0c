"""The attention model: backbones, attention map, jit-safe augmentation, save/load, no tensorflow imports."""

import ast
from pathlib import Path

import keras
import numpy as np
import pytest
from keras.src.trainers.trainer import model_supports_jit

from cardio_kedro.datasets import KerasModelDataset
from cardio_kedro.pipelines.model_training.model import (
    ATTENTION_LAYER,
    AttentionPooling,
    XrayAugment,
    attention_model,
    build_backbone,
    build_model,
)

from .conftest import TINY_MODEL

PACKAGE = Path(__file__).resolve().parents[3] / "src" / "cardio_kedro"


@pytest.mark.parametrize(
    ("backbone", "size", "grid"),
    [("vgg16", 64, 2), ("densenet121", 64, 2), ("efficientnetb0", 64, 2), ("mobilenetv3small", 64, 2)],
)
def test_each_backbone_builds_with_an_attention_map(backbone, size, grid):
    model = build_model(
        size, {"backbone": backbone, "backbone_weights": None, "attention_units": [8, 1], "dense_units": 8}
    )
    x = np.random.default_rng(0).integers(0, 255, (2, size, size, 1)).astype(np.uint8)
    prob, attention = attention_model(model).predict(x, verbose=0)
    assert prob.shape == (2, 1) and np.all((prob >= 0) & (prob <= 1))
    assert attention.shape == (2, grid, grid, 1)
    assert model.get_layer(ATTENTION_LAYER).activation.__name__ == "sigmoid"


def test_imagenet_without_network_says_what_to_do(monkeypatch):
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -3]")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    monkeypatch.setattr("keras.src.applications.mobilenet_v3.file_utils.get_file", offline)
    with pytest.raises(RuntimeError, match="local weights file.*null"):
        build_backbone("mobilenetv3small", 32, "imagenet")


def test_local_weights_file_is_loaded(tmp_path):
    source = build_backbone("mobilenetv3small", 32, None)
    path = tmp_path / "mobilenet_notop.weights.h5"
    source.save_weights(path)
    loaded = build_backbone("mobilenetv3small", 32, str(path))
    for a, b in zip(source.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_backbone("vgg16", 32, str(tmp_path / "absent.h5"))


def test_augmentation_keeps_xla_on():
    model = build_model(32, {**TINY_MODEL, "augmentation": {"rotation": 5, "translation": 0.05, "zoom": 0.05}})
    assert model_supports_jit(model)
    # the trap the custom layer avoids: Keras' own RandomRotation switches XLA off for the whole model
    inputs = keras.Input((32, 32, 1))
    control = keras.Model(inputs, keras.layers.RandomRotation(0.05)(inputs))
    assert not model_supports_jit(control)


def test_augmentation_changes_images_only_in_training():
    layer = XrayAugment(rotation=10, translation=0.1, zoom=0.1, brightness=0.1, contrast=0.1, seed=3)
    x = np.zeros((4, 32, 32, 1), np.uint8)
    x[:, 8:24, 4:12] = 200
    assert np.array_equal(keras.ops.convert_to_numpy(layer(x, training=False)), x)
    y = keras.ops.convert_to_numpy(layer(x, training=True))
    assert y.shape == x.shape and y.dtype == np.uint8
    assert not np.array_equal(y, x)
    assert not np.array_equal(y[0], y[1])  # one random affine per image
    left, right = y[..., :16, :].mean(), y[..., 16:, :].mean()
    assert left > right  # no horizontal flip: the bright block stays on the left


def test_attention_pooling_undoes_the_mask_scale():
    features = np.full((1, 4, 4, 3), 5.0, np.float32)
    mask = np.random.default_rng(1).uniform(0.1, 1.0, (1, 4, 4, 1)).astype(np.float32)
    out = keras.ops.convert_to_numpy(AttentionPooling()([features, mask]))
    np.testing.assert_allclose(out, 5.0, rtol=1e-5)
    features[0, 0, 0] = 105.0
    onehot = np.zeros_like(mask)
    onehot[0, 0, 0] = 1.0
    np.testing.assert_allclose(keras.ops.convert_to_numpy(AttentionPooling()([features, onehot])), 105.0, rtol=1e-4)


def test_saved_and_reloaded_model_predicts_identically(tmp_path):
    model = build_model(32, {**TINY_MODEL, "augmentation": {"rotation": 5}})
    ds = KerasModelDataset(str(tmp_path / "model.keras"), version=None)
    ds.save(model)
    x = np.random.default_rng(2).integers(0, 255, (3, 32, 32, 1)).astype(np.uint8)
    again = ds.load()
    np.testing.assert_allclose(model.predict(x, verbose=0), again.predict(x, verbose=0), rtol=1e-6)
    assert again.get_layer(ATTENTION_LAYER) is not None


def _module_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_model_and_training_code_never_import_tensorflow_at_module_level():
    files = [
        *sorted((PACKAGE / "pipelines" / "model_training").glob("*.py")),
        PACKAGE / "datasets" / "keras_model_dataset.py",
    ]
    assert len(files) >= 4
    for path in files:
        assert "tensorflow" not in _module_level_imports(path), path
