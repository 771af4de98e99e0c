"""Nodes of the external_validation pipeline: a second cohort (decoded by data_processing's nodes in the
``external`` namespace) split into update and evaluation parts, scored by a trained model and by the pixel
baseline, its figures beside the model's internal ones, recalibration for the site, and one report."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

from cardio_kedro.cohort.findings import TargetFindings, parse_target_findings, stratified_patient_split
from cardio_kedro.cohort.quality import passing, verdict
from cardio_kedro.cohort.sampling import undersample
from cardio_kedro.common.errors import UserDatasetError, UserValueError
from cardio_kedro.common.formatting import fmt, fmt_auc, fmt_interval, fmt_paired
from cardio_kedro.config import ExternalParams, RebalanceParams, ReportingParams, as_params
from cardio_kedro.datasets import RECALIBRATED_TAG, PixelCache
from cardio_kedro.evaluation import plots
from cardio_kedro.evaluation.baseline import pixel_baseline_probability
from cardio_kedro.evaluation.calibration import apply_recalibration, fit_recalibration, observed_expected
from cardio_kedro.evaluation.headline import EXTERNAL, evaluated_figures, headline, internal_figures
from cardio_kedro.evaluation.metrics import (
    bootstrap_auc,
    calibration_metrics,
    evaluate,
    paired_auc_difference,
    patient_bootstrap,
    rates_at,
)
from cardio_kedro.evaluation.predictions import PREDICTION_COLUMNS, labels_and_scores, net_benefit_table, subgroups
from cardio_kedro.evaluation.report import dropped_summary, render_report
from cardio_kedro.modeling import model_findings, model_quality_guard, operating_threshold, recalibrated
from cardio_kedro.modeling.feeds import predict_cached

logger = logging.getLogger(__name__)


def assign_update_part(decoded: pd.DataFrame, target_findings: TargetFindings, params: dict[str, Any]) -> pd.DataFrame:
    """An external cohort's images with the part each one serves (a ``part`` column).

    ``external.recalibrate: none``: every image ``evaluation``. Otherwise ``external.update_fraction``
    of the patients (stratified by whether a patient has a positive image, seeded) are ``update``, the
    part the recalibration is fitted on, and the rest ``evaluation``, where it is judged; no patient
    is in both.
    """
    config = as_params(ExternalParams, params)
    findings = parse_target_findings(target_findings)
    if len(findings) > 1:
        raise UserValueError(
            f"External validation is for a binary classifier (one target finding); target_findings names "
            f"{len(findings)}: {list(findings)}"
        )
    if decoded.empty:
        raise UserDatasetError(
            f"The external cohort at {config.cohort_dir} has no decodable image with a label: see its data quality "
            "report (data/08_reporting/external_data_quality_report.json)"
        )
    if config.recalibrate == "none":
        return decoded.assign(part="evaluation")
    patients = decoded.groupby("patient_id")[["target"]].max()
    n_pos = int(patients["target"].sum())
    if n_pos < 2 or len(patients) - n_pos < 2:
        raise UserValueError(
            f"external.recalibrate={config.recalibrate} needs at least 2 positive and 2 negative patients (one of "
            f"each to fit on, one to evaluate); the external cohort has {n_pos} positive of {len(patients)}. "
            "Use external.recalibrate=none"
        )
    codes = stratified_patient_split(
        patients, [config.update_fraction, 1 - config.update_fraction], np.random.default_rng(config.seed)
    )
    part = pd.Series(np.asarray(["update", "evaluation"])[codes], index=patients.index)
    out = decoded.assign(part=decoded["patient_id"].map(part))
    for name, frame in out.groupby("part"):
        logger.info(
            "External %s part: %d images, %d patients, %d %s",
            name, len(frame), frame["patient_id"].nunique(), int(frame["target"].sum()), findings[0],
        )  # fmt: skip
    return out


def score_external_cohort(
    model_info: dict, cohort: pd.DataFrame, pixel_cache: PixelCache, external: dict[str, Any], params: dict[str, Any]
) -> tuple[pd.DataFrame, dict]:
    """Every image of the external cohort scored by the model: calibrated probability, raw score and the
    verdict of the model's quality guard (``quality``). Also the model card of the run: which model
    (registered name, version, training run), its threshold and internal figures, and the cohort."""
    config, reporting = as_params(ExternalParams, external), as_params(ReportingParams, params)
    model = model_info["model"]
    if model_findings(model):
        raise UserValueError(
            f"Model {model_info['version']} is a multi-label model ({len(model_findings(model))} findings): external "
            "validation scores a binary classifier"
        )
    threshold = operating_threshold(model)
    if threshold is None:
        raise UserValueError(
            f"Model {model_info['version']} ({model_info['source']}) has no threshold and calibration of its own: "
            "external validation scores a calibrated classifier (the training pipeline registers one)"
        )
    size = int(model.inputs[0].shape[1])
    if size != pixel_cache.size:
        raise UserValueError(
            f"Model {model_info['version']} reads {size} px images and the external cohort was decoded at "
            f"{pixel_cache.size} px: run with --params=image_size={size},..."
        )
    rows = pixel_cache.rows(cohort["path"])
    probability, score = predict_cached(model, pixel_cache.pixels(), rows, reporting.batch_size)
    guard = model_quality_guard(model)
    pixels = pixel_cache.pixels()
    shapes = cohort[["src_height", "src_width"]].to_numpy()
    views = cohort["view"] if "view" in cohort else pd.Series([None] * len(cohort))
    quality = [  # a lateral film by its own view (layout metadata, DICOM header), else the guard on its pixels
        verdict(guard, pixels[r], tuple(s), view) for r, s, view in zip(rows, shapes, views)
    ]
    columns = [c for c in (*PREDICTION_COLUMNS, "part") if c in cohort.columns]
    predictions = cohort[columns].assign(probability=probability, score=score, quality=quality)
    name = config.name or str(config.cohort_dir).rstrip("/").rsplit("/", 1)[-1]
    card = {
        "model": model_info["version"],
        "registered_name": model_info.get("name"),
        "registered_version": model_info.get("model_version"),
        "training_run_id": model_info.get("run_id"),
        "source": model_info["source"],
        "threshold": float(threshold),
        "image_size": size,
        "has_quality_guard": guard is not None,
        "internal": internal_figures(model_info.get("run_metrics") or {}),
        "cohort": {"name": name, "dir": str(config.cohort_dir), "layout": config.cohort.layout},
    }
    flagged = int((~passing(predictions["quality"])).sum())
    logger.info(
        "Scored %d external images of %d patients with model %s (threshold %.3f); the quality guard flags %d",
        len(predictions), predictions["patient_id"].nunique(), model_info["version"], threshold, flagged,
    )  # fmt: skip
    return predictions, card


def external_baseline_predictions(
    internal: pd.DataFrame,
    pixel_cache: PixelCache,
    cohort: pd.DataFrame,
    external_pixel_cache: PixelCache,
    rebalance: dict[str, Any],
    params: dict[str, Any],
) -> pd.DataFrame:
    """The pixel baseline fitted on this project's own (internal) cohort, the newest ``model_input_table``,
    rebalanced as the model's training images were (``data_processing.rebalance``), and scored on the
    external cohort. A single-split model trained on part of that cohort; a cross-validated final model on
    all of it: the baseline gets at least the images the model had, never an external one."""
    config, balance = as_params(ReportingParams, params).baseline, as_params(RebalanceParams, rebalance)
    if balance.strategy == "undersample":
        internal = undersample(internal, balance.neg_per_pos, np.random.default_rng(balance.seed), match="sex")
    probability = pixel_baseline_probability(
        pixel_cache.images(internal["path"]),
        internal["target"].to_numpy(),
        external_pixel_cache.images(cohort["path"]),
        config.image_size,
        config.regularization,
    )
    return cohort[["image_index", "patient_id", "target"]].assign(probability=probability)


def _scored(predictions: pd.DataFrame, include_flagged: bool) -> pd.DataFrame:
    """The images the metrics count: those the model would label (quality ok), or all with include_flagged."""
    return predictions if include_flagged else predictions[passing(predictions["quality"])]


def _calibration_in_the_large(y: np.ndarray, p: np.ndarray, groups: np.ndarray, config: ReportingParams) -> dict:
    """Mean predicted probability against the observed rate, and their ratio (observed / expected) with CIs."""
    return patient_bootstrap(
        y,
        p,
        groups,
        {
            "observed_rate": lambda yy, pp: float(np.mean(yy)),
            "mean_predicted": lambda yy, pp: float(np.mean(pp)),
            "observed_expected": observed_expected,
        },
        config.n_bootstrap,
        config.seed,
    )


def _external_calibration(frame: pd.DataFrame, column: str, config: ReportingParams) -> dict:
    y, groups = frame["target"].to_numpy(), frame["patient_id"].to_numpy()
    p = frame[column].to_numpy()
    return {
        **calibration_metrics(y, p, groups, config.calibration_bins, config.n_bootstrap, config.seed),
        "in_the_large": _calibration_in_the_large(y, p, groups, config),
    }


def external_validation_metrics(
    predictions: pd.DataFrame,
    baseline: pd.DataFrame,
    recalibration: dict,
    card: dict,
    external: dict[str, Any],
    params: dict[str, Any],
) -> dict:
    """The external figures: ROC and PR AUC with patient-level CIs, rates at the model's own threshold,
    calibration-in-the-large (mean predicted against observed, O/E), calibration slope and intercept,
    subgroups by view, sex and age band; the pixel baseline on the same images with the paired difference;
    the model's internal figures beside them; and, with ``external.recalibrate``, the evaluation part
    before and after the recalibration fitted on the update part."""
    config, ext = as_params(ReportingParams, params), as_params(ExternalParams, external)
    scored = _scored(predictions, ext.include_flagged)
    if scored["target"].nunique() < 2:
        raise UserValueError(
            f"The external cohort's scored images hold one class only ({int(scored['target'].sum())} positive of "
            f"{len(scored)}): AUC and calibration need both"
        )
    y, p, groups = labels_and_scores(scored)
    external_figures = evaluate(y, p, groups, card["threshold"], config.n_bootstrap, config.seed)
    pr = patient_bootstrap(y, p, groups, {"pr_auc": _pr_auc}, config.n_bootstrap, config.seed)["pr_auc"]
    external_figures["pr_auc_ci"] = pr
    external_figures["probability_range"] = [float(p.min()), float(p.max())]
    external_figures["calibration"] = _external_calibration(scored, "probability", config)
    base = baseline.set_index("image_index").loc[scored["image_index"], "probability"].to_numpy()
    paired = paired_auc_difference(y, p, base, groups, config.n_bootstrap, config.seed)
    quality = predictions["quality"].value_counts().to_dict()
    out = {
        "model": {k: v for k, v in card.items() if k != "internal"},
        "cohort": {
            **card["cohort"],
            "n_images": int(len(predictions)),
            "n_patients": int(predictions["patient_id"].nunique()),
            "n_positive": int(predictions["target"].sum()),
            "quality": {str(k): int(v) for k, v in quality.items()},
            "scored": "every image" if ext.include_flagged else "images the quality guard passes",
        },
        "external": external_figures,
        "internal": card["internal"],
        "baseline": {
            "model": f"logistic regression on {config.baseline.image_size}x{config.baseline.image_size} pixels, "
            "fitted on this project's own cohort (its newest model input table, rebalanced as for training)",
            "roc_auc": bootstrap_auc(y, base, groups, config.n_bootstrap, config.seed),
            "paired_difference": paired,
            "model_beats_baseline": bool(paired["ci_low"] is not None and paired["ci_low"] > 0),
        },
        "subgroups": subgroups(scored, config),
        "recalibration": _recalibration_figures(scored, recalibration, card["threshold"], config),
    }
    cil = external_figures["calibration"]["in_the_large"]
    logger.info(
        "External ROC AUC %s (internal %s), baseline %s; mean predicted %s, observed %s, O/E %s",
        fmt_auc(external_figures["roc_auc"]), fmt(card["internal"].get("auc")), fmt_auc(out["baseline"]["roc_auc"]),
        fmt(cil["mean_predicted"]["value"]), fmt(cil["observed_rate"]["value"]), fmt(cil["observed_expected"]["value"]),
    )  # fmt: skip
    return out


def _pr_auc(y: np.ndarray, p: np.ndarray) -> float | None:
    return float(average_precision_score(y, p)) if 0 < y.sum() < len(y) else None


def _recalibration_figures(scored: pd.DataFrame, recalibration: dict, threshold: float, config: ReportingParams):
    """The evaluation part's calibration before and after the update (``None`` without recalibration)."""
    if recalibration["method"] == "none":
        return None
    part = scored[scored["part"] == "evaluation"]
    updated = part.assign(
        recalibrated=apply_recalibration(part["probability"].to_numpy(), recalibration["intercept"],
                                         recalibration["slope"])
    )  # fmt: skip
    y = updated["target"].to_numpy()
    return {
        **recalibration,
        "evaluation_part": {
            "n_images": int(len(part)),
            "n_patients": int(part["patient_id"].nunique()),
            "n_positive": int(y.sum()),
        },
        "before": _external_calibration(updated, "probability", config),
        "after": _external_calibration(updated, "recalibrated", config),
        "rates_before": rates_at(y, updated["probability"].to_numpy(), threshold),
        "rates_after": rates_at(y, updated["recalibrated"].to_numpy(), recalibration["threshold"]),
    }


