"""Multi-host data-parallel training on JAX: the same command in every process, on every host.

    KERAS_BACKEND=jax \
    KERAS_DISTRIBUTION_JOB_ADDRESSES=host0:12345 KERAS_DISTRIBUTION_NUM_PROCESSES=4 KERAS_DISTRIBUTION_PROCESS_ID=<i> \
    python -m cardio_kedro.team.multihost [--env nih] [--params cohort_dir=/data/nih]

Every process joins JAX's distributed runtime (``keras.distribution.initialize``) first, then:

- **process 0** runs ``kedro run --pipelines=model_training,reporting`` with
  ``model_training.distribution=multi_host``: the one MLflow run, the saved and registered model,
  calibration and the report (the last two on process 0 alone, after training);
- **every other process** trains its shard of the splits in step with it (the ``train_model``
  node only, its inputs read from the catalog): no MLflow run, nothing saved.

Each process reads its own shard of the memory-mapped split (Keras does not shard NumPy arrays or
a ``PyDataset`` across processes); a step's batch is ``batch_size`` images over all processes. The
splits and the pixel cache must exist where every process reads them: run
``kedro run --pipelines=data_processing`` once first, on shared storage or on every host.
docs/scaling_out.md has the Slurm and ssh launches.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import numpy as np

logger = logging.getLogger("cardio_kedro.team.multihost")
PIPELINES = ("model_training", "reporting")


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default=None, help="the Kedro environment (e.g. nih)")
    parser.add_argument("--params", default="", help="--params of the run, e.g. cohort_dir=/data/nih")
    parser.add_argument("--project", type=Path, default=Path.cwd(), help="the project folder (default: here)")
    parser.add_argument(
        "--save-weights", type=Path, default=None, help="also write this process's trained weights (.npz) here"
    )
    return parser.parse_args(argv)


def _training_node():
    """The ``train_model`` node as the registered model_training pipeline wires it (its inputs and outputs)."""
    from kedro.framework.project import pipelines

    from cardio_kedro.pipelines.model_training.nodes import train_model

    (node,) = [n for n in pipelines["model_training"].nodes if n.func is train_model]
    return node


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    if os.environ.get("KERAS_BACKEND") != "jax":
        print("error: multi-host training runs on JAX: set KERAS_BACKEND=jax", file=sys.stderr)
        return 2
    from cardio_kedro.modeling.training import initialize_multi_host

    try:
        index, count = initialize_multi_host()  # before JAX computes anything
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from cardio_kedro.config import deep_merge, parse_runtime_params

    runtime = deep_merge(parse_runtime_params(args.params), {"model_training": {"distribution": "multi_host"}})
    bootstrap_project(args.project)
    with KedroSession.create(project_path=args.project, env=args.env, runtime_params=runtime) as session:
        if index == 0:
            logger.info("process 0 of %d: training, calibration, reporting, MLflow", count)
            session.run(pipeline_names=list(PIPELINES))
            model = session.load_context().catalog.load("uncalibrated_classifier") if args.save_weights else None
        else:
            logger.info("process %d of %d: training its shard in step with process 0", index, count)
            node = _training_node()
            catalog = session.load_context().catalog
            outputs = node.run({name: catalog.load(name) for name in node.inputs})
            model = outputs[node.outputs[0]]
    if args.save_weights:
        args.save_weights.parent.mkdir(parents=True, exist_ok=True)
        np.savez(args.save_weights, *model.get_weights())
    return 0


if __name__ == "__main__":
    sys.exit(main())
