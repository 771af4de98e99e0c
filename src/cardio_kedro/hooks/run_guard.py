"""Runs that end cleanly: signals end the MLflow run as KILLED, outputs of unfinished runs are set aside.

- ``SIGINT`` (Ctrl-C) and ``SIGTERM`` (``timeout``, Docker, Kubernetes, Slurm) stop the run with a
  ``RunInterrupted`` error: Kedro's error path runs, and the MLflow run ends ``KILLED`` with the tag
  ``cardio.end_reason``. Any other error ends it ``FAILED`` with the error in that tag.
- A run left ``RUNNING`` by a process that died (``SIGKILL``, a power cut) on this machine is marked
  ``KILLED`` when the next run starts here (the tags ``cardio.host`` and ``cardio.pid`` say whose it is).
- The versions a failed or interrupted run saved move from ``<filepath>/<version>/`` to
  ``<filepath>.incomplete/<version>/``, where Kedro's "latest version" never finds them. To use
  them anyway, put them back (``python -m cardio_kedro.hooks.run_guard restore <version>``) and load them
  with ``--load-versions=<dataset>:<version>``; ``python -m cardio_kedro.hooks.run_guard list`` lists them.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import threading
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from cardio_kedro.common.errors import UserError, find_user_error, plain_text

logger = logging.getLogger(__name__)

INCOMPLETE = ".incomplete"  # suffix of the folder beside a dataset's versions that holds unfinished ones
HANDLED_SIGNALS = {signal.SIGINT: "SIGINT (Ctrl-C)", signal.SIGTERM: "SIGTERM"}


class RunInterrupted(UserError):
    """The run was stopped by a signal; an ``Exception`` so that Kedro's error hooks run."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"the run was interrupted by {HANDLED_SIGNALS.get(signum, signum)}; it ended KILLED")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def mark_dead_runs(client, host: str, own_run_id: str | None) -> list:
    """Mark the RUNNING MLflow runs of processes on ``host`` that no longer exist as KILLED; returns those runs."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    runs = client.search_runs(
        experiments, filter_string=f"attributes.status = 'RUNNING' and tags.`cardio.host` = '{host}'"
    )
    marked = []
    for run in runs:
        pid = run.data.tags.get("cardio.pid", "")
        if run.info.run_id == own_run_id or not pid.isdigit() or _alive(int(pid)):
            continue
        client.set_tag(run.info.run_id, "cardio.end_reason", f"process {pid} on {host} died without ending the run")
        client.set_terminated(run.info.run_id, "KILLED")
        marked.append(run)
        logger.warning("MLflow run %s of process %s, which is gone, marked KILLED", run.info.run_id, pid)
    return marked


def _entry(catalog, name: str) -> tuple[dict, dict]:
    """The catalog entry ``name`` as configured and its inner dataset's part (a wrapper's ``dataset``)."""
    if name.startswith("params:") or name == "parameters":
        return {}, {}
    config = catalog.config_resolver.resolve_pattern(name)
    inner = config.get("dataset", config)
    return config, inner if isinstance(inner, dict) else {}


def dataset_filepath(catalog, name: str) -> Path | None:
    """The ``filepath`` (or ``path``) of the catalog entry ``name``, versioned or not; ``None`` for one in memory."""
    _, inner = _entry(catalog, name)
    path = inner.get("filepath") or inner.get("path")
    return Path(path) if path else None


def versioned_filepath(catalog, name: str) -> Path | None:
    """The ``filepath`` (or ``path``) of the catalog entry ``name`` when it is versioned, else ``None``."""
    config, inner = _entry(catalog, name)
    if not (inner.get("versioned") or config.get("versioned")):
        return None
    return dataset_filepath(catalog, name)


def saved_file(catalog, name: str, save_version: str) -> Path | None:
    """The file a run with ``save_version`` saves for the versioned catalog entry ``name``
    (``<filepath>/<save_version>/<file name>``); ``None`` for an entry that is not versioned."""
    path = versioned_filepath(catalog, name)
    return path / save_version / path.name if path is not None else None


def set_aside_folder(filepath: Path) -> Path:
    """Where the unfinished versions of the dataset at ``filepath`` go: ``<filepath>.incomplete``."""
    return filepath.with_name(filepath.name + INCOMPLETE)


def quarantine(paths: list[Path], save_version: str) -> list[Path]:
    """Move ``<filepath>/<save_version>`` to ``<filepath>.incomplete/<save_version>`` for each dataset ``filepath``."""
    moved = []
    for filepath in paths:
        version_dir = filepath / save_version
        if not version_dir.is_dir():
            continue
        target = set_aside_folder(filepath) / save_version
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(version_dir), str(target))
        moved.append(target)
    return moved


class RunGuardHooks:
    """Signals, dead runs and the outputs of runs that did not complete (see the module docstring)."""

    def __init__(self) -> None:
        self._catalog = None
        self._save_version = ""
        self._saved: list[str] = []
        self._run_id: str | None = None
        self._previous: dict[int, Any] = {}
        self._pending: int | None = None  # a signal received during this run

    @hook_impl
    def after_catalog_created(self, catalog, save_version: str) -> None:
        self._catalog, self._save_version, self._saved = catalog, save_version, []
        self._pending = None

    @hook_impl
    def before_pipeline_run(self, pipeline) -> None:
        import mlflow

        run = mlflow.active_run()
        self._run_id = run.info.run_id if run is not None else None
        if run is not None:
            host = socket.gethostname()
            tags = {"cardio.host": host, "cardio.pid": str(os.getpid()), "cardio.save_version": self._save_version}
            mlflow.set_tags(tags)
            dead = mark_dead_runs(mlflow.MlflowClient(), host, self._run_id)
            paths = [p for p in map(self._versioned_path, sorted(pipeline.datasets())) if p is not None]
            for version in {r.data.tags.get("cardio.save_version") for r in dead} - {None, ""}:
                self._set_aside(quarantine(paths, version), version)
        self._install_handlers()

    def _install_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread

        def interrupt(signum, frame):
            self._restore_handlers()  # a second Ctrl-C acts at once
            self._pending = signum  # raised again at the next node or dataset, should this raise be swallowed
            raise RunInterrupted(signum)

        for signum in HANDLED_SIGNALS:
            self._previous[signum] = signal.signal(signum, interrupt)

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _raise_pending(self) -> None:
        """Raise the interrupt again: a signal that lands inside code that catches every ``Exception``
        (a logging handler's ``emit``, say) would otherwise be swallowed and the run would go on."""
        if self._pending is not None:
            raise RunInterrupted(self._pending)

    @hook_impl
    def before_node_run(self) -> None:
        self._raise_pending()

    @hook_impl
    def before_dataset_loaded(self) -> None:
        self._raise_pending()

    @hook_impl
    def after_dataset_saved(self, dataset_name: str) -> None:
        self._saved.append(dataset_name)
        self._raise_pending()

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._restore_handlers()

    @staticmethod
    def _set_aside(moved: list[Path], version: str) -> None:
        if moved:
            logger.warning(
                "Run %s did not complete: its %d output version(s) moved to <dataset>%s/%s, where no later run "
                "takes them as the latest. To load them: python -m cardio_kedro.hooks.run_guard restore %s, then "
                "--load-versions=<dataset>:%s",
                version,
                len(moved),
                INCOMPLETE,
                version,
                version,
                version,
            )

    def _versioned_path(self, name: str) -> Path | None:
        return versioned_filepath(self._catalog, name)

    @hook_impl(trylast=True)  # after kedro-mlflow has ended the run FAILED
    def on_pipeline_error(self, error: Exception) -> None:
        self._restore_handlers()
        paths = [p for p in (self._versioned_path(n) for n in dict.fromkeys(self._saved)) if p is not None]
        self._set_aside(quarantine(paths, self._save_version), self._save_version)
        if self._run_id is None:
            return
        import mlflow

        client = mlflow.MlflowClient()
        found = find_user_error(error)  # a signal may surface wrapped, e.g. in the DatasetError of a save
        interrupted = found if isinstance(found, RunInterrupted) else None
        first_line = (plain_text(str(error)).strip().splitlines() or [""])[0][:400]
        reason = plain_text(str(interrupted)) if interrupted else f"{type(error).__name__}: {first_line}"
        client.set_tag(self._run_id, "cardio.end_reason", reason)
        if interrupted:
            client.set_terminated(self._run_id, "KILLED")


def set_aside_versions(data: Path) -> dict[str, list[Path]]:
    """The unfinished versions under ``data``: ``{version: [their folders]}``."""
    found: dict[str, list[Path]] = {}
    for folder in sorted(data.rglob(f"*{INCOMPLETE}")):
        for version in sorted(p for p in folder.iterdir() if p.is_dir()):
            found.setdefault(version.name, []).append(version)
    return found


def restore(data: Path, version: str) -> list[Path]:
    """Put the set-aside outputs of run ``version`` back beside the other versions; returns where they went."""
    folders = set_aside_versions(data).get(version)
    if not folders:
        known = ", ".join(set_aside_versions(data)) or "none"
        raise UserError(f"no set-aside outputs of version '{version}' under {data} (set aside: {known})")
    restored = []
    for folder in folders:
        target = folder.parent.with_name(folder.parent.name[: -len(INCOMPLETE)]) / version
        shutil.move(str(folder), str(target))
        if not any(folder.parent.iterdir()):
            folder.parent.rmdir()
        restored.append(target)
    return restored


def main(argv: list[str] | None = None) -> int:
    """``python -m cardio_kedro.hooks.run_guard list|restore <version> [--data data]``."""
    import argparse

    parser = argparse.ArgumentParser(description="Outputs of runs that did not complete, set aside.")
    parser.add_argument("command", choices=["list", "restore"])
    parser.add_argument("version", nargs="?")
    parser.add_argument("--data", default="data", type=Path, help="the project's data folder")
    args = parser.parse_args(argv)
    if args.command == "list":
        for version, folders in set_aside_versions(args.data).items():
            print(f"{version}: {len(folders)} output(s)")
        return 0
    if not args.version:
        parser.error("restore needs the version (see 'list')")
    for target in restore(args.data, args.version):
        print(f"restored {target}")
    print(f"load them with --load-versions=<dataset>:{args.version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
