"""external_validation pipeline: a second cohort decoded by data_processing's nodes in the ``external``
namespace, scored by a trained model beside the pixel baseline, recalibrated for the site on request, one
report. Every dataset it writes is ``external.<name>``."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
