"""Nodes of the multilabel_reporting pipeline: one multi-label model, every finding evaluated on its own.

Per finding, on the natural-prevalence test split: prevalence, ROC AUC with a patient-level
bootstrap CI, PR AUC, Brier, ECE, the threshold saved with the model and the sensitivity and
specificity at it, the AUC by view position, and where the cohort has boxes for the finding, the
localization of that finding's attention map. Beside them: CheXNet's published AUCs.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from cardio_kedro.cohort.findings import PROBABILITY_PREFIX, SCORE_PREFIX, TARGET_PREFIX, label_matrix
from cardio_kedro.cohort.nih import NIH_FINDINGS
from cardio_kedro.common.errors import UserValueError
from cardio_kedro.common.formatting import fmt, fmt_auc
from cardio_kedro.config import ModelTrainingParams, PhantomParams, ReportingParams, as_params
from cardio_kedro.datasets import PixelCache
from cardio_kedro.evaluation.calibration import expected_calibration_error
from cardio_kedro.evaluation.localization import POINTING_TOLERANCE, boxes_in_cache_frame, localization_scores
from cardio_kedro.evaluation.metrics import auc_or_none, evaluate
from cardio_kedro.evaluation.report import best_epoch, render_report
from cardio_kedro.modeling import model_findings, overlay, predict_finding_maps
from cardio_kedro.modeling.feeds import predict_cached

from . import plots

logger = logging.getLogger(__name__)

# CheXNet (Rajpurkar et al. 2017, arXiv:1711.05225, Table 1): DenseNet-121 at 224 px on a random
# patient-wise split of NIH ChestX-ray14. Published figures on a different split, for reference only.
CHEXNET_AUC = {
    "Atelectasis": 0.8094,
    "Cardiomegaly": 0.9248,
    "Consolidation": 0.7901,
    "Edema": 0.8878,
    "Effusion": 0.8638,
    "Emphysema": 0.9371,
    "Fibrosis": 0.8047,
    "Hernia": 0.9164,
    "Infiltration": 0.7345,
    "Mass": 0.8676,
    "Nodule": 0.7802,
    "Pleural_Thickening": 0.8062,
    "Pneumonia": 0.7680,
    "Pneumothorax": 0.8887,
}
# NIH's box list names two findings differently from the label table
BOX_FINDING_NAMES = {"Infiltrate": "Infiltration", "Pleural Thickening": "Pleural_Thickening"}
META_COLUMNS = ["image_index", "patient_id", "path", "sex", "view", "age"]


def _findings_of(classifier) -> list[str]:
    findings = model_findings(classifier)
    if not findings:
        raise UserValueError(
            "multilabel_reporting needs a multi-label model (target_findings with more than one finding); "
            "for one finding run the reporting pipeline"
        )
    return findings


def predict_findings(classifier, split: pd.DataFrame, pixel_cache: PixelCache, params: dict[str, Any]) -> pd.DataFrame:
    """Every image's calibrated probability and raw score per finding: ``probability.<finding>``,
    ``score.<finding>`` beside its ``target.<finding>`` labels."""
    config = as_params(ReportingParams, params)
    findings = _findings_of(classifier)
    probability, score = predict_cached(
        classifier, pixel_cache.pixels(), pixel_cache.rows(split["path"]), config.batch_size
    )
    columns = {
        **{PROBABILITY_PREFIX + f: probability[:, j] for j, f in enumerate(findings)},
        **{SCORE_PREFIX + f: score[:, j] for j, f in enumerate(findings)},
    }
    return split[[*META_COLUMNS, *(TARGET_PREFIX + f for f in findings)]].assign(**columns)


def _finding_frame(predictions: pd.DataFrame, finding: str) -> pd.DataFrame:
    return predictions.assign(
        target=predictions[TARGET_PREFIX + finding],
        probability=predictions[PROBABILITY_PREFIX + finding],
        score=predictions[SCORE_PREFIX + finding],
    )


def _one_finding(frame: pd.DataFrame, threshold: float, config: ReportingParams) -> dict:
    y, p, groups = frame["target"].to_numpy(), frame["probability"].to_numpy(), frame["patient_id"].to_numpy()
    out = evaluate(y, p, groups, threshold, config.n_bootstrap, config.seed)
    out.pop("classification_report")
    out["ece"] = expected_calibration_error(y, p, config.calibration_bins) if len(y) else None
    out["ece_raw_score"] = expected_calibration_error(y, frame["score"].to_numpy(), config.calibration_bins)
    out["by_view"] = {
        str(view): {
            "n_images": int(len(g)),
            "n_positive": int(g["target"].sum()),
            "roc_auc": auc_or_none(g["target"].to_numpy(), g["probability"].to_numpy()),
        }
        for view, g in frame.groupby("view")
    }
    return out


def finding_metrics(test_predictions: pd.DataFrame, calibration: dict, params: dict[str, Any]) -> dict:
    """Per-finding test metrics at each finding's own threshold (chosen on validation, saved with the
    model), the mean AUC over the findings that have both classes in test, and CheXNet's AUCs."""
    config = as_params(ReportingParams, params)
    findings = calibration["findings"]
    by_finding = {}
    for finding in findings:
        threshold = calibration["by_finding"][finding]["threshold"]["value"]
        by_finding[finding] = _one_finding(_finding_frame(test_predictions, finding), threshold, config)
        by_finding[finding]["chexnet_auc"] = CHEXNET_AUC[finding]
        by_finding[finding]["validation_separated"] = calibration["by_finding"][finding]["threshold"][
            "validation_separated"
        ]
    aucs = [m["roc_auc"]["auc"] for m in by_finding.values() if m["roc_auc"]["auc"] is not None]
    mean_auc = float(np.mean(aucs)) if aucs else None
    logger.info(
        "Test ROC AUC per finding: %s; mean %s over %d finding(s)",
        ", ".join(f"{f} {fmt_auc(m['roc_auc'])}" for f, m in by_finding.items()),
        fmt(mean_auc),
        len(aucs),
    )
    return {
        "findings": findings,
        "by_finding": by_finding,
        "mean_auc": mean_auc,
        "chexnet_mean_auc_same_findings": float(np.mean([CHEXNET_AUC[f] for f in findings])),
        "chexnet_reference": "Rajpurkar et al. 2017 (CheXNet), Table 1: published figures on a different split",
        "n_test_images": int(len(test_predictions)),
        "n_test_patients": int(test_predictions["patient_id"].nunique()),
    }


