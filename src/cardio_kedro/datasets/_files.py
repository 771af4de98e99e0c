"""File helpers shared by the project's datasets."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_file(path: Path, suffix: str) -> Iterator[str]:
    """Yield a temporary name next to ``path``; it becomes ``path`` only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def version_exists(dataset) -> bool:
    """Whether a versioned dataset has a version to load (False when none was saved yet)."""
    try:
        return Path(dataset._get_load_path()).exists()
    except Exception:  # noqa: BLE001 - kedro raises when there is no version at all
        return False
