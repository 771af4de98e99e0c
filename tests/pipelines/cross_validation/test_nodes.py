"""Cross-validation: each fold scored by a model that never saw it (one node a fold, pooled after); the final model
calibrated out of fold."""

import numpy as np
import pandas as pd
import pytest

from cardio_kedro.common.errors import UserValueError
from cardio_kedro.config import CrossValidationParams, ModelTrainingParams
from cardio_kedro.evaluation.calibration import calibration_entry
from cardio_kedro.modeling import fitting, model_quality_guard, operating_threshold
from cardio_kedro.pipelines.cross_validation import nodes
from tests.helpers import base_params, tiny_params

BINS = 10


@pytest.fixture(scope="module")
def toy_folds(toy_cache):
    """The 96 toy images in 3 folds; a patient has up to 2 images (patient ids shared in pairs)."""
    table = pd.concat([toy_cache["train"], toy_cache["validation"]], ignore_index=True)
    table["patient_id"] = table.index // 2
    return nodes.assign_folds(table, "Cardiomegaly", base_params("cross_validation", n_folds=3))


@pytest.mark.slow
def test_every_image_is_scored_by_the_model_of_the_other_folds(toy_cache, toy_folds, monkeypatch):
    trained_on = []
    original = fitting.train_classifier

    def recording(train, validation, *args, **kwargs):
        trained_on.append(set(train["patient_id"]) | set(validation["patient_id"]))
        return original(train, validation, *args, **kwargs)

    calibrated_on = []
    shared = nodes.shared_fold_calibration

    def recording_calibration(validation_scores, held_patients, *args):
        calibrated_on.append((pd.concat(validation_scores)["patient_id"], held_patients))
        return shared(validation_scores, held_patients, *args)

    monkeypatch.setattr(fitting, "train_classifier", recording)
    monkeypatch.setattr(nodes, "shared_fold_calibration", recording_calibration)
    params = tiny_params(fine_tune={"epochs": 1})
    settings = base_params("cross_validation", n_folds=3, fold_calibration="aligned")
    rebalance = base_params("data_processing")["rebalance"]
    baseline = base_params("reporting")["baseline"]
    parts = {}
    for fold in (1, 2, 3):  # the fold nodes, each on its own
        held_out, validation, calibration, fold_history = nodes.train_fold_model(
            toy_folds, toy_cache["cache"], rebalance, params, settings, baseline, BINS, fold=fold
        )
        assert set(held_out["fold"]) == {fold - 1} and set(fold_history["fold"]) == {fold - 1}
        parts |= {f"fold_{fold}_held_out": held_out, f"fold_{fold}_validation_scores": validation,
                  f"fold_{fold}_calibration": calibration, f"fold_{fold}_history": fold_history}  # fmt: skip
    oof, history = nodes.pool_out_of_fold(params, settings, BINS, **parts)
    # aligned: each fold's scores moved by a monotone map of its own (the ranking within a fold is kept)
    for _, part in oof.groupby("fold"):
        order = np.argsort(part["raw_score"].to_numpy(), kind="stable")
        assert np.all(np.diff(part["score"].to_numpy()[order]) >= -1e-12)
    assert not np.allclose(oof["score"], oof["raw_score"])
    # shared calibration (aligned fits it too): each fold's map is fitted on the validation parts of all three
    # fold models, which hold patients of every fold, and the fold it scores is left out of it
    assert len(calibrated_on) == 3
    for k, (validated, held) in enumerate(calibrated_on):
        assert held == set(oof.loc[oof["fold"] == k, "patient_id"])
        assert set(validated) & held and set(toy_folds.loc[toy_folds["patient_id"].isin(validated), "fold"]) == {
            0,
            1,
            2,
        }

    assert sorted(oof["image_index"]) == sorted(toy_folds["image_index"])  # every image once
    assert len(trained_on) == 3 and set(history["fold"]) == {0, 1, 2}
    for k, seen in enumerate(trained_on):
        scored = set(oof.loc[oof["fold"] == k, "patient_id"])
        assert scored and not scored & seen, f"fold {k} was scored by a model that saw {scored & seen}"
        assert seen == set(toy_folds.loc[toy_folds["fold"] != k, "patient_id"])
    assert oof["probability"].between(0, 1).all() and oof["baseline_probability"].between(0, 1).all()
    assert oof.groupby("fold")["fold_threshold"].nunique().eq(1).all()  # one threshold per fold model

    model, _, rebalancing = nodes.train_final_model(toy_folds, toy_cache["cache"], rebalance, params, settings, BINS)
    guard = nodes.fit_quality_guard_on_folds(toy_folds, toy_cache["cache"], params)
    classifier, calibration = nodes.calibrate_from_out_of_fold(
        model, oof, rebalancing, params, BINS, guard, toy_cache["cache"]
    )
    assert calibration["fitted_on"] == "out_of_fold" and calibration["threshold"]["chosen_on"] == "out_of_fold"
    assert calibration["validation"]["n_images"] == len(oof)  # fitted on every out-of-fold score
    assert operating_threshold(classifier) == calibration["threshold"]["value"]
    assert model_quality_guard(classifier) is not None
    assert guard["report"]["n_held_out"] == int((toy_folds["fold"] == 0).sum())
    # the final model's probabilities spread as the out-of-fold ones do (median and IQR in logit space), so the
    # threshold chosen out of fold labels a like share of the images
    from scipy.special import logit

    from cardio_kedro.evaluation.calibration import apply_calibration
    from cardio_kedro.modeling.feeds import predict_cached

    cache = toy_cache["cache"]
    final, _ = predict_cached(classifier, cache.pixels(), cache.rows(oof["path"]), 32)
    oof_calibrated = apply_calibration(oof["score"].to_numpy(), calibration["slope"], calibration["intercept"])
    q_final, q_oof = (np.quantile(logit(p), [0.25, 0.5, 0.75]) for p in (final, oof_calibrated))
    assert q_final[1] == pytest.approx(q_oof[1], abs=1e-3)  # median onto median
    assert q_final[2] - q_final[0] == pytest.approx(q_oof[2] - q_oof[0], rel=1e-3)  # IQR onto IQR
    assert calibration["score_alignment"]["calibration_slope"] == pytest.approx(
        calibration["slope"] * calibration["score_alignment"]["slope"]
    )


