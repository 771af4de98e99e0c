"""Nodes of the reporting pipeline: predictions, metrics, plots, attention analysis, one HTML report."""

from __future__ import annotations

import base64
import io
import logging
from typing import Any

import jinja2
import numpy as np
import pandas as pd

from cardio_kedro.config import ReportingParams
from cardio_kedro.datasets import PixelCache
from cardio_kedro.formatting import fmt, fmt_auc
from cardio_kedro.modeling import overlay, predict_with_attention
from cardio_kedro.modeling.feeds import CachedImages
from cardio_kedro.sampling import undersample

from . import plots
from .metrics import auc_or_none, bootstrap_auc, choose_threshold, evaluate, roc_band

logger = logging.getLogger(__name__)

AGE_BANDS = [0, 40, 60, 80, 200]
AGE_LABELS = ["<40", "40-59", "60-79", "80+"]
PREDICTION_COLUMNS = ["image_index", "patient_id", "path", "sex", "view", "age", "target"]
_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("cardio_kedro.pipelines.reporting", "templates"),
    autoescape=jinja2.select_autoescape(default=True),
    undefined=jinja2.StrictUndefined,
)
_TEMPLATES.filters.update(fmt=fmt, fmt_auc=fmt_auc)


def predict_split(classifier, split: pd.DataFrame, pixel_cache: PixelCache, params: dict[str, Any]) -> pd.DataFrame:
    """Probability of the target for every image of a split (no augmentation)."""
    config = ReportingParams.model_validate(params)
    y = split["target"].to_numpy(np.float32)
    data = CachedImages(pixel_cache.pixels(), pixel_cache.rows(split["path"]), y, config.batch_size)
    probability = classifier.predict(data, verbose=0).reshape(-1).astype(float)
    return split[PREDICTION_COLUMNS].assign(probability=probability)


