"""Project settings."""

from kedro.config import OmegaConfigLoader

from cardio_kedro.hooks import MlflowTagHooks
from cardio_kedro.preflight import PreflightHooks
from cardio_kedro.run_summary import RunSummaryHooks

HOOKS = (PreflightHooks(), MlflowTagHooks(), RunSummaryHooks())

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # an environment (nih, local) overrides single keys, not whole parameter groups
    "merge_strategy": {"parameters": "soft", "catalog": "soft"},
}
