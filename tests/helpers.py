"""Helpers shared by the tests: parameters from conf/base, phantom cohorts, throw-away Kedro projects, servers."""

from __future__ import annotations

import copy
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from cardio_kedro.cohort.nih import BOX_LIST_FILE, LABEL_TABLE_FILE
from cardio_kedro.config import deep_merge
from cardio_kedro.datasets import (
    BoxListDataset,
    DecodedChunk,
    ImageFileIndexDataset,
    LabelTableDataset,
    PixelCacheDataset,
)
from cardio_kedro.pipelines.phantom_cohort.nodes import generate_phantom_cohort

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_NIH = PROJECT_ROOT.parent / "shared" / "data" / "nih"
BASE_CONF = PROJECT_ROOT / "conf" / "base"


def registered_pipelines() -> dict:
    """The project's registered pipelines (``pipeline_registry``), as ``kedro run`` finds them."""
    import warnings

    from kedro.framework.project import configure_project

    configure_project("cardio_kedro")
    from cardio_kedro.pipeline_registry import register_pipelines

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return register_pipelines()


def base_params(group: str, **overrides: Any) -> dict:
    """A parameter group as conf/base sets it, with ``overrides`` merged in key by key."""
    tree: dict = {}
    for path in sorted(BASE_CONF.glob("parameters*.yml")):
        tree.update(yaml.safe_load(path.read_text()) or {})
    return deep_merge(copy.deepcopy(tree[group]), overrides)


def phantom_params(**overrides: Any) -> dict:
    """Small, fast phantom parameters (serial rendering) on top of conf/base."""
    small = {"n_patients": 60, "native_size": 64, "prevalence": 0.3, "seed": 3, "images_per_folder": 50, "workers": 1}
    return base_params("phantoms", **{**small, **overrides})


def make_phantom_cohort(path: Path, **overrides: Any) -> Path:
    """Write a small phantom cohort (images, box list, label table) to ``path``."""
    images, boxes, labels = generate_phantom_cohort(phantom_params(**overrides))
    ImageFileIndexDataset(str(path)).save(images)
    BoxListDataset(str(path / BOX_LIST_FILE)).save(boxes)
    LabelTableDataset(str(path / LABEL_TABLE_FILE)).save(labels)
    return path


# model_training.model for a model that builds and trains in a second on the CPU
TINY_MODEL = {
    "backbone": "vgg16",
    "backbone_weights": None,
    "backbone_width": 0.125,
    "backbone_batchnorm": True,
    "batchnorm_momentum": 0.9,
    "attention_stride": 8,
    "attention_context_stride": None,
    "attention_map": "sigmoid",
    "global_context": "mean",
    "attention_units": [8, 1],
    "attention_activation": "elu",
    "dense_units": 8,
    "dropout": 0.1,
    "augmentation": None,
}


def tiny_params(**overrides):
    """model_training parameters from conf/base, made tiny; ``overrides`` merge key by key."""
    tiny = {
        "model": dict(TINY_MODEL),
        "seed": 1,
        "batch_size": 16,
        "head": {"epochs": 1, "learning_rate": 1e-3},
        "fine_tune": {"epochs": 2, "learning_rate": 1e-3, "unfreeze_layers": "all"},
        "early_stopping_patience": 5,
        "reduce_lr": {"factor": 0.5, "patience": 5},
        "mixed_precision": "float32",
        "verbose": 0,
    }
    return base_params("model_training", **deep_merge(tiny, overrides))


# data_processing's rebalancing record when nothing was rebalanced (the toy set is 1/3 positive)
NO_REBALANCING = {
    "strategy": "undersample",
    "class_weight": {"0": 1.0, "1": 1.0},
    "prevalence": {"natural": 1 / 3, "trained": 1 / 3},
}

TINY_GLOBALS = "image_size: 32\n"
TINY_PARAMETERS = """
phantoms:
  n_patients: 90
  native_size: 64
  prevalence: 0.35
  workers: 1
  images_per_folder: 60
data_processing:
  workers: 1
model_training:
  model:
    backbone_width: 0.125
    attention_units: [8, 1]
    dense_units: 8
  batch_size: 16
  head: {epochs: 1}
  fine_tune: {epochs: 1}
  verbose: 0
reporting:
  n_bootstrap: 50
  heatmaps_per_group: 2
  examples_per_class: 2
"""


