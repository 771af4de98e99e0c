"""The model to score with: the latest calibrated classifier of the catalog, or an MLflow URI."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from cardio_kedro.cohort.findings import findings_name
from cardio_kedro.common.errors import UserDatasetError

logger = logging.getLogger(__name__)


def model_versions(folder: Path) -> list[Path]:
    """The versions of the saved model at ``folder`` (``data/06_models/classifier.keras``), oldest first: a version
    holds the model file; the folders of runs that did not complete (see run_guard.py) are not beside them."""
    return sorted(p for p in folder.iterdir() if (p / folder.name).exists()) if folder.is_dir() else []


def _latest_version(folder: Path) -> Path | None:
    versions = model_versions(folder)
    return versions[-1] if versions else None


MODEL_URI_FORMS = (
    "models:/<name>/<version>, models:/<name>@<alias>, models:/<name>/latest, models:/<name> (its latest "
    "version), models:/m-<model id>, runs:/<run id>/<path>"
)


def normalise_model_uri(uri: str) -> str:
    """``uri`` in a form MLflow resolves: a bare ``models:/<name>`` means its latest version."""
    if not uri.startswith(("models:/", "runs:/")):
        raise UserDatasetError(f"model_uri '{uri}' is not an MLflow model URI. Accepted forms: {MODEL_URI_FORMS}")
    rest = uri[len("models:/") :] if uri.startswith("models:/") else None
    if rest and "/" not in rest and "@" not in rest and not rest.startswith("m-"):
        return f"models:/{rest}/latest"
    return uri


def _registry_hint() -> str:
    """The registered models and their versions and aliases, to show next to an unresolved URI."""
    from mlflow import MlflowClient

    try:
        models = MlflowClient().search_registered_models()
    except Exception:  # noqa: BLE001 - a hint only: the registry may be unreachable
        return ""
    if not models:
        return "The registry holds no model: run 'kedro run --pipelines=training' first."
    described = []
    for model in models:
        latest = max((int(v.version) for v in model.latest_versions or []), default=None)
        aliases = ", ".join(f"@{a}" for a in (model.aliases or {}))
        described.append(f"{model.name} (latest version {latest}{'; ' + aliases if aliases else ''})")
    return "Registered models: " + "; ".join(described) + "."


def _label(uri: str, info) -> str:
    """``<name>/<version>`` for a registry URI, the URI itself otherwise (the ``model_version`` column)."""
    from mlflow import MlflowClient

    rest = uri[len("models:/") :] if uri.startswith("models:/") else ""
    if not rest or rest.startswith("m-"):
        return uri
    client = MlflowClient()
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return f"{name}/{client.get_model_version_by_alias(name, alias).version}"
    name, version = rest.split("/", 1)
    if version == "latest":
        version = max(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
    return f"{name}/{version}"


RECALIBRATED_TAG = "recalibrated_for"  # a version recalibrated for one site (the external_validation pipeline)


def _newest_trained_version(name: str) -> str:
    """``models:/<name>/<version>`` of the newest version a training run registered: versions recalibrated
    for a site (tagged ``recalibrated_for``) are that site's, not the model to validate elsewhere."""
    from mlflow import MlflowClient

    versions = MlflowClient().search_model_versions(f"name='{name}'")
    trained = [int(v.version) for v in versions if RECALIBRATED_TAG not in (v.tags or {})]
    if not trained:
        raise UserDatasetError(
            f"No registered {name} to score: run 'kedro run --pipelines=training' (it registers one) or pass "
            f"--params=model_uri=<URI>. {_registry_hint()} Accepted forms: {MODEL_URI_FORMS}"
        )
    return f"models:/{name}/{max(trained)}"


