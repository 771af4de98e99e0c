"""Project hooks."""

from __future__ import annotations

import logging
from typing import Any

from kedro.framework.hooks import hook_impl

logger = logging.getLogger(__name__)


class DemoCohortHooks:
    """Generates the offline phantom cohort when the demo runs on a fresh clone."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        if "cohort" not in pipeline.inputs() or catalog.exists("cohort"):
            return
        params = catalog.load("parameters")
        phantoms = params.get("phantoms") or {}
        if not phantoms.get("generate_if_missing") or (run_params.get("runtime_params") or {}).get("cohort_dir"):
            return  # the cohort dataset's load raises a clear error naming what to do
        from cardio_kedro.pipelines.phantom_cohort.nodes import generate_phantom_cohort

        logger.info("No demo cohort yet: generating %d phantom patients (once)", phantoms["n_patients"])
        catalog.save("cohort", generate_phantom_cohort(phantoms))
