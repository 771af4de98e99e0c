"""The lifecycle of a finding's registered models: ``@candidate``, ``@champion``, promotion and rollback.

- Every training or cross-validation run that finishes registers ``<finding>-classifier`` and
  ``<finding>-classifier-service`` and gives both new versions the ``@candidate`` alias.
- An external validation run with ``external.promote: true`` whose ``external.gates`` all pass moves
  ``@champion`` to the version it scored (and to the service version of the same training run), when
  the run finishes.
- By hand (``--finding`` defaults to the project's ``target_findings``; the store to
  ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``)::

      python -m cardio_kedro.registry status
      python -m cardio_kedro.registry promote [--version N]   # default: the @candidate version
      python -m cardio_kedro.registry rollback                # @champion back to the one before

- Inference, external validation and the service (``models:/<finding>-classifier-service@champion``)
  use ``@champion`` where there is one, and say which version that is.

Each move of ``@champion`` is appended to the registered model's tag ``cardio.champion_history`` (the
versions, oldest first), which ``rollback`` walks back.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from cardio_kedro.cohort.findings import findings_name
from cardio_kedro.common.errors import UserError

CANDIDATE, CHAMPION = "candidate", "champion"
HISTORY_TAG = "cardio.champion_history"
PROMOTED_TAG = "cardio.promoted"  # on a version: why and when it became champion


def classifier_name(target_findings: Any) -> str:
    """``<finding>-classifier`` of ``target_findings``."""
    return f"{findings_name(target_findings)}-classifier"


def service_name(name: str) -> str:
    """The serving model registered beside the classifier ``name``."""
    return f"{name}-service"


def alias_version(client, name: str, alias: str) -> str | None:
    """The version of ``name`` that has ``alias``, or ``None`` (no such alias or no such model)."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def service_version_of(client, name: str, version: str) -> str | None:
    """The version of ``name``'s serving model that the same run registered."""
    from mlflow.exceptions import MlflowException

    try:
        run_id = client.get_model_version(name, version).run_id
        versions = client.search_model_versions(f"name='{service_name(name)}' and run_id='{run_id}'")
    except MlflowException:
        return None
    return str(max(int(v.version) for v in versions)) if versions else None


def _set_alias(client, name: str, alias: str, version: str) -> None:
    client.set_registered_model_alias(name, alias, version)
    service = service_version_of(client, name, version)
    if service is not None:
        client.set_registered_model_alias(service_name(name), alias, service)


def set_candidate(client, name: str, version: str) -> None:
    """``@candidate`` on ``name``/``version`` and on its serving model's version."""
    _set_alias(client, name, CANDIDATE, version)


def _history(client, name: str) -> list[str]:
    tags = client.get_registered_model(name).tags or {}
    return [v for v in tags.get(HISTORY_TAG, "").split(",") if v]


def promote(client, name: str, version: str | None = None, reason: str = "promoted by hand") -> str:
    """Move ``@champion`` to ``version`` (default: the ``@candidate``); returns the version promoted."""
    version = version or alias_version(client, name, CANDIDATE)
    if version is None:
        raise UserError(f"{name} has no @candidate version: give --version N ({_versions(client, name)})")
    _require_version(client, name, version)
    _set_alias(client, name, CHAMPION, version)
    history = _history(client, name)
    client.set_registered_model_tag(name, HISTORY_TAG, ",".join([*history, str(version)]))
    client.set_model_version_tag(name, str(version), PROMOTED_TAG, reason)
    return str(version)


def rollback(client, name: str) -> str:
    """Move ``@champion`` back to the version it had before the last promotion; returns that version."""
    history = _history(client, name)
    if len(history) < 2:
        raise UserError(f"{name} has no earlier @champion to roll back to (champion history: {history or 'none'})")
    previous = history[-2]
    _set_alias(client, name, CHAMPION, previous)
    client.set_registered_model_tag(name, HISTORY_TAG, ",".join(history[:-1]))
    client.set_model_version_tag(name, previous, PROMOTED_TAG, f"rolled back to, from version {history[-1]}")
    return previous


def _versions(client, name: str) -> str:
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
    return f"its versions: {', '.join(map(str, versions))}" if versions else "it has no versions"


def _require_version(client, name: str, version: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_model_version(name, str(version))
    except MlflowException:
        raise UserError(f"{name} has no version {version} ({_versions(client, name)})") from None


def status(client, name: str) -> str:
    """One line per alias of ``name`` and the champion history."""
    lines = [f"{name}:"]
    for alias in (CHAMPION, CANDIDATE):
        version = alias_version(client, name, alias)
        lines.append(f"  @{alias}: {'version ' + version if version else 'none'}")
    lines.append(f"  champion history: {', '.join(_history(client, name)) or 'none'}; {_versions(client, name)}")
    return "\n".join(lines)


def _default_findings(env: str | None) -> Any:
    from cardio_kedro.settings import load_parameters

    if not os.path.isdir("conf"):
        raise UserError("no conf/ here to read target_findings from: run this in the project, or give --finding")
    return load_parameters("conf", env=env or "local")["target_findings"]


def main(argv: list[str] | None = None) -> int:
    """``python -m cardio_kedro.registry status|promote|rollback``."""
    from mlflow import MlflowClient

    parser = argparse.ArgumentParser(description="The registered models' @candidate and @champion aliases.")
    parser.add_argument("command", choices=["status", "promote", "rollback"])
    parser.add_argument("--finding", help="target_findings (default: the project's conf)")
    parser.add_argument("--version", help="promote: the version (default: the @candidate one)")
    parser.add_argument("--env", help="the conf environment to read target_findings from (default: local)")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db")
    args = parser.parse_args(argv)
    client = MlflowClient(args.tracking_uri, registry_uri=args.tracking_uri)
    name = classifier_name(args.finding or _default_findings(args.env))
    try:
        client.get_registered_model(name)
    except Exception:  # noqa: BLE001 - MLflow's not-found
        raise UserError(f"no registered model {name} in {args.tracking_uri}: train one first") from None
    if args.command == "promote":
        version = promote(client, name, args.version)
        print(f"{name}/{version} is @champion (and its serving model's version)")
    elif args.command == "rollback":
        print(f"{name}: @champion rolled back to version {rollback(client, name)}")
    print(status(client, name))
    return 0


if __name__ == "__main__":
    from cardio_kedro.common.errors import install_excepthook

    install_excepthook()
    sys.exit(main())