class InferenceModelDataset(AbstractDataset[None, dict]):
    """``load`` returns ``{"model", "threshold", "version", "source", "name", "model_version", "run_id",
    "run_metrics"}``.

    The threshold is the one saved inside the model (its ``Calibration`` layer), so a model is
    never scored with another model's threshold; it is ``None`` for a model that has none (an
    uncalibrated network), and the inference node then asks for an explicit ``inference.threshold``.
    With ``model_uri`` (any form in ``MODEL_URI_FORMS``, resolved by ``mlflow.models.get_model_info``)
    the model comes from MLflow; without, ``<findings>-classifier@champion`` when the registry has one
    (``champion_of`` or ``latest_registered_of``: the target findings; ``cardio_kedro.registry``), else the
    newest version of the catalog's ``classifier``, or, with ``latest_registered_of``, the newest version of
    ``<findings>-classifier`` that a training run registered (not one recalibrated for a site). A model from
    MLflow comes with its registered ``name`` and ``model_version`` (registry URIs), the ``run_id`` that
    logged it and that run's metrics (``run_metrics``: the internal figures the external validation report
    sets beside its own).
    """

    def __init__(
        self,
        model_path: str,
        model_uri: str | None = None,
        latest_registered_of: str | list[str] | None = None,
        champion_of: str | list[str] | None = None,
        metadata: dict[str, Any] | None = None,
    ):
        self._model_path = Path(model_path)
        self._model_uri = model_uri or None
        self._registered = None if latest_registered_of is None else f"{findings_name(latest_registered_of)}-classifier"
        self._champion = None if champion_of is None else f"{findings_name(champion_of)}-classifier"
        self.metadata = metadata

    def _champion_uri(self) -> str | None:
        """``models:/<name>@champion`` when no ``model_uri`` was given and the registry has a champion."""
        name = self._champion or self._registered
        if self._model_uri or name is None:
            return None
        from mlflow import MlflowClient

        from cardio_kedro.registry import CHAMPION, alias_version

        try:
            version = alias_version(MlflowClient(), name, CHAMPION)
        except Exception:  # noqa: BLE001 - no registry reachable: the other defaults apply
            return None
        return f"models:/{name}@{CHAMPION}" if version else None

    def _uri(self) -> str | None:
        """The MLflow URI to load (``model_uri``, the champion, or the newest version a training run registered),
        or ``None``: the newest version of the catalog's classifier."""
        if self._model_uri:
            return normalise_model_uri(self._model_uri)
        champion = self._champion_uri()
        if champion or self._registered is None:
            return champion
        return _newest_trained_version(self._registered)

    def _local_version(self) -> Path:
        """The newest saved version of the catalog's classifier; a ``UserDatasetError`` saying what to do if none."""
        version = _latest_version(self._model_path)
        if version is None:
            raise UserDatasetError(
                f"No trained model in {self._model_path}: run 'kedro run --pipelines=training' first "
                "or pass --params=model_uri=models:/<finding>-classifier/<version>"
            )
        return version

    def _describe(self) -> dict[str, Any]:
        return {"model_path": str(self._model_path), "model_uri": self._model_uri}

    def check(self) -> str:
        """Which model a load would give, found without loading it (a run checks this before it reads any data);
        a ``UserDatasetError`` that says what to do where there is none."""
        uri = self._uri()
        if uri is not None:
            import mlflow
            from mlflow.exceptions import MlflowException

            try:
                info = mlflow.models.get_model_info(uri)
            except (MlflowException, OSError) as exc:
                raise UserDatasetError(
                    f"model_uri '{self._model_uri or uri}' does not resolve: {str(exc).splitlines()[0]}. "
                    f"{_registry_hint()} Accepted forms: {MODEL_URI_FORMS}"
                ) from None
            return f"{uri} (version {_label(uri, info)})" if "@" in uri else uri
        return str(self._local_version())

    def _load(self) -> dict:
        from cardio_kedro.modeling import operating_threshold

        provenance = {"name": None, "model_version": None, "run_id": None, "run_metrics": {}}
        uri = self._uri()
        if uri is not None:
            model, version, source, provenance = self._load_mlflow(uri)
        else:
            model, version, source = self._load_latest()
        return {"model": model, "threshold": operating_threshold(model), "version": version, "source": source,
                **provenance}  # fmt: skip

    def _load_latest(self):
        version = self._local_version()
        from cardio_kedro.modeling import load_model

        return load_model(version / self._model_path.name), version.name, str(version)

    def _load_mlflow(self, uri: str):
        import mlflow
        from mlflow.exceptions import MlflowException

        import cardio_kedro.modeling.layers  # noqa: F401 - registers the custom layers for mlflow.keras

        try:
            info = mlflow.models.get_model_info(uri)
        except (MlflowException, OSError) as exc:
            raise UserDatasetError(
                f"model_uri '{self._model_uri or uri}' does not resolve: {str(exc).splitlines()[0]}. "
                f"{_registry_hint()} Accepted forms: {MODEL_URI_FORMS}"
            ) from None
        if "keras" not in info.flavors:
            raise UserDatasetError(
                f"model_uri '{self._model_uri}' is not a Keras classifier (flavors: {', '.join(info.flavors)}); "
                "the pyfunc service model is served with 'mlflow models serve', the batch pipeline scores "
                "models:/<finding>-classifier/<version>"
            )
        label = _label(uri, info)
        name, _, model_version = label.partition("/") if uri.startswith("models:/") and label != uri else ("", "", "")
        run_metrics = dict(mlflow.MlflowClient().get_run(info.run_id).data.metrics) if info.run_id else {}
        provenance = {"name": name or None, "model_version": model_version or None, "run_id": info.run_id,
                      "run_metrics": run_metrics}  # fmt: skip
        return mlflow.keras.load_model(uri), label, self._model_uri or uri, provenance

    def _save(self, data: None) -> None:
        raise DatasetError("InferenceModelDataset is read-only")
