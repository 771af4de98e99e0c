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


def fmt_interval(low: float | None, high: float | None) -> str:
    """``0.890-0.931``; with a negative bound ``-3.770 to -3.406`` (never ``-3.770--3.406``); ``n/a``."""
    if low is None or high is None:
        return "n/a"
    return f"{fmt(low)} to {fmt(high)}" if min(low, high) < 0 else f"{fmt(low)}-{fmt(high)}"


def fmt_paired(paired: dict) -> str:
    """A paired AUC difference (model minus baseline) with its 95% CI: ``+0.041 (95% CI 0.012-0.070)``."""
    value = paired["difference"]
    return "n/a" if value is None else f"{value:+.3f} (95% CI {fmt_interval(paired['ci_low'], paired['ci_high'])})"


def short_key(key: str, width: int = 30) -> str:
    """An image key short enough for a plot title: NIH's file name as is; a long relative path
    (``train/patient00001/study1/view1_frontal.jpg``) as ``…`` and its last ``width`` characters."""
    return key if len(key) <= width else "…" + key[-(width - 1) :]
