"""The model to score with, and its operating threshold: the latest catalog version or an MLflow URI."""

from __future__ import annotations

import json
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

    With ``model_uri`` (``models:/<finding>-classifier/<version>`` or ``runs:/<id>/model``) the
    Keras model comes from MLflow and the threshold from the ``threshold`` metric of the run that
    produced it. Without, the newest version of the catalog model is used with the threshold of
    the evaluation saved in the same run (same version folder).
    """

    def __init__(
        self,
        model_path: str,
        metrics_path: str,
        model_uri: str | None = None,
        metadata: dict[str, Any] | None = None,
    ):
        self._model_path, self._metrics_path = Path(model_path), Path(metrics_path)
        self._model_uri = model_uri or None
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"model_path": str(self._model_path), "model_uri": self._model_uri}

    def _load(self) -> dict:
        if self._model_uri:
            return self._load_mlflow()
        version = _latest_version(self._model_path)
        if version is None:
            raise DatasetError(
                f"No trained model in {self._model_path}: run 'kedro run --pipelines=training' first "
                "or pass --params=model_uri=models:/<finding>-classifier/<version>"
            )
        from cardio_kedro.modeling import load_model

        model = load_model(version / self._model_path.name)
        metrics_file = self._metrics_path / version.name / self._metrics_path.name
        if not metrics_file.is_file():
            latest = _latest_version(self._metrics_path)
            metrics_file = latest / self._metrics_path.name if latest else None
        if metrics_file is None:
            logger.warning("No evaluation found for model %s: using threshold 0.5", version.name)
            threshold = 0.5
        else:
            threshold = float(json.loads(metrics_file.read_text())["threshold"]["value"])
        return {"model": model, "threshold": threshold, "version": version.name, "source": str(version)}

    def _load_mlflow(self) -> dict:
        import mlflow
        from mlflow.tracking import MlflowClient

        import cardio_kedro.modeling.layers  # noqa: F401 - registers the custom layers for mlflow.keras

        client = MlflowClient()
        uri = self._model_uri
        if uri.startswith("models:/"):
            name, _, version = uri[len("models:/") :].partition("/")
            if not version or version == "latest":
                version = max(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
            run_id = client.get_model_version(name, str(version)).run_id
            label = f"{name}/{version}"
        elif uri.startswith("runs:/"):
            run_id = uri[len("runs:/") :].split("/")[0]
            label = uri
        else:
            raise DatasetError(f"model_uri must start with models:/ or runs:/, got '{uri}'")
        model = mlflow.keras.load_model(uri)
        threshold = client.get_run(run_id).data.metrics.get("threshold")
        if threshold is None:
            logger.warning("Run %s logged no threshold: using 0.5", run_id)
            threshold = 0.5
        return {"model": model, "threshold": float(threshold), "version": label, "source": uri}

    def _save(self, data: None) -> None:
        raise DatasetError("InferenceModelDataset is read-only")
