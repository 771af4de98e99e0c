"""cross_validation pipeline: the decoded cohort -> patient-wise folds, a model per fold (namespaces
``fold_1`` ... ``fold_<n>``) -> pooled out-of-fold figures, the final model calibrated out of fold, one report.
Its outputs live in the ``cross_validation`` namespace: a run never replaces the training pipeline's model."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
