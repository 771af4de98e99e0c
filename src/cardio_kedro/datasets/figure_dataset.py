"""Versioned PNG figure dataset: saves a matplotlib figure, loads the PNG bytes back (for reports)."""

from __future__ import annotations

import base64
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractVersionedDataset, Version
from kedro_datasets._typing import ImagePreview

from ._files import atomic_file, version_exists


class FigureDataset(AbstractVersionedDataset[Any, bytes]):
    """``save(figure)`` writes a PNG (atomically) and closes the figure; ``load()`` returns its bytes."""

    def __init__(
        self,
        filepath: str,
        version: Version | None = None,
        save_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ):
        super().__init__(filepath=PurePosixPath(filepath), version=version, exists_function=lambda p: Path(p).exists())
        self._save_args = {"dpi": 110, "bbox_inches": "tight", **(save_args or {})}
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version}

    def _load(self) -> bytes:
        return Path(self._get_load_path()).read_bytes()

    def preview(self) -> ImagePreview:
        """The latest PNG, base64-encoded: kedro viz shows it in the dataset's panel."""
        return ImagePreview(base64.b64encode(self._load()).decode())

    def _save(self, figure) -> None:
        import matplotlib.pyplot as plt

        try:
            with atomic_file(Path(self._get_save_path()), ".png") as tmp:
                figure.savefig(tmp, format="png", **self._save_args)
        finally:
            plt.close(figure)

    def _exists(self) -> bool:
        return version_exists(self)
