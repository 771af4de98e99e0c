"""Evaluation shared by the reporting pipelines: metrics with patient-level CIs, attention localization,
the HTML report templates."""
