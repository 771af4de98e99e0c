"""Versioned ``.keras`` model dataset that needs only Keras (any backend), not TensorFlow."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractVersionedDataset, Version

from ._files import atomic_file, version_exists


class KerasModelDataset(AbstractVersionedDataset[Any, Any]):
    """Saves with ``model.save`` and loads with ``cardio_kedro.modeling.load_model`` (``safe_mode=True``,
    the custom layers registered). The file is written to a temporary name and renamed, so a failed
    save leaves no partial version.
    """

    def __init__(self, filepath: str, version: Version | None = None, metadata: dict[str, Any] | None = None):
        super().__init__(filepath=PurePosixPath(filepath), version=version, exists_function=lambda p: Path(p).exists())
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version}

    def _load(self):
        from cardio_kedro.modeling import load_model

        return load_model(self._get_load_path())

    def _save(self, model) -> None:
        with atomic_file(Path(self._get_save_path()), ".keras") as tmp:
            model.save(tmp)

    def _exists(self) -> bool:
        return version_exists(self)


class RecalibratedClassifierDataset(KerasModelDataset):
    """A site's recalibrated classifier: ``save`` takes ``{"model": keras.Model | None, "tags": {...}}``
    and writes the model (a versioned ``.keras``, as ``KerasModelDataset``), or nothing when there is none
    (``external.recalibrate: none``); ``load`` gives the model. The tags go with the registered version
    (``cardio_kedro.hooks.mlflow_tags``).

    Kedro checks after every versioned save that the version it saved is the one it would now load; a save
    that wrote nothing has no version to find (on a fresh project: "Did not find any versions"), so after
    such a save that check is given the save version itself, and the latest written model stays what
    ``load`` gives."""

    _skipped_save = False

    def _save(self, data: dict) -> None:
        self._skipped_save = data["model"] is None
        if not self._skipped_save:
            super()._save(data["model"])

    def resolve_load_version(self) -> str | None:
        if self._skipped_save:
            self._skipped_save = False  # only the check right after that save; loads look on disk again
            return self.resolve_save_version()
        return super().resolve_load_version()
