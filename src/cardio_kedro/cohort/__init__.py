"""What a cohort is, before any model: the NIH facts (findings, columns, file names), target findings and
patient splits, image decoding, cohorts on object storage, undersampling, and the phantom renderer.

May import: ``common``; never kedro, keras, tensorflow, jax or mlflow.
"""
