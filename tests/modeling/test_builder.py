"""The attention model: backbones, attention map, jit-safe augmentation, save/load."""

import keras
import numpy as np
import pytest
from keras.src.trainers.trainer import model_supports_jit

from cardio_kedro.datasets import KerasModelDataset
from cardio_kedro.modeling import (
    ATTENTION_LAYER,
    AttentionPooling,
    XrayAugment,
    attention_model,
    build_backbone,
    build_model,
)
from tests.helpers import TINY_MODEL, base_params

AUGMENTATION = base_params("model_training")["model"]["augmentation"]  # conf/base's


@pytest.mark.parametrize(
    ("backbone", "size", "grid"),
    [("vgg16", 64, 8), ("densenet121", 64, 8), ("efficientnetb0", 64, 8), ("mobilenetv3small", 64, 8)],
)
def test_each_backbone_builds_with_an_attention_map(backbone, size, grid):
    model = build_model(
        size, **{**TINY_MODEL, "backbone": backbone, "backbone_width": 1.0, "backbone_batchnorm": False}
    )
    x = np.random.default_rng(0).integers(0, 255, (2, size, size, 1)).astype(np.uint8)
    prob, attention = attention_model(model).predict(x, verbose=0)
    assert prob.shape == (2, 1) and np.all((prob >= 0) & (prob <= 1))
    assert attention.shape == (2, grid, grid, 1)
    assert model.get_layer(ATTENTION_LAYER).activation.__name__ == "sigmoid"


@pytest.mark.parametrize(("stride", "grid"), [(32, 2), (16, 4), (8, 8)])
def test_attention_stride_sets_the_map_resolution(stride, grid):
    model = build_model(64, **{**TINY_MODEL, "attention_stride": stride})
    _, attention = attention_model(model).predict(np.zeros((1, 64, 64, 1), np.uint8), verbose=0)
    assert attention.shape == (1, grid, grid, 1)
    backbone = model.get_layer("backbone")
    assert (backbone.layers[-1].name == "block5_pool") == (stride == 32)  # 32: the whole backbone, as the seed
    norms = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(layer.momentum == 0.9 for layer in [*norms, model.get_layer("feature_norm")])


def test_imagenet_without_network_says_what_to_do(monkeypatch):
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -3]")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    monkeypatch.setattr("keras.src.applications.mobilenet_v3.file_utils.get_file", offline)
    with pytest.raises(RuntimeError, match="local weights file.*null"):
        build_backbone("mobilenetv3small", 32, "imagenet", 1.0, False)


def test_local_weights_file_is_loaded(tmp_path):
    source = build_backbone("mobilenetv3small", 32, None, 1.0, False)
    path = tmp_path / "mobilenet_notop.weights.h5"
    source.save_weights(path)
    loaded = build_backbone("mobilenetv3small", 32, str(path), 1.0, False)
    for a, b in zip(source.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_backbone("vgg16", 32, str(tmp_path / "absent.h5"), 1.0, False)


def test_augmentation_keeps_xla_on():
    augmentation = {"rotation": 5, "translation": 0.05, "zoom": 0.05, "brightness": 0.1, "contrast": 0.1}
    model = build_model(32, **{**TINY_MODEL, "augmentation": augmentation})
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


def test_global_context_puts_the_whole_images_features_beside_the_attended_ones():
    plain = build_model(32, **{**TINY_MODEL, "global_context": "none"})
    wide = build_model(32, **{**TINY_MODEL, "global_context": "max"})
    channels = plain.get_layer("attention_pooling").output.shape[-1]
    assert wide.get_layer("pooled").output.shape[-1] == 2 * channels
    assert wide.get_layer("dense").kernel.shape[0] == 2 * plain.get_layer("dense").kernel.shape[0]
    with pytest.raises(ValueError):
        plain.get_layer("pooled")  # the seed's head has no global branch


def test_the_view_head_shares_the_weights_and_needs_the_global_branch():
    from cardio_kedro.modeling import with_view_head

    model = build_model(32, **TINY_MODEL)
    trainer = with_view_head(model)
    assert [o.name for o in trainer.outputs] == [model.outputs[0].name, trainer.get_layer("view").output.name]
    x = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 1)).astype(np.uint8)
    score, view = trainer.predict(x, verbose=0)
    np.testing.assert_allclose(score, model.predict(x, verbose=0), rtol=1e-6)  # the same network
    assert view.shape == (2, 1) and trainer.get_layer("dense") is model.get_layer("dense")
    with pytest.raises(ValueError, match="global_context mean or max"):
        with_view_head(build_model(32, **{**TINY_MODEL, "global_context": "none"}))


