"""The pipelines, one folder each: ``nodes.py`` (small pure functions) and ``pipeline.py`` (wiring only).

May import: ``common``, ``cohort``, ``config``, ``evaluation``, ``datasets``, ``modeling``; never another
pipeline, never mlflow (what a run logs is declared in the catalog).
"""
