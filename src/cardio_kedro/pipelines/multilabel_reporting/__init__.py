"""multilabel_reporting pipeline: a multi-label model + test split -> per-finding metrics, plots, attention, report."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