def external_headline_metrics(metrics: dict) -> dict[str, dict[str, float]]:
    """The external figures as MLflow metrics (``external_*``, step 0)."""
    ext, base = metrics["external"], metrics["baseline"]
    cal, cil = ext["calibration"], ext["calibration"]["in_the_large"]
    flat = headline(EXTERNAL, evaluated_figures(ext, cal, base["roc_auc"]["auc"])) | {
        "external_mean_predicted": cil["mean_predicted"]["value"],
        "external_observed_rate": cil["observed_rate"]["value"],
        "external_observed_expected": cil["observed_expected"]["value"],
        "external_auc_difference": base["paired_difference"]["difference"],
        "external_auc_difference_ci_low": base["paired_difference"]["ci_low"],
        "external_auc_difference_ci_high": base["paired_difference"]["ci_high"],
        "external_n_images": metrics["cohort"]["n_images"],
        "external_n_scored": ext["n_images"],
    }
    recal = metrics["recalibration"]
    if recal is not None:
        for when in ("before", "after"):
            flat[f"external_recalibration_{when}_observed_expected"] = recal[when]["in_the_large"]["observed_expected"][
                "value"
            ]
            flat[f"external_recalibration_{when}_calibration_intercept"] = recal[when]["calibration_intercept"]["value"]
            flat[f"external_recalibration_{when}_calibration_slope"] = recal[when]["calibration_slope"]["value"]
            flat[f"external_recalibration_{when}_brier"] = recal[when]["brier"]["value"]
    return {k: {"value": float(v), "step": 0} for k, v in flat.items() if v is not None}


