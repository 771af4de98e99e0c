"""The HTML reports' templates (``templates/``) and how figures are embedded in them."""

from __future__ import annotations

import base64
from typing import Any

import jinja2
import pandas as pd

from cardio_kedro.common.formatting import fmt, fmt_auc, fmt_interval


def report_templates() -> jinja2.Environment:
    """The jinja2 environment of the report templates, with the number formats as filters."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cardio_kedro.evaluation", "templates"),
        autoescape=jinja2.select_autoescape(default=True),
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(fmt=fmt, fmt_auc=fmt_auc)
    env.globals.update(fmt_interval=fmt_interval)
    return env


def png_data_uri(png: bytes) -> str:
    """A PNG as a ``data:`` URI, so a report is one self-contained file."""
    return f"data:image/png;base64,{base64.b64encode(png).decode()}"


def best_epoch(history: pd.DataFrame) -> dict | None:
    """The row of the training history whose weights were kept (``best``), or None."""
    best = history[history["best"].astype(bool)]
    return best.iloc[0].to_dict() if len(best) else None


# what a report's figure caption says, by the figure's name; a name not here shows as itself ("a_b": "a b")
FIGURE_CAPTIONS = {
    "class_distribution": "Images per class in each split",
    "rebalanced_distribution": "Training images per class after rebalancing",
    "split_sizes": "Patients and images per split",
    "example_images": "Example images",
    "architecture": "The network",
    "training_curves": "Training curves (loss and validation AUC per epoch)",
    "roc": "ROC curve on the test split, with the pixel baseline",
    "precision_recall": "Precision-recall curve on the test split",
    "calibration": "Reliability diagram on the test split (raw and calibrated)",
    "decision_curve": "Decision curve: net benefit against the threshold probability",
    "confusion_matrix": "Confusion matrix at the operating threshold",
    "classification_report": "Per-class precision, recall and F1 at the operating threshold",
    "subgroup_auc": "ROC AUC by view, sex and age",
    "attention_heatmaps": "Attention maps on test images",
    "cv_roc": "Out-of-fold ROC curve of the model and the pixel baseline (pooled over the folds)",
    "cv_fold_auc": "ROC AUC of each fold, model and pixel baseline",
    "cv_calibration": "Out-of-fold reliability diagram (raw and calibrated)",
    "external_roc": "ROC curve on the external cohort, with the pixel baseline",
    "external_calibration": "Reliability diagram on the external cohort, before and after recalibration",
    "external_decision_curve": "Decision curve on the external cohort",
    "external_subgroup_auc": "ROC AUC on the external cohort by view, sex and age",
    "finding_roc_grid": "ROC curve of each finding",
    "label_cooccurrence": "How often findings occur together",
    "finding_training_curves": "Validation AUC of each finding per epoch",
    "finding_attention_grid": "Attention maps by finding",
}


def render_report(template: str, figures: dict[str, bytes], **context: Any) -> str:
    """One self-contained HTML report: ``template`` rendered with ``context`` and every figure embedded
    under its caption (``FIGURE_CAPTIONS``; another name shows as itself, "roc_plot" as "roc plot")."""
    embedded = {FIGURE_CAPTIONS.get(name, name.replace("_", " ")): png_data_uri(png) for name, png in figures.items()}
    return _TEMPLATES.get_template(template).render(figures=embedded, **context)


_TEMPLATES = report_templates()


def dropped_summary(quality: dict) -> str:
    """The data-quality report's dropped rows by reason, one line: ``no_file: 3, lateral: 12`` (``none``)."""
    return ", ".join(f"{k}: {v['count']}" for k, v in quality["dropped_by_reason"].items()) or "none"
