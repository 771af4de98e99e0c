"""Training throughput: the Kedro training run end to end against the bare model on in-memory data.

Runs ``data_processing`` + ``model_training`` through a real Kedro session on a phantom cohort in a
scratch project, reads the per-epoch images/s from the run's training history, then times the same
model (same parameters, same precision) with ``model.fit`` on random in-memory uint8 arrays in the
same process. Both phases are measured: head only (frozen backbone) and fine-tuning everything.
The first epoch of each phase (compilation) is left out of both figures.

GPU (no TensorFlow there)::

    KERAS_BACKEND=jax python benchmarks/train_throughput.py --size 224 --batch 64 --patients 12000

CPU smoke run::

    python benchmarks/train_throughput.py --size 32 --batch 16 --patients 120 --width 0.125 --epochs 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# model settings per architecture: the demo's (conf/base) and the NIH run's (conf/nih, without ImageNet weights)
ARCHITECTURES = {
    "demo": {},
    "nih": {"backbone_batchnorm": False, "attention_stride": 16},
}


def model_params(args) -> dict:
    """The model parameters of the measured architecture (``--arch``), width and backbone from the command line."""
    return {
        **ARCHITECTURES[args.arch],
        "backbone": args.backbone,
        "backbone_width": args.width,
        "backbone_weights": None,
    }


def scratch_project(args, extra: dict | None = None) -> Path:
    """A copy of the project's conf with the benchmark's phantom cohort and training parameters
    (``extra``: more ``model_training`` parameters, e.g. ``require_accelerator``)."""
    project = Path(tempfile.mkdtemp(prefix="cardio-bench-"))
    shutil.copytree(ROOT / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
    shutil.copy(ROOT / "pyproject.toml", project / "pyproject.toml")
    (project / "src").mkdir()
    (project / "conf" / "local").mkdir()
    (project / "conf" / "local" / "globals.yml").write_text(f"image_size: {args.size}\n")
    params = {
        "phantoms": {
            "n_patients": args.patients,
            "native_size": args.native,
            "prevalence": 0.25,
            "images_per_folder": 5000,
        },
        "data_processing": {"rebalance": {"neg_per_pos": 3}},
        "model_training": {
            "model": model_params(args),
            "batch_size": args.batch,
            "head": {"epochs": args.epochs, "learning_rate": 1e-3},
            "fine_tune": {"epochs": args.epochs, "learning_rate": 1e-4, "unfreeze_layers": "all"},
            "early_stopping_patience": 100,
            "reduce_lr": {"factor": 0.5, "patience": 100},
            "loader_workers": args.loader_workers,
            "verbose": 0,
            **(extra or {}),
        },
    }
    (project / "conf" / "local" / "parameters.yml").write_text(yaml.safe_dump(params))
    return project


def kedro_run(project: Path, loaders: list[str]):
    """data_processing once, then model_training once per loader; returns histories and timings."""
    import pandas as pd
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    os.chdir(project)
    bootstrap_project(project)
    timings, histories = {}, {}
    runs = [("data_processing", None)] + [("model_training", loader) for loader in loaders]
    for name, loader in runs:
        start = time.perf_counter()
        params = {"model_training": {"loader": loader}} if loader else {}
        with KedroSession.create(project_path=project, runtime_params=params) as session:
            session.run(pipeline_names=[name])
        timings[loader or name] = time.perf_counter() - start
        if loader:
            path = sorted(project.glob("data/07_model_output/training_history.csv/*/*"))[-1]
            histories[loader] = pd.read_csv(path)
    train = pd.read_parquet(sorted(project.glob("data/05_model_input/train_balanced.parquet/*/*"))[-1])
    val = pd.read_parquet(sorted(project.glob("data/05_model_input/validation_balanced.parquet/*/*"))[-1])
    return histories, len(train), len(val), timings


def bare_throughput(args, n_train: int, n_val: int) -> dict[str, float]:
    """images/s of whole epochs (training + validation, like the Kedro run) of ``model.fit`` on
    random in-memory uint8 arrays, per phase, after one warm-up epoch.

    The same training computation as the Kedro run (the auxiliary view output, weight averaging,
    gradient clipping, precision), without its loaders, callbacks and bookkeeping.
    """
    import keras
    import numpy as np

    from cardio_kedro.config import ModelTrainingParams
    from cardio_kedro.modeling import build_model, with_view_head
    from cardio_kedro.modeling.fitting import compile_options
    from cardio_kedro.modeling.training import compile_model, resolve_precision, set_trainable
    from cardio_kedro.settings import load_parameters  # Kedro's loader, the project's settings

    params = load_parameters(str(ROOT / "conf"), env="base")["model_training"]
    params["model"].update(model_params(args))
    config = ModelTrainingParams.model_validate(params)
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(resolve_precision("auto"))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n_train, args.size, args.size, 1), dtype=np.uint8)
    y = (rng.random(n_train) < 0.25).astype("float32")
    model = build_model(args.size, **config.model.model_dump())
    if config.view_loss_weight > 0:
        model, y = with_view_head(model), (y, (rng.random(n_train) < 0.4).astype("float32"))
    val = (x[:n_val], tuple(t[:n_val] for t in y) if isinstance(y, tuple) else y[:n_val])
    compiled = compile_options(config)  # what a run compiles with (conf/base: weight averaging, clipping, ...)
    out = {}
    for phase, unfreeze in (("head", 0), ("fine_tune", "all")):
        set_trainable(model, unfreeze)
        compile_model(model, 1e-4, config.loss, **compiled)
        model.fit(x, y, batch_size=args.batch, epochs=1, verbose=0, validation_data=val)  # compile + warm-up
        start = time.perf_counter()
        model.fit(x, y, batch_size=args.batch, epochs=args.epochs - 1 or 1, verbose=0, validation_data=val)
        out[phase] = n_train * (args.epochs - 1 or 1) / (time.perf_counter() - start)
    keras.mixed_precision.set_dtype_policy(previous)
    return out


def kedro_vs_bare(histories: dict, bare: dict[str, float], n_train: int) -> list[dict]:
    """Per loader and phase: the Kedro run's steady-state images/s, the bare model's, and their ratio."""
    rows = []
    for loader, history in histories.items():
        for phase, epochs in history.groupby("phase", sort=False):
            steady = epochs.iloc[1:] if len(epochs) > 1 else epochs  # the first epoch of a phase compiles
            e2e = n_train * len(steady) / steady["epoch_seconds"].sum()
            rows.append(
                {"loader": loader, "phase": phase, "kedro": e2e, "bare": bare[phase], "ratio": e2e / bare[phase]}
            )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--patients", type=int, default=12000)
    parser.add_argument("--native", type=int, default=256, help="px of the phantom PNGs")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per phase (the first is warm-up)")
    parser.add_argument("--backbone", default="vgg16")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default="nih", help="model settings of conf/<arch>")
    parser.add_argument("--loader-workers", type=int, default=1, help="threads of the stream loader")
    parser.add_argument("--loaders", default="memory,stream", help="model_training.loader values to run")
    args = parser.parse_args()

    import keras

    project = scratch_project(args)
    print(f"scratch project {project}; backend {keras.backend.backend()}; devices {keras.distribution.list_devices()}")
    loaders = args.loaders.split(",")
    histories, n_train, n_val, timings = kedro_run(project, loaders)
    bare = bare_throughput(args, n_train, n_val)
    policy = keras.mixed_precision.dtype_policy().name
    print(f"\ntraining images {n_train} (+{n_val} validated per epoch), {args.size}px, batch {args.batch}")
    print(f"{policy}, {args.backbone} x{args.width:g} ({args.arch} settings), backend {keras.backend.backend()}")
    print(f"data_processing {timings['data_processing']:.1f}s (phantom generation, checks, decoding, splits)")
    print(f"{'loader':<8} {'phase':<10} {'kedro run img/s':>16} {'bare img/s':>12} {'ratio':>7}")
    for row in kedro_vs_bare(histories, bare, n_train):
        print(f"{row['loader']:<8} {row['phase']:<10} {row['kedro']:>16.0f} {row['bare']:>12.0f} {row['ratio']:>7.2f}")
    for loader, history in histories.items():
        print(f"\nloader {loader}: model_training {timings[loader]:.1f}s")
        print(
            history[["epoch", "phase", "loss", "val_auc", "epoch_seconds", "images_per_second"]].to_string(index=False)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
