"""File helpers shared by the project's datasets: every write lands whole or not at all."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_file(path: Path, suffix: str = ".tmp") -> Iterator[str]:
    """Yield a temporary name next to ``path``; it becomes ``path`` only if the block succeeds, with the mode a
    plain ``open`` gives (``mkstemp`` makes it 0600: an index unreadable beside its 0644 data)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=suffix, dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        yield tmp
        if os.path.exists(tmp):
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; its entries move into ``path`` only if the block succeeds.

    An entry of ``path`` with the same name as one written is replaced; other entries stay.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        yield tmp
        if not path.exists():
            tmp.rename(path)
            return
        for entry in tmp.iterdir():
            target = path / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            entry.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def walk_files(root: Path, skip_hidden: bool = True) -> Iterator[tuple[Path, str]]:
    """``(folder, file name)`` for every file under ``root``, in sorted order, following directory symlinks.

    A symlinked folder is walked once: a link back to a folder already being walked (a loop) or
    already walked is skipped, so nothing is listed twice and no walk runs forever.
    """
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, names in os.walk(root, followlinks=True):
        stat = os.stat(dirpath)
        key = (stat.st_dev, stat.st_ino)
        if key in seen:
            dirnames[:] = []
            continue
        seen.add(key)
        dirnames[:] = sorted(d for d in dirnames if not (skip_hidden and d.startswith(".")))
        for name in sorted(names):
            yield Path(dirpath), name


def write_files(root: Path, files: Iterable[tuple[str, bytes]]) -> int:
    """Write ``(relative path, bytes)`` pairs under ``root``; returns how many."""
    n = 0
    for rel, payload in files:
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(payload)
        n += 1
    return n


def version_exists(dataset) -> bool:
    """Whether a versioned dataset has a version to load (False when none was saved yet)."""
    try:
        return Path(dataset._get_load_path()).exists()
    except Exception:  # noqa: BLE001 - kedro raises when there is no version at all
        return False
