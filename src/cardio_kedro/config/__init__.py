"""Parameters: the schema, where values come from, ``--params`` parsing and docs/parameters.md.

- ``schema``: one frozen pydantic model per parameter group; ``ProjectParams`` holds every rule that
  spans groups.
- ``sources``: ``ConfigSources`` (which conf file sets a key), ``validate_parameters`` and
  ``ParameterError`` (every bad key, its value and the file that sets it).
- ``runtime``: ``--params`` text parsed and trees merged as ``kedro run`` does.
- ``docs``: docs/parameters.md (``python -m cardio_kedro.config``).

May import: ``common``, ``cohort`` (the NIH facts and finding names), pydantic, yaml, omegaconf;
never kedro's session, keras or mlflow.
"""

from cardio_kedro.config.runtime import (
    RunConf,
    as_params,
    deep_merge,
    parse_runtime_params,
    record_run_conf,
    run_conf,
)
from cardio_kedro.config.schema import (
    BaselineParams,
    CohortParams,
    CrossValidationParams,
    DataProcessingParams,
    ExternalParams,
    InferenceParams,
    ModelTrainingParams,
    PhantomParams,
    ProjectParams,
    QualityGuardParams,
    RebalanceParams,
    ReportingParams,
    SplitParams,
    SweepDimension,
    SweepParams,
)
from cardio_kedro.config.sources import ConfigSources, ParameterError, has_parameter, validate_parameters

__all__ = [
    "BaselineParams",
    "CohortParams",
    "CrossValidationParams",
    "ConfigSources",
    "DataProcessingParams",
    "ExternalParams",
    "InferenceParams",
    "ModelTrainingParams",
    "ParameterError",
    "PhantomParams",
    "ProjectParams",
    "QualityGuardParams",
    "RebalanceParams",
    "ReportingParams",
    "SplitParams",
    "SweepDimension",
    "SweepParams",
    "RunConf",
    "as_params",
    "deep_merge",
    "record_run_conf",
    "run_conf",
    "has_parameter",
    "parse_runtime_params",
    "validate_parameters",
]
