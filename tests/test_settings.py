"""Configuration: the target finding names both the parameter and the MLflow experiment."""

import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

pytestmark = pytest.mark.kedro_session


def _resolved(project, runtime_params=None):
    bootstrap_project(project)
    with KedroSession.create(project_path=project, runtime_params=runtime_params or {}) as session:
        context = session.load_context()
        return context.params["target_findings"], context.config_loader["mlflow"]["tracking"]["experiment"]["name"]


def test_target_findings_name_the_experiment(tiny_project):
    assert _resolved(tiny_project) == ("Cardiomegaly", "Cardiomegaly")
    (tiny_project / "conf" / "local" / "globals.yml").write_text("target_findings: Effusion\n")
    assert _resolved(tiny_project) == ("Effusion", "Effusion")
    assert _resolved(tiny_project, {"target_findings": "Edema"}) == ("Edema", "Edema")
    # several findings: the command-line form (NIH's separator), a YAML list, and all 14
    both = "Effusion|Cardiomegaly"
    assert _resolved(tiny_project, {"target_findings": both}) == (both, "Cardiomegaly+Effusion")
    (tiny_project / "conf" / "local" / "globals.yml").write_text("target_findings: [Edema, Mass]\n")
    assert _resolved(tiny_project) == (["Edema", "Mass"], "Edema+Mass")
    assert _resolved(tiny_project, {"target_findings": "all"}) == ("all", "all-findings")


def test_nih_environment_overrides_single_keys(tiny_project):
    bootstrap_project(tiny_project)
    with KedroSession.create(project_path=tiny_project, env="nih") as session:
        params = session.load_context().params
    assert params["image_size"] == 224
    assert params["model_training"]["model"]["backbone_weights"] == "imagenet"
    assert params["model_training"]["model"]["attention_units"] == [128, 32, 16, 1]  # kept from base


def test_mlflow_tracking_uri_points_runs_at_a_server(monkeypatch):
    """The variable as the process started names the store; what MLflow writes later does not move it."""
    import importlib

    from kedro.config import OmegaConfigLoader

    from cardio_kedro import settings
    from tests.helpers import PROJECT_ROOT

    def tracking_uri() -> str:
        loader = OmegaConfigLoader(str(PROJECT_ROOT / "conf"), **settings.CONFIG_LOADER_ARGS)
        return loader["mlflow"]["server"]["mlflow_tracking_uri"]

    try:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        importlib.reload(settings)  # as a process started without it
        assert tracking_uri() == "sqlite:///mlflow.db"  # the local store
        monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/mlflow.db")  # as mlflow.set_tracking_uri does
        assert tracking_uri() == "sqlite:///mlflow.db"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.lab.org:5000")
        importlib.reload(settings)  # as a process started with it
        assert tracking_uri() == "http://mlflow.lab.org:5000"
    finally:
        monkeypatch.undo()
        importlib.reload(settings)
