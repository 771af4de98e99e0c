"""Nodes of the reporting pipeline: predictions, metrics, plots, attention analysis, one HTML report."""

from __future__ import annotations

import base64
import html
import io
import logging

import numpy as np
import pandas as pd

from cardio_kedro.pipelines.model_training.data import CachedImages, split_arrays
from cardio_kedro.pipelines.model_training.model import attention_model

from . import plots
from .metrics import auc_or_none, bootstrap_auc, choose_threshold, evaluate

logger = logging.getLogger(__name__)

AGE_BANDS = [0, 40, 60, 80, 200]
AGE_LABELS = ["<40", "40-59", "60-79", "80+"]


def predict_split(classifier, split: pd.DataFrame, pixel_cache: dict, image_size: int, params: dict) -> pd.DataFrame:
    """Probability of the target for every image of a split (no augmentation)."""
    cache = pixel_cache["open"](int(image_size))
    rows, y = split_arrays(cache, split)
    data = CachedImages(cache.pixels(), rows, y, int(params.get("batch_size", 128)))
    probability = classifier.predict(data, verbose=0).reshape(-1).astype(float)
    keep = ["image_index", "patient_id", "path", "sex", "view", "age", "target"]
    return split[keep].assign(probability=probability)


def _subset_metrics(frame: pd.DataFrame, n_boot: int, seed: int, min_per_class: int) -> dict:
    y = frame["target"].to_numpy()
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    out = {"n_images": int(len(y)), "n_positive": n_pos}
    if min(n_pos, n_neg) < min_per_class:
        return {**out, "auc": None, "ci_low": None, "ci_high": None, "note": "n too small"}
    return {**out, **bootstrap_auc(y, frame["probability"].to_numpy(), frame["patient_id"].to_numpy(), n_boot, seed)}


def rebalance_like_original(frame: pd.DataFrame, neg_per_pos: float, seed: int) -> pd.DataFrame:
    """All positives and ``neg_per_pos`` random negatives per positive (the original's 3:1 test set)."""
    pos, neg = frame[frame["target"] == 1], frame[frame["target"] == 0]
    n = min(len(neg), int(round(neg_per_pos * len(pos))))
    return pd.concat([pos, neg.sample(n=n, random_state=seed)])


def evaluation_metrics(validation_predictions: pd.DataFrame, test_predictions: pd.DataFrame, params: dict) -> dict:
    """Test metrics at natural prevalence, at the threshold chosen on validation, plus a 3:1 test
    set as the original used, and subgroup AUCs (sex, view position, age band)."""
    n_boot, seed = int(params.get("n_bootstrap", 1000)), int(params.get("seed", 0))
    th = params.get("threshold", {})
    threshold = choose_threshold(
        validation_predictions["target"].to_numpy(),
        validation_predictions["probability"].to_numpy(),
        th.get("method", "youden"),
        float(th.get("target_sensitivity", 0.9)),
    )

    def run(frame: pd.DataFrame) -> dict:
        return evaluate(
            frame["target"].to_numpy(),
            frame["probability"].to_numpy(),
            frame["patient_id"].to_numpy(),
            threshold,
            n_boot,
            seed,
        )

    test = run(test_predictions)
    ratio = float(params.get("original_neg_per_pos", 3))
    rebalanced = run(rebalance_like_original(test_predictions, ratio, seed))
    min_per_class = int(params.get("subgroup_min_per_class", 5))
    ages = pd.cut(test_predictions["age"], AGE_BANDS, right=False, labels=AGE_LABELS)
    subgroups = {
        "sex": {str(k): _subset_metrics(g, n_boot, seed, min_per_class) for k, g in test_predictions.groupby("sex")},
        "view": {str(k): _subset_metrics(g, n_boot, seed, min_per_class) for k, g in test_predictions.groupby("view")},
        "age": {
            str(k): _subset_metrics(g, n_boot, seed, min_per_class)
            for k, g in test_predictions.groupby(ages.astype(str).replace("nan", "unknown"))
        },
    }
    val_auc = auc_or_none(validation_predictions["target"], validation_predictions["probability"])
    logger.info(
        "Test ROC AUC %.4f (95%% CI %s-%s), PR AUC %.4f, sensitivity %.3f, specificity %.3f at threshold %.3f",
        test["roc_auc"]["auc"],
        _fmt(test["roc_auc"]["ci_low"]),
        _fmt(test["roc_auc"]["ci_high"]),
        test["pr_auc"] or float("nan"),
        test["sensitivity"] or float("nan"),
        test["specificity"] or float("nan"),
        threshold,
    )
    return {
        "threshold": {"value": threshold, "chosen_on": "validation", **th},
        "validation_auc": val_auc,
        "test": test,
        f"test_rebalanced_{ratio:g}to1": {
            **rebalanced,
            "note": f"test split with {ratio:g} negatives per positive, for comparison with the original notebook",
        },
        "subgroups": subgroups,
    }


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def roc_band(y: np.ndarray, p: np.ndarray, groups: np.ndarray, n_boot: int, seed: int, points: int = 101):
    """Pointwise 95% band of the ROC curve (TPR on a FPR grid) from patient-level bootstrap."""
    from sklearn.metrics import roc_curve

    grid = np.linspace(0, 1, points)
    uniq = np.unique(groups)
    by_patient = {g: np.flatnonzero(groups == g) for g in uniq}
    rng = np.random.default_rng(seed)
    curves = []
    for _ in range(n_boot):
        idx = np.concatenate([by_patient[g] for g in rng.choice(uniq, len(uniq))])
        if y[idx].min() == y[idx].max():
            continue
        fpr, tpr, _ = roc_curve(y[idx], p[idx])
        curves.append(np.interp(grid, fpr, tpr))
    if len(curves) < 10:
        return None
    return np.quantile(np.array(curves), [0.025, 0.975], axis=0)