def test_auxiliary_findings_are_one_more_output_on_the_heads_features():
    from cardio_kedro.modeling import with_auxiliary_findings, with_view_head

    model = build_model(32, **TINY_MODEL)
    trainer = with_auxiliary_findings(with_view_head(model), 3)
    assert trainer.output_names == ["score", "view", "auxiliary"]
    x = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 1)).astype(np.uint8)
    score, view, auxiliary = trainer.predict(x, verbose=0)
    np.testing.assert_allclose(score, model.predict(x, verbose=0), rtol=1e-6)  # the same network
    assert view.shape == (2, 1) and auxiliary.shape == (2, 3)
    pooled = trainer.get_layer("auxiliary").kernel.shape[0]
    assert pooled == model.get_layer("dense").kernel.shape[0]  # attended + global features, as the head reads
    seed_head = with_auxiliary_findings(build_model(32, **{**TINY_MODEL, "global_context": "none"}), 1)
    assert seed_head.output_names == ["score", "auxiliary"]  # the attended features alone
    with pytest.raises(ValueError, match="at least one finding"):
        with_auxiliary_findings(model, 0)


def test_saved_and_reloaded_model_predicts_identically(tmp_path):
    model = build_model(32, **{**TINY_MODEL, "augmentation": AUGMENTATION, "global_context": "mean"})
    ds = KerasModelDataset(str(tmp_path / "model.keras"), version=None)
    ds.save(model)
    x = np.random.default_rng(2).integers(0, 255, (3, 32, 32, 1)).astype(np.uint8)
    again = ds.load()
    np.testing.assert_allclose(model.predict(x, verbose=0), again.predict(x, verbose=0), rtol=1e-6)
    assert again.get_layer(ATTENTION_LAYER) is not None


def test_a_calibrated_model_carries_its_calibration_and_threshold(tmp_path):
    from cardio_kedro.evaluation.calibration import apply_calibration
    from cardio_kedro.modeling import calibrate, operating_threshold, with_score

    raw = build_model(32, **TINY_MODEL)
    assert operating_threshold(raw) is None
    model = calibrate(raw, 1.7, -2.1, 0.123)
    ds = KerasModelDataset(str(tmp_path / "classifier.keras"), version=None)
    ds.save(model)
    again = ds.load()
    assert operating_threshold(again) == pytest.approx(0.123)
    x = np.random.default_rng(4).integers(0, 255, (4, 32, 32, 1)).astype(np.uint8)
    probability, score = (np.asarray(a).reshape(-1) for a in with_score(again).predict(x, verbose=0))
    np.testing.assert_allclose(score, raw.predict(x, verbose=0).reshape(-1), rtol=1e-5)
    np.testing.assert_allclose(probability, apply_calibration(score, 1.7, -2.1), rtol=1e-4)
    np.testing.assert_allclose(again.predict(x, verbose=0).reshape(-1), probability, rtol=1e-6)
    assert attention_model(again).outputs[1].shape[1:3] == (4, 4)  # the attention map is still reachable


