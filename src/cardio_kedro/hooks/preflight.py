"""Checks before a run touches data or opens its MLflow run; the demo cohort when a fresh clone has none."""

from __future__ import annotations

import logging
from pathlib import Path

from kedro.framework.hooks import hook_impl
from pydantic import BaseModel

from cardio_kedro.common.errors import install_excepthook
from cardio_kedro.config import (
    ConfigSources,
    ParameterError,
    ProjectParams,
    RunConf,
    record_run_conf,
    validate_parameters,
)
from cardio_kedro.hooks.mlflow_tags import TRAINING_PARAMS
from cardio_kedro.hooks.process import keep_arrays_on_the_heap

logger = logging.getLogger(__name__)


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def check_backbone_weights(params: ProjectParams, sources: ConfigSources) -> None:
    """A local ``backbone_weights`` file must exist and load into the configured backbone; ``imagenet`` is fetched.

    Checked before any data is touched: building the headless backbone and loading the file takes
    seconds, where finding out at the training node would come after data processing.
    """
    model = params.model_training.model
    weights = model.backbone_weights
    if weights is None:
        return
    key = "model_training.model.backbone_weights"
    where = f"(set in {sources.locate(key)})"
    if weights == "imagenet":  # fetched now, with a timeout and retries, not after data processing
        from cardio_kedro.modeling.pretrained import fetch_imagenet_weights

        try:
            fetch_imagenet_weights(model.backbone)
        except RuntimeError as exc:
            raise ParameterError(f"'{key}' = 'imagenet' {where}: {exc}") from None
        return
    path = Path(weights)
    if not path.is_file():
        raise ParameterError(
            f"'{key}' = {weights!r}: no such file {where}. Use the path of a local headless "
            f"{model.backbone} weights file, imagenet (needs network access) or null (random initialisation). "
            "conf/small_real's backbone pretrained on phantoms is written by `make phantom-backbone`."
        )
    with path.open("rb") as fh:
        if fh.read(len(HDF5_SIGNATURE)) != HDF5_SIGNATURE:
            raise ParameterError(f"'{key}' = {weights!r}: not an HDF5 (.h5) weights file {where}.")
    from cardio_kedro.modeling import build_backbone

    try:
        build_backbone(model.backbone, params.image_size, weights, model.backbone_width, model.backbone_batchnorm)
    except Exception as exc:
        raise ParameterError(
            f"'{key}' = {weights!r}: does not load into a headless {model.backbone} at {params.image_size} px "
            f"{where}: {type(exc).__name__}: {exc}"
        ) from exc


class PreflightHooks:
    """Checks before anything is read or an MLflow run is opened; generates the demo cohort if missing.

    ``tryfirst``: these run before kedro-mlflow opens its run, so a bad parameter leaves no run behind.
    The parameters are validated once, here, and each node gets its groups as the validated objects
    (``before_node_run``); kedro-mlflow, which logs a node's ``params:`` inputs as MLflow params, sees
    them as the catalog holds them (mappings, flattened into ``model_training.seed``, ...).
    """

    def __init__(self) -> None:
        self._sources = ConfigSources(Path("conf"))  # replaced by the session's in after_context_created
        self._params: ProjectParams | None = None

    @hook_impl
    def after_context_created(self, context) -> None:
        install_excepthook()  # a user error ends the command with its message, not 300 lines of traceback
        keep_arrays_on_the_heap()  # before TensorFlow's data ops can freeze malloc's mmap threshold
        loader = context.config_loader
        self._sources = ConfigSources(
            conf_source=Path(loader.conf_source),
            env=context.env or loader.default_run_env,
            base_env=loader.base_env,
            runtime_params=dict(loader.runtime_params or {}),
        )
        # read by pipelines shaped by conf (cross_validation's folds), which Kedro builds after this hook
        record_run_conf(RunConf(Path(loader.conf_source), context.env or loader.default_run_env,
                                dict(loader.runtime_params or {})))  # fmt: skip

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        params = self._params = validate_parameters(catalog.load("parameters"), self._sources)
        names = set(run_params["pipeline_names"] or ["__default__"])  # Kedro: None when none was named
        check_report_matches_targets(params, names)
        check_folds_match_pipeline(params, names, pipeline)
        check_external_cohort(params, pipeline.inputs())
        check_model_to_score(catalog, pipeline.inputs())
        if TRAINING_PARAMS in pipeline.inputs():
            check_accelerator(params, self._sources)
            check_backbone_weights(params, self._sources)
        reads_demo_cohort = "cohort_folder" in pipeline.inputs() and params.cohort.layout == "nih"
        if reads_demo_cohort and not catalog.exists("cohort_labels"):
            self._generate_demo_cohort(params, catalog)

    @hook_impl
    def before_node_run(self, node, inputs: dict) -> dict | None:
        """The node's parameter groups (``params:model_training``, ``params:data_processing.rebalance``, ...) as
        the objects validated before the run, in place of the catalog's mappings; single values stay."""
        if self._params is None:
            return None
        swapped = {}
        for name in inputs:
            if name.startswith("params:"):
                value = validated_group(self._params, name.removeprefix("params:"))
                if value is not None:
                    swapped[name] = value
        return swapped or None

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._params = None

    @hook_impl
    def on_pipeline_error(self) -> None:
        self._params = None

    @staticmethod
    def _generate_demo_cohort(params, catalog) -> None:
        """Run the ``phantom_cohort`` pipeline first when the demo cohort is missing (a fresh clone)."""
        if not params.phantoms.generate_if_missing or params.cohort_dir:
            return  # the label table's load raises a clear error naming what to do
        from kedro.framework.project import pipelines
        from kedro.runner import SequentialRunner

        logger.info(
            "No cohort yet: running the phantom_cohort pipeline first (%d phantom patients, once; "
            "phantoms.generate_if_missing: false turns this off)",
            params.phantoms.n_patients,
        )
        SequentialRunner().run(pipelines["phantom_cohort"], catalog)