def evaluation_plots(test_predictions: pd.DataFrame, metrics: dict, params: dict):
    """ROC (with band and operating point), confusion matrix, classification report, PR, calibration, subgroups."""
    y = test_predictions["target"].to_numpy()
    p = test_predictions["probability"].to_numpy()
    test = metrics["test"]
    band = roc_band(
        y,
        p,
        test_predictions["patient_id"].to_numpy(),
        min(int(params.get("n_bootstrap", 1000)), 200),
        int(params.get("seed", 0)),
    )
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


def example_images(train: pd.DataFrame, pixel_cache: dict, image_size: int, params: dict):
    """Example positive and negative training images, as the model sees them."""
    n = int(params.get("examples_per_class", 4))
    cache = pixel_cache["open"](int(image_size))
    picks = pd.concat([train[train["target"] == 1].head(n), train[train["target"] == 0].head(n)])
    pixels = cache.pixels()[cache.rows(picks["path"])]
    titles = [f"{'positive' if t else 'negative'}: {i}" for t, i in zip(picks["target"], picks["image_index"])]
    colors = [plots.POS if t else plots.NEG for t in picks["target"]]
    return plots.image_grid(list(pixels), titles, "Example training images", ncols=n, title_colors=colors)


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


def _attention_maps(classifier, pixels: np.ndarray, size: int) -> np.ndarray:
    """Attention maps upsampled (bilinear) to the image size, in [0, 1]."""
    import cv2

    _, maps = attention_model(classifier).predict(pixels[..., None], verbose=0)
    maps = np.asarray(maps, np.float32)[..., 0]
    return np.stack([cv2.resize(m, (size, size), interpolation=cv2.INTER_LINEAR) for m in maps])