def _scores(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return frame["target"].to_numpy(), frame["probability"].to_numpy(), frame["patient_id"].to_numpy()


def _subgroup_auc(frame: pd.DataFrame, config: ReportingParams) -> dict:
    y, p, groups = _scores(frame)
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    out = {"n_images": int(len(y)), "n_positive": n_pos}
    if min(n_pos, n_neg) < config.subgroup_min_per_class:
        return {**out, "auc": None, "ci_low": None, "ci_high": None, "note": "n too small"}
    return {**out, **bootstrap_auc(y, p, groups, config.n_bootstrap, config.seed)}


def _subgroups(test: pd.DataFrame, config: ReportingParams) -> dict:
    """AUC with CI by sex, view position and age band; groups too small to score say so."""
    ages = pd.cut(test["age"], AGE_BANDS, right=False, labels=AGE_LABELS).astype(str).replace("nan", "unknown")
    return {
        family: {str(k): _subgroup_auc(g, config) for k, g in test.groupby(by)}
        for family, by in (("sex", "sex"), ("view", "view"), ("age", ages))
    }


def evaluation_metrics(
    validation_predictions: pd.DataFrame, test_predictions: pd.DataFrame, params: dict[str, Any]
) -> dict:
    """Test metrics at natural prevalence, at the threshold chosen on validation, plus a 3:1 test
    set as the original used, and subgroup AUCs (sex, view position, age band)."""
    config = ReportingParams.model_validate(params)
    threshold = choose_threshold(
        *_scores(validation_predictions)[:2], config.threshold.method, config.threshold.target_sensitivity
    )

    def run(frame: pd.DataFrame) -> dict:
        return evaluate(*_scores(frame), threshold, config.n_bootstrap, config.seed)

    test = run(test_predictions)
    ratio = config.original_neg_per_pos
    rebalanced = run(undersample(test_predictions, ratio, np.random.default_rng(config.seed)))
    logger.info(
        "Test ROC AUC %s, PR AUC %s, sensitivity %s, specificity %s at threshold %.3f",
        fmt_auc(test["roc_auc"]),
        fmt(test["pr_auc"]),
        fmt(test["sensitivity"]),
        fmt(test["specificity"]),
        threshold,
    )
    return {
        "threshold": {"value": threshold, "chosen_on": "validation", **config.threshold.model_dump()},
        "validation_auc": auc_or_none(*_scores(validation_predictions)[:2]),
        "test": test,
        f"test_rebalanced_{ratio:g}to1": {
            **rebalanced,
            "note": f"test split with {ratio:g} negatives per positive, for comparison with the original notebook",
        },
        "subgroups": _subgroups(test_predictions, config),
    }


def headline_metrics(metrics: dict) -> dict[str, dict[str, float]]:
    """The evaluation numbers worth comparing across runs, as MLflow metrics (step 0)."""
    test = metrics["test"]
    flat = {
        "test_auc": test["roc_auc"]["auc"],
        "test_auc_ci_low": test["roc_auc"]["ci_low"],
        "test_auc_ci_high": test["roc_auc"]["ci_high"],
        "test_pr_auc": test["pr_auc"],
        "test_brier": test["brier"],
        "test_sensitivity": test["sensitivity"],
        "test_specificity": test["specificity"],
        "test_ppv": test["ppv"],
        "test_npv": test["npv"],
        "test_f1": test["f1"],
        "threshold": metrics["threshold"]["value"],
    }
    for key, value in metrics.items():
        if key.startswith("test_rebalanced"):
            flat[f"{key}_auc"] = value["roc_auc"]["auc"]
    for family, groups in metrics["subgroups"].items():
        for name, res in groups.items():
            flat[f"subgroup_{family}_{name}_auc".replace("<", "lt").replace("+", "plus")] = res["auc"]
    return {k: {"value": float(v), "step": 0} for k, v in flat.items() if v is not None}


def evaluation_plots(test_predictions: pd.DataFrame, metrics: dict, params: dict[str, Any]):
    """ROC (with band and operating point), confusion matrix, classification report, PR, calibration, subgroups."""
    config = ReportingParams.model_validate(params)
    y, p, groups = _scores(test_predictions)
    test = metrics["test"]
    band = roc_band(y, p, groups, min(config.n_bootstrap, 200), config.seed)
    return (
        plots.roc(y, p, test["roc_auc"], test, band),
        plots.confusion(test["confusion_matrix"], test["threshold"]),
        plots.report_table(test["classification_report"]),
        plots.precision_recall(y, p, test["pr_auc"]),
        plots.calibration(y, p, test["brier"]),
        plots.subgroup_auc(metrics["subgroups"]),
    )


def cohort_plots(
    metadata: pd.DataFrame,
    train: pd.DataFrame,
    validation: pd.DataFrame,
    test: pd.DataFrame,
    train_split: pd.DataFrame,
    validation_split: pd.DataFrame,
    target_finding: str,
):
    """Raw class distribution, rebalanced distribution and patient-wise split sizes."""
    return (
        plots.class_distribution(metadata, target_finding),
        plots.rebalanced_distribution(train, validation, test),
        plots.split_sizes(train_split, validation_split, test),
    )


def example_images(train: pd.DataFrame, pixel_cache: PixelCache, params: dict[str, Any]):
    """Example positive and negative training images, as the model sees them."""
    n = ReportingParams.model_validate(params).examples_per_class
    picks = pd.concat([train[train["target"] == 1].head(n), train[train["target"] == 0].head(n)])
    titles = [f"{'positive' if t else 'negative'}: {i}" for t, i in zip(picks["target"], picks["image_index"])]
    colors = [plots.POS if t else plots.NEG for t in picks["target"]]
    images = list(pixel_cache.images(picks["path"]))
    return plots.image_grid(images, titles, "Example training images", ncols=n, title_colors=colors)


def architecture_plot(classifier):
    """The model architecture: Keras' plot_model where graphviz is installed, else the layer summary."""
    import keras

    try:
        import matplotlib.image as mpimg
        import matplotlib.pyplot as plt

        buf = keras.utils.model_to_dot(classifier, show_shapes=True, expand_nested=False).create(format="png")
        fig, ax = plt.subplots(figsize=(8, 12))
        ax.imshow(mpimg.imread(io.BytesIO(buf), format="png"))
        ax.axis("off")
        return fig
    except Exception:  # noqa: BLE001 - pydot or graphviz missing: the summary as text
        lines: list[str] = []
        classifier.summary(print_fn=lambda line, **_: lines.append(line), line_length=110)
        return plots.text_figure("\n".join(lines), f"Model architecture: {classifier.name}")


def training_curves_plot(history: pd.DataFrame):
    """Loss and AUC per epoch, both phases, best epoch marked."""
    return plots.training_curves(history)


def _heatmap_groups(test_predictions: pd.DataFrame, threshold: float, n: int) -> dict[str, pd.DataFrame]:
    """The most confident true positives, false positives, false negatives and true negatives."""
    pred = test_predictions["probability"] >= threshold
    y = test_predictions["target"] == 1
    return {
        "TP": test_predictions[pred & y].nlargest(n, "probability"),
        "FP": test_predictions[pred & ~y].nlargest(n, "probability"),
        "FN": test_predictions[~pred & y].nsmallest(n, "probability"),
        "TN": test_predictions[~pred & ~y].nsmallest(n, "probability"),
    }


def attention_heatmaps(
    classifier, test_predictions: pd.DataFrame, pixel_cache: PixelCache, metrics: dict, params: dict[str, Any]
):
    """Heat-map grid: a row each of true positives, false positives, false negatives, true negatives."""
    n = ReportingParams.model_validate(params).heatmaps_per_group
    threshold = metrics["threshold"]["value"]
    images, titles, colors = [], [], []
    for name, frame in _heatmap_groups(test_predictions, threshold, n).items():
        if frame.empty:
            continue
        pixels = pixel_cache.images(frame["path"])
        _, maps = predict_with_attention(classifier, pixels)
        for img, heat, (_, row) in zip(pixels, maps, frame.iterrows()):
            images.append(overlay(img, heat))
            titles.append(f"{name} p={row['probability']:.2f}\n{row['image_index']}")
            colors.append(plots.POS if name in ("TP", "FN") else plots.NEG)
    return plots.image_grid(
        images, titles, f"Attention heat maps (threshold {threshold:.3f})", ncols=n, title_colors=colors
    )


def localization_scores(maps: np.ndarray, boxes: np.ndarray) -> dict:
    """Pointing game (attention peak inside the box) and share of attention mass inside the box.

    ``maps``: (n, s, s) non-negative; ``boxes``: (n, 4) as x, y, w, h in the maps' pixel frame.
    """
    hits, mass = [], []
    for m, (x, y, w, h) in zip(maps, boxes):
        inside = np.zeros_like(m, dtype=bool)
        y0, y1 = int(np.floor(y)), int(np.ceil(y + h))
        x0, x1 = int(np.floor(x)), int(np.ceil(x + w))
        inside[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = True
        py, px = np.unravel_index(int(np.argmax(m)), m.shape)
        hits.append(bool(inside[py, px]))
        total = float(m.sum())
        mass.append(float(m[inside].sum() / total) if total > 0 else 0.0)
    return {
        "n_images": len(hits),
        "pointing_game_hit_rate": float(np.mean(hits)) if hits else None,
        "attention_mass_in_box": float(np.mean(mass)) if mass else None,
    }


def attention_localization(
    classifier, test_predictions: pd.DataFrame, pixel_cache: PixelCache, boxes: pd.DataFrame, target_finding: str
) -> dict:
    """Localization of the attention on test images that have a bounding box for the target finding."""
    if boxes.empty:
        return {"n_images": 0, "note": "no BBox_List_2017.csv in the cohort"}
    target_boxes = boxes[boxes["finding"] == target_finding].drop_duplicates("image_index").set_index("image_index")
    frame = test_predictions[test_predictions["image_index"].isin(target_boxes.index)]
    if frame.empty:
        return {"n_images": 0, "note": f"no test image has a {target_finding} box"}
    shapes = pixel_cache.source_shapes(frame["path"])
    scale_x, scale_y = pixel_cache.size / shapes[:, 1], pixel_cache.size / shapes[:, 0]
    b = target_boxes.loc[frame["image_index"], ["x", "y", "w", "h"]].to_numpy(float)
    b = b * np.stack([scale_x, scale_y, scale_x, scale_y], axis=1)
    _, maps = predict_with_attention(classifier, pixel_cache.images(frame["path"]))
    out = localization_scores(maps, b)
    logger.info(
        "Attention localization on %d boxed test images: pointing game %.3f, mass in box %.3f",
        out["n_images"],
        out["pointing_game_hit_rate"],
        out["attention_mass_in_box"],
    )
    return out


def _png_data_uri(png: bytes) -> str:
    return f"data:image/png;base64,{base64.b64encode(png).decode()}"


def build_report(
    metrics: dict,
    localization: dict,
    quality: dict,
    history: pd.DataFrame,
    target_finding: str,
    image_size: int,
    model_params: dict[str, Any],
    **figures: bytes,
) -> str:
    """One self-contained HTML report (figures embedded) with a model card section."""
    best = history[history["best"].astype(bool)]
    return _TEMPLATES.get_template("report.html.j2").render(
        target=target_finding,
        image_size=image_size,
        metrics=metrics,
        test_sets={k: v for k, v in metrics.items() if k.startswith("test")},
        localization=localization,
        quality=quality,
        dropped=", ".join(f"{k}: {v['count']}" for k, v in quality["dropped_by_reason"].items()) or "none",
        best=best.iloc[0].to_dict() if len(best) else None,
        model=model_params["model"],
        batch_size=model_params["batch_size"],
        figures={name.replace("_", " "): _png_data_uri(png) for name, png in figures.items()},
    )
