"""The package's layering rules, read from the table in docs/architecture.md: what may import what."""

from __future__ import annotations

import ast
import functools
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import PROJECT_ROOT, registered_pipelines

PACKAGE = PROJECT_ROOT / "src" / "cardio_kedro"
TABLE_MARK = "<!-- layering: read by tests/test_layering.py -->"
MODULE_LEVEL = " at module level"


@dataclass(frozen=True)
class Rule:
    """One row of the table: the files it covers, the project folders they may import, what they never import."""

    covers: tuple[str, ...]
    may_import: frozenset[str] | None  # None: anything of the project
    never: frozenset[str]
    never_at_module_level: frozenset[str]


def _names(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def _rules(doc: str) -> list[Rule]:
    """The layering table of docs/architecture.md (the rows after the marker)."""
    lines = doc.split(TABLE_MARK, 1)[1].strip().splitlines()
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        covers, _, may, never = cells
        words = [w.strip() for w in never.split(",")] if never != "none" else []
        rows.append(
            Rule(
                covers=tuple(_names(covers)),
                may_import=None if may == "any" else frozenset(n.strip("/") for n in _names(may)),
                never=frozenset(w for w in words if not w.endswith(MODULE_LEVEL)),
                never_at_module_level=frozenset(
                    w.removesuffix(MODULE_LEVEL) for w in words if w.endswith(MODULE_LEVEL)
                ),
            )
        )
    return rows


RULES = _rules((PROJECT_ROOT / "docs" / "architecture.md").read_text())
PIPELINES = sorted(p.name for p in (PACKAGE / "pipelines").iterdir() if p.is_dir() and not p.name.startswith("_"))
SOURCES = sorted(PACKAGE.rglob("*.py"))


def _imports(path: Path, module_level_only: bool = False) -> set[str]:
    """Absolute module names a file imports (relative imports resolved within the package)."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                names.add(f"{base}.{node.module}" if node.module else base)
            elif node.module:
                names.add(node.module)
    return names


def _rule_of(path: Path) -> Rule | None:
    part = path.relative_to(PACKAGE).parts
    key = f"{part[0]}/" if len(part) > 1 else part[0]
    matches = [r for r in RULES if key in r.covers]
    return matches[0] if len(matches) == 1 else None


def _project_folder(name: str) -> str | None:
    """``cardio_kedro.cohort.nih`` -> ``cohort``; the bare package -> None."""
    parts = name.split(".")
    return parts[1] if parts[0] == "cardio_kedro" and len(parts) > 1 else None


def test_the_table_is_read():
    assert len(RULES) >= 10
    assert {"common/", "cohort/", "pipelines/"} <= {c for r in RULES for c in r.covers}


def test_every_module_is_in_exactly_one_row():
    missing = [str(p.relative_to(PACKAGE)) for p in SOURCES if _rule_of(p) is None]
    assert not missing, f"docs/architecture.md's layering table covers none (or several) of: {missing}"


def test_every_row_names_what_exists():
    existing = {f"{p.name}/" for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    existing |= {p.name for p in PACKAGE.glob("*.py")}
    stale = {c for r in RULES for c in r.covers} - existing
    assert not stale, f"the layering table names what the package does not have: {sorted(stale)}"
    for rule in RULES:
        unknown = (rule.may_import or set()) - {e.strip("/").removesuffix(".py") for e in existing}
        assert not unknown, (rule.covers, unknown)


def test_every_folder_says_what_it_may_import():
    for folder in sorted(p for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()):
        doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text())) or ""
        assert "may import" in doc.lower(), f"{folder.name}/__init__.py: say what lives there and what it may import"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_table(path):
    rule = _rule_of(path)
    assert rule is not None
    own = path.relative_to(PACKAGE).parts[0]
    names = _imports(path)
    if rule.may_import is not None:
        folders = {_project_folder(n) for n in names} - {None, own}
        assert folders <= rule.may_import, f"{path.relative_to(PACKAGE)} imports {sorted(folders - rule.may_import)}"
    roots = {n.split(".")[0] for n in names}
    assert not roots & rule.never, f"{path.relative_to(PACKAGE)} imports {sorted(roots & rule.never)}"
    top = {n.split(".")[0] for n in _imports(path, module_level_only=True)}
    assert not top & rule.never_at_module_level, f"{path.relative_to(PACKAGE)}: {top & rule.never_at_module_level}"


def test_every_pipeline_folder_is_registered():
    from cardio_kedro.pipeline_registry import pipeline_folders

    assert PIPELINES == pipeline_folders() and set(PIPELINES) <= set(registered_pipelines())


OPEN_CALLS = {"open", "read_text", "read_bytes", "write_text", "write_bytes", "read_csv", "read_parquet", "to_csv",
              "to_parquet", "savefig", "imwrite"}  # fmt: skip


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_no_node_file_imports_another_pipeline_or_opens_a_file(pipeline):
    """Node files are independent and do no I/O (the catalog does); a pipeline.py may reuse another
    pipeline's wiring (cross_validation and external_validation reuse data_processing's cohort nodes)."""
    for path in sorted((PACKAGE / "pipelines" / pipeline).rglob("*.py")):
        others = {
            name
            for name in _imports(path)
            if name.startswith("cardio_kedro.pipelines.") and name.split(".")[2] != pipeline
        }
        if path.name == "pipeline.py":
            others = {name for name in others if not name.endswith(".pipeline")}
        assert not others, f"{path.relative_to(PACKAGE)} imports {others}"
        calls = {
            node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call)
        }
        assert not calls & OPEN_CALLS, f"{path.relative_to(PACKAGE)} opens files: {sorted(calls & OPEN_CALLS)}"


# ---- one home for every default: conf ------------------------------------------------------------
PARAMETER_TREE = re.compile(r"\b(params|parameters|[a-z_]*_params|config|cfg)\b")
VALUE_LAYERS = ("pipelines", "modeling", "evaluation", "cohort", "config", "datasets")


def _hidden_defaults(source: str, layer: str) -> list[str]:
    """``params.get(key, default)``, ``config.get(...)``, ``getattr(config, key, default)``: a default
    hidden in code beside the YAML's value (``config`` counts in the layers that get parameter groups)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func, args = node.func, [*node.args, *node.keywords]
        if isinstance(func, ast.Attribute) and func.attr in ("get", "setdefault") and len(args) >= 2:
            receiver = ast.unparse(func.value)
        elif isinstance(func, ast.Name) and func.id == "getattr" and len(node.args) == 3:
            receiver = ast.unparse(node.args[0])
        else:
            continue
        match = PARAMETER_TREE.search(receiver)
        if match and (match.group(1) not in ("config", "cfg") or layer in VALUE_LAYERS):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_parameter_is_read_with_a_default_hidden_in_code():
    found = [
        f"{path.relative_to(PACKAGE)}:{line}"
        for path in SOURCES
        for line in _hidden_defaults(path.read_text(), path.relative_to(PACKAGE).parts[0])
    ]
    assert not found, "defaults beside conf: read the key strictly (a missing key must fail)\n" + "\n".join(found)