def test_a_recalibrated_model_is_the_update_of_the_calibrated_one_and_keeps_every_label(tmp_path):
    """A site's update folded into the Calibration layer: its probability is sigmoid(a + b logit p) of the
    model it came from, its threshold moves with it (no image changes label), its quality guard and
    weights are the original's, it reloads with safe_mode, and the original is unchanged."""
    from cardio_kedro.evaluation.calibration import apply_recalibration
    from cardio_kedro.modeling import calibrate, model_quality_guard, operating_threshold, recalibrated

    guard = {"template": np.full((16, 16), 0.5).tolist(), "min_correlation": 0.3, "min_side": 64,
             "blank_std": 2.0, "saturated_share": 0.5}  # fmt: skip
    model = calibrate(build_model(32, **TINY_MODEL), 1.7, -2.1, 0.123, quality_guard=guard)
    x = np.random.default_rng(5).integers(0, 255, (16, 32, 32, 1)).astype(np.uint8)
    before = model.predict(x, verbose=0).reshape(-1)
    ds = KerasModelDataset(str(tmp_path / "recalibrated.keras"), version=None)
    ds.save(recalibrated(model, -0.9, 0.6))
    updated = ds.load()
    after = updated.predict(x, verbose=0).reshape(-1)
    np.testing.assert_allclose(after, apply_recalibration(before, -0.9, 0.6), rtol=1e-4)
    threshold = operating_threshold(updated)
    assert threshold == pytest.approx(apply_recalibration(np.array([0.123]), -0.9, 0.6)[0], rel=1e-9)
    np.testing.assert_array_equal(after >= threshold, before >= 0.123)
    assert model_quality_guard(updated).min_correlation == 0.3
    assert operating_threshold(model) == pytest.approx(0.123)  # the scored model stays as it was
    np.testing.assert_allclose(model.predict(x, verbose=0).reshape(-1), before, rtol=1e-6)
    with pytest.raises(ValueError, match="no Calibration layer"):
        recalibrated(build_model(32, **TINY_MODEL), 0.0, 1.0)


# ---- the multi-label model ------------------------------------------------------------------------
FINDINGS = ("Cardiomegaly", "Edema", "Effusion")


@pytest.mark.parametrize("attention_map", ["sigmoid", "softmax"])
def test_the_multi_label_model_has_one_map_and_one_head_per_finding(attention_map):
    settings = {**TINY_MODEL, "attention_map": attention_map, "global_context": "mean"}
    model = build_model(32, **settings, findings=FINDINGS)
    x = np.random.default_rng(5).integers(0, 255, (2, 32, 32, 1)).astype(np.uint8)
    assert model.predict(x, verbose=0).shape == (2, 3)
    probabilities, maps = attention_model(model).predict(x, verbose=0)
    assert maps.shape == (2, 4, 4, 3)
    if attention_map == "softmax":  # every finding's map is its own distribution over the cells
        np.testing.assert_allclose(maps.sum(axis=(1, 2)), 1.0, rtol=1e-4)
    # each finding has its own head weights: changing one finding's slice moves that column only
    before = model.predict(x, verbose=0)
    kernel, bias = model.get_layer("score").get_weights()
    bias[1] += 3.0
    model.get_layer("score").set_weights([kernel, bias])
    after = model.predict(x, verbose=0)
    np.testing.assert_allclose(after[:, [0, 2]], before[:, [0, 2]], rtol=1e-6)
    assert (after[:, 1] > before[:, 1]).all()
    assert model_supports_jit(model)


def test_finding_attention_pooling_pools_each_map_on_its_own():
    from cardio_kedro.modeling import FindingAttentionPooling

    features = np.zeros((1, 4, 4, 2), np.float32)
    features[0, 0, 0] = [10.0, 1.0]
    features[0, 3, 3] = [2.0, 20.0]
    maps = np.zeros((1, 4, 4, 2), np.float32)
    maps[0, 0, 0, 0] = 1.0  # finding 0 looks at the top-left cell, finding 1 at the bottom-right one
    maps[0, 3, 3, 1] = 1.0
    out = keras.ops.convert_to_numpy(FindingAttentionPooling()([features, maps]))
    np.testing.assert_allclose(out, [[[10.0, 1.0], [2.0, 20.0]]], rtol=1e-4)
    single = keras.ops.convert_to_numpy(AttentionPooling()([features, maps[..., :1]]))
    np.testing.assert_allclose(out[:, 0], single, rtol=1e-5)  # one map: the binary model's pooling