def promotion_decision(metrics: dict, external: dict[str, Any]) -> dict:
    """Whether the scored model passes ``external.gates``, gate by gate, and whether this run promotes it.

    With ``external.promote`` and every gate passed, the scored registered version gets the ``@champion``
    alias when the run finishes (the MLflow hooks read this decision; nodes do not touch the registry).
    """
    config = as_params(ExternalParams, external)
    gates, figures, baseline = config.gates, metrics["external"], metrics["baseline"]
    ci_low = figures["roc_auc"]["ci_low"]
    oe = figures["calibration"]["in_the_large"]["observed_expected"]["value"]
    low, high = gates.observed_expected
    checks = [
        {"gate": "auc_lower_bound", "required": f"ROC AUC 95% CI lower bound >= {gates.auc_lower_bound}",
         "value": ci_low, "passed": ci_low is not None and ci_low >= gates.auc_lower_bound},
        {"gate": "observed_expected", "required": f"observed / expected in [{low}, {high}]",
         "value": oe, "passed": oe is not None and low <= oe <= high},
        {"gate": "beats_baseline", "required": "paired AUC difference vs the pixel baseline, CI above 0"
         if gates.beats_baseline else "not required", "value": baseline["paired_difference"]["ci_low"],
         "passed": baseline["model_beats_baseline"] or not gates.beats_baseline},
    ]  # fmt: skip
    name, version = metrics["model"].get("registered_name"), metrics["model"].get("registered_version")
    passed = all(check["passed"] for check in checks)
    if not config.promote:
        reason = "external.promote is false"
    elif not (name and version):
        reason = "the scored model is no registered version (a runs:/ or models:/m- URI): register it first"
    elif not passed:
        reason = "failed: " + ", ".join(c["gate"] for c in checks if not c["passed"])
    else:
        reason = f"every gate passed: {name}/{version} becomes @champion when the run finishes"
    promote = bool(config.promote and passed and name and version)
    logger.info("Promotion gates: %s; %s", ", ".join(f"{c['gate']} {'passed' if c['passed'] else 'FAILED'}"
                                                      for c in checks), reason)  # fmt: skip
    return {"registered_model": name, "version": version, "gates_passed": passed, "promote": promote,
            "reason": reason, "checks": checks}  # fmt: skip


