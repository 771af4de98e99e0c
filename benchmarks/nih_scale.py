"""The full NIH download's scale on this machine: 112,120 rows of the real label table, phantom pixels.

The cohort is the real ``Data_Entry_2017_v2020.csv.gz`` (../shared/data/nih): its patient IDs,
follow-ups, ages, sexes, views and findings. Every row gets a phantom radiograph drawn to follow its
labels (Cardiomegaly rows get a cardiothoracic ratio above 0.5), written once as a ``--native`` px PNG
and hard-linked into one NIH-layout cohort folder per size N (whole patients, drawn at random). Real
NIH boxes name the images that get a phantom heart box.

For each N, through Kedro sessions in a scratch project:

* ``data_processing``: the whole pipeline (label checks, file checks, decoding to the pixel cache,
  patient-wise splits, rebalancing);
* ``model_training``: one epoch on ``--batches`` batches (``model_training.max_batches_per_epoch``),
  then calibration and the threshold on the whole validation split;
* ``reporting``: the whole pipeline on the full test split (about 20% of N): metrics with the
  patient-level bootstrap, plots, the heat-map grid, localization, the HTML report.

Printed per N and stage: wall time, time per image (per cohort row), peak RSS of the main process
and of its worker processes (the largest single worker, and all workers together); then the pixel
cache on disk, the MLflow database and the report. Figures also go to ``nih_scale.json``.

    python benchmarks/nih_scale.py                                 # 14k, 28k, 56k, 112k rows
    python benchmarks/nih_scale.py --sizes 2000 --batches 2         # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
NIH = ROOT.parent / "shared" / "data" / "nih"
LABELS = NIH / "Data_Entry_2017_v2020.csv.gz"
BOXES = NIH / "BBox_List_2017.csv.gz"
IMAGES_PER_FOLDER = 10000  # the Kaggle download has 12 folders of about 10,000 images


class PeakRss:
    """Samples the RSS of this process and of its child processes every ``every`` seconds."""

    def __init__(self, every: float = 0.2):
        self.every, self.main, self.worker, self.workers = every, 0, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            try:
                self.main = max(self.main, me.memory_info().rss)
                rss = []
                for child in me.children(recursive=True):
                    try:
                        rss.append(child.memory_info().rss)
                    except psutil.Error:
                        pass
                self.worker = max([self.worker, *rss])
                self.workers = max(self.workers, sum(rss))
            except psutil.Error:
                pass
            self._stop.wait(self.every)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _render(row: dict, size: int, folder: str) -> None:
    from cardio_kedro.pipelines.phantom_cohort.nodes import _render_png

    path = Path(folder) / row["Image Index"]
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(_render_png(row, size))
        tmp.rename(path)


def render_all(drawn: pd.DataFrame, size: int, folder: Path) -> float:
    """Every row's phantom as a PNG in ``folder`` (kept between runs); returns the seconds it took."""
    from cardio_kedro.common.parallel import imap_progress

    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    todo = drawn[~drawn["Image Index"].map(lambda f: (folder / f).exists())]
    rows = todo.to_dict("records")
    for _ in imap_progress(partial(_render, size=size, folder=str(folder)), rows, len(rows), "Rendering", chunksize=64):
        pass
    return time.perf_counter() - start


def cohort_folder(drawn: pd.DataFrame, labels: pd.DataFrame, n: int, native: int, images: Path, root: Path) -> Path:
    """An NIH-layout cohort of whole patients (at least ``n`` rows, drawn at random) linked to the rendered PNGs."""
    from cardio_kedro.cohort.phantoms import heart_box

    folder = root / f"cohort_{n}"
    if folder.exists():
        shutil.rmtree(folder)
    patients = pd.Series(labels["Patient ID"].unique()).sample(frac=1.0, random_state=0)
    counts = labels.groupby("Patient ID").size().reindex(patients.to_numpy())
    keep = set(counts.index[: int(np.searchsorted(counts.cumsum().to_numpy(), n)) + 1])
    rows = labels["Patient ID"].isin(keep).to_numpy()
    table = labels[rows].copy()
    table["OriginalImage[Width"], table["Height]"] = native, native
    for i, file in enumerate(table["Image Index"]):
        target = folder / f"images_{i // IMAGES_PER_FOLDER + 1:03d}" / "images" / file
        if i % IMAGES_PER_FOLDER == 0:
            target.parent.mkdir(parents=True)
        os.link(images / file, target)
    table.to_csv(folder / "Data_Entry_2017.csv", index=False)
    # NIH's boxed Cardiomegaly images that are in this cohort get their phantom's heart box
    boxed = set(pd.read_csv(BOXES).query("`Finding Label` == 'Cardiomegaly'")["Image Index"])
    picked = drawn[rows & drawn["Image Index"].isin(boxed).to_numpy()]
    boxes = pd.DataFrame([heart_box(r, native) for r in picked.to_dict("records")], columns=["Bbox [x", "y", "w", "h]"])
    boxes.insert(0, "Finding Label", "Cardiomegaly")
    boxes.insert(0, "Image Index", picked["Image Index"].to_numpy())
    boxes.round(2).to_csv(folder / "BBox_List_2017.csv", index=False)
    return folder


