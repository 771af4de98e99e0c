"""The multi-label model through the training nodes: per-finding weights, per-finding AUCs, best epoch on
their mean, per-finding calibration and thresholds saved in the model, the JAX backend."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cardio_kedro.pipelines.model_training.nodes import epoch_metrics, train_model
from tests.helpers import base_params, tiny_params, write_toy_cache

CALIBRATION_BINS = base_params("reporting")["calibration_bins"]

FINDINGS = ("Cardiomegaly", "Effusion", "Mass")
# each finding draws its own block, independently of the others: left, right, bottom
BLOCKS = {
    "Cardiomegaly": (slice(6, 20), slice(2, 12)),
    "Effusion": (slice(6, 20), slice(20, 30)),
    "Mass": (slice(22, 30), slice(2, 30)),
}
RATES = (0.4, 0.3, 0.3)
WEIGHTS = {f: {"0": 0.5 / (1 - r), "1": 0.5 / r} for f, r in zip(FINDINGS, RATES)}
PARAMS = dict(view_loss_weight=0.0, fine_tune={"epochs": 5, "learning_rate": 3e-3})


@pytest.fixture(scope="module")
def multi_cache(tmp_path_factory):
    rng = np.random.default_rng(0)
    images, rows = [], []
    for _ in range(160):
        img = rng.integers(20, 60, (32, 32)).astype(np.uint8)
        has = rng.random(3) < RATES
        for finding, present in zip(FINDINGS, has):
            if present:
                img[BLOCKS[finding]] = 220
        images.append(img)
        rows.append(
            {
                "target": int(has.any()),
                **{f"target.{f}": int(h) for f, h in zip(FINDINGS, has)},
                "view": "PA",
                "sex": "M",
            }
        )
    table, dataset = write_toy_cache(tmp_path_factory.mktemp("multi"), images, rows)
    return {"cache": dataset.load(), "train": table.iloc[:112].reset_index(drop=True), "validation": table.iloc[112:]}


@pytest.fixture(scope="module")
def trained(multi_cache):
    rebalancing = {"strategy": "class_weight", "class_weight": WEIGHTS}
    return train_model(
        multi_cache["train"], multi_cache["validation"], multi_cache["cache"], rebalancing, tiny_params(**PARAMS)
    )


def test_every_finding_is_learnt_and_logged_per_epoch(trained, multi_cache):
    model, history = trained
    assert model.outputs[0].shape[-1] == 3
    per_finding = [f"val_auc.{f}" for f in FINDINGS]
    assert set(per_finding) <= set(history.columns)
    best = history[history["best"]].iloc[0]
    for column in per_finding:
        assert best[column] > 0.8, history[per_finding]
    # the best epoch is the one with the highest mean validation AUC (Keras' multi-label AUC)
    np.testing.assert_allclose(history["val_auc"], history[per_finding].mean(axis=1), atol=0.02)
    assert best["val_auc"] == history["val_auc"].max()
    logged = epoch_metrics(history)
    assert [p["step"] for p in logged["val_auc.Effusion"]] == history["epoch"].tolist()


def test_multi_label_refuses_what_it_cannot_do(multi_cache):
    rebalancing = {"strategy": "class_weight", "class_weight": WEIGHTS}
    no_mass = multi_cache["validation"].assign(**{"target.Mass": 0})
    with pytest.raises(ValueError, match="validation split has 0 positive image.s. of Mass"):
        train_model(multi_cache["train"], no_mass, multi_cache["cache"], rebalancing, tiny_params(**PARAMS))


@pytest.mark.gpu_smoke
def test_the_multi_label_model_trains_saves_and_reloads_under_jax(tmp_path):
    script = textwrap.dedent(f"""
        import numpy as np, keras
        from cardio_kedro.datasets import KerasModelDataset
        from cardio_kedro.modeling import build_model, calibrate, model_findings
        from cardio_kedro.modeling.training import compile_model
        from tests.helpers import TINY_MODEL, base_params
        findings = ("Cardiomegaly", "Effusion")
        augmentation = base_params("model_training")["model"]["augmentation"]
        model = build_model(32, **{{**TINY_MODEL, "augmentation": augmentation}}, findings=findings)
        compile_model(model, 1e-3, "binary_crossentropy", jit_compile=True, clipnorm=1.0, view_loss_weight=0.0,
                      weight_averaging=None, auxiliary_loss_weight=0.0, steps_per_execution=1, label_smoothing=0.0,
                      finding_weights={{f: {{"0": 1.0, "1": 2.0}} for f in findings}}, best_epoch_findings=None,
                      weight_decay=0.0)
        x = np.random.default_rng(0).integers(0, 255, (16, 32, 32, 1)).astype(np.uint8)
        y = (np.random.default_rng(1).random((16, 2)) < 0.5).astype("float32")
        logs = model.fit(x, y, epochs=1, verbose=0).history
        ds = KerasModelDataset("{tmp_path / "m.keras"}", version=None)
        ds.save(calibrate(model, [1.0, 1.0], [0.0, 0.0], [0.5, 0.5], findings=findings))
        again = ds.load()
        shape = again.predict(x, verbose=0).shape
        print("BACKEND", keras.backend.backend(), "FINDINGS", model_findings(again), "SHAPE", shape)
    """)
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(Path(__file__).resolve().parents[3]),
    }
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "BACKEND jax FINDINGS ['Cardiomegaly', 'Effusion'] SHAPE (16, 2)" in out.stdout


def test_each_finding_is_calibrated_and_thresholded_on_validation_and_saved_in_the_model(
    trained, multi_cache, tmp_path
):
    from cardio_kedro.datasets import KerasModelDataset
    from cardio_kedro.evaluation.calibration import apply_calibration
    from cardio_kedro.modeling import model_findings, operating_threshold, with_score
    from cardio_kedro.pipelines.model_training.nodes import calibrate_classifier, score_validation

    model, _ = trained
    params = tiny_params(**PARAMS)
    scores = score_validation(model, multi_cache["validation"], multi_cache["cache"], params)
    assert list(scores.columns) == [
        "image_index",
        "patient_id",
        *(f"target.{f}" for f in FINDINGS),
        *(f"score.{f}" for f in FINDINGS),
    ]
    natural = {"Cardiomegaly": 0.05, "Effusion": 0.3, "Mass": 0.1}
    rebalancing = {"class_weight": WEIGHTS, "prevalence": {"natural": natural, "trained": dict.fromkeys(FINDINGS, 0.5)}}
    calibrated, report = calibrate_classifier(model, scores, rebalancing, params, CALIBRATION_BINS, None)
    assert report["findings"] == list(FINDINGS)
    offsets = {f: report["by_finding"][f]["prior_shift_offset"] for f in FINDINGS}
    assert offsets["Cardiomegaly"] < offsets["Mass"] < offsets["Effusion"] < 0  # each read at its own prevalence
    saved = KerasModelDataset(str(tmp_path / "classifier.keras"))
    saved.save(calibrated)
    again = saved.load()
    assert model_findings(again) == list(FINDINGS)
    assert operating_threshold(again) == [report["by_finding"][f]["threshold"]["value"] for f in FINDINGS]
    x = multi_cache["cache"].images(multi_cache["validation"]["path"])[..., None]
    probability, score = with_score(again).predict(x, verbose=0)
    for j, f in enumerate(FINDINGS):
        np.testing.assert_allclose(score[:, j], scores[f"score.{f}"], rtol=1e-5, atol=1e-6)
        entry = report["by_finding"][f]
        expected = apply_calibration(scores[f"score.{f}"], entry["slope"], entry["intercept"])
        np.testing.assert_allclose(probability[:, j], expected, rtol=1e-4, atol=1e-6)


@pytest.mark.slow  # two trainings, about 9 s
def test_best_epoch_findings_choose_what_the_mean_auc_averages(multi_cache):
    rebalancing = {"strategy": "class_weight", "class_weight": WEIGHTS}
    params = tiny_params(view_loss_weight=0.0, fine_tune={"epochs": 1}, best_epoch_findings=["Effusion", "Mass"])
    _, history = train_model(multi_cache["train"], multi_cache["validation"], multi_cache["cache"], rebalancing, params)
    chosen = history[["val_auc.Effusion", "val_auc.Mass"]].mean(axis=1)
    np.testing.assert_allclose(history["val_auc"], chosen, atol=0.02)
    assert history["val_auc.Cardiomegaly"].notna().all()  # still logged
