"""Numbers as people read them in logs and reports."""

from __future__ import annotations


def fmt(value: float | None, digits: int = 3) -> str:
    """``0.9876`` -> ``0.988``; ``None`` -> ``n/a``."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def fmt_auc(auc: dict) -> str:
    """An AUC with its confidence interval: ``0.912 (95% CI 0.890-0.931)``, or the bare value without one."""
    if auc.get("ci_low") is None:
        return fmt(auc.get("auc"))
    return f"{fmt(auc['auc'])} (95% CI {fmt(auc['ci_low'])}-{fmt(auc['ci_high'])})"