def test_the_multi_label_model_saves_reloads_and_keeps_per_finding_calibration(tmp_path):
    from cardio_kedro.evaluation.calibration import apply_calibration
    from cardio_kedro.modeling import calibrate, model_findings, operating_threshold, with_score

    raw = build_model(32, **{**TINY_MODEL, "augmentation": AUGMENTATION, "global_context": "max"}, findings=FINDINGS)
    slopes, intercepts, thresholds = [1.0, 0.5, 2.0], [-1.0, 0.0, 0.3], [0.2, 0.5, 0.7]
    model = calibrate(raw, slopes, intercepts, thresholds, findings=FINDINGS)
    ds = KerasModelDataset(str(tmp_path / "classifier.keras"), version=None)
    ds.save(model)
    again = ds.load()  # safe_mode: every layer registered
    assert model_findings(again) == list(FINDINGS) and operating_threshold(again) == thresholds
    x = np.random.default_rng(6).integers(0, 255, (4, 32, 32, 1)).astype(np.uint8)
    probability, score = with_score(again).predict(x, verbose=0)
    np.testing.assert_allclose(score, raw.predict(x, verbose=0), rtol=1e-5)
    for j in range(3):
        expected = apply_calibration(score[:, j], slopes[j], intercepts[j])
        np.testing.assert_allclose(probability[:, j], expected, rtol=1e-4)
    assert model_findings(calibrate(build_model(32, **TINY_MODEL), 1.0, 0.0, 0.5)) is None


def test_an_ensemble_averages_its_members_logits_and_maps_and_survives_save_and_recalibration(tmp_path):
    """The ensemble's score is the mean of its members' logits; its attention map the mean of theirs; it
    calibrates, saves, reloads, recalibrates and exports its backbone like one network."""
    from scipy.special import logit

    from cardio_kedro.evaluation.calibration import apply_calibration
    from cardio_kedro.modeling import calibrate, ensemble, ensemble_members, recalibrated, scoring_model, with_score
    from cardio_kedro.modeling.pretrained import backbone_spec

    keras.utils.set_random_seed(3)
    members = [build_model(32, **TINY_MODEL) for _ in range(3)]
    assert ensemble(members[:1]) is members[0]  # one member: the network itself
    with pytest.raises(ValueError, match="at least one member"):
        ensemble([])
    x = np.random.default_rng(5).integers(0, 255, (6, 32, 32, 1)).astype(np.uint8)
    scores = np.stack([m.predict(x, verbose=0).reshape(-1) for m in members])
    maps = np.stack([attention_model(m).predict(x, verbose=0)[1] for m in members])
    assert np.ptp(scores, axis=0).max() > 1e-4  # the members differ, so the mean is a real test
    ds = KerasModelDataset(str(tmp_path / "ensemble.keras"), version=None)
    ds.save(calibrate(ensemble(members), 1.3, -0.4, 0.2))
    again = ds.load()
    assert [m.name for m in ensemble_members(again)] == ["member_0", "member_1", "member_2"]
    probability, score, attention = scoring_model(again, score=True, attention=True).predict(x, verbose=0)
    np.testing.assert_allclose(logit(score.reshape(-1)), logit(scores).mean(axis=0), atol=1e-4)
    np.testing.assert_allclose(probability.reshape(-1), apply_calibration(score.reshape(-1), 1.3, -0.4), rtol=1e-4)
    np.testing.assert_allclose(attention, maps.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(with_score(again).predict(x, verbose=0)[1], score, rtol=1e-6)
    np.testing.assert_allclose(attention_model(again).predict(x, verbose=0)[1], attention, atol=1e-6)
    updated = recalibrated(again, 0.5, 0.8).predict(x, verbose=0).reshape(-1)
    np.testing.assert_allclose(logit(updated), 0.5 + 0.8 * logit(probability.reshape(-1)), atol=1e-3)
    assert backbone_spec(again)["backbone"] == "vgg16"  # the first member's backbone
