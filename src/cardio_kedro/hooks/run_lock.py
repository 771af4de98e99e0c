"""One run at a time per project: a run holds ``data/.run.lock`` from its start to its end.

Kedro loads the newest version of every versioned dataset, so two runs of one project at once read
each other's intermediates (and one MLflow run could log the other's figures). A second run started
while one holds the lock stops before it reads or writes anything, saying whose run holds it and what
to do. The lock is the operating system's (``flock``): a run that dies, however, releases it.

The same check refuses a ``data/`` folder this run cannot write to, before any data is read.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
from datetime import datetime
from pathlib import Path

from kedro.framework.hooks import hook_impl

from cardio_kedro.common.errors import UserError
from cardio_kedro.hooks.run_guard import dataset_filepath

logger = logging.getLogger(__name__)

DATA_DIR = Path("data")
LOCK_FILE = ".run.lock"


class ProjectBusy(UserError):
    """Another run of this project holds its data."""


class DataNotWritable(UserError):
    """The project's data folder (or a folder a run writes to) cannot be written."""


def _holder(path: Path) -> str:
    """Who holds the lock, from what the holding run wrote into the lock file."""
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another run"
    return (
        f"the run started {info.get('started', '?')} by process {info.get('pid', '?')} on {info.get('host', '?')} "
        f"({info.get('command', '?')})"
    )


class ProjectLock:
    """An exclusive, non-blocking ``flock`` on ``<data>/.run.lock``, with the holder's details in the file."""

    def __init__(self, data: Path = DATA_DIR):
        self.data = Path(data)
        self.path = self.data / LOCK_FILE
        self._fd: int | None = None

    def acquire(self, command: str) -> None:
        """Take the lock or raise ``ProjectBusy`` (held) or ``DataNotWritable`` (cannot be created)."""
        self.release()  # an earlier run in this process that stopped in a hook before it ran (Kedro calls no end hook)
        try:
            self.data.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise DataNotWritable(
                f"this run cannot write to the project's data folder {self.data.resolve()} ({exc.strerror}): "
                "every run writes its outputs there. Make it writable (chmod u+w, or the owner of the mount), "
                "or run the project from a folder you can write to."
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ProjectBusy(
                f"{_holder(self.path)} is using this project's data ({self.data.resolve()}). Two runs at once would "
                "load each other's newest outputs, so this one stopped before reading anything. Wait for that run "
                "to end and start this one again, or run it from a copy of the project (its own data/ and "
                "mlflow.db: git clone, or the packaged wheel in another folder)."
            ) from None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now().isoformat(timespec="seconds"),
            "command": command,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Give the lock back (the file stays: removing it would race with a run about to take it)."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def unwritable_folders(paths: list[Path]) -> list[Path]:
    """The folders among the nearest existing parents of ``paths`` that this process cannot write to."""
    bad = []
    for path in paths:
        folder = path if path.is_dir() else path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if folder not in bad and not _can_write(folder):
            bad.append(folder)
    return bad


def _can_write(folder: Path) -> bool:
    """Whether a file can be created in ``folder`` (a real try: ``os.access`` says yes to root on a read-only mount)."""
    probe = folder / f".write-probe-{os.getpid()}"
    try:
        probe.touch()
        probe.unlink()
    except OSError:
        return False
    return True


class RunLockHooks:
    """Takes the project lock before any other hook of the run and gives it back when the run ends."""

    def __init__(self, data: Path = DATA_DIR) -> None:
        self._lock = ProjectLock(data)

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        names = ",".join(run_params["pipeline_names"] or ["__default__"])  # Kedro: None when none was named
        self._lock.acquire(f"kedro run --pipelines={names}")
        try:
            check_outputs_writable(pipeline, catalog)
        except UserError:
            self._lock.release()
            raise

    @hook_impl(hookwrapper=True)  # released after every other hook (kedro-mlflow ends its run there)
    def after_pipeline_run(self):
        yield
        self._lock.release()

    @hook_impl(hookwrapper=True)  # after the other hooks have set the run's outputs aside
    def on_pipeline_error(self):
        yield
        self._lock.release()


def check_outputs_writable(pipeline, catalog) -> None:
    """Stop before any data is read when a folder the run's files go to cannot be written."""
    paths = (dataset_filepath(catalog, name) for name in sorted(pipeline.all_outputs()))
    bad = unwritable_folders([p for p in paths if p is not None and "://" not in str(p)])
    if bad:
        listed = ", ".join(str(p) for p in bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise DataNotWritable(
            f"this run writes its outputs under {listed}, which it cannot write to (read-only, or another "
            "owner): make it writable (chmod -R u+w data, or remount) and run again. Nothing was read or written."
        )
