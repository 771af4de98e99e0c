"""A local MLflow store held locked by another process: a run's writes wait for it instead of failing."""

import sqlite3
import subprocess
import sys
import time

import pytest

from cardio_kedro.hooks import mlflow_store

HOLD = (
    "import sqlite3, sys, time\n"
    "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
    "db.execute('BEGIN EXCLUSIVE')\n"
    "print('locked', flush=True)\n"
    "time.sleep(float(sys.argv[2]))\n"
    "db.execute('COMMIT')\n"
)


def _store(tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    run = client.create_run(client.create_experiment("locked"))
    return uri, client, run.info.run_id


def _hold_lock(db, seconds: float) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(db), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def _new_client(uri):
    """A client on a fresh SQLAlchemy engine (MLflow caches one store per URI and process)."""
    import mlflow
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    return mlflow.MlflowClient(uri), SqlAlchemyStore(uri, default_artifact_root=None)


@pytest.mark.parametrize("hold_s", [8.0])
def test_a_write_waits_for_a_lock_held_longer_than_sqlites_default(tmp_path, monkeypatch, hold_s):
    uri, client, run_id = _store(tmp_path)
    db = tmp_path / "mlflow.db"

    # without the busy timeout: Python's sqlite3 gives up after 5 s with "database is locked"
    holder = _hold_lock(db, hold_s)
    plain = sqlite3.connect(db, timeout=5)
    start = time.perf_counter()
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        plain.execute("INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) "
                      "VALUES ('m', 1, 0, ?, 0, 0)", (run_id,))  # fmt: skip
    assert time.perf_counter() - start < hold_s
    holder.wait()

    # with it: the store's write lands once the other process lets go
    monkeypatch.setenv(mlflow_store.BUSY_TIMEOUT_ENV, "60")
    mlflow_store.install_sqlite_busy_timeout()
    _, store = _new_client(uri)
    holder = _hold_lock(db, hold_s)
    start = time.perf_counter()
    store.log_param(run_id, __import__("mlflow").entities.Param("waited", "yes"))
    waited = time.perf_counter() - start
    holder.wait()
    assert hold_s - 1.5 < waited < hold_s + 10, waited
    assert client.get_run(run_id).data.params["waited"] == "yes"


def test_a_busy_timeout_that_is_no_number_is_named(monkeypatch):
    monkeypatch.setenv(mlflow_store.BUSY_TIMEOUT_ENV, "five minutes")
    with pytest.raises(Exception, match="CARDIO_MLFLOW_BUSY_TIMEOUT='five minutes' is not a number"):
        mlflow_store.busy_timeout_s()