def _boxes_by_finding(boxes: pd.DataFrame) -> dict[str, pd.DataFrame]:
    if boxes.empty:
        return {}
    named = boxes.assign(finding=boxes["finding"].astype(str).str.strip().replace(BOX_FINDING_NAMES))
    return {
        str(f): g.drop_duplicates("image_index").set_index("image_index")[["x", "y", "w", "h"]]
        for f, g in named.groupby("finding")
    }


def finding_localization(
    classifier, test_predictions: pd.DataFrame, pixel_cache: PixelCache, boxes: pd.DataFrame
) -> dict:
    """Per finding with boxes in the cohort: the pointing game and the attention mass inside the box of
    that finding's own map, on its boxed test images, each beside what a uniform map scores."""
    findings = _findings_of(classifier)
    by_box = _boxes_by_finding(boxes)
    out: dict[str, Any] = {}
    tolerance = POINTING_TOLERANCE * pixel_cache.size
    for j, finding in enumerate(findings):
        if finding not in by_box:
            out[finding] = {"n_images": 0, "note": f"the cohort has no {finding} boxes"}
            continue
        frame = test_predictions[test_predictions["image_index"].isin(by_box[finding].index)]
        if frame.empty:
            out[finding] = {"n_images": 0, "note": f"no test image has a {finding} box"}
            continue
        b = boxes_in_cache_frame(
            by_box[finding].loc[frame["image_index"]].to_numpy(float),
            pixel_cache.source_shapes(frame["path"]),
            pixel_cache.size,
        )
        _, maps = predict_finding_maps(classifier, pixel_cache.images(frame["path"]))
        out[finding] = localization_scores(maps[..., j], b, tolerance)
        logger.info(
            "Attention of %s on %d boxed test images: pointing game %.3f (uniform %.3f), "
            "mass in box %.3f (uniform %.3f)",
            finding,
            out[finding]["n_images"],
            out[finding]["pointing_game_hit_rate"],
            out[finding]["uniform_pointing_reference"],
            out[finding]["attention_mass_in_box"],
            out[finding]["uniform_reference"],
        )
    return out