def external_decision_curve(predictions: pd.DataFrame, external: dict[str, Any]) -> pd.DataFrame:
    """Net benefit of the model on the external images it scores, of treating all and of treating none."""
    return net_benefit_table(_scored(predictions, as_params(ExternalParams, external).include_flagged))


def external_validation_plots(
    predictions: pd.DataFrame,
    baseline: pd.DataFrame,
    metrics: dict,
    curve: pd.DataFrame,
    recalibration: dict,
    external: dict[str, Any],
    params: dict[str, Any],
):
    """ROC of the model and the baseline, the reliability diagram (and after recalibration), the decision
    curve and the subgroup AUCs, on the external cohort."""
    config, ext = as_params(ReportingParams, params), as_params(ExternalParams, external)
    scored = _scored(predictions, ext.include_flagged)
    y, p, _ = labels_and_scores(scored)
    base = baseline.set_index("image_index").loc[scored["image_index"], "probability"].to_numpy()
    figures = metrics["external"]
    roc = plots.roc_against_baseline(
        y, p, base, figures["roc_auc"], metrics["baseline"]["roc_auc"], metrics["baseline"]["paired_difference"],
        where="external",
    )  # fmt: skip
    recal = metrics["recalibration"]
    if recal is None:
        calibration_plot = plots.reliability(
            y, {"model": (p, figures["calibration"])}, config.calibration_bins, "external cohort"
        )
    else:
        part = scored[scored["part"] == "evaluation"]
        before = part["probability"].to_numpy()
        after = apply_recalibration(before, recalibration["intercept"], recalibration["slope"])
        calibration_plot = plots.reliability(
            part["target"].to_numpy(),
            {"model": (before, recal["before"]), f"recalibrated ({recal['method']})": (after, recal["after"])},
            config.calibration_bins,
            "external evaluation part",
        )
    return (
        roc,
        calibration_plot,
        plots.decision_curve(curve, metrics["model"]["threshold"], figures["prevalence"], where="external"),
        plots.subgroup_auc(metrics["subgroups"], where="external"),
    )


