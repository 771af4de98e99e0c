"""What a training run logs to MLflow about its models: pinned requirements, no inference by loading."""

from __future__ import annotations

from importlib.metadata import version

import pytest

from cardio_kedro.modeling.serving import SERVING_PACKAGES, serving_requirements


def test_serving_requirements_pin_keras_its_backend_and_the_decoders():
    pins = dict(pin.split("==") for pin in serving_requirements("tensorflow"))
    assert pins["keras"] == version("keras") and pins["tensorflow"] == version("tensorflow")
    assert {"pydicom", "opencv-python-headless", "pylibjpeg-openjpeg"} <= set(pins)
    assert set(SERVING_PACKAGES) <= set(pins)  # every one of them is installed here
    assert "tensorflow" not in dict(p.split("==") for p in serving_requirements("jax"))
    with pytest.raises(ValueError, match="unknown Keras backend 'theano'"):
        serving_requirements("theano")


@pytest.mark.slow
@pytest.mark.kedro_session
def test_both_registered_models_carry_the_pinned_requirements(trained_project):
    from mlflow.artifacts import download_artifacts
    from mlflow.tracking import MlflowClient

    store = f"sqlite:///{trained_project / 'mlflow.db'}"
    client = MlflowClient(store, registry_uri=store)
    expected = set(serving_requirements("tensorflow"))
    for name in ("Cardiomegaly-classifier", "Cardiomegaly-classifier-service"):
        (latest, *_) = client.search_model_versions(f"name='{name}'", order_by=["version_number DESC"])
        source = client.get_model_version_download_uri(name, latest.version)
        requirements = download_artifacts(artifact_uri=f"{source}/requirements.txt", tracking_uri=store)
        lines = set(open(requirements).read().split())
        assert expected <= lines, f"{name}: {sorted(expected - lines)} missing"
        assert any(line.startswith("mlflow==") for line in lines), name
