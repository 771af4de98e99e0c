"""Matplotlib figures of the reporting pipeline (pure: data in, figure out)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402

from cardio_kedro.evaluation.calibration import probability_bins  # noqa: E402
from cardio_kedro.evaluation.intervals import error_bars, wilson  # noqa: E402

POS, NEG, ACCENT = "#d62728", "#1f77b4", "#2ca02c"
SPLIT_ORDER = ("train", "validation", "test")


def _bar_labels(ax, bars) -> None:
    for bar in bars:
        ax.annotate(
            f"{int(bar.get_height()):,}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )


def class_distribution(metadata: pd.DataFrame, target: str) -> plt.Figure:
    """Raw label distribution: the target's classes and every finding's image count."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [1, 3]})
    counts = metadata["target"].value_counts().reindex([0, 1], fill_value=0)
    _bar_labels(ax1, ax1.bar([f"no {target}", target], counts.to_numpy(), color=[NEG, POS]))
    ax1.set(title=f"{target}: {counts[1] / max(counts.sum(), 1):.1%} of {counts.sum():,} images", ylabel="images")
    findings = metadata["labels"].str.split("|").explode().value_counts()
    colors = [POS if f == target else "#7f7f7f" for f in findings.index]
    ax2.bar(findings.index, findings.to_numpy(), color=colors)
    ax2.set(title="All findings (an image can have several)", ylabel="images")
    ax2.tick_params(axis="x", rotation=60)
    fig.suptitle("Raw class distribution")
    return fig


def rebalanced_distribution(train: pd.DataFrame, validation: pd.DataFrame, test: pd.DataFrame) -> plt.Figure:
    """Class counts after rebalancing (train, validation) next to the untouched test split."""
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(3)
    frames = (train, validation, test)
    neg = [int((f["target"] == 0).sum()) for f in frames]
    pos = [int(f["target"].sum()) for f in frames]
    _bar_labels(ax, ax.bar(x - 0.2, neg, 0.4, color=NEG, label="negative"))
    _bar_labels(ax, ax.bar(x + 0.2, pos, 0.4, color=POS, label="positive"))
    ax.set_xticks(
        x,
        [
            f"{s}\n({p / max(p + n, 1):.0%} positive)"
            for s, p, n in zip(("train (rebalanced)", "validation (rebalanced)", "test (natural)"), pos, neg)
        ],
    )
    ax.set(ylabel="images", title="Rebalanced class distribution")
    ax.legend()
    return fig


def split_sizes(train: pd.DataFrame, validation: pd.DataFrame, test: pd.DataFrame) -> plt.Figure:
    """Images, patients and positive images per patient-wise split."""
    frames = dict(zip(SPLIT_ORDER, (train, validation, test)))
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for ax, (title, fn, color) in zip(
        axes,
        (
            ("images", len, NEG),
            ("patients", lambda f: f["patient_id"].nunique(), ACCENT),
            ("positive images", lambda f: int(f["target"].sum()), POS),
        ),
    ):
        _bar_labels(ax, ax.bar(list(frames), [fn(f) for f in frames.values()], color=color))
        ax.set(title=title)
    fig.suptitle("Patient-wise splits (no patient in two splits)")
    return fig