def test_a_shared_fold_calibration_pools_the_validation_parts_less_the_scored_fold():
    rng = np.random.default_rng(3)
    parts = [
        pd.DataFrame({"patient_id": np.arange(40) + 40 * j, "target": rng.random(40) < 0.3, "score": rng.random(40)})
        for j in range(3)
    ]
    for part in parts:
        part["score"] = np.clip(part["score"] * 0.5 + 0.5 * part["target"], 0.01, 0.99)
    config = ModelTrainingParams.model_validate(tiny_params())
    prevalence = {"natural": 0.3, "trained": 0.3}
    held = set(range(40, 60)) | {100}  # half of the second part and one patient of the third
    entry = nodes.shared_fold_calibration(parts, held, prevalence, config, BINS)
    kept = pd.concat(parts)
    kept = kept[~kept["patient_id"].isin(held)]
    by_hand = calibration_entry(
        kept["target"].to_numpy(), kept["score"].to_numpy(), prevalence, config.calibration, config.threshold, BINS
    )
    assert entry["validation"]["n_images"] == 120 - 21
    assert (entry["slope"], entry["intercept"]) == pytest.approx((by_hand["slope"], by_hand["intercept"]))
    own = calibration_entry(
        parts[0]["target"].to_numpy(),
        parts[0]["score"].to_numpy(),
        prevalence,
        config.calibration,
        config.threshold,
        BINS,
    )
    assert entry["slope"] != pytest.approx(own["slope"])  # not one part's own map


def test_held_out_validation_is_patient_wise_and_stratified(toy_folds):
    train, held = fitting.hold_out_patients(toy_folds, 0.25, np.random.default_rng(0))
    assert not set(train["patient_id"]) & set(held["patient_id"])
    assert len(train) + len(held) == len(toy_folds)
    assert abs(held.groupby("patient_id")["target"].max().sum() - 0.25 * 32) <= 1  # 32 positive patients


