"""A team's MLflow tracking server on one machine, for trying it out: PostgreSQL as the backend store
(runs, registry, and the sweeps' Optuna studies), artifacts proxied by the server.

    python -m cardio_kedro.team.server --root data/team_server --port 5000 --pg-port 5433
    # or: make mlflow-server

Clients then need only the server's address: ``MLFLOW_TRACKING_URI=http://host:5000 kedro run``.
They upload and download artifacts through the server (``--serve-artifacts``), so they need no
storage credentials. docs/scaling_out.md has the production form (a managed PostgreSQL, object
storage behind the server).

What it takes care of:

- ``initdb`` and ``pg_ctl`` refuse to run as root: as root they run as the ``postgres`` user.
- The database cluster is trust-authenticated on 127.0.0.1 only: a trial server, not a team's.
- MLflow checks the ``Host`` header; ``--allowed-hosts`` lists the names clients may use.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

DATABASES = ("mlflow", "optuna")  # the tracking/registry store, and the sweeps' studies


class TeamServerError(RuntimeError):
    """The PostgreSQL or MLflow server could not be started; the message says why and what to do."""


def postgres_bin(name: str) -> str:
    """The path of a PostgreSQL server program (``initdb``, ``pg_ctl``, ...)."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if not found:
        raise TeamServerError(
            f"PostgreSQL's '{name}' was not found on PATH or in /usr/lib/postgresql/*/bin: "
            "install the server (Debian: apt-get install postgresql)"
        )
    return found


def _as_postgres(command: list[str]) -> list[str]:
    """``command`` as the ``postgres`` user when running as root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


def _check_port_free(host: str, port: int, what: str) -> None:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is no clash
        try:
            probe.bind((host, port))
        except OSError as error:
            raise TeamServerError(
                f"port {port} on {host} is taken ({error.strerror}): choose another port for {what}"
            ) from None


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise TeamServerError(f"{what} failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()}")


@dataclass
class Postgres:
    """A PostgreSQL cluster in ``root/pgdata``, listening on 127.0.0.1:``port``."""

    root: Path
    port: int

    @property
    def data_dir(self) -> Path:
        return self.root / "pgdata"

    def uri(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> Postgres:
        """Create the cluster on first use, start it, and create the project's databases."""
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        if not (self.data_dir / "PG_VERSION").is_file():
            _run(
                _as_postgres(
                    [postgres_bin("initdb"), "-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
                ),
                f"initdb of {self.data_dir}",
            )
        _check_port_free("127.0.0.1", self.port, "PostgreSQL (--pg-port)")
        options = f"-p {self.port} -h 127.0.0.1 -k {self.root}"
        log = self.root / "postgres.log"
        pg_ctl = postgres_bin("pg_ctl")
        _run(
            _as_postgres([pg_ctl, "-D", str(self.data_dir), "-o", options, "-l", str(log), "-w", "start"]),
            f"starting PostgreSQL on port {self.port} (log: {log})",
        )
        for database in DATABASES:
            self.create_database(database)
        return self

    def create_database(self, name: str) -> str:
        """Create the database ``name`` unless it exists; its URI."""
        done = subprocess.run(
            [postgres_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name],
            capture_output=True,
            check=False,
            text=True,
        )
        if done.returncode and "already exists" not in done.stderr:
            raise TeamServerError(f"createdb {name} failed: {done.stderr.strip()}")
        return self.uri(name)

    def stop(self) -> None:
        subprocess.run(
            _as_postgres([postgres_bin("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"]),
            capture_output=True,
            check=False,
        )


@dataclass
class MlflowServer:
    """``mlflow server`` over a PostgreSQL store, serving artifacts from ``artifacts_dir``."""

    backend_uri: str
    artifacts_dir: Path
    port: int
    host: str = "127.0.0.1"
    allowed_hosts: str | None = None
    workers: int = 2
    log: Path | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{'127.0.0.1' if self.host in ('0.0.0.0', '::') else self.host}:{self.port}"

    def command(self) -> list[str]:
        command = [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            self.backend_uri,
            "--serve-artifacts",
            "--artifacts-destination",
            self.artifacts_dir.resolve().as_uri(),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
        ]
        if self.allowed_hosts:
            command += ["--allowed-hosts", self.allowed_hosts]
        return command

    def start(self, timeout_s: float = 120) -> MlflowServer:
        """Start the server in its own process group and wait until ``/health`` answers."""
        _check_port_free(self.host, self.port, "the MLflow server")
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        out = self.log.open("ab") if self.log else subprocess.DEVNULL
        self.process = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise TeamServerError(f"mlflow server exited with {self.process.returncode}: see {self.log}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise TeamServerError(f"mlflow server did not answer on {self.url}/health within {timeout_s:.0f} s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("data/team_server"), help="PostgreSQL data and artifacts")
    parser.add_argument("--port", type=int, default=5000, help="the MLflow server's port")
    parser.add_argument("--pg-port", type=int, default=5433, help="PostgreSQL's port (127.0.0.1 only)")
    parser.add_argument("--host", default="127.0.0.1", help="the address MLflow listens on (0.0.0.0: every interface)")
    parser.add_argument(
        "--allowed-hosts", default=None, help="Host headers MLflow accepts, e.g. 'mlflow.lab.org,10.0.0.5:5000'"
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops both servers, as Ctrl-C does
    root = args.root.resolve()
    try:
        postgres = Postgres(root, args.pg_port).start()
    except TeamServerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    server = MlflowServer(
        postgres.uri("mlflow"),
        root / "artifacts",
        args.port,
        host=args.host,
        allowed_hosts=args.allowed_hosts,
        log=root / "mlflow.log",
    )
    try:
        server.start()
        print(
            f"MLflow tracking server on {server.url} (PostgreSQL {postgres.uri('mlflow')}, artifacts in "
            f"{server.artifacts_dir}).\nPoint runs at it: MLFLOW_TRACKING_URI={server.url} kedro run ...\n"
            f"Sweeps' study storage: {postgres.uri('optuna')}\nCtrl-C stops both.",
            flush=True,
        )
        server.process.wait()
    except KeyboardInterrupt:
        pass
    except TeamServerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        server.stop()
        postgres.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