def image_grid(
    images: list[np.ndarray], titles: list[str], title: str, ncols: int, title_colors: list[str]
) -> plt.Figure:
    """A grid of images: grayscale ``(s, s)`` uint8 or RGB ``(s, s, 3)`` (e.g. heat-map overlays)."""
    nrows = max(1, int(np.ceil(len(images) / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.8 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= len(images):
            continue
        ax.imshow(images[i], cmap="gray" if images[i].ndim == 2 else None, vmin=0, vmax=255)
        ax.set_title(titles[i], fontsize=8, color=title_colors[i])
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def training_curves(history: pd.DataFrame) -> plt.Figure:
    """Loss and AUC per epoch for train and validation, phases shaded, best epoch marked; an
    ensemble's history (a ``member`` column) draws each member's curves, the first one solid."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    members = [history] if "member" not in history else [part for _, part in history.groupby("member")]
    first = members[0]
    best = first.loc[first["best"].astype(bool), "epoch"]
    for ax, metric in zip(axes, ("loss", "auc")):
        for m, part in enumerate(members):
            style = {"ls": "-", "marker": "o"} if m == 0 else {"ls": ":", "marker": ".", "alpha": 0.6}
            suffix = "" if len(members) == 1 else (" (member 1)" if m == 0 else None)
            train_label = None if suffix is None else f"train {metric}{suffix}"
            val_label = None if suffix is None else f"validation {metric}{suffix}"
            ax.plot(part["epoch"], part[metric], color=NEG, label=train_label, **style)
            ax.plot(part["epoch"], part[f"val_{metric}"], color=POS, label=val_label, **style)
        if len(members) > 1:
            ax.plot(
                [], [], color="grey", ls=":", label="member 2" if len(members) == 2 else f"members 2-{len(members)}"
            )
        fine = first.loc[first["phase"] == "fine_tune", "epoch"]
        if len(fine):
            ax.axvspan(fine.min() - 0.5, fine.max() + 0.5, color="#eeeeee", zorder=0, label="fine-tune phase")
        if len(best):
            ax.axvline(best.iloc[0], color=ACCENT, ls="--", label=f"best epoch ({best.iloc[0]})")
        ax.set(xlabel="epoch", ylabel=metric, title=f"{metric.upper() if metric == 'auc' else metric} per epoch")
        ax.legend(fontsize=8)
    return fig


def confusion(cm: dict, threshold: float) -> plt.Figure:
    """Test confusion matrix at the validation-chosen threshold."""
    mat = np.array([[cm["tn"], cm["fp"]], [cm["fn"], cm["tp"]]])
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(mat, cmap="Blues")
    for (i, j), v in np.ndenumerate(mat):
        ax.text(j, i, f"{v:,}", ha="center", va="center", color="white" if v > mat.max() / 2 else "black")
    ax.set_xticks([0, 1], ["negative", "positive"])
    ax.set_yticks([0, 1], ["negative", "positive"])
    ax.set(xlabel="predicted", ylabel="true", title=f"Confusion matrix (threshold {threshold:.3f})")
    return fig


def report_table(report: dict) -> plt.Figure:
    """scikit-learn's classification report rendered as a table."""
    rows = [k for k in report if isinstance(report[k], dict)]
    cols = ["precision", "recall", "f1-score", "support"]
    cells = [[f"{report[r][c]:.3f}" if c != "support" else f"{int(report[r][c]):,}" for c in cols] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.4 * len(rows)))
    ax.axis("off")
    table = ax.table(cellText=cells, rowLabels=rows, colLabels=cols, loc="center")
    table.scale(1, 1.4)
    ax.set_title(f"Classification report (test, accuracy {report.get('accuracy', float('nan')):.3f})")
    return fig


def _both_classes(y: np.ndarray) -> bool:
    y = np.asarray(y)
    return len(y) > 0 and y.min() != y.max()


def _one_class_note(ax: plt.Axes, y: np.ndarray, what: str) -> None:
    """Where a split holds one class (or no image), a curve is undefined: say so on the axes instead."""
    y = np.asarray(y)
    ax.text(0.5, 0.5, f"no {what}: {int(y.sum())} positive of {len(y)} images\n(both classes are needed)",
            ha="center", va="center", fontsize=9, color="gray", transform=ax.transAxes)  # fmt: skip


def roc(y: np.ndarray, p: np.ndarray, auc: dict, operating: dict, band: np.ndarray | None) -> plt.Figure:
    """ROC curve with its bootstrap band and the validation-chosen operating point."""
    fig, ax = plt.subplots(figsize=(5, 5))
    if band is not None:
        grid = np.linspace(0, 1, band.shape[1])
        ax.fill_between(grid, band[0], band[1], color=POS, alpha=0.15, label="95% bootstrap band")
    if _both_classes(y):
        fpr, tpr, _ = roc_curve(y, p)
        ci = f" (95% CI {auc['ci_low']:.3f}-{auc['ci_high']:.3f})" if auc.get("ci_low") is not None else ""
        ax.plot(fpr, tpr, color=POS, lw=2, label=f"AUC {auc['auc']:.3f}{ci}")
    else:
        _one_class_note(ax, y, "ROC curve")
    ax.plot([0, 1], [0, 1], ls=":", color="gray", label="chance")
    if operating.get("specificity") is not None and operating.get("sensitivity") is not None:
        ax.plot(
            1 - operating["specificity"],
            operating["sensitivity"],
            "o",
            color="black",
            ms=8,
            label=f"operating point (t={operating['threshold']:.3f})",
        )
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC curve (test)", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    return fig


def precision_recall(y: np.ndarray, p: np.ndarray, pr_auc: float | None) -> plt.Figure:
    """Precision-recall curve with the prevalence baseline."""
    fig, ax = plt.subplots(figsize=(5, 5))
    if _both_classes(y):
        precision, recall, _ = precision_recall_curve(y, p)
        ax.plot(recall, precision, color=POS, lw=2, label=f"PR AUC {pr_auc:.3f}" if pr_auc is not None else "PR")
    else:
        _one_class_note(ax, y, "precision-recall curve")
    if len(y):
        ax.axhline(np.mean(y), ls=":", color="gray", label=f"prevalence {np.mean(y):.3f}")
    ax.set(
        xlabel="recall (sensitivity)",
        ylabel="precision (PPV)",
        title="Precision-recall (test)",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.legend(fontsize=8)
    return fig


def reliability_bins(y: np.ndarray, p: np.ndarray, bins: int) -> pd.DataFrame:
    """The equal-width probability bins (ECE's) that hold images: their mean predicted probability, observed
    positive rate, image count and the rate's 95% Wilson interval (wide where a bin holds few images)."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    which = probability_bins(p, bins)
    rows = []
    for b in np.unique(which):
        inside = which == b
        n, positives = int(inside.sum()), int(round(y[inside].sum()))
        low, high = wilson(positives, n)
        rows.append({"mean_predicted": float(p[inside].mean()), "observed": positives / n, "n": n,
                     "low": low, "high": high})  # fmt: skip
    return pd.DataFrame(rows, columns=["mean_predicted", "observed", "n", "low", "high"])


def _reliability_curve(ax: plt.Axes, y: np.ndarray, p: np.ndarray, bins: int, style: str, color: str, label: str):
    """One reliability curve with each bin's 95% interval as an error bar."""
    b = reliability_bins(y, p, bins)
    ax.errorbar(b["mean_predicted"], b["observed"], yerr=error_bars(b["observed"], b["low"], b["high"]),
                fmt=style, color=color, label=label, capsize=2, elinewidth=0.8)  # fmt: skip


def calibration(
    y: np.ndarray, raw: np.ndarray, calibrated: np.ndarray, metrics: dict, bins: int, where: str = "test"
) -> plt.Figure:
    """Reliability diagram before (raw score) and after calibration, with the spread of the probabilities."""
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5.5, 6.5), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.plot([0, 1], [0, 1], ls=":", color="gray", label="perfectly calibrated")
    for p, name, color, style in ((raw, "raw_score", "#7f7f7f", "s--"), (calibrated, "calibrated", POS, "o-")):
        m = metrics[name]
        label = f"{name.replace('_', ' ')}: ECE {m['ece']['value']:.3f}, Brier {m['brier']['value']:.3f}"
        _reliability_curve(ax, y, p, bins, style, color, label)
    ax.set(
        ylabel="observed positive rate (bars: 95% CI)",
        title=f"Calibration ({where}, natural prevalence)",
        xlim=(0, 1),
        ylim=(0, 1.02),
    )
    ax.legend(fontsize=8, loc="upper left")
    hist.hist([raw, calibrated], bins=20, range=(0, 1), color=["#7f7f7f", POS], label=["raw score", "calibrated"])
    hist.set(xlabel="predicted probability", ylabel="images", yscale="log")
    hist.legend(fontsize=7)
    return fig


def reliability(y: np.ndarray, models: dict[str, tuple[np.ndarray, dict]], bins: int, where: str) -> plt.Figure:
    """Reliability diagram of one or more probability sets on the same images (``{name: (p, calibration
    metrics)}``), with mean predicted against observed rate in the legend, and their spread below."""
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5.5, 6.5), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.plot([0, 1], [0, 1], ls=":", color="gray", label="perfectly calibrated")
    colors = (POS, ACCENT, NEG)
    for (name, (p, m)), color in zip(models.items(), colors):
        cil = m["in_the_large"]
        label = (f"{name}: mean {cil['mean_predicted']['value']:.3f} vs observed {cil['observed_rate']['value']:.3f}, "
                 f"O/E {cil['observed_expected']['value']:.2f}, ECE {m['ece']['value']:.3f}")  # fmt: skip
        _reliability_curve(ax, y, p, bins, "o-", color, label)
    ax.set(ylabel="observed positive rate (bars: 95% CI)", title=f"Calibration ({where})", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(fontsize=7, loc="upper left")
    hist.hist([p for p, _ in models.values()], bins=20, range=(0, 1), color=list(colors[: len(models)]),
              label=list(models))  # fmt: skip
    hist.set(xlabel="predicted probability", ylabel="images", yscale="log")
    hist.legend(fontsize=7)
    return fig


def decision_curve(curve: pd.DataFrame, threshold: float, prevalence: float, where: str = "test") -> plt.Figure:
    """Net benefit against threshold probability: the model, treat all, treat none (Vickers & Elkin)."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot(curve["threshold"], curve["model"], color=POS, lw=2, label="model")
    ax.plot(curve["threshold"], curve["treat_all"], color=NEG, lw=1.5, ls="--", label="treat all")
    ax.plot(curve["threshold"], curve["treat_none"], color="black", lw=1, ls=":", label="treat none")
    ax.axvline(threshold, color=ACCENT, ls="--", lw=1, label=f"operating threshold {threshold:.3f}")
    ax.set(
        xlabel="threshold probability",
        ylabel="net benefit",
        title=f"Decision curve ({where}, natural prevalence)",
        xlim=(0, 1),
        ylim=(-0.05 * max(prevalence, 0.05), 1.15 * max(prevalence, 0.01)),
    )
    ax.legend(fontsize=8)
    return fig


def subgroup_auc(subgroups: dict, where: str = "test") -> plt.Figure:
    """AUC with 95% CI per subgroup; groups with too few cases are listed as such, and an interval that did not
    hold its estimate (widened to it) is marked."""
    names, aucs, lows, highs, widened = [], [], [], [], []
    for family, groups in subgroups.items():
        for group, res in groups.items():
            auc = res.get("auc")
            aucs.append(np.nan if auc is None else auc)
            lows.append(np.nan if res.get("ci_low") is None else res["ci_low"])
            highs.append(np.nan if res.get("ci_high") is None else res["ci_high"])
            widened.append(res.get("contains_estimate") is False)
            names.append(f"{family}: {group} (n={res['n_images']})" + (" *" if widened[-1] else ""))
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.4 * max(len(names), 1)))
    y = np.arange(len(names))
    aucs, lows, highs = map(np.array, (aucs, lows, highs))
    ok = ~np.isnan(lows) & ~np.isnan(aucs)
    ax.errorbar(aucs[ok], y[ok], xerr=error_bars(aucs[ok], lows[ok], highs[ok]), fmt="o", color=POS, capsize=3)
    ax.plot(aucs[~ok & ~np.isnan(aucs)], y[~ok & ~np.isnan(aucs)], "o", color="gray")
    for yi in y[np.isnan(aucs)]:
        ax.text(0.52, yi, "n too small", va="center", fontsize=8, color="gray")
    ax.set_yticks(y, names, fontsize=8)
    ax.axvline(0.5, ls=":", color="gray")
    title = f"Subgroup AUC ({where})"
    if any(widened):
        title += "\n* bootstrap interval beside its estimate, drawn widened to it"
    lowest = np.nanmin(np.r_[lows, aucs, 0.5])  # a subgroup scored below chance stays in view
    ax.set(xlim=(min(0.5, lowest - 0.02), 1.0), xlabel="ROC AUC (95% CI)", title=title)
    ax.invert_yaxis()
    return fig


def text_figure(text: str, title: str) -> plt.Figure:
    """Monospaced text as a figure (the model summary when graphviz is absent)."""
    lines = text.splitlines() or [""]
    fig, ax = plt.subplots(figsize=(10, 0.3 + 0.16 * len(lines)))
    ax.axis("off")
    ax.text(0, 1, "\n".join(lines), family="monospace", fontsize=7, va="top")
    ax.set_title(title)
    return fig


def roc_against_baseline(
    y: np.ndarray,
    p: np.ndarray,
    baseline: np.ndarray,
    auc: dict,
    baseline_auc: dict,
    paired: dict,
    where: str = "out of fold",
) -> plt.Figure:
    """ROC curves of the model and the pixel baseline on the same images, with the paired AUC difference."""
    fig, ax = plt.subplots(figsize=(5, 5))
    for scores, result, name, color in ((p, auc, "model", POS), (baseline, baseline_auc, "pixel baseline", NEG)):
        if not _both_classes(y):
            _one_class_note(ax, y, "ROC curve")
            break
        fpr, tpr, _ = roc_curve(y, scores)
        ci = f" ({result['ci_low']:.3f}-{result['ci_high']:.3f})" if result.get("ci_low") is not None else ""
        ax.plot(fpr, tpr, color=color, lw=2, label=f"{name}: AUC {result['auc']:.3f}{ci}")
    ax.plot([0, 1], [0, 1], ls=":", color="gray", label="chance")
    if paired["difference"] is not None and paired["ci_low"] is not None:
        ax.text(0.35, 0.2, f"paired difference {paired['difference']:+.3f}\n95% CI {paired['ci_low']:+.3f} to "
                f"{paired['ci_high']:+.3f}", fontsize=9, transform=ax.transAxes)  # fmt: skip
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=f"ROC curve ({where})", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    return fig


def fold_aucs(folds: list[dict]) -> plt.Figure:
    """Each fold's AUC, model beside baseline, with the fold's positives."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(len(folds))
    for offset, key, name, color in ((-0.2, "auc", "model", POS), (0.2, "baseline_auc", "pixel baseline", NEG)):
        values = [f[key] if f[key] is not None else np.nan for f in folds]
        ax.bar_label(ax.bar(x + offset, values, 0.4, color=color, label=name), fmt="%.2f", fontsize=8)
    ax.set_xticks(x, [f"fold {f['fold']}\n{f['n_positive']} pos / {f['n_images']}" for f in folds], fontsize=8)
    ax.axhline(0.5, ls=":", color="gray")
    ax.set(ylabel="ROC AUC", ylim=(0, 1.1), title="AUC per fold (each scored by a model that never saw it)")
    ax.legend(fontsize=8, loc="lower right")
    return fig
