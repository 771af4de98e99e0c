"""Metric functions on hand-computable cases; threshold from validation only; attention localization."""

import keras
import numpy as np
import pandas as pd
import pytest

from cardio_kedro.evaluation.decision import choose_threshold
from cardio_kedro.evaluation.localization import localization_scores
from cardio_kedro.evaluation.metrics import bootstrap_auc, calibration_metrics, rates_at
from cardio_kedro.modeling import predict_with_attention
from cardio_kedro.pipelines.reporting.nodes import decision_curve, evaluation_metrics, headline_metrics
from tests.helpers import base_params


def test_auc_perfect_inverted_and_constant():
    y = np.array([0, 0, 1, 1, 0, 1])
    groups = np.arange(6)
    assert bootstrap_auc(y, y * 0.8 + 0.1, groups, n_boot=0, seed=0)["auc"] == 1.0
    assert bootstrap_auc(y, 1 - y, groups, n_boot=0, seed=0)["auc"] == 0.0
    assert bootstrap_auc(y, np.full(6, 0.3), groups, n_boot=0, seed=0)["auc"] == 0.5
    assert bootstrap_auc(np.ones(6), np.arange(6), groups, n_boot=0, seed=0)["auc"] is None


def test_rates_at_a_threshold_by_hand():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.2, 0.7, 0.1, 0.1, 0.3, 0.2])
    r = rates_at(y, p, 0.5)
    assert r["confusion_matrix"] == {"tn": 4, "fp": 1, "fn": 1, "tp": 2}
    assert r["sensitivity"] == pytest.approx(2 / 3) and r["specificity"] == pytest.approx(4 / 5)
    assert r["ppv"] == pytest.approx(2 / 3) and r["npv"] == pytest.approx(4 / 5)
    assert r["f1"] == pytest.approx(4 / 6)
    assert r["classification_report"]["positive"]["support"] == 3


def test_bootstrap_ci_contains_the_estimate_and_narrows_with_n():
    rng = np.random.default_rng(0)

    def sample(n):
        y = rng.random(n) < 0.3
        p = np.clip(y * 0.3 + rng.normal(0.35, 0.2, n), 0, 1)
        return y.astype(int), p, np.arange(n) // 2  # two images per patient

    widths = []
    for n in (100, 2000):
        res = bootstrap_auc(*sample(n), n_boot=300, seed=1)
        assert res["ci_low"] <= res["auc"] <= res["ci_high"]
        widths.append(res["ci_high"] - res["ci_low"])
    assert widths[1] < widths[0] / 2


def _predictions(seed, n=400):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.15).astype(int)
    score = np.clip(0.25 * y + rng.normal(0.4, 0.15, n), 0.001, 0.999)
    return pd.DataFrame(
        {
            "image_index": [f"{i}.png" for i in range(n)],
            "target": y,
            "probability": np.clip(score - 0.2, 0.001, 0.999),
            "score": score,
            "patient_id": np.arange(n),
            "sex": rng.choice(["M", "F"], n),
            "view": rng.choice(["PA", "AP"], n),
            "age": rng.uniform(20, 90, n),
        }
    )


def _metrics(val, test, **params):
    calibration = {"threshold": choose_threshold(val["target"], val["probability"], "youden", 0.9, 0.5)}
    baseline = test[["image_index", "patient_id", "target"]].assign(
        probability=np.random.default_rng(9).random(len(test))
    )
    return evaluation_metrics(val, test, calibration, baseline, base_params("reporting", **params))


def test_the_threshold_is_the_models_and_test_labels_do_not_move_it():
    val, test = _predictions(1), _predictions(2)
    a = _metrics(val, test, n_bootstrap=20)
    flipped = test.assign(target=1 - test["target"])  # test labels must not move the threshold
    b = _metrics(val, flipped, n_bootstrap=20)
    assert a["threshold"]["value"] == b["threshold"]["value"]
    assert a["threshold"]["value"] == choose_threshold(val["target"], val["probability"], "youden", 0.9, 0.5)["value"]
    assert a["test"]["roc_auc"]["auc"] == pytest.approx(1 - b["test"]["roc_auc"]["auc"])
    assert a["test"]["threshold"] == a["threshold"]["value"]
    assert a["test_rebalanced_3to1"]["n_images"] == 4 * a["test"]["n_positive"]
    assert set(a["subgroups"]) == {"sex", "view", "age"}


