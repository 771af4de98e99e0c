"""Inference throughput against its real bound, and serving latency.

In one run, on 1024x1024 PNGs (the shared sample of real NIH images, or ``--source phantom``:
1024 px phantoms, for a machine without ../shared), repeated through symbolic links:

* batch: ``kedro run --pipelines=inference`` over N files, PNG on disk to probabilities (images/s
  of the session's run, model loading included);
* its two parts alone, in the same process: decoding the same files on every core (the pipeline's
  worker pool) and the bare model's ``predict`` on as many in-memory uint8 arrays;
* the bound those set: on the CPU decoding and ``predict`` share the cores, so the run can reach at
  most 1 / (1/decode + 1/predict); with an accelerator they overlap: min(decode, predict). The
  ratio of the batch run to that bound is what the pipeline itself costs;
* HTTP: the registered serving pyfunc behind ``mlflow models serve`` on 127.0.0.1, single-image
  requests one after another: median and p95 latency (``--requests 0`` skips it).

The model is built at ``--size`` px with the ``--arch`` settings (untrained: the weights do not
change the cost).

    python benchmarks/inference_throughput.py --size 224 --n 2000 --requests 200
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
from train_throughput import ARCHITECTURES

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "nih" / "sample"
NIH_MODEL = {"backbone_width": 1.0, **ARCHITECTURES["nih"]}  # conf/nih's architecture at full width


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


def trained_layout(project: Path, size: int, model_overrides: dict | None = None, save: bool = True):
    """An untrained model (conf/base's settings updated by ``model_overrides``), calibrated (identity) with
    threshold 0.5, saved where the catalog looks: ``(model, file)``; with ``save=False`` the model alone."""
    from cardio_kedro.config import ModelTrainingParams
    from cardio_kedro.modeling import build_model, calibrate
    from cardio_kedro.settings import load_parameters  # Kedro's loader, the project's settings

    params = load_parameters(str(ROOT / "conf"), env="base")["model_training"]
    params["model"].update(model_overrides or {})
    model = calibrate(build_model(size, **ModelTrainingParams.model_validate(params).model.model_dump()), 1.0, 0.0, 0.5)
    if not save:
        return model
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


def decode_rate(sources: list[Path], n: int, size: int) -> float:
    """images/s of decoding ``n`` files to ``size`` px on every core, as the inference pipeline does."""
    from functools import partial

    from cardio_kedro.cohort.imaging import try_load_gray
    from cardio_kedro.common.parallel import imap_progress

    paths = [str(sources[i % len(sources)]) for i in range(n)]
    start = time.perf_counter()
    for _ in imap_progress(partial(try_load_gray, size=size), paths, total=n, what="Decoding"):
        pass
    return n / (time.perf_counter() - start)


def bound(decode: float, predict: float, accelerator: bool) -> float:
    """The most images/s a decode-then-predict run can reach: the two overlap on an accelerator
    (the slower one bounds), and share the cores on a CPU (their times add up)."""
    return min(decode, predict) if accelerator else 1.0 / (1.0 / decode + 1.0 / predict)


def phantom_sources(folder: Path, count: int = 32, size: int = 1024) -> list[Path]:
    """``count`` phantom radiographs written as ``size`` px PNGs in ``folder`` (NIH's size by default)."""
    import cv2

    from cardio_kedro.cohort.phantoms import render_phantom, sample_cohort

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    from cardio_kedro.settings import load_parameters  # Kedro's loader, the project's settings

    phantoms = load_parameters(str(ROOT / "conf"), env="base")["phantoms"]
    drawing = {k: phantoms[k] for k in ("ap_fraction", "reader_sd", "ctr_spread", "drawn_findings")}
    for row in sample_cohort(count, 0.25, 0.0, seed=0, **drawing).head(count).to_dict("records"):
        path = folder / row["Image Index"]
        cv2.imwrite(str(path), render_phantom(row, size))
        paths.append(path)
    return paths


def bare_rate(model, sources: list[Path], n: int, size: int, batch: int = 64) -> float:
    """images/s of the bare model on ``n`` in-memory uint8 arrays, ``predict_on_batch`` batch after batch."""
    from cardio_kedro.cohort.imaging import load_gray

    x = np.stack([load_gray(sources[i % len(sources)], size)[0] for i in range(n)])[..., None]
    model.predict_on_batch(x[:batch])  # warm-up (compiles)
    start = time.perf_counter()
    for first in range(0, n, batch):  # the model's fastest path: Keras' predict() adds a data pipeline per call
        model.predict_on_batch(x[first : first + batch])
    return n / (time.perf_counter() - start)


def serve_latencies(project: Path, model_file: Path, image: bytes, requests: int) -> list[float]:
    """Milliseconds per single-image request to the registered pyfunc behind ``mlflow models serve``."""
    import mlflow

    from cardio_kedro.modeling.serving import XrayClassifierService

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
    parser.add_argument("--n", type=int, default=2000, help="files scored (start-up is spread over them)")
    parser.add_argument("--requests", type=int, default=200, help="HTTP requests (0: no serving check)")
    parser.add_argument("--source", choices=["nih", "phantom"], default="nih", help="1024 px PNGs to score")
    parser.add_argument("--arch", choices=["demo", "nih"], default="demo", help="model settings of conf/<arch>")
    args = parser.parse_args()
    print("\n" + "\n".join(measure(args.size, args.n, args.source, args.arch, args.requests)["lines"]))
    return 0


def measure(size: int, n: int, source: str, arch: str, requests: int) -> dict:
    """Every figure of this benchmark, with the printed lines under ``lines``."""
    import keras

    from cardio_kedro.modeling.devices import accelerators, device_summary, visible_devices
    from cardio_kedro.modeling.training import resolve_precision

    overrides = {"demo": {}, "nih": NIH_MODEL}
    project = scratch_project(size)
    # the precision training would give the model here (mixed_bfloat16 on a GPU): inference keeps the saved policy
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(resolve_precision("auto"))
    try:
        model, model_file = trained_layout(project, size, overrides[arch])
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
    sources = sorted(SAMPLE.rglob("*.png")) if source == "nih" else phantom_sources(project / "phantoms")
    batch = batch_rate(project, sources, n)
    decode = decode_rate(sources, n, size)
    bare = bare_rate(model, sources, n, size)
    on_accelerator = bool(accelerators(visible_devices()))
    limit = bound(decode, bare, on_accelerator)
    how = "min(decode, predict): they overlap" if on_accelerator else "1/(1/decode + 1/predict): they share the cores"
    out = {"batch": batch, "decode": decode, "predict": bare, "bound": limit, "ratio": batch / limit}
    out["sources"] = [str(p) for p in sources]
    lines = [
        f"{size}px, {n} {source} PNGs (1024x1024), {arch} model ({model.dtype_policy.name}), {device_summary()}, "
        f"{os.cpu_count()} CPUs",
        f"batch inference (kedro run, PNG on disk -> probabilities): {batch:7.1f} img/s",
        f"decode on every core:                                       {decode:7.1f} img/s",
        f"bare model.predict_on_batch on in-memory uint8 arrays:       {bare:7.1f} img/s",
        f"bound {how}: {limit:7.1f} img/s",
        f"batch run / bound: {batch / limit:.2f}",
    ]
    if requests:
        latencies = serve_latencies(project, model_file, sources[0].read_bytes(), requests)
        out.update(http_median_ms=float(np.median(latencies)), http_p95_ms=float(np.percentile(latencies, 95)))
        lines.append(
            f"HTTP single image over {len(latencies)} requests: median {out['http_median_ms']:.1f} ms, "
            f"p95 {out['http_p95_ms']:.1f} ms"
        )
    out["lines"] = lines
    return out


if __name__ == "__main__":
    sys.exit(main())
