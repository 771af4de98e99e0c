"""Project pipelines."""

import importlib
import importlib.resources
import warnings

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

TRAINING_STAGES = ("data_processing", "model_training", "reporting")
MULTILABEL_STAGES = ("data_processing", "model_training", "multilabel_reporting")
COMPOSITES = ("training", "demo", "multilabel", "cross_validation", "external_validation")


def _pipeline_packages() -> list[str]:
    root = importlib.resources.files("cardio_kedro.pipelines")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))


def register_pipelines() -> dict[str, Pipeline]:
    """Register every pipeline under ``pipelines/``; ``training`` (the default) runs the three stages.

    ``demo`` is ``phantom_cohort`` + ``training``: the demo cohort is generated (anew) and trained on,
    the whole flow in one kedro viz view. ``multilabel`` is ``training`` with ``multilabel_reporting``
    in place of ``reporting``: the run of several ``target_findings``. ``cross_validation`` is each
    stage's k-fold variant (``data_processing.split.method: kfold``): models per fold, out-of-fold
    figures, the final model calibrated out of fold. ``external_validation`` is each stage's external
    variant: a second cohort (``external.cohort_dir``) scored by a registered model, reported beside its
    internal figures, recalibrated for that site on request. ``training`` alone generates
    the demo cohort only when it is missing (``PreflightHooks``).

    Kedro 1.7 imports only the pipelines named on the command line and keeps that registry for the
    process, so the rest (and the stages of the composite ``training``) are imported here too; an
    import error in any of them is raised.
    """
    with warnings.catch_warnings():
        # a composite name has no folder of its own under pipelines/
        warnings.filterwarnings("ignore", message=r".*cardio_kedro\.pipelines\.(" + "|".join(COMPOSITES) + ")")
        pipelines = find_pipelines()
    for name in _pipeline_packages():
        if name not in pipelines:
            pipelines[name] = importlib.import_module(f"cardio_kedro.pipelines.{name}").create_pipeline()
    pipelines["training"] = sum((pipelines[name] for name in TRAINING_STAGES), Pipeline([]))
    pipelines["demo"] = pipelines["phantom_cohort"] + pipelines["training"]
    pipelines["multilabel"] = sum((pipelines[name] for name in MULTILABEL_STAGES), Pipeline([]))
    for composite in ("cross_validation", "external_validation"):
        pipelines[composite] = sum(
            (
                getattr(
                    importlib.import_module(f"cardio_kedro.pipelines.{name}.pipeline"), f"create_{composite}_pipeline"
                )()
                for name in TRAINING_STAGES
            ),
            Pipeline([]),
        )
    pipelines["__default__"] = pipelines["training"]
    return pipelines
