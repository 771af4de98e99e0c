"""Versioned ``.keras`` model dataset that needs only Keras (any backend), not TensorFlow."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractVersionedDataset, Version

from ._files import atomic_file, version_exists


class KerasModelDataset(AbstractVersionedDataset[Any, Any]):
    """Saves with ``model.save`` and loads with ``keras.saving.load_model(safe_mode=True)``.

    Custom layers must be registered with ``keras.saving.register_keras_serializable``. The file
    is written to a temporary name and renamed, so a failed save leaves no partial version.
    """

    def __init__(
        self,
        filepath: str,
        version: Version | None = None,
        load_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ):
        super().__init__(filepath=PurePosixPath(filepath), version=version, exists_function=self._path_exists)
        self._load_args = {"safe_mode": True, **(load_args or {})}
        self.metadata = metadata

    @staticmethod
    def _path_exists(path: str) -> bool:
        return Path(path).exists()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version}

    def _load(self):
        import keras

        import cardio_kedro.pipelines.model_training.model  # noqa: F401 - registers the custom layers

        return keras.saving.load_model(str(self._get_load_path()), **self._load_args)

    def _save(self, model) -> None:
        with atomic_file(Path(self._get_save_path()), ".keras") as tmp:
            model.save(tmp)

    def _exists(self) -> bool:
        return version_exists(self)