def test_the_check_finds_a_hidden_default():
    source = "def f(params, config):\n    return params.get('a', 1), getattr(config, 'b', 2), config['c'].get('d', 3)\n"
    assert len(_hidden_defaults(source, layer="pipelines")) == 3
    assert len(_hidden_defaults(source, layer="hooks")) == 1  # a hook's config is a catalog entry, not parameters
    assert _hidden_defaults("def f(row):\n    return row.get('a', 0), params['a']\n", layer="pipelines") == []


def _parameter_models():
    from pydantic import BaseModel

    from cardio_kedro.config import schema

    return [m for m in vars(schema).values() if isinstance(m, type) and issubclass(m, BaseModel) and m is not BaseModel]


# the only fields with a default: runtime-only keys, absent unless given with --params, and the keys of a
# sweep dimension that its type does not use
DEFAULTS_ALLOWED = {
    "ProjectParams": {"cohort_dir", "images_dir", "model_uri"},
    "SweepDimension": {"low", "high", "log", "choices"},
}


def test_no_parameter_field_has_a_default():
    with_default = {
        f"{model.__name__}.{name}"
        for model in _parameter_models()
        for name, info in model.model_fields.items()
        if not info.is_required() and name not in DEFAULTS_ALLOWED.get(model.__name__, set())
    }
    assert not with_default, f"parameter fields with a default in code (set them in conf/base): {sorted(with_default)}"


def test_node_functions_take_every_value_from_the_catalog():
    """A node function's default argument would be a parameter that conf does not set."""
    import inspect

    pipelines = registered_pipelines()
    nodes = {node.func for pipeline in pipelines.values() for node in pipeline.nodes}
    assert len(nodes) > 20
    # a keyword bound in pipeline.py (the fold a fold node trains) is wiring, written where the node is
    unwrapped = {
        (f.func, frozenset(f.keywords)) if isinstance(f, functools.partial) else (f, frozenset()) for f in nodes
    }
    defaults = [
        f"{func.__module__}.{func.__name__}({name}={p.default!r})"
        for func, bound in unwrapped
        for name, p in inspect.signature(func).parameters.items()
        if p.default is not inspect.Parameter.empty and name not in bound
    ]
    assert not defaults, f"node functions with defaults hidden in code: {defaults}"


def test_every_node_is_wired_by_keyword():
    """``pipeline.py`` names each input by the node function's argument (a dict), never by position."""
    by_position = sorted(
        node.name
        for pipeline in registered_pipelines().values()
        for node in pipeline.nodes
        if node._inputs is not None and not isinstance(node._inputs, dict)
    )
    assert not by_position, f"nodes wired by position: {by_position}"
