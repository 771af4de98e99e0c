"""docs/parameters.md, generated from the schema and the YAML (``python -m cardio_kedro.config``)."""

from __future__ import annotations

import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel

from cardio_kedro.config.runtime import deep_merge
from cardio_kedro.config.schema import GROUP_FILES, RUNTIME_KEYS, Finding, ProjectParams
from cardio_kedro.config.sources import has_key, model_at


def _leaves(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        nested = model_at(model, (name,))
        if nested is not None and name not in ("augmentation", "space"):
            yield from _leaves(nested, f"{key}.")
        else:
            yield key, info


def _lookup(tree: Mapping, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(tree, Mapping) or part not in tree:
            return None
        tree = tree[part]
    return tree


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_show(v)}" for k, v in value.items())
    return str(value)


_TYPE_NAMES = {int: "integer", float: "number", bool: "true/false", str: "text", type(None): "null"}
_BOUNDS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}


def _bounds(metadata: list) -> str:
    parts = []
    for constraint in [c for item in metadata for c in (item, *getattr(item, "metadata", []))]:
        for name, symbol in _BOUNDS.items():
            bound = getattr(constraint, name, None)
            if bound is not None:
                parts.append(f"{symbol} {bound:g}")
    return " " + ", ".join(parts) if parts else ""


def _type_text(annotation: Any, metadata: list) -> str:
    """How a field's type reads in the docs: ``integer ≥ 1 or null``, ```vgg16` or `densenet121```."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation == Finding:
        text = "an NIH finding (any of the 14)"
    elif origin is Literal:
        text = " or ".join(f"`{_show(a)}`" for a in args)
    elif origin in (Union, types.UnionType):
        text = " or ".join(_type_text(a, metadata) for a in args)
    elif origin is Annotated:
        text = _type_text(args[0], [*metadata, *args[1:]])
    elif origin is list:
        text = f"list, each {_type_text(args[0], [])}"
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        text = "a group (keys below)"
    else:
        text = _TYPE_NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))
        text += _bounds(metadata) if annotation in (int, float) else ""
    return text


def _accepted(info) -> str:
    return _type_text(info.annotation, list(info.metadata))


def _env_values(folder: Path) -> dict:
    """The parameters one environment's files set, with the values it takes from its globals.yml."""
    tree: dict = {}
    for path in sorted(folder.glob("parameters*.yml")):
        deep_merge(tree, yaml.safe_load(path.read_text()) or {})
    globals_file = folder / "globals.yml"
    globals_ = yaml.safe_load(globals_file.read_text()) if globals_file.is_file() else {}
    for key in ProjectParams.model_fields:
        if key in globals_:
            tree[key] = globals_[key]
    return tree


def parameters_markdown(conf_source: Path) -> str:
    """docs/parameters.md: every parameter with its base and nih value, from the typed models and the YAML."""
    merged = {env: _env_values(conf_source / env) for env in ("base", "nih")}
    lines = [
        "# Parameters",
        "",
        "Generated from `src/cardio_kedro/config/schema.py` and `conf/` by `python -m cardio_kedro.config`; a test",
        "keeps the two in step. Every key below must be set (no defaults hide in the code); a missing,",
        "unknown or out-of-range key stops a run before any data is touched, naming the key and its file.",
        "Override any key at run time: `kedro run --params=model_training.batch_size=16,reporting.n_bootstrap=200`.",
        "`image_size` and `target_findings` are set in `conf/<env>/globals.yml` (the catalog and MLflow use them",
        "too) or with `--params`. The nih column is empty where `conf/nih` keeps the base value.",
        "",
    ]
    groups: dict[str, list[tuple[str, Any]]] = {}
    for key, info in _leaves(ProjectParams):
        group = key.split(".")[0] if "." in key else "shared"
        groups.setdefault(group, []).append((key, info))
    for group, rows in groups.items():
        title = "Shared and runtime-only" if group == "shared" else f"`{group}` (`{GROUP_FILES[group]}`)"
        lines += [f"## {title}", "", "| key | base | nih | accepted | effect |", "| --- | --- | --- | --- | --- |"]
        for key, info in rows:
            if key in RUNTIME_KEYS:
                base = nih = "runtime only"
            else:
                base = _show(_lookup(merged["base"], key))
                nih_value = _lookup(merged["nih"], key)
                nih = _show(nih_value) if nih_value is not None or has_key(merged["nih"], key.split(".")) else ""
            lines.append(f"| `{key}` | {base} | {nih} | {_accepted(info)} | {info.description or ''} |")
        lines.append("")
    return "\n".join(lines)
