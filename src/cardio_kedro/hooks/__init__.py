"""Kedro hooks, registered in ``settings.py``: parameters and weights checked before a run (``preflight``),
MLflow tags and model registration (``mlflow_tags``), the end-of-run summary (``run_summary``),
interrupts and unfinished outputs (``run_guard``), and process-wide settings (``process``).

May import: ``common``, ``cohort``, ``config``, ``modeling``; never a pipeline's nodes (pipelines are
run by name through Kedro's registry).
"""