def finding_headline_metrics(metrics: dict, localization: dict) -> dict[str, dict[str, float]]:
    """MLflow metrics named per finding (``test_auc.Cardiomegaly``, ...) so runs compare finding by finding."""
    flat: dict[str, float | None] = {"test_auc_mean": metrics["mean_auc"]}
    for finding, m in metrics["by_finding"].items():
        flat.update(
            {
                f"test_auc.{finding}": m["roc_auc"]["auc"],
                f"test_auc_ci_low.{finding}": m["roc_auc"]["ci_low"],
                f"test_auc_ci_high.{finding}": m["roc_auc"]["ci_high"],
                f"test_pr_auc.{finding}": m["pr_auc"],
                f"test_brier.{finding}": m["brier"],
                f"test_ece.{finding}": m["ece"],
                f"test_sensitivity.{finding}": m["sensitivity"],
                f"test_specificity.{finding}": m["specificity"],
                f"threshold.{finding}": m["threshold"],
                f"test_prevalence.{finding}": m["prevalence"],
            }
        )
        for view, v in m["by_view"].items():
            flat[f"test_auc.{finding}.view_{view}"] = v["roc_auc"]
        loc = localization.get(finding, {})
        flat[f"attention_pointing_game.{finding}"] = loc.get("pointing_game_hit_rate")
        flat[f"attention_mass_in_box.{finding}"] = loc.get("attention_mass_in_box")
        flat[f"attention_uniform_reference.{finding}"] = loc.get("uniform_reference")
    return {k: {"value": float(v), "step": 0} for k, v in flat.items() if v is not None}


def finding_plots(test_predictions: pd.DataFrame, metrics: dict, clean_metadata: pd.DataFrame, history: pd.DataFrame):
    """The per-finding ROC grid, the label co-occurrence map of the cohort (all 14 findings) and the
    per-finding validation AUC curves."""
    curves = {
        f: (test_predictions[TARGET_PREFIX + f].to_numpy(), test_predictions[PROBABILITY_PREFIX + f].to_numpy())
        for f in metrics["findings"]
    }
    labels = label_matrix(clean_metadata["labels"], NIH_FINDINGS)
    labels.columns = list(NIH_FINDINGS)
    return (
        plots.roc_grid(curves, metrics["by_finding"], CHEXNET_AUC),
        plots.cooccurrence(labels),
        plots.finding_curves(history, metrics["findings"]),
    )


def finding_attention_grid(classifier, test_predictions: pd.DataFrame, pixel_cache: PixelCache, params: dict[str, Any]):
    """Rows: findings; columns: the test images that finding scores highest, with that finding's own map."""
    n = as_params(ReportingParams, params).heatmaps_per_group
    rows = {}
    for j, finding in enumerate(_findings_of(classifier)):
        top = test_predictions.nlargest(n, PROBABILITY_PREFIX + finding)
        pixels = pixel_cache.images(top["path"])
        _, maps = predict_finding_maps(classifier, pixels)
        rows[finding] = [
            (
                overlay(img, heat[..., j]),
                f"p={row[PROBABILITY_PREFIX + finding]:.2f} {'+' if row[TARGET_PREFIX + finding] else '-'}",
            )
            for img, heat, (_, row) in zip(pixels, maps, top.iterrows())
        ]
    return plots.attention_grid(rows, n)


def build_multilabel_report(
    metrics: dict,
    calibration_report: dict,
    localization: dict,
    quality: dict,
    history: pd.DataFrame,
    image_size: int,
    phantom_params: dict[str, Any],
    model_params: dict[str, Any],
    cohort_dir: str | None,
    **figures: bytes,
) -> str:
    """One self-contained HTML report of a multi-label run (figures embedded). On the offline phantom
    cohort (generated when missing, no ``cohort_dir`` given at run time) it says which findings the
    images draw."""
    phantoms = as_params(PhantomParams, phantom_params)
    model = as_params(ModelTrainingParams, model_params)
    drawn = list(phantoms.drawn_findings) if phantoms.generate_if_missing and not cohort_dir else None
    return render_report(
        "multilabel_report.html.j2",
        figures,
        findings=metrics["findings"],
        metrics=metrics,
        calibration=calibration_report,
        localization=localization,
        quality=quality,
        best=best_epoch(history),
        image_size=image_size,
        drawn=drawn,
        best_epoch_findings=model.best_epoch_findings,
    )
