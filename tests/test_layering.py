"""The package's layering rules, read from the source: what may import what."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "cardio_kedro"
PIPELINES = sorted(p.name for p in (PACKAGE / "pipelines").iterdir() if p.is_dir() and not p.name.startswith("_"))


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


def _files(folder: Path) -> list[Path]:
    files = sorted(folder.rglob("*.py"))
    assert files, folder
    return files


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_no_pipeline_imports_another_pipeline(pipeline):
    assert len(PIPELINES) == 6
    for path in _files(PACKAGE / "pipelines" / pipeline):
        others = {
            name
            for name in _imports(path)
            if name.startswith("cardio_kedro.pipelines.") and name.split(".")[2] != pipeline
        }
        assert not others, f"{path.relative_to(PACKAGE)} imports {others}"


def test_datasets_import_no_pipeline():
    for path in _files(PACKAGE / "datasets"):
        pipelines = {name for name in _imports(path) if name.startswith("cardio_kedro.pipelines")}
        assert not pipelines, f"{path.relative_to(PACKAGE)} imports {pipelines}"


def test_modeling_imports_neither_kedro_nor_tensorflow_at_module_level():
    for path in _files(PACKAGE / "modeling"):
        roots = {name.split(".")[0] for name in _imports(path, module_level_only=True)}
        assert not roots & {"kedro", "kedro_datasets", "kedro_mlflow", "tensorflow"}, path.relative_to(PACKAGE)
        inner = {name for name in _imports(path, module_level_only=True) if name.startswith("cardio_kedro.")}
        assert all(name.startswith("cardio_kedro.modeling") for name in inner), (path, inner)


def test_nodes_never_import_mlflow():
    for path in _files(PACKAGE / "pipelines"):
        assert not {n for n in _imports(path) if n.split(".")[0] == "mlflow"}, path.relative_to(PACKAGE)


def test_no_parameter_is_read_with_a_default_hidden_in_code():
    for path in _files(PACKAGE):
        assert "params.get(" not in path.read_text(), path.relative_to(PACKAGE)