def attention_heatmaps(
    classifier, test_predictions: pd.DataFrame, pixel_cache: dict, image_size: int, metrics: dict, params: dict
):
    """Heat-map grid: the most confident true positives, false positives, false negatives, true negatives."""
    n = int(params.get("heatmaps_per_group", 4))
    t = metrics["threshold"]["value"]
    pred = test_predictions["probability"] >= t
    y = test_predictions["target"] == 1
    groups = {
        "TP": test_predictions[pred & y].nlargest(n, "probability"),
        "FP": test_predictions[pred & ~y].nlargest(n, "probability"),
        "FN": test_predictions[~pred & y].nsmallest(n, "probability"),
        "TN": test_predictions[~pred & ~y].nsmallest(n, "probability"),
    }
    cache = pixel_cache["open"](int(image_size))
    images, overlays, titles, colors = [], [], [], []
    for name, frame in groups.items():
        if frame.empty:
            continue
        pixels = np.asarray(cache.pixels()[cache.rows(frame["path"])])
        maps = _attention_maps(classifier, pixels, int(image_size))
        lo, hi = maps.min(axis=(1, 2), keepdims=True), maps.max(axis=(1, 2), keepdims=True)
        maps = (maps - lo) / np.maximum(hi - lo, 1e-6)  # per-image contrast: where the model looks
        for img, m, (_, row) in zip(pixels, maps, frame.iterrows()):
            images.append(img)
            overlays.append(m)
            titles.append(f"{name} p={row['probability']:.2f}\n{row['image_index']}")
            colors.append(plots.POS if name in ("TP", "FN") else plots.NEG)
    return plots.image_grid(
        images, titles, f"Attention heat maps (threshold {t:.3f})", ncols=n, overlays=overlays, title_colors=colors
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
    classifier, test_predictions: pd.DataFrame, pixel_cache: dict, cohort: dict, image_size: int, target_finding: str
) -> dict:
    """Localization of the attention on test images that have a bounding box for the target finding."""
    bboxes = cohort.get("bboxes")
    if bboxes is None:
        return {"n_images": 0, "note": "no BBox_List_2017.csv in the cohort"}
    boxes = bboxes[bboxes["finding"] == target_finding].drop_duplicates("image_index").set_index("image_index")
    frame = test_predictions[test_predictions["image_index"].isin(boxes.index)]
    if frame.empty:
        return {"n_images": 0, "note": f"no test image has a {target_finding} box"}
    cache = pixel_cache["open"](int(image_size))
    shapes = cache.index.set_index("source").loc[frame["path"], ["src_height", "src_width"]].to_numpy()
    scale_x = int(image_size) / shapes[:, 1]
    scale_y = int(image_size) / shapes[:, 0]
    b = boxes.loc[frame["image_index"], ["x", "y", "w", "h"]].to_numpy(float)
    b = b * np.stack([scale_x, scale_y, scale_x, scale_y], axis=1)
    maps = _attention_maps(classifier, np.asarray(cache.pixels()[cache.rows(frame["path"])]), int(image_size))
    out = localization_scores(maps, b)
    logger.info(
        "Attention localization on %d boxed test images: pointing game %.3f, mass in box %.3f",
        out["n_images"],
        out["pointing_game_hit_rate"],
        out["attention_mass_in_box"],
    )
    return out


