"""Where parameter values come from, and errors that name the bad key, its value and the file to fix.

``validate_parameters`` checks the whole merged tree (YAML + environment + ``--params``) and
raises one ``ParameterError`` that names every bad key, its value, what is accepted and the file
that sets it. ``PreflightHooks`` (hooks/preflight.py) runs it before a pipeline starts.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from cardio_kedro.common.errors import UserError
from cardio_kedro.config.schema import GROUP_FILES, ProjectParams


class ParameterError(UserError, ValueError):
    """One or more parameters are wrong; the message lists each with where to fix it."""


@dataclass(frozen=True)
class ConfigSources:
    """Where parameter values come from: ``conf/<base_env>``, ``conf/<env>`` and ``--params``."""

    conf_source: Path
    env: str | None = None
    base_env: str = "base"
    runtime_params: Mapping[str, Any] = field(default_factory=dict)

    def files(self, pattern: str = "parameters*.yml") -> list[Path]:
        """Configuration files, the ones that win first (run environment, then base)."""
        envs = [e for e in (self.env, self.base_env) if e]
        return [p for e in dict.fromkeys(envs) for p in sorted((self.conf_source / e).glob(pattern))]

    def locate(self, key: str) -> str:
        """Where ``key`` (dotted) is set: ``--params``, a parameter file, or the file that should set it."""
        parts = key.split(".")
        if has_key(self.runtime_params, parts):
            return "--params"
        for path in self.files(pattern="globals.yml"):  # image_size, target_findings
            if len(parts) == 1 and has_key(yaml.safe_load(path.read_text()) or {}, parts):
                return _relative(path, self.conf_source)
        for path in self.files():
            if has_key(yaml.safe_load(path.read_text()) or {}, parts):
                return _relative(path, self.conf_source)
        for path in self.files():  # a missing key: the file that holds its parent
            if len(parts) > 1 and has_key(yaml.safe_load(path.read_text()) or {}, parts[:-1]):
                return _relative(path, self.conf_source)
        base = self.conf_source / self.base_env
        return _relative(base / GROUP_FILES.get(parts[0], "parameters.yml"), self.conf_source)


def _relative(path: Path, conf_source: Path) -> str:
    return f"{conf_source.name}/{path.relative_to(conf_source)}"


def has_key(tree: Any, parts: list[str]) -> bool:
    for part in parts:
        if not isinstance(tree, Mapping) or part not in tree:
            return False
        tree = tree[part]
    return True


def has_parameter(tree: Mapping, key: str) -> bool:
    """Whether the dotted ``key`` (``model_training.fine_tune.learning_rate``) is set in ``tree``."""
    return has_key(tree, key.split("."))


def model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The model class at a location of the tree (``None`` past a leaf)."""
    for part in loc:
        info = model.model_fields.get(str(part))
        if info is None:
            return None
        inner = [a for a in getattr(info.annotation, "__args__", (info.annotation,)) if isinstance(a, type)]
        models = [a for a in inner if issubclass(a, BaseModel)]
        if not models:
            return None
        model = models[0]
    return model


def _describe(error: dict, sources: ConfigSources) -> str:
    loc = tuple(str(p) for p in error["loc"])
    key = ".".join(loc)
    where = sources.locate(key)
    if error["type"] == "extra_forbidden":
        parent = model_at(ProjectParams, loc[:-1])
        known = sorted(parent.model_fields) if parent else []
        close = difflib.get_close_matches(loc[-1], known, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        scope = ".".join(loc[:-1]) or "the top level"
        return f"unknown parameter '{key}' (set in {where}); {scope} accepts: {', '.join(known)}{hint}"
    if error["type"] == "missing":
        return f"missing parameter '{key}': add it to {where}"
    message = error["msg"].removeprefix("Value error, ")
    if not loc:
        return message
    value = error.get("input")
    shown = "" if isinstance(value, Mapping) else f" = {value!r}"
    return f"'{key}'{shown}: {message[0].lower()}{message[1:]} (set in {where})"


def validate_parameters(params: Mapping[str, Any], sources: ConfigSources) -> ProjectParams:
    """The typed parameter tree, or a ``ParameterError`` naming every problem and where to fix it."""
    try:
        return ProjectParams.model_validate(dict(params))
    except ValidationError as exc:
        problems = [_describe(e, sources) for e in exc.errors()]
    raise ParameterError(
        "Invalid parameters; nothing was run:\n  - "
        + "\n  - ".join(problems)
        + "\nFix them in the file named, in conf/local/, or with --params=<key>=<value> "
        "(docs/parameters.md lists every parameter)."
    )
