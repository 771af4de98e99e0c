"""Parameter trees as Kedro builds them: ``--params`` text parsed, and environments merged key by key."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

G = TypeVar("G", bound=BaseModel)


@dataclass(frozen=True)
class RunConf:
    """Where the session's configuration comes from: its conf source, environment and ``--params``."""

    conf_source: Path
    env: str | None
    runtime_params: dict = field(default_factory=dict)


_RUN_CONF: list[RunConf] = []  # the current session's (PreflightHooks.after_context_created records it)


def record_run_conf(conf: RunConf | None) -> None:
    """Record the configuration of the session that starts (before it builds its pipelines); ``None`` forgets it."""
    _RUN_CONF[:] = [conf] if conf else []


def run_conf() -> RunConf | None:
    """The recorded configuration of the current session; ``None`` outside a session (``kedro registry``)."""
    return _RUN_CONF[0] if _RUN_CONF else None


def deep_merge(into: dict, other: Mapping) -> dict:
    """Merge ``other`` into ``into`` key by key (nested mappings too), as Kedro's soft merge does; returns ``into``."""
    for key, value in other.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            deep_merge(into[key], value)
        else:
            into[key] = value
    return into


def parse_runtime_params(text: str) -> dict:
    """``--params`` text (``a.b=1,c=x``) as the nested dict ``kedro run`` makes of it."""
    from omegaconf import OmegaConf

    items = [item.strip() for item in text.split(",") if item.strip()]
    bad = [item for item in items if "=" not in item or not item.split("=", 1)[0].strip()]
    if bad:
        raise ValueError(f"--params items must be key=value, got {bad}")
    return OmegaConf.to_container(OmegaConf.from_dotlist(items))


def as_params(group: type[G], value: G | Mapping) -> G:
    """A node's parameter group as the validated object: what a run hands the node (``ParameterHooks``
    swaps each ``params:`` input for its part of the parameters validated once before the run), or a
    mapping validated here (a node called directly: a test, a notebook)."""
    return value if isinstance(value, group) else group.model_validate(value)