def scratch_project(cohort: Path, args) -> Path:
    project = cohort.parent / f"project_{cohort.name}"
    if project.exists():
        shutil.rmtree(project)
    shutil.copytree(ROOT / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
    shutil.copy(ROOT / "pyproject.toml", project / "pyproject.toml")
    (project / "src").mkdir()
    local = project / "conf" / "local"
    local.mkdir()
    (local / "globals.yml").write_text(yaml.safe_dump({"image_size": args.image_size, "cohort_dir": str(cohort)}))
    params = {
        "phantoms": {"generate_if_missing": False},
        "model_training": {
            "head": {"epochs": 1, "learning_rate": 1e-3},
            "fine_tune": {"epochs": 0},
            "max_batches_per_epoch": args.batches,
            "batch_size": args.batch,
            "verbose": 0,
        },
    }
    (local / "parameters.yml").write_text(yaml.safe_dump(params))
    mlflow_yml = (ROOT / "conf/base/mlflow.yml").read_text()
    (local / "mlflow.yml").write_text(mlflow_yml.replace("sqlite:///mlflow.db", f"sqlite:///{project}/mlflow.db"))
    return project


def run_stage(project: Path, stage: str) -> dict:
    """One pipeline through a Kedro session in this process: its wall time and peak RSS (this process,
    the largest worker, all workers together)."""
    import resource

    from kedro.framework.hooks import hook_impl
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    class NodeTimes:
        def __init__(self):
            self.seconds, self._start = {}, {}

        @hook_impl
        def before_node_run(self, node):
            self._start[node.name] = time.perf_counter()

        @hook_impl
        def after_node_run(self, node):
            self.seconds[node.name] = time.perf_counter() - self._start.pop(node.name)

    os.chdir(project)
    bootstrap_project(project)
    nodes = NodeTimes()
    with PeakRss() as rss:
        start = time.perf_counter()
        with KedroSession.create(project_path=project) as session:
            session._hook_manager.register(nodes)  # the benchmark's own timer beside the project's hooks
            session.run(pipeline_names=[stage])
        seconds = time.perf_counter() - start
    kib = 1024  # ru_maxrss is in KiB on Linux
    return {
        "seconds": seconds,
        "main_rss": max(rss.main, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * kib),
        "worker_rss": rss.worker,  # sampled: RUSAGE_CHILDREN would count a forked git before its exec
        "workers_rss": rss.workers,
        "nodes": nodes.seconds,
    }


def run_stages(project: Path) -> dict[str, dict]:
    """Each stage in a fresh process (its peak RSS is its own), one after the other."""
    out = {}
    for stage in ("data_processing", "model_training", "reporting"):
        done = subprocess.run(
            [sys.executable, __file__, "--stage", str(project), stage], capture_output=True, text=True, check=False
        )
        (project / f"{stage}.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise RuntimeError(f"{stage} failed (exit {done.returncode}); log: {project / f'{stage}.log'}")
        out[stage] = s = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"  {stage}: {s['seconds']:.1f}s, main {s['main_rss'] / 2**30:.2f} GiB, "
            f"largest worker {s['worker_rss'] / 2**30:.2f} GiB",
            flush=True,
        )
    return out


def _size(paths) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


def sizes_on_disk(project: Path) -> dict[str, int]:
    data = project / "data"
    return {
        "cache": _size(data.glob("04_feature/**/*")),
        "mlflow_db": _size([project / "mlflow.db"]),
        "report": _size(data.glob("08_reporting/**/*")),
        "report_html": _size(data.glob("08_reporting/evaluation_report.html/**/*")),
    }


def split_sizes(project: Path) -> dict[str, int]:
    out = {}
    for split in ("train", "validation", "test"):
        path = project / f"data/05_model_input/{split}_split.parquet"
        if path.exists():
            out[split] = len(pd.read_parquet(path, columns=["path"]))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="14000,28000,56000,112120", help="cohort rows, comma-separated")
    parser.add_argument("--native", type=int, default=128, help="px of the phantom PNGs")
    parser.add_argument("--image-size", type=int, default=64, help="px the pipeline trains and reports at")
    parser.add_argument("--batches", type=int, default=20, help="training batches of the one epoch")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cardio-nih-scale"))
    parser.add_argument("--stage", nargs=2, metavar=("PROJECT", "PIPELINE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:  # one stage, in its own process (run_stages)
        print(json.dumps(run_stage(Path(args.stage[0]), args.stage[1])))
        return 0
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the rendering's progress lines
    if not LABELS.is_file():
        sys.exit(f"{LABELS} is missing: this benchmark needs the real NIH label table in ../shared/data/nih")

    from cardio_kedro.cohort.phantoms import phantoms_for_labels

    labels = pd.read_csv(LABELS)
    drawn = phantoms_for_labels(labels, seed=0)
    args.workdir.mkdir(parents=True, exist_ok=True)
    images = args.workdir / f"png_{args.native}"
    render_s = render_all(drawn, args.native, images)
    print(f"{len(labels)} label rows, {labels['Patient ID'].nunique()} patients; rendering {render_s:.0f}s", flush=True)
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        cohort = cohort_folder(drawn, labels, n, args.native, images, args.workdir)
        rows = sum(1 for _ in open(cohort / "Data_Entry_2017.csv")) - 1
        print(f"\nN = {rows} rows ({cohort})", flush=True)
        project = scratch_project(cohort, args)
        stages = run_stages(project)
        results.append({"n": rows, "stages": stages, "disk": sizes_on_disk(project), "splits": split_sizes(project)})
        (args.workdir / "nih_scale.json").write_text(json.dumps(results, indent=2))
        shutil.rmtree(cohort)
    print_table(results, args)
    return 0


def print_table(results: list[dict], args) -> None:
    mib = 2**20
    print(f"\n{args.native}px phantom PNGs, pipeline at {args.image_size}px, {os.cpu_count()} CPUs; "
          f"training: one epoch of {args.batches} batches of {args.batch}")  # fmt: skip
    head = ("rows", "stage", "wall s", "ms/image", "main GiB", "worker GiB", "workers GiB")
    print("{:>7} {:<16} {:>8} {:>9} {:>9} {:>11} {:>12}".format(*head))
    for r in results:
        for stage, s in r["stages"].items():
            print(
                f"{r['n']:>7} {stage:<16} {s['seconds']:>8.1f} {1000 * s['seconds'] / r['n']:>9.2f} "
                f"{s['main_rss'] / 2**30:>9.2f} {s['worker_rss'] / 2**30:>11.2f} {s['workers_rss'] / 2**30:>12.2f}"
            )
    head = ("rows", "test images", "cache MiB", "mlflow.db MiB", "reporting MiB", "report.html MiB")
    print("\n{:>7} {:>12} {:>10} {:>14} {:>14} {:>16}".format(*head))
    for r in results:
        d = r["disk"]
        print(
            f"{r['n']:>7} {r['splits'].get('test', 0):>12} {d['cache'] / mib:>10.1f} {d['mlflow_db'] / mib:>14.2f} "
            f"{d['report'] / mib:>14.2f} {d['report_html'] / mib:>16.2f}"
        )
    if len(results) > 1:
        first, last = results[0], results[-1]
        print(
            f"\nnodes over 1 s at {last['n']} rows: seconds at each N, and ms per image at the last against the first"
        )
        for stage in last["stages"]:
            for node, t in sorted(last["stages"][stage]["nodes"].items(), key=lambda kv: -kv[1]):
                if t < 1:
                    continue
                times = [r["stages"][stage]["nodes"].get(node, float("nan")) for r in results]
                growth = (t / last["n"]) / (times[0] / first["n"])
                print(f"  {stage:<16} {node:<32} {' '.join(f'{x:7.1f}' for x in times)}   x{growth:.2f}")
        print(f"\ntime per image, {last['n']} rows against {first['n']} (target: within 1.2):")
        for stage in first["stages"]:
            a = first["stages"][stage]["seconds"] / first["n"]
            b = last["stages"][stage]["seconds"] / last["n"]
            print(f"  {stage:<16} {b / a:.2f}")


if __name__ == "__main__":
    sys.exit(main())