def _png_tag(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _metric_rows(metrics: dict) -> str:
    def f(x):
        return "n/a" if x is None else f"{x:.3f}"

    rows = []
    for key in [k for k in metrics if k.startswith("test")]:
        m = metrics[key]
        auc = m["roc_auc"]
        rows.append(
            f"<tr><td>{html.escape(key)}</td><td>{m['n_images']:,}</td><td>{m['prevalence']:.1%}</td>"
            f"<td>{f(auc['auc'])} ({f(auc['ci_low'])}-{f(auc['ci_high'])})</td><td>{f(m['pr_auc'])}</td>"
            f"<td>{f(m['brier'])}</td><td>{f(m['sensitivity'])}</td><td>{f(m['specificity'])}</td>"
            f"<td>{f(m['ppv'])}</td><td>{f(m['npv'])}</td><td>{f(m['f1'])}</td></tr>"
        )
    return "".join(rows)


def _subgroup_rows(subgroups: dict) -> str:
    rows = []
    for family, groups in subgroups.items():
        for name, r in groups.items():
            auc = (
                "n too small"
                if r.get("auc") is None
                else (
                    f"{r['auc']:.3f} ({r['ci_low']:.3f}-{r['ci_high']:.3f})"
                    if r.get("ci_low") is not None
                    else f"{r['auc']:.3f}"
                )
            )
            rows.append(
                f"<tr><td>{family}</td><td>{html.escape(name)}</td><td>{r['n_images']:,}</td>"
                f"<td>{r['n_positive']:,}</td><td>{auc}</td></tr>"
            )
    return "".join(rows)


def build_report(
    metrics: dict,
    localization: dict,
    quality: dict,
    history: pd.DataFrame,
    target_finding: str,
    image_size: int,
    model_params: dict,
    **figures: bytes,
) -> str:
    """One self-contained HTML report (figures embedded) with a model card section."""
    best = history[history["best"].astype(bool)]
    best_txt = f"epoch {int(best['epoch'].iloc[0])}, val_auc {best['val_auc'].iloc[0]:.3f}" if len(best) else "n/a"
    model = model_params.get("model", {})
    test = metrics["test"]
    loc = localization
    loc_txt = (
        f"pointing game {loc['pointing_game_hit_rate']:.3f}, attention mass in box "
        f"{loc['attention_mass_in_box']:.3f} on {loc['n_images']} boxed test images"
        if loc.get("n_images")
        else html.escape(loc.get("note", "not available"))
    )
    figs = "".join(
        f"<figure>{_png_tag(png, name)}<figcaption>{html.escape(name.replace('_', ' '))}</figcaption></figure>"
        for name, png in figures.items()
    )
    dropped = ", ".join(f"{k}: {v['count']}" for k, v in quality.get("dropped_by_reason", {}).items()) or "none"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{target_finding} classifier report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
figure{{display:inline-block;margin:8px;vertical-align:top}}img{{max-width:520px}}</style></head><body>
<h1>{target_finding} classifier: evaluation report</h1>
<h2>Cohort and split</h2>
<p>{quality["usable_images"]:,} usable images of {quality["usable_patients"]:,} patients
({quality["usable_positive_images"]:,} {target_finding}); dropped rows: {dropped}.
Patient-wise split; train and validation rebalanced, test at natural prevalence.</p>
<h2>Parameters that matter</h2>
<p>backbone {html.escape(str(model.get("backbone")))} (weights {html.escape(str(model.get("backbone_weights")))},
width {model.get("backbone_width", 1.0)}), image size {image_size} px, batch {model_params.get("batch_size")},
best {best_txt}; operating threshold {metrics["threshold"]["value"]:.3f} chosen on validation
({html.escape(str(metrics["threshold"].get("method", "youden")))}).</p>
<h2>Metrics</h2>
<table><tr><th>set</th><th>images</th><th>prevalence</th><th>ROC AUC (95% CI)</th><th>PR AUC</th><th>Brier</th>
<th>sensitivity</th><th>specificity</th><th>PPV</th><th>NPV</th><th>F1</th></tr>{_metric_rows(metrics)}</table>
<h3>Subgroups (test)</h3>
<table><tr><th>by</th><th>group</th><th>images</th><th>positive</th><th>ROC AUC (95% CI)</th></tr>
{_subgroup_rows(metrics["subgroups"])}</table>
<h3>Attention localization</h3><p>{loc_txt}</p>
<h2>Figures</h2>{figs}
<h2>Model card</h2>
<ul><li><b>Intended use:</b> research and education on chest-radiograph classification of {target_finding};
not a medical device, not for diagnosis.</li>
<li><b>Data:</b> {quality["usable_images"]:,} frontal chest radiographs (NIH ChestX-ray14 layout), labels as in
<code>Finding Labels</code>; the test split keeps the cohort's prevalence ({test["prevalence"]:.1%}).</li>
<li><b>Metrics:</b> test ROC AUC {test["roc_auc"]["auc"]:.3f} (95% CI {_fmt(test["roc_auc"]["ci_low"])}-
{_fmt(test["roc_auc"]["ci_high"])}, patient-level bootstrap), sensitivity {_fmt(test["sensitivity"])},
specificity {_fmt(test["specificity"])} at the validation-chosen threshold.</li>
<li><b>Subgroups:</b> see the table above; groups with fewer than 5 cases of a class are not scored.</li>
<li><b>Known limits:</b> NIH labels are text-mined and noisy; AP films magnify the heart; one site's data;
synthetic phantoms (the demo) say nothing about performance on real radiographs.</li></ul>
</body></html>"""