def test_calibration_before_and_after_and_the_baseline_verdict():
    val, test = _predictions(1), _predictions(2)
    m = _metrics(val, test, n_bootstrap=30)
    calibration = m["test"]["calibration"]
    assert set(calibration) == {"raw_score", "calibrated"}
    for name, column in (("raw_score", "score"), ("calibrated", "probability")):
        brier = calibration[name]["brier"]
        assert brier["value"] == pytest.approx(np.mean((test[column] - test["target"]) ** 2))
        assert brier["ci_low"] <= brier["value"] <= brier["ci_high"]
    assert m["baseline"]["roc_auc"]["auc"] < 0.65 and m["baseline"]["model_beats_baseline"]  # random baseline
    same = _metrics(val, test.assign(score=test["probability"]), n_bootstrap=30)
    assert same["test"]["calibration"]["raw_score"]["ece"] == same["test"]["calibration"]["calibrated"]["ece"]


def test_a_model_no_better_than_the_baseline_is_flagged():
    val, test = _predictions(1), _predictions(2)
    calibration = {"threshold": choose_threshold(val["target"], val["probability"], "youden", 0.9, 0.5)}
    baseline = test[["image_index", "patient_id", "target"]].assign(probability=test["probability"])
    m = evaluation_metrics(val, test, calibration, baseline, base_params("reporting", n_bootstrap=30))
    assert not m["baseline"]["model_beats_baseline"]