def build_external_validation_report(
    metrics: dict, quality: dict, target_finding: str, image_size: int, **figures: bytes
) -> str:
    """The external validation report: the cohort, the external figures beside the internal ones,
    calibration and its recalibration, the baseline, subgroups."""
    internal, external = metrics["internal"], metrics["external"]
    cal = external["calibration"]
    rows = [
        ("ROC AUC", internal.get("auc"), fmt_interval(internal.get("auc_ci_low"), internal.get("auc_ci_high")),
         external["roc_auc"]["auc"], fmt_interval(external["roc_auc"]["ci_low"], external["roc_auc"]["ci_high"])),
        ("PR AUC", internal.get("pr_auc"), "", external["pr_auc"],
         fmt_interval(external["pr_auc_ci"]["ci_low"], external["pr_auc_ci"]["ci_high"])),
        ("Brier", internal.get("brier"), "", external["brier"],
         fmt_interval(cal["brier"]["ci_low"], cal["brier"]["ci_high"])),
        ("ECE", internal.get("ece"), "", cal["ece"]["value"],
         fmt_interval(cal["ece"]["ci_low"], cal["ece"]["ci_high"])),
        ("calibration slope", internal.get("calibration_slope"), "", cal["calibration_slope"]["value"],
         fmt_interval(cal["calibration_slope"]["ci_low"], cal["calibration_slope"]["ci_high"])),
        ("calibration intercept (in the large)", internal.get("calibration_intercept"), "",
         cal["calibration_intercept"]["value"],
         fmt_interval(cal["calibration_intercept"]["ci_low"], cal["calibration_intercept"]["ci_high"])),
        ("sensitivity at the threshold", internal.get("sensitivity"), "", external["sensitivity"], ""),
        ("specificity at the threshold", internal.get("specificity"), "", external["specificity"], ""),
        ("pixel baseline ROC AUC", internal.get("baseline_auc"), "", metrics["baseline"]["roc_auc"]["auc"],
         fmt_interval(metrics["baseline"]["roc_auc"]["ci_low"], metrics["baseline"]["roc_auc"]["ci_high"])),
    ]  # fmt: skip
    return render_report(
        "external_validation.html.j2",
        figures,
        target=target_finding,
        image_size=image_size,
        metrics=metrics,
        comparison=rows,
        paired=fmt_paired(metrics["baseline"]["paired_difference"]),
        quality=quality,
        dropped=dropped_summary(quality),
    )


