"""The docs name what the code has: every node and dataset in architecture.md, every README command's pipeline."""

import re

from tests.helpers import PROJECT_ROOT, registered_pipelines


def test_architecture_names_every_node_and_dataset():
    doc = (PROJECT_ROOT / "docs" / "architecture.md").read_text()
    dotted = re.findall(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*", doc)  # external.read_cohort
    words = set(dotted) | {part for word in dotted for part in word.split(".")}
    pipelines = registered_pipelines()
    for name in (
        "phantom_cohort",
        "data_processing",
        "model_training",
        "reporting",
        "multilabel_reporting",
        "inference",
        "cross_validation",
        "external_validation",
    ):
        assert name in words, name
        pipeline = pipelines[name]
        names = {n.name for n in pipeline.nodes} | {d for d in pipeline.datasets() if not d.startswith("params:")}
        missing = {re.sub(r"\bfold_\d+", "fold_k", n) for n in names} - words  # one line for every fold
        assert not missing, f"docs/architecture.md does not name {sorted(missing)} of the {name} pipeline"


def test_readme_and_makefile_name_only_registeredregistered_pipelines():
    registered = set(registered_pipelines())
    for path in ("README.md", "Makefile"):
        text = (PROJECT_ROOT / path).read_text()
        used = set(re.findall(r"--pipelines?[= ]([a-z_]+)", text))
        assert used and used <= registered, (path, used - registered)
        assert "--pipeline=" not in text, f"{path}: use --pipelines (--pipeline is deprecated)"


def _doc_texts():
    paths = [PROJECT_ROOT / "README.md", PROJECT_ROOT / "Makefile", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
    paths += sorted((PROJECT_ROOT / "conf").rglob("*.yml"))
    return {p.relative_to(PROJECT_ROOT): p.read_text() for p in paths}


def test_every_file_the_docs_name_exists():
    missing = []
    for doc, text in _doc_texts().items():
        for name in set(re.findall(r"\b((?:src|tests|benchmarks|docs|conf|notebooks)/[\w/.-]*\w)", text)):
            users_own = name.startswith("conf/local/")  # a user's own files (not in git)
            if "<" not in name and not users_own and not (PROJECT_ROOT / name).exists():
                missing.append(f"{doc}: {name}")
    assert not missing, f"the docs name files that do not exist: {missing}"


def test_every_module_the_docs_run_exists():
    import importlib.util

    missing = []
    for doc, text in _doc_texts().items():
        for module in set(re.findall(r"python3? -m (cardio_kedro(?:\.\w+)*)", text)):
            if importlib.util.find_spec(module) is None:
                missing.append(f"{doc}: python -m {module}")
    assert not missing, f"the docs run modules that do not exist: {missing}"
