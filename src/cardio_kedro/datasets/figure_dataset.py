"""Versioned PNG figure dataset: saves a matplotlib figure, loads the PNG bytes back (for reports)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractVersionedDataset, Version


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

    def _save(self, figure) -> None:
        import matplotlib.pyplot as plt

        path = Path(self._get_save_path())
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".png", dir=path.parent)
        os.close(fd)
        try:
            figure.savefig(tmp, format="png", **self._save_args)
            os.replace(tmp, path)
        finally:
            plt.close(figure)
            if os.path.exists(tmp):
                os.remove(tmp)

    def _exists(self) -> bool:
        try:
            return Path(self._get_load_path()).exists()
        except Exception:  # noqa: BLE001 - no version saved yet
            return False
