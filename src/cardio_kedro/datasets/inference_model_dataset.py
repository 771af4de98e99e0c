"""The model to score with: the latest calibrated classifier of the catalog, or an MLflow URI."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

logger = logging.getLogger(__name__)


def _latest_version(folder: Path) -> Path | None:
    versions = sorted(p for p in folder.glob("*") if p.is_dir()) if folder.is_dir() else []
    return versions[-1] if versions else None


class InferenceModelDataset(AbstractDataset[None, dict]):
    """``load`` returns ``{"model", "threshold", "version", "source"}``.

    The threshold is the one saved inside the model (its ``Calibration`` layer), so a model is
    never scored with another model's threshold; it is ``None`` for a model that has none (an
    uncalibrated network), and the inference node then asks for an explicit ``inference.threshold``.
    With ``model_uri`` (``models:/<finding>-classifier/<version>`` or ``runs:/<id>/model``) the
    model comes from MLflow; without, the newest version of the catalog's ``classifier``.
    """

    def __init__(self, model_path: str, model_uri: str | None = None, metadata: dict[str, Any] | None = None):
        self._model_path = Path(model_path)
        self._model_uri = model_uri or None
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"model_path": str(self._model_path), "model_uri": self._model_uri}

    def _load(self) -> dict:
        from cardio_kedro.modeling import operating_threshold

        model, version, source = self._load_mlflow() if self._model_uri else self._load_latest()
        return {"model": model, "threshold": operating_threshold(model), "version": version, "source": source}

    def _load_latest(self):
        version = _latest_version(self._model_path)
        if version is None:
            raise DatasetError(
                f"No trained model in {self._model_path}: run 'kedro run --pipelines=training' first "
                "or pass --params=model_uri=models:/<finding>-classifier/<version>"
            )
        from cardio_kedro.modeling import load_model

        return load_model(version / self._model_path.name), version.name, str(version)

    def _load_mlflow(self):
        import mlflow
        from mlflow.tracking import MlflowClient

        import cardio_kedro.modeling.layers  # noqa: F401 - registers the custom layers for mlflow.keras

        uri = self._model_uri
        if uri.startswith("models:/"):
            name, _, version = uri[len("models:/") :].partition("/")
            if not version or version == "latest":
                version = max(int(v.version) for v in MlflowClient().search_model_versions(f"name='{name}'"))
            label = f"{name}/{version}"
            uri = f"models:/{name}/{version}"
        elif uri.startswith("runs:/"):
            label = uri
        else:
            raise DatasetError(f"model_uri must start with models:/ or runs:/, got '{uri}'")
        return mlflow.keras.load_model(uri), label, self._model_uri

    def _save(self, data: None) -> None:
        raise DatasetError("InferenceModelDataset is read-only")