def test_patient_level_calibration_intervals():
    rng = np.random.default_rng(3)
    p = rng.uniform(0.01, 0.99, 3000)
    y = (rng.random(3000) < p).astype(int)
    m = calibration_metrics(y, p, np.arange(3000) // 3, 10, 200, 0)
    assert m["ece"]["value"] < 0.04 and m["calibration_slope"]["ci_low"] < 1 < m["calibration_slope"]["ci_high"]
    assert m["calibration_intercept"]["ci_low"] < 0 < m["calibration_intercept"]["ci_high"]


def test_decision_curve_of_the_test_split():
    curve = decision_curve(_predictions(2))
    assert curve["threshold"].iloc[0] == 0.01 and curve["threshold"].iloc[-1] == 0.99 and len(curve) == 99
    assert set(curve.columns) == {"threshold", "model", "treat_all", "treat_none"}


def test_headline_metrics_are_flat_mlflow_metrics():
    metrics = _metrics(_predictions(1), _predictions(2), n_bootstrap=20)
    localization = {"pointing_game_hit_rate": 0.7, "pointing_game_strict": 0.5, "uniform_pointing_reference": 0.2}
    localization |= {"attention_mass_in_box": 0.4, "uniform_reference": 0.15}
    flat = headline_metrics(metrics, localization)
    assert flat["test_auc"] == {"value": metrics["test"]["roc_auc"]["auc"], "step": 0}
    assert flat["threshold"]["value"] == metrics["threshold"]["value"]
    assert "test_rebalanced_3to1_auc" in flat and "subgroup_age_lt40_auc" in flat
    assert (
        flat["attention_uniform_reference"]["value"] == 0.15
        and flat["attention_pointing_game_hit_rate"]["value"] == 0.7
    )
    assert {"test_ece", "test_calibration_slope", "baseline_auc", "test_ece_raw_score"} <= set(flat)
    assert all(set(v) == {"value", "step"} for v in flat.values())


def test_small_subgroups_are_not_scored():
    val, test = _predictions(1), _predictions(2)
    test.loc[test.index[:3], "view"] = "LL"
    out = _metrics(val, test, n_bootstrap=10)
    assert out["subgroups"]["view"]["LL"]["auc"] is None
    assert out["subgroups"]["view"]["LL"]["note"] == "n too small"


def test_pointing_game_on_a_hand_made_box():
    maps = np.zeros((2, 10, 10))
    maps[0, 2, 3] = 1.0  # peak inside the box
    maps[1, 8, 8] = 1.0  # peak outside
    maps[:, 2:4, 2:5] += 0.1
    res = localization_scores(maps, np.array([[2, 1, 3, 3], [2, 1, 3, 3]], float), 0.0)
    assert res["n_images"] == 2 and res["pointing_game_hit_rate"] == 0.5 == res["pointing_game_strict"]
    assert res["uniform_reference"] == pytest.approx(9 / 100)  # a uniform map: the box's share of the image
    near = maps.copy()
    near[1] = 0
    near[1, 4, 5] = 1.0  # one pixel outside the box, diagonally off its corner
    tolerant = localization_scores(near, np.array([[2, 1, 3, 3], [2, 1, 3, 3]], float), 1.0)
    assert tolerant["pointing_game_hit_rate"] == 1.0 and tolerant["pointing_game_strict"] == 0.5
    assert tolerant["uniform_pointing_reference"] == pytest.approx(25 / 100)  # the grown box's share
    uniform = localization_scores(np.ones((2, 10, 10)), np.array([[2, 1, 3, 3], [2, 1, 3, 3]], float), 0.0)
    assert uniform["attention_mass_in_box"] == pytest.approx(uniform["uniform_reference"])
    assert uniform["mass_over_uniform"] == pytest.approx(1.0)
    assert res["attention_mass_in_box"] == pytest.approx(((1.6 / 1.6) + (0.6 / 1.6)) / 2)


def test_heat_maps_align_with_the_image():
    """A model whose attention is the downsampled image: the heat-map peak lands on the bright block."""
    inputs = keras.Input((32, 32, 1), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    attention = keras.layers.AveragePooling2D(4, name="attention_map")(x)
    out = keras.layers.Dense(1, activation="sigmoid")(keras.layers.GlobalAveragePooling2D()(attention))
    model = keras.Model(inputs, out)
    images = np.zeros((2, 32, 32), np.uint8)
    images[0, 4:8, 24:28] = 255  # top right
    images[1, 24:28, 4:8] = 255  # bottom left
    _, maps = predict_with_attention(model, images)
    assert maps.shape == (2, 32, 32)
    for img, m in zip(images, maps, strict=True):
        py, px = np.unravel_index(np.argmax(m), m.shape)
        assert img[py, px] == 255 or np.hypot(*(np.array([py, px]) - np.argwhere(img == 255).mean(0))) < 4
    boxes = np.array([[24, 4, 4, 4], [4, 24, 4, 4]], float)
    assert localization_scores(maps, boxes, 0.0)["pointing_game_hit_rate"] == 1.0


def test_patient_resamples_take_whole_patients_as_drawn():
    from cardio_kedro.evaluation.metrics import _patient_resamples

    groups = np.array([7, 3, 7, 9, 3, 3, 11, 9, 7])
    uniq, inverse = np.unique(groups, return_inverse=True)
    rng = np.random.default_rng(4)  # the same draws as the resampler's
    for idx in _patient_resamples(groups, 20, 4, "test"):
        pick = rng.integers(0, len(uniq), len(uniq))
        expected = np.concatenate([np.flatnonzero(inverse == j) for j in pick])  # patient after patient
        np.testing.assert_array_equal(idx, expected)


def test_bootstrap_auc_equals_resorting_every_resample():
    from cardio_kedro.evaluation.metrics import auc_or_none, patient_bootstrap

    rng = np.random.default_rng(0)
    groups = rng.integers(0, 300, 1200)
    y = (rng.random(1200) < 0.1).astype(int)
    p = np.round(y * 0.2 + rng.random(1200) * 0.8, 2)  # rounded: many ties
    fast = bootstrap_auc(y, p, groups, n_boot=200, seed=3)
    slow = patient_bootstrap(y, p, groups, {"auc": auc_or_none}, 200, 3)["auc"]
    assert fast["n_boot"] == slow["n_boot"] == 200
    for key, other in (("auc", "value"), ("ci_low", "ci_low"), ("ci_high", "ci_high")):
        assert fast[key] == pytest.approx(slow[other], abs=1e-12)


def test_every_metric_has_a_per_view_breakdown():
    from cardio_kedro.evaluation.metrics import auc_or_none

    val, test = _predictions(1), _predictions(2)
    m = _metrics(val, test, n_bootstrap=20)
    assert set(m["by_view"]) == {"AP", "PA"}
    for view, frame in test.groupby("view"):
        by_view = m["by_view"][view]
        assert by_view["n_images"] == len(frame) and by_view["threshold"] == m["threshold"]["value"]
        assert by_view["roc_auc"]["auc"] == pytest.approx(auc_or_none(frame["target"], frame["probability"]))
        assert by_view["brier"] == pytest.approx(np.mean((frame["probability"] - frame["target"]) ** 2))
        assert by_view["calibration"]["brier"]["value"] == pytest.approx(by_view["brier"])
    headline = headline_metrics(m, {"n_images": 0})
    assert headline["test_auc.view_AP"]["value"] == m["by_view"]["AP"]["roc_auc"]["auc"]
    assert headline["test_ece.view_PA"]["value"] == m["by_view"]["PA"]["calibration"]["ece"]["value"]


def test_cross_validation_metrics_pair_the_baseline_and_score_the_base_rate():
    import numpy as np
    import pandas as pd

    from cardio_kedro.pipelines.cross_validation.nodes import _prevalence_only_brier, cross_validation_metrics
    from tests.helpers import base_params

    rng = np.random.default_rng(0)
    n = 300
    y = (rng.random(n) < 0.2).astype(int)
    frame = pd.DataFrame(
        {
            "image_index": [f"{i}.png" for i in range(n)],
            "patient_id": np.arange(n),
            "target": y,
            "fold": np.arange(n) % 3,
            "score": np.clip(0.5 * y + 0.3 * rng.random(n), 0, 1),
            "baseline_probability": rng.random(n),  # learnt nothing
            "fold_threshold": 0.4,
        }
    )
    frame["probability"] = frame["raw_score"] = frame["ranking_score"] = frame["score"]
    frame["baseline_ranking_score"] = frame["baseline_probability"]
    calibration = {"slope": 1.0, "intercept": 0.0, "threshold": {"value": 0.4}, "fitted_on": "out_of_fold"}
    metrics = cross_validation_metrics(frame, calibration, base_params("reporting", n_bootstrap=100))
    assert metrics["out_of_fold"]["ranked_by"] == "probability"
    assert metrics["beats_baseline"] and metrics["paired_difference"]["ci_low"] > 0
    assert [f["fold"] for f in metrics["folds"]] == [1, 2, 3] and sum(f["n_images"] for f in metrics["folds"]) == n
    # each fold's base rate comes from the other two folds
    rates = [y[frame["fold"] != k].mean() for k in frame["fold"]]
    assert np.isclose(_prevalence_only_brier(frame), np.mean((np.array(rates) - y) ** 2))
    assert metrics["out_of_fold"]["sensitivity"] == 1.0  # every positive scores >= 0.5 > its fold's threshold
    frame["baseline_probability"] = frame["baseline_ranking_score"] = frame["probability"]
    tied = cross_validation_metrics(frame, calibration, base_params("reporting", n_bootstrap=100))
    assert not tied["beats_baseline"] and tied["paired_difference"]["difference"] == 0


def test_cross_validation_metrics_rank_the_pool_by_the_aligned_scores():
    """fold_calibration: aligned: the pooled AUCs rank by the aligned scores; the probabilities, whose
    per-fold calibrations shift whole folds against each other, keep their own pooled AUC beside."""
    import numpy as np
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from cardio_kedro.pipelines.cross_validation.nodes import cross_validation_metrics
    from tests.helpers import base_params

    rng = np.random.default_rng(1)
    n = 600
    y = (rng.random(n) < 0.15).astype(int)
    fold = np.arange(n) % 3
    aligned = np.clip(0.3 * y + 0.6 * rng.random(n), 0.001, 0.999)
    shifts = np.array([0.0, 0.35, -0.3])[fold]  # each fold's calibration moves the whole fold
    frame = pd.DataFrame(
        {
            "image_index": [f"{i}.png" for i in range(n)],
            "patient_id": np.arange(n),
            "target": y,
            "fold": fold,
            "raw_score": aligned,
            "score": aligned,
            "ranking_score": aligned,
            "probability": np.clip(aligned + shifts, 0, 1) * 0.999,
            "baseline_probability": rng.random(n),
            "fold_threshold": 0.4,
        }
    )
    frame["baseline_ranking_score"] = frame["baseline_probability"]
    calibration = {"slope": 1.0, "intercept": 0.0, "threshold": {"value": 0.4}, "fitted_on": "out_of_fold"}
    metrics = cross_validation_metrics(frame, calibration, base_params("reporting", n_bootstrap=50))
    pooled = metrics["out_of_fold"]
    assert pooled["ranked_by"] == "aligned_score"
    assert pooled["roc_auc"]["auc"] == pytest.approx(roc_auc_score(y, aligned))
    assert pooled["probability_roc_auc"] == pytest.approx(roc_auc_score(y, frame["probability"]))
    assert pooled["probability_roc_auc"] < pooled["roc_auc"]["auc"] - 0.05
    assert metrics["paired_difference"]["model_auc"] == pytest.approx(roc_auc_score(y, aligned))
    # the Brier is the probabilities'
    assert pooled["brier"] == pytest.approx(np.mean((frame["probability"] - y) ** 2))
