"""The HTML reports' templates (``templates/``) and how figures are embedded in them."""

from __future__ import annotations

import base64

import jinja2

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