def test_aligned_fold_scores_pool_as_well_as_each_fold_ranks():
    """Three fold models that rank alike but spread their scores differently: pooled as they are the
    out-of-fold AUC falls below every fold's own; aligned on their validation parts (no label used) it
    comes back to about the folds' level."""
    from scipy.special import expit
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(5)

    def part(n, scale, shift):
        target = rng.random(n) < 0.2
        logit = rng.normal(size=n) + 1.5 * target
        return pd.DataFrame({"target": target, "score": expit(scale * logit + shift)})

    scales = [(0.5, -4.0), (3.0, 0.0), (1.0, 2.5)]
    validation = [part(400, *s) for s in scales]
    held = [part(600, *s) for s in scales]
    maps = nodes.align_fold_scores(validation)
    from cardio_kedro.evaluation.calibration import apply_calibration, to_logit

    aligned = [apply_calibration(h["score"].to_numpy(), *m) for h, m in zip(held, maps)]
    y = np.concatenate([h["target"] for h in held])
    fold_aucs = [roc_auc_score(h["target"], h["score"]) for h in held]
    raw_auc = roc_auc_score(y, np.concatenate([h["score"] for h in held]))
    aligned_auc = roc_auc_score(y, np.concatenate(aligned))
    assert raw_auc < min(fold_aucs) - 0.05
    assert aligned_auc == pytest.approx(np.mean(fold_aucs), abs=0.02)
    # each part's validation logits now share the pooled median and interquartile range
    q_ref = np.quantile(to_logit(pd.concat(validation)["score"].to_numpy()), [0.25, 0.5, 0.75])
    for v, m in zip(validation, maps):
        q = np.quantile(to_logit(apply_calibration(v["score"].to_numpy(), *m)), [0.25, 0.5, 0.75])
        assert q[1] == pytest.approx(q_ref[1], abs=1e-6) and q[2] - q[0] == pytest.approx(q_ref[2] - q_ref[0])


@pytest.mark.slow
def test_members_share_the_validation_part_and_differ_in_negatives_and_seed(toy_cache, toy_folds, monkeypatch):
    """cross_validation.members: 2 networks per fold model on one validation part, each with its own kept
    negatives and seed; the fold model's validation scores are their logit mean, and so is the baseline's."""
    from scipy.special import logit

    from cardio_kedro.modeling import ensemble_members

    calls = []
    original = fitting.train_classifier

    def recording(train, validation, pixel_cache, rebalancing, config):
        calls.append((set(train["image_index"]), set(validation["patient_id"]), config.seed))
        return original(train, validation, pixel_cache, rebalancing, config)

    monkeypatch.setattr(fitting, "train_classifier", recording)
    params = ModelTrainingParams.model_validate(tiny_params(head={"epochs": 0}, fine_tune={"epochs": 1}))
    settings = CrossValidationParams.model_validate(base_params("cross_validation", members=2))
    rebalance = base_params("data_processing")["rebalance"] | {"neg_per_pos": 1}  # kept negatives: a draw
    from cardio_kedro.config import RebalanceParams

    pool = toy_folds[toy_folds["fold"] != 0]
    model, history, _, kept, _, scores = fitting.fit_with_held_out_validation(
        pool, toy_cache["cache"], RebalanceParams.model_validate(rebalance), params, settings, BINS, 11
    )
    assert len(calls) == 2 and len(kept) == 2
    (train_a, validated_a, seed_a), (train_b, validated_b, seed_b) = calls
    assert validated_a <= set(pool["patient_id"]) and seed_a != seed_b
    validation_patients = set(scores["patient_id"])
    assert not (set(pool.loc[pool["image_index"].isin(train_a | train_b), "patient_id"]) & validation_patients)
    assert train_a != train_b  # each member its own negatives
    assert set(history["member"]) == {0, 1}
    networks = ensemble_members(model)
    assert len(networks) == 2
    rows = toy_cache["cache"].rows(pool.set_index("image_index").loc[scores["image_index"], "path"])
    pixels = toy_cache["cache"].pixels()[rows][..., None]
    member_scores = [np.asarray(n.predict(pixels, verbose=0)[0]).reshape(-1) for n in networks]
    np.testing.assert_allclose(logit(scores["score"]), np.mean([logit(s) for s in member_scores], 0), atol=1e-4)
    # one member: the single network, drawn as before (its negatives and seed are member 0's)
    single = CrossValidationParams.model_validate(base_params("cross_validation", members=1))
    calls.clear()
    fitting.fit_with_held_out_validation(
        pool, toy_cache["cache"], RebalanceParams.model_validate(rebalance), params, single, BINS, 11
    )
    assert calls[0] == (train_a, validated_a, seed_a)


def test_the_pool_names_a_missing_fold(toy_folds):
    with pytest.raises(ValueError, match="fold_2_history"):
        nodes.pool_out_of_fold(
            tiny_params(),
            base_params("cross_validation"),
            BINS,
            **{f"fold_{k}_{part}": None for k in (1, 2) for part in nodes.FOLD_PARTS if (k, part) != (2, "history")}
            | {"fold_3_held_out": None},
        )


def test_a_fold_the_folds_table_lacks_says_where_n_folds_is_set(toy_folds):
    rebalance, baseline = base_params("data_processing")["rebalance"], base_params("reporting")["baseline"]
    with pytest.raises(UserValueError, match="cross_validation.n_folds shapes the pipeline"):
        nodes.train_fold_model(
            toy_folds, None, rebalance, tiny_params(), base_params("cross_validation"), baseline, BINS, fold=4
        )
