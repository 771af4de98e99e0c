"""The registry's lifecycle on a real sqlite registry: @candidate, promotion, rollback, what scoring then uses."""

import pytest

from cardio_kedro import registry
from cardio_kedro.common.errors import UserError

NAME = "Cardiomegaly-classifier"


@pytest.fixture
def client(tmp_path):
    """A registry with three training runs, each registering the classifier and its serving model."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    experiment = client.create_experiment("Cardiomegaly")
    for name in (NAME, registry.service_name(NAME)):
        client.create_registered_model(name)
    for _ in range(3):
        run = client.create_run(experiment).info.run_id
        for name in (NAME, registry.service_name(NAME)):
            client.create_model_version(name, f"runs:/{run}/model", run)
    client.tracking_uri_for_tests = uri
    return client


def _aliases(client, name=NAME):
    return {alias: registry.alias_version(client, name, alias) for alias in (registry.CANDIDATE, registry.CHAMPION)}


def test_candidate_promote_and_rollback_move_both_models_aliases(client):
    registry.set_candidate(client, NAME, "1")
    assert _aliases(client) == {"candidate": "1", "champion": None}
    assert registry.promote(client, NAME) == "1"  # the candidate by default
    registry.set_candidate(client, NAME, "3")
    registry.promote(client, NAME, "3", reason="external validation run abc: every gate passed")
    assert _aliases(client) == {"candidate": "3", "champion": "3"}
    assert _aliases(client, registry.service_name(NAME)) == {"candidate": "3", "champion": "3"}  # same run's
    assert client.get_model_version(NAME, "3").tags[registry.PROMOTED_TAG].startswith("external validation run abc")
    assert registry.rollback(client, NAME) == "1"
    assert _aliases(client)["champion"] == "1" and _aliases(client, registry.service_name(NAME))["champion"] == "1"
    with pytest.raises(UserError, match=r"no earlier @champion to roll back to \(champion history: \['1'\]\)"):
        registry.rollback(client, NAME)
    with pytest.raises(UserError, match="has no version 7 \\(its versions: 1, 2, 3\\)"):
        registry.promote(client, NAME, "7")
    assert "@champion: version 1" in registry.status(client, NAME)


def test_promote_without_a_candidate_says_what_to_give(client):
    with pytest.raises(UserError, match="has no @candidate version: give --version N \\(its versions: 1, 2, 3\\)"):
        registry.promote(client, NAME)


def test_the_command_line_promotes_and_rolls_back(client, tmp_path, capsys):
    uri = client.tracking_uri_for_tests
    registry.set_candidate(client, NAME, "2")
    assert registry.main(["promote", "--finding", "Cardiomegaly", "--tracking-uri", uri]) == 0
    assert registry.main(["promote", "--finding", "Cardiomegaly", "--version", "3", "--tracking-uri", uri]) == 0
    assert registry.main(["rollback", "--finding", "Cardiomegaly", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert "Cardiomegaly-classifier/2 is @champion" in out and "rolled back to version 2" in out
    assert _aliases(client)["champion"] == "2"
    with pytest.raises(UserError, match="no registered model Effusion-classifier"):
        registry.main(["status", "--finding", "Effusion", "--tracking-uri", uri])


def test_scoring_uses_the_champion_where_there_is_one(client, tmp_path, monkeypatch):
    """Inference and external validation take @champion over the newest model (and say which version)."""
    import mlflow

    from cardio_kedro.datasets import InferenceModelDataset

    monkeypatch.setenv("MLFLOW_TRACKING_URI", client.tracking_uri_for_tests)
    mlflow.set_tracking_uri(client.tracking_uri_for_tests)  # another test of this process may have set one
    scoring = InferenceModelDataset(model_path=str(tmp_path / "classifier.keras"), champion_of="Cardiomegaly")
    external = InferenceModelDataset(model_path=str(tmp_path / "none.keras"), latest_registered_of="Cardiomegaly")
    assert scoring._champion_uri() is None  # no champion yet: the newest local classifier, as before
    assert external._uri() == f"models:/{NAME}/3"  # the newest a training run registered
    registry.promote(client, NAME, "2")
    assert scoring._uri() == external._uri() == f"models:/{NAME}@champion"
    pinned = InferenceModelDataset(model_path="x", model_uri=f"models:/{NAME}/1", champion_of="Cardiomegaly")
    assert pinned._uri() == f"models:/{NAME}/1"  # a given model_uri wins
