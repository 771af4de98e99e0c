"""Project settings."""

import warnings

from kedro.config import OmegaConfigLoader

from cardio_kedro.hooks import MlflowTagHooks
from cardio_kedro.preflight import PreflightHooks
from cardio_kedro.run_guard import RunGuardHooks
from cardio_kedro.run_summary import RunSummaryHooks

# noise of the installed stack on every command, not actionable by a user of this project
warnings.filterwarnings("ignore", message=r"register_new_resolver\(\) is deprecated", category=UserWarning)
warnings.filterwarnings("ignore", message=r".*Add type hints to the `predict` method", category=UserWarning)

HOOKS = (PreflightHooks(), MlflowTagHooks(), RunSummaryHooks(), RunGuardHooks())

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # an environment (nih, local) overrides single keys, not whole parameter groups
    "merge_strategy": {"parameters": "soft", "catalog": "soft"},
}