def validated_group(params: ProjectParams, key: str) -> BaseModel | None:
    """The validated parameter group at ``key`` (``model_training``, ``data_processing.rebalance``), or
    ``None`` where ``key`` names a single value or no group."""
    value: object = params
    for part in key.split("."):
        value = getattr(value, part, None)
    return value if isinstance(value, BaseModel) and value is not params else None


BINARY_PIPELINES = {"__default__", "training", "demo", "reporting", "cross_validation", "external_validation"}
MULTILABEL_PIPELINES = {"multilabel", "multilabel_reporting"}
FOLD_NAMESPACE = "cross_validation.fold_"  # the cross_validation pipeline's fold groups: fold_1, fold_2, ...


def check_report_matches_targets(params: ProjectParams, pipeline_names: set[str]) -> None:
    """Stop before any work when the run's pipelines cannot read its model: a binary one (training,
    cross_validation, external_validation) with several target findings, or the multi-label one with one."""
    n = len(params.findings)
    binary = sorted(pipeline_names & BINARY_PIPELINES)
    if n > 1 and binary:
        raise ParameterError(
            f"target_findings {params.target_findings!r} names {n} findings and the {', '.join(binary)} pipeline "
            "is for one: train and report them with the multilabel pipeline (kedro run --pipelines=multilabel; "
            "the demo: kedro run --env=multilabel --pipelines=multilabel)."
        )
    if n == 1 and pipeline_names & MULTILABEL_PIPELINES:
        raise ParameterError(
            f"target_findings {params.target_findings!r} is one finding: the multilabel pipeline needs several "
            "(e.g. --params='target_findings=Cardiomegaly|Effusion', or all); for one, run the training pipeline."
        )


def check_folds_match_pipeline(params: ProjectParams, pipeline_names: set[str], pipeline) -> None:
    """The cross_validation pipeline has one group per fold, built from conf when the pipeline was built;
    stop before any work when the run's ``cross_validation.n_folds`` (a ``--params`` or another
    environment) differs from it."""
    if "cross_validation" not in pipeline_names:
        return
    built = {
        node.namespace.split(".")[1] for node in pipeline.nodes if (node.namespace or "").startswith(FOLD_NAMESPACE)
    }
    wanted = params.cross_validation.n_folds
    if built and len(built) != wanted:
        raise ParameterError(
            f"cross_validation.n_folds is {wanted} for this run but the cross_validation pipeline was built with "
            f"{len(built)} fold groups (the pipeline was built before this run's configuration was known, as "
            "'kedro registry' or a second run in one process builds it): run it with 'kedro run "
            f"--pipelines=cross_validation', or set cross_validation.n_folds: {wanted} in "
            "conf/base/parameters_cross_validation.yml."
        )


def check_external_cohort(params: ProjectParams, inputs: set[str]) -> None:
    """The external_validation pipeline needs its cohort's folder before anything is read."""
    if "external.cohort_folder" in inputs and not params.external.cohort_dir:
        raise ParameterError(
            "The external_validation pipeline scores a second cohort: give its folder with "
            "--params=external.cohort_dir=DIR (its layout: external.cohort.layout, nih by default; for an "
            "environment, set external_cohort_dir in conf/<env>/globals.yml)"
        )


MODELS_TO_SCORE = ("inference_model", "external.model")  # the catalog's models a run scores with
TRAINING_COHORT = "model_input_table"  # external validation fits its pixel baseline on the training cohort


def check_model_to_score(catalog, inputs: set[str]) -> None:
    """Inference and external validation need a trained or registered model, and external validation the
    training cohort its pixel baseline is fitted on: found (not loaded) before any image is read."""
    from cardio_kedro.common.errors import UserDatasetError

    for name in MODELS_TO_SCORE:
        if name in inputs:
            dataset = catalog.get(name)
            dataset = getattr(dataset, "_dataset", dataset)  # a CachedDataset wraps it
            if hasattr(dataset, "check"):
                logger.info("Scoring with %s", dataset.check())
    if "external.model" in inputs and TRAINING_COHORT in inputs and not catalog.exists(TRAINING_COHORT):
        raise UserDatasetError(
            "External validation sets the model beside a pixel baseline fitted on the training cohort, and this "
            "project has none (no data/03_primary/model_input_table.parquet): run 'kedro run --pipelines=training' "
            "(or cross_validation) here first, on the cohort the model was trained on."
        )


def check_accelerator(params: ProjectParams, sources: ConfigSources) -> None:
    """Log what the run trains on; with ``require_accelerator``, stop now when that is only the CPU."""
    from cardio_kedro.modeling.devices import accelerator_problem, device_summary, visible_devices

    devices = visible_devices()
    logger.info("Training on %s", device_summary(devices))
    if not params.model_training.require_accelerator:
        return
    problem = accelerator_problem(devices)
    if problem:
        key = "model_training.require_accelerator"
        raise ParameterError(
            f"'{key}' is true (set in {sources.locate(key)}) but {problem} "
            f"To train on the CPU anyway: --params={key}=false"
        )
