"""Project pipelines: every folder under ``pipelines/``, and their sums."""

import importlib
import importlib.resources

from kedro.pipeline import Pipeline

SUMS = {  # pipelines made of folders' pipelines, in order
    "training": ("data_processing", "model_training", "reporting"),
    "demo": ("phantom_cohort", "data_processing", "model_training", "reporting"),
    "multilabel": ("data_processing", "model_training", "multilabel_reporting"),
}


def pipeline_folders() -> list[str]:
    """The pipeline folders under ``pipelines/``: each has a ``create_pipeline``."""
    root = importlib.resources.files("cardio_kedro.pipelines")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))


def register_pipelines() -> dict[str, Pipeline]:
    """Register every pipeline under ``pipelines/``; ``training`` (the default) runs three of them.

    ``training`` is ``data_processing`` + ``model_training`` + ``reporting``: one patient-wise split, the
    model, its report. ``demo`` is ``phantom_cohort`` + ``training``: the demo cohort generated (anew)
    and trained on, the whole flow in one kedro viz view. ``multilabel`` is ``training`` with
    ``multilabel_reporting`` in place of ``reporting``: the run of several ``target_findings``.
    ``cross_validation`` and ``external_validation`` are pipelines of their own (their folders reuse
    data_processing's cohort nodes); ``training`` alone generates the demo cohort only when it is
    missing (``PreflightHooks``).

    Every folder is imported here, as ``find_pipelines`` does, but always all of them: Kedro 1.7's
    ``find_pipelines`` imports only the pipelines named on the command line, and a sum needs its parts.
    An import error in any pipeline is raised.
    """
    pipelines = {
        name: importlib.import_module(f"cardio_kedro.pipelines.{name}").create_pipeline() for name in pipeline_folders()
    }
    for name, parts in SUMS.items():
        pipelines[name] = sum((pipelines[part] for part in parts), Pipeline([]))
    pipelines["__default__"] = pipelines["training"]
    return pipelines
