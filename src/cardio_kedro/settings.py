"""Project settings."""

import os
import warnings

from kedro.config import OmegaConfigLoader

from cardio_kedro.cohort.findings import findings_name
from cardio_kedro.common.errors import install_excepthook
from cardio_kedro.common.log_filters import install_resume_advice
from cardio_kedro.hooks.mlflow_live import MlflowLiveHooks
from cardio_kedro.hooks.mlflow_tags import MlflowTagHooks
from cardio_kedro.hooks.preflight import PreflightHooks
from cardio_kedro.hooks.run_guard import RunGuardHooks
from cardio_kedro.hooks.run_lock import RunLockHooks
from cardio_kedro.hooks.run_summary import RunSummaryHooks

# noise of the installed stack on every command, not actionable by a user of this project
warnings.filterwarnings("ignore", message=r"register_new_resolver\(\) is deprecated", category=UserWarning)
warnings.filterwarnings("ignore", message=r".*Add type hints to the `predict` method", category=UserWarning)


# TensorFlow's C++ start-up lines (oneDNN, no CUDA driver on a CPU machine) on every command; errors still show
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The environment as the process started. MLflow writes MLFLOW_TRACKING_URI into os.environ when a
# run sets its store, so a second Kedro session in the same process (a notebook, the tests) would
# otherwise inherit the first project's store instead of its own.
_STARTUP_ENVIRON = dict(os.environ)


def _env(name: str, default: str | None = None) -> str | None:
    """``${env:NAME,default}`` in conf: an environment variable as the process started (MLflow's own
    ``MLFLOW_TRACKING_URI`` points runs at a team's server)."""
    return _STARTUP_ENVIRON.get(name) or default


def _findings_name(value) -> str:
    """``${findings_name:...}`` in conf: the experiment name of ``target_findings`` (``Cardiomegaly``,
    ``Cardiomegaly+Effusion``, ``all-findings``)."""
    from omegaconf import ListConfig, OmegaConf

    return findings_name(OmegaConf.to_container(value) if isinstance(value, ListConfig) else value)


# A user error ends a command with its message, not a traceback: from here, before kedro-mlflow reads its
# configuration (a misspelled target finding fails inside it), after Kedro's rich traceback is installed.
install_excepthook()
install_resume_advice()  # Kedro's --from-nodes advice after a failure would load an older run's inputs

# RunLockHooks last: of the hooks that go first (tryfirst), pluggy calls the last registered first, and the
# project lock comes before everything (the preflight checks may write the demo cohort)
HOOKS = (PreflightHooks(), MlflowTagHooks(), MlflowLiveHooks(), RunSummaryHooks(), RunGuardHooks(), RunLockHooks())

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # an environment (nih, local) overrides single keys, not whole parameter groups
    "merge_strategy": {"parameters": "soft", "catalog": "soft"},
    "custom_resolvers": {"env": _env, "findings_name": _findings_name},
    "config_patterns": {"mlflow": ["mlflow*", "mlflow*/**", "**/mlflow*"]},  # kedro-mlflow's, read by hooks/ too
}


def load_parameters(conf_source: str, env: str | None = None, runtime_params: dict | None = None) -> dict:
    """Every parameter of the project as a run reads them: this project's config loader on ``conf_source``,
    ``env`` merged over base key by key, ``runtime_params`` (``--params``) over both. Benchmarks measure
    ``env="base"`` (the shipped settings, no conf/local)."""
    loader = CONFIG_LOADER_CLASS(conf_source=str(conf_source), env=env, runtime_params=runtime_params or {},
                                 **CONFIG_LOADER_ARGS)  # fmt: skip
    return dict(loader["parameters"])
