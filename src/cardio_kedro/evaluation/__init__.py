"""Evaluation shared by both reporting pipelines: metrics with patient-level CIs, calibration (prior shift,
Platt scaling, ECE, slope), thresholds and net benefit, attention localization, the HTML report
templates.

May import: ``common``, ``cohort``; numpy, scipy, scikit-learn, jinja2; never kedro, keras, tensorflow,
jax or mlflow.
"""