def fit_site_recalibration(model_info: dict, predictions: pd.DataFrame, card: dict, params: dict[str, Any]):
    """``external.recalibrate``: the model's probabilities updated for the external site, fitted on the
    ``update`` part of its patients (``intercept``: a new calibration-in-the-large; ``logistic``: a new
    slope too; Steyerberg's updating methods), folded into a copy of the model's ``Calibration`` layer.

    Returns the recalibration (method, intercept, slope, the threshold on the new scale, what it was
    fitted on) and ``{"model": the recalibrated classifier or None, "tags": ...}``: the hooks register it
    as a new version of the model's registered name, tagged with the cohort; the scored model is untouched.
    """
    config = as_params(ExternalParams, params)
    record = {"method": config.recalibrate, "intercept": 0.0, "slope": 1.0, "threshold": card["threshold"]}
    if config.recalibrate == "none":
        return record, {"model": None, "tags": {}}
    update = predictions[predictions["part"] == "update"]
    if not config.include_flagged:
        update = update[passing(update["quality"])]
    y = update["target"].to_numpy()
    try:
        intercept, slope = fit_recalibration(update["probability"].to_numpy(), y, config.recalibrate)
    except ValueError as exc:
        advice = (
            f" The update part is {len(update)} films of {update['patient_id'].nunique()} patients "
            f"(external.update_fraction={config.update_fraction}): raise update_fraction so that it holds positive "
            "and negative films, or run with external.recalibrate=none (the model as it is)."
        )
        raise UserValueError(f"external.recalibrate={config.recalibrate}: {exc}.{advice}") from None
    model = recalibrated(model_info["model"], intercept, slope)
    record.update(
        intercept=intercept,
        slope=slope,
        threshold=operating_threshold(model),
        fitted_on={"n_images": int(len(update)), "n_patients": int(update["patient_id"].nunique()),
                   "n_positive": int(y.sum())},
    )  # fmt: skip
    logger.info(
        "Recalibrated (%s) on %d external images (%d positive): logit p' = %.3f + %.3f logit p; threshold %.3f -> %.3f",
        config.recalibrate, len(update), int(y.sum()), intercept, slope, card["threshold"], record["threshold"],
    )  # fmt: skip
    tags = {
        RECALIBRATED_TAG: card["cohort"]["name"],
        "recalibration": config.recalibrate,
        "recalibrated_from": card["model"],
        "recalibration_intercept": f"{intercept:.6g}",
        "recalibration_slope": f"{slope:.6g}",
    }
    return record, {"model": model, "tags": tags}
