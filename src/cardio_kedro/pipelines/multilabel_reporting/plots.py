"""Figures of the multi-label report (pure: data in, figure out)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

POS, NEG, ACCENT = "#d62728", "#1f77b4", "#2ca02c"  # the reporting pipeline's colours


def _grid(n: int, ncols: int, size: float) -> tuple[plt.Figure, np.ndarray]:
    nrows = max(1, int(np.ceil(n / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, axes.flat[:n]


def roc_grid(curves: dict[str, tuple[np.ndarray, np.ndarray]], metrics: dict[str, dict], reference: dict) -> plt.Figure:
    """One ROC panel per finding (test split): the curve, its AUC with CI, the operating point, and
    the published CheXNet AUC of that finding beside it."""
    fig, axes = _grid(len(curves), min(len(curves), 4), 3.2)
    for ax, (finding, (y, p)) in zip(axes, curves.items()):
        m = metrics[finding]
        ax.plot([0, 1], [0, 1], ls=":", color="gray")
        auc = m["roc_auc"]
        if auc["auc"] is None:
            ax.text(0.5, 0.5, "one class only", ha="center")
        else:
            fpr, tpr, _ = roc_curve(y, p)
            ax.plot(fpr, tpr, color=POS, lw=2)
            if m.get("specificity") is not None and m.get("sensitivity") is not None:
                ax.plot(1 - m["specificity"], m["sensitivity"], "o", color="black", ms=5)
        text = "n/a" if auc["auc"] is None else f"{auc['auc']:.3f}"
        if auc.get("ci_low") is not None:
            text += f" ({auc['ci_low']:.2f}-{auc['ci_high']:.2f})"
        ref = reference.get(finding)
        title = f"{finding}\nAUC {text}" + (f"; CheXNet {ref:.3f}" if ref else "")
        ax.set_title(title, fontsize=8)
        ax.set(xlim=(0, 1), ylim=(0, 1.01))
        ax.tick_params(labelsize=7)
    fig.suptitle("ROC per finding (test split; dot: operating point chosen on validation)")
    fig.tight_layout()
    return fig


def cooccurrence(labels: pd.DataFrame) -> plt.Figure:
    """``P(column finding | row finding)`` over the cohort's images, with each finding's image count."""
    counts = labels.astype(np.int64).T @ labels.astype(np.int64)  # int8 labels would overflow
    diagonal = np.diag(counts).astype(float)
    conditional = counts / np.maximum(diagonal[:, None], 1)
    names = [f"{c} ({int(n):,})" for c, n in zip(labels.columns, diagonal)]
    k = len(names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * k, 0.8 + 0.5 * k))
    off_diagonal = np.where(np.eye(k, dtype=bool), np.nan, conditional.to_numpy(dtype=float))  # the diagonal is 1
    top = min(1.0, max(0.05, float(np.nanmax(off_diagonal)) if k > 1 else 1.0))
    image = ax.imshow(np.ma.masked_invalid(off_diagonal), cmap="viridis", vmin=0, vmax=top)
    for i in range(k):
        for j in range(k):
            if i != j:
                ax.text(j, i, f"{conditional.iat[i, j]:.2f}", ha="center", va="center", fontsize=6, color="white")
    ax.set_xticks(range(k), list(labels.columns), rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(k), names, fontsize=7)
    ax.set_title("Label co-occurrence: share of the row finding's images that also have the column finding", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    return fig


def finding_curves(history: pd.DataFrame, findings: list[str]) -> plt.Figure:
    """Validation AUC per epoch for every finding and their mean (what the best epoch is chosen on)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    best = history.loc[history["best"].astype(bool), "epoch"]
    axes[0].plot(history["epoch"], history["loss"], "o-", color=NEG, label="train loss")
    axes[0].plot(history["epoch"], history["val_loss"], "o-", color=POS, label="validation loss")
    axes[0].set(xlabel="epoch", ylabel="weighted loss", title="Loss per epoch")
    cmap = plt.get_cmap("tab20")
    for i, finding in enumerate(findings):
        column = f"val_auc.{finding}"
        if column in history:
            axes[1].plot(history["epoch"], history[column], "-", color=cmap(i % 20), lw=1, label=finding)
    axes[1].plot(history["epoch"], history["val_auc"], "k-", lw=2.5, label="mean (best epoch chosen on it)")
    axes[1].set(xlabel="epoch", ylabel="validation AUC", title="Validation AUC per finding")
    for ax in axes:
        if len(best):
            ax.axvline(best.iloc[0], color=ACCENT, ls="--")
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def attention_grid(rows: dict[str, list[tuple[np.ndarray, str]]], ncols: int) -> plt.Figure:
    """Rows: findings; columns: that finding's highest-scoring test images, its own attention map over each."""
    nrows = max(1, len(rows))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.2 * ncols, 2.4 * nrows), squeeze=False)
    for r, (finding, cells) in enumerate(rows.items()):
        for c in range(ncols):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(cells):
                image, title = cells[c]
                ax.imshow(image)
                ax.set_title(title, fontsize=7, color=POS if title.endswith("+") else NEG)
        axes[r, 0].text(-0.08, 0.5, finding, transform=axes[r, 0].transAxes, rotation=90, ha="right", va="center")
    fig.suptitle("Attention per finding on its highest-scoring test images (title: p, + labelled positive)")
    fig.tight_layout(rect=(0.02, 0, 1, 0.98))
    return fig
