"""Parameter trees as Kedro builds them: ``--params`` text parsed, and environments merged key by key."""

from __future__ import annotations

from collections.abc import Mapping


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
