"""A local MLflow store (``sqlite:///mlflow.db``) that waits for a lock instead of failing the run.

SQLite lets one process write at a time; the others get "database is locked" after Python's default
wait of 5 s. A run that finished training could then end ``FAILED`` because another process (a second
project's run on the same store, ``mlflow ui``, a backup) held the database for longer. Every SQLite
connection SQLAlchemy opens gets a busy timeout instead: SQLite retries the write with a growing
back-off (1 ms up to 100 ms between tries) for up to ``CARDIO_MLFLOW_BUSY_TIMEOUT`` seconds (300 by
default) before it gives up. A new local store is created by one process at a time
(``store_initialisation_lock``).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path

BUSY_TIMEOUT_ENV = "CARDIO_MLFLOW_BUSY_TIMEOUT"
DEFAULT_BUSY_TIMEOUT_S = 300.0

_installed = False


def busy_timeout_s() -> float:
    """The seconds a locked write is retried, from ``CARDIO_MLFLOW_BUSY_TIMEOUT``."""
    value = os.environ.get(BUSY_TIMEOUT_ENV, "")
    try:
        return float(value) if value else DEFAULT_BUSY_TIMEOUT_S
    except ValueError:
        from cardio_kedro.common.errors import UserError

        raise UserError(f"{BUSY_TIMEOUT_ENV}={value!r} is not a number of seconds (e.g. 300)") from None


def _set_busy_timeout(dbapi_connection, connection_record) -> None:  # noqa: ARG001 - SQLAlchemy's signature
    if isinstance(dbapi_connection, sqlite3.Connection):
        dbapi_connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s() * 1000)}")


def install_sqlite_busy_timeout() -> None:
    """Give every SQLite connection SQLAlchemy opens from now on the busy timeout (once per process)."""
    global _installed
    if _installed:
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    event.listen(Engine, "connect", _set_busy_timeout)
    _installed = True


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI (relative to the working folder), else ``None``."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :].split("?", 1)[0])


@contextmanager
def store_initialisation_lock(uri: str):
    """Held while a process creates or upgrades a local store and its experiment: MLflow builds a new
    ``mlflow.db`` with a series of migrations, and two runs starting together on a fresh project would
    otherwise run them at once (``CircularDependencyError`` or ``table already exists``)."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.with_name(path.name + ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
