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


def render_report(template: str, figures: dict[str, bytes], **context: Any) -> str:
    """One self-contained HTML report: ``template`` rendered with ``context`` and every figure embedded
    (``roc_plot`` shows as "roc plot")."""
    embedded = {name.replace("_", " "): png_data_uri(png) for name, png in figures.items()}
    return _TEMPLATES.get_template(template).render(figures=embedded, **context)


_TEMPLATES = report_templates()
