"""Inference throughput and serving latency on this machine's CPU.

In one run, on real 1024x1024 NIH PNGs (the shared sample, repeated through symbolic links):

* batch: ``kedro run --pipelines=inference`` over N files, PNG on disk to probabilities (images/s
  of the session's run, model loading included), next to the bare model's ``predict`` on the same
  number of in-memory uint8 arrays;
* HTTP: the registered serving pyfunc behind ``mlflow models serve`` on 127.0.0.1, single-image
  requests one after another: median and p95 latency.

The model is the demo architecture built at ``--size`` px (untrained: the weights do not change
the cost).

    python benchmarks/inference_throughput.py --size 224 --n 400 --requests 200
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "nih" / "sample"


def scratch_project(size: int) -> Path:
    project = Path(tempfile.mkdtemp(prefix="cardio-infer-"))
    shutil.copytree(ROOT / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
    shutil.copy(ROOT / "pyproject.toml", project / "pyproject.toml")
    (project / "src").mkdir()
    (project / "conf" / "local").mkdir()
    (project / "conf" / "local" / "globals.yml").write_text(yaml.safe_dump({"image_size": size}))
    mlflow_yml = (ROOT / "conf/base/mlflow.yml").read_text()
    (project / "conf/local/mlflow.yml").write_text(
        mlflow_yml.replace("sqlite:///mlflow.db", f"sqlite:///{project}/mlflow.db")
    )
    return project


def trained_layout(project: Path, size: int) -> tuple:
    """An untrained demo-architecture model, calibrated (identity) with threshold 0.5, saved where the catalog looks."""
    from cardio_kedro.config import ModelTrainingParams
    from cardio_kedro.modeling import build_model, calibrate

    params = yaml.safe_load((ROOT / "conf/base/parameters_model_training.yml").read_text())["model_training"]
    model = calibrate(build_model(size, **ModelTrainingParams.model_validate(params).model.model_dump()), 1.0, 0.0, 0.5)
    version = "2026-01-01T00.00.00.000Z"
    model_file = project / "data/06_models/classifier.keras" / version / "classifier.keras"
    model_file.parent.mkdir(parents=True)
    model.save(model_file)
    return model, model_file


def batch_rate(project: Path, sources: list[Path], n: int) -> float:
    """images/s of ``kedro run --pipelines=inference`` over ``n`` files (links to the sample)."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    images = project / "incoming"
    images.mkdir()
    for i in range(n):
        (images / f"{i:05d}.png").symlink_to(sources[i % len(sources)])
    for p in sources:
        p.read_bytes()  # warm the page cache
    os.chdir(project)
    bootstrap_project(project)
    start = time.perf_counter()
    with KedroSession.create(project_path=project, runtime_params={"images_dir": str(images)}) as session:
        session.run(pipeline_names=["inference"])
    return n / (time.perf_counter() - start)


def bare_rate(model, sources: list[Path], n: int, size: int) -> float:
    """images/s of the bare ``model.predict`` on ``n`` in-memory uint8 arrays."""
    from cardio_kedro.imaging import load_gray

    x = np.stack([load_gray(sources[i % len(sources)], size)[0] for i in range(n)])[..., None]
    model.predict(x[:64], batch_size=64, verbose=0)  # warm-up
    start = time.perf_counter()
    model.predict(x, batch_size=64, verbose=0)
    return n / (time.perf_counter() - start)


def serve_latencies(project: Path, model_file: Path, image: bytes, requests: int) -> list[float]:
    """Milliseconds per single-image request to the registered pyfunc behind ``mlflow models serve``."""
    import mlflow

    from cardio_kedro.serving import XrayClassifierService

    uri = f"sqlite:///{project}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run():
        mlflow.pyfunc.log_model(
            name="service",
            python_model=XrayClassifierService(),
            artifacts={"keras_model": str(model_file)},
            registered_model_name="bench-service",
        )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    command = ["models", "serve", "-m", "models:/bench-service/1", "--env-manager", "local"]
    server = subprocess.Popen(
        [str(bin_dir / "mlflow"), *command, "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    latencies = []
    try:
        for _ in range(180):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                time.sleep(1)
        payload = {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(image).decode()]]}}
        body, headers = json.dumps(payload).encode(), {"Content-Type": "application/json"}
        for i in range(requests + 5):
            request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body, headers=headers)
            t = time.perf_counter()
            with urllib.request.urlopen(request, timeout=60) as response:
                response.read()
            if i >= 5:  # the first requests warm the model up
                latencies.append(1000 * (time.perf_counter() - t))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()

    import keras

    project = scratch_project(args.size)
    model, model_file = trained_layout(project, args.size)
    sources = sorted(SAMPLE.rglob("*.png"))
    batch = batch_rate(project, sources, args.n)
    bare = bare_rate(model, sources, args.n, args.size)
    latencies = serve_latencies(project, model_file, sources[0].read_bytes(), args.requests)
    print(f"\n{args.size}px, {args.n} NIH PNGs (1024x1024), backend {keras.backend.backend()}, {os.cpu_count()} CPUs")
    print(f"batch inference (kedro run, PNG on disk -> probabilities): {batch:7.1f} img/s")
    print(f"bare model.predict on in-memory uint8 arrays:                {bare:7.1f} img/s")
    print(
        f"HTTP single image over {len(latencies)} requests: median {np.median(latencies):.1f} ms, "
        f"p95 {np.percentile(latencies, 95):.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