def make_tiny_project(tmp_path: Path) -> Path:
    """A copy of the project's conf in ``tmp_path``, with tiny parameters and an absolute MLflow store."""
    shutil.copytree(PROJECT_ROOT / "conf", tmp_path / "conf", ignore=shutil.ignore_patterns("local"))
    shutil.copy(PROJECT_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "conf" / "local").mkdir()
    (tmp_path / "src").mkdir()  # the package itself is installed; Kedro only checks the folder
    (tmp_path / "conf" / "local" / "parameters.yml").write_text(TINY_PARAMETERS)
    (tmp_path / "conf" / "local" / "globals.yml").write_text(TINY_GLOBALS)
    # an absolute store: MLflow caches stores by URI, and the relative one would follow the first project
    mlflow_yml = (PROJECT_ROOT / "conf" / "base" / "mlflow.yml").read_text()
    absolute = mlflow_yml.replace("sqlite:///mlflow.db", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert absolute != mlflow_yml
    (tmp_path / "conf" / "local" / "mlflow.yml").write_text(absolute)
    return tmp_path


def run_pipeline(project: Path, pipeline: str, env: str | None = None, runtime_params: dict | None = None, **run):
    """Run a pipeline of the project in ``project`` through a real Kedro session."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=env, runtime_params=runtime_params or {}) as session:
        return session.run(pipeline_names=[pipeline], **run)


def mlflow_serve_command(model_uri: str, port: int) -> list[str]:
    """``mlflow models serve`` of ``model_uri`` in this environment, on 127.0.0.1:``port``."""
    mlflow = str(Path(sys.executable).parent / "mlflow")
    return [
        mlflow,
        "models",
        "serve",
        "-m",
        model_uri,
        "--env-manager",
        "local",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now, below 49152 (kedro viz refuses ephemeral ports)."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 49000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port found between 20000 and 49000")


@contextmanager
def serve(command: list[str], cwd: Path, url: str, env: dict | None = None, timeout: float = 120):
    """Start a server in its own process group, wait for ``url``, and always stop it by process id."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, **(env or {}), "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline = time.time() + timeout
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2):
                    break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
                assert time.time() < deadline, f"{command[0]} did not answer in {timeout} s"
                time.sleep(1)
        yield proc
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except ProcessLookupError:  # it already exited
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


# A tiny multi-label run: phantoms drawing five findings, six target findings (one labels-only)
MULTI_LABEL_FINDINGS = ["Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumothorax"]  # NIH order
MULTI_LABEL_PARAMS = {
    "target_findings": "|".join(MULTI_LABEL_FINDINGS),
    "phantoms": {
        "drawn_findings": ["Cardiomegaly", "Effusion", "Mass", "Nodule", "Pneumothorax"],
        "n_patients": 160,
        "prevalence": 0.3,
    },
    "data_processing": {"rebalance": {"strategy": "class_weight"}},
    "model_training": {"view_loss_weight": 0.0},
}


def write_toy_cache(root: Path, images: list, rows: list[dict]):
    """Write 32 px toy ``images`` as PNGs in ``root`` and into a pixel cache there; ``rows`` (one dict of
    columns per image) gain ``image_index``, ``patient_id`` (the image's number) and ``path``.
    Returns the table and the cache dataset."""
    import cv2
    import numpy as np
    import pandas as pd

    table = []
    for i, (img, row) in enumerate(zip(images, rows)):
        path = root / f"{i}.png"
        cv2.imwrite(str(path), img)
        table.append({"image_index": path.name, "patient_id": i, "path": str(path), **row})
    table = pd.DataFrame(table)
    dataset = PixelCacheDataset(str(root / "cache"), image_size=32)
    n = len(table)
    dataset.save(DecodedChunk(32, table["path"].tolist(), np.stack(images), np.full((n, 2), 32), np.ones((n, 2), int)))
    return table, dataset


def clean_rows(labels, target_findings, params):
    """``clean_metadata`` on a label table read with nothing left out by its layout: (clean table, label report)."""
    import pandas as pd

    from cardio_kedro.pipelines.data_processing.nodes import clean_metadata

    nothing = pd.DataFrame({"image_index": [], "reason": [], "detail": []}, dtype=str)
    clean, report, _ = clean_metadata(labels, nothing, {"layout": "nih"}, target_findings, params)
    return clean, report


def read_layout(folder, params, workers):
    """``read_cohort``'s table, image files and official split (its left-out rows and label policy dropped)."""
    from cardio_kedro.pipelines.data_processing.nodes import read_cohort

    return read_cohort(folder, params, workers)[:3]


def data_processing_catalog(folder: Path, cache, image_size: int, **cohort):
    """An in-memory catalog for data_processing from ``read_cohort`` on the cohort at ``folder`` (its layout in
    ``cohort``), decoding into ``cache`` (a PixelCacheDataset), one worker, target Cardiomegaly."""
    from kedro.io import DataCatalog

    from cardio_kedro.datasets import CohortFolder

    catalog = DataCatalog(datasets={"existing_pixel_cache": cache, "pixel_cache": cache})
    catalog["cohort_folder"] = CohortFolder(str(folder))
    catalog["cohort_storage"] = {}
    catalog["params:cohort"] = base_params("cohort", **cohort)
    catalog["params:data_processing"] = base_params("data_processing", workers=1)
    catalog["params:data_processing.workers"] = 1
    catalog["params:target_findings"] = "Cardiomegaly"
    catalog["params:image_size"] = image_size
    return catalog


def data_written(project: Path) -> list[Path]:
    """The files a run wrote under the project's ``data/``, but for the project's run lock (taken first of all)."""
    return [p for p in (project / "data").rglob("*") if p.is_file() and p.name != ".run.lock"]
