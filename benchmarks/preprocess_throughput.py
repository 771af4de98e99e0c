"""Preprocessing throughput and memory: the project's pixel cache against a plain OpenCV loop.

Uses real-format 1024x1024 NIH PNGs (the shared sample, repeated through symbolic links so every
path is a distinct cache entry). In the same run it times:

* baseline: one process, ``cv2.imread`` + gray + ``cv2.resize(INTER_AREA)`` over the same files;
* project: the ``resolve_image_files`` node (file checks) and the ``decode_images`` node (decode,
  resize on every core) with each chunk appended by ``PixelCacheDataset.save``, as a Kedro run
  does it, in a fresh process per N, with that process's peak RSS and its workers'.

Target: project >= 0.9 x cores x the single-core OpenCV rate, and peak RSS flat in N.

    python benchmarks/preprocess_throughput.py --n 800 3200
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "nih" / "sample"


def make_files(folder: Path, n: int) -> list[str]:
    sources = sorted(SAMPLE.rglob("*.png"))
    if not sources:
        raise SystemExit(f"no PNGs under {SAMPLE}")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        link = folder / f"{i:06d}.png"
        if not link.exists():
            link.symlink_to(sources[i % len(sources)])
        paths.append(str(link))
    return paths


def opencv_baseline(paths: list[str], size: int) -> float:
    import cv2

    cv2.setNumThreads(1)
    start = time.perf_counter()
    for p in paths:
        img = cv2.imread(p, cv2.IMREAD_UNCHANGED)
        if img.ndim == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY if img.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
        cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return len(paths) / (time.perf_counter() - start)


def project_run(paths_file: str, cache_dir: str, size: int) -> None:
    """Child process: check + decode every file into a fresh cache; prints JSON."""
    import logging
    import threading

    import pandas as pd
    import psutil
    import yaml

    from cardio_kedro.common.parallel import default_workers
    from cardio_kedro.datasets import PixelCacheDataset
    from cardio_kedro.pipelines.data_processing.nodes import decode_images, resolve_image_files

    logging.basicConfig(level=logging.WARNING)
    me = psutil.Process()
    peak = {"main": 0, "workers": 0}
    stop = threading.Event()

    def sample() -> None:  # peak RSS of this process and of all its descendants (the pool)
        while not stop.is_set():
            peak["main"] = max(peak["main"], me.memory_info().rss)
            total = 0
            for child in me.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.Error:
                    pass
            peak["workers"] = max(peak["workers"], total)
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    paths = Path(paths_file).read_text().split()
    params = yaml.safe_load((ROOT / "conf/base/parameters_data_processing.yml").read_text())["data_processing"]
    names = [Path(p).name for p in paths]
    start = time.perf_counter()
    resolved, _ = resolve_image_files(
        pd.DataFrame({"image_index": names}), pd.DataFrame({"image_index": names, "path": paths}), params
    )
    checked = time.perf_counter()
    cache = PixelCacheDataset(cache_dir, image_size=size)
    for chunk in decode_images(resolved, cache.load(), size, params, {}):
        cache.save(chunk)
    done = time.perf_counter()
    stop.set()
    sampler.join()
    print(
        json.dumps(
            {
                "workers": default_workers(),
                "check_per_s": len(paths) / (checked - start),
                "decode_per_s": len(paths) / (done - checked),
                "total_per_s": len(paths) / (done - start),
                "rss_self_mb": peak["main"] / 2**20,
                "rss_worker_mb": peak["workers"] / 2**20,
            }
        )
    )


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        project_run(*sys.argv[2:4], int(sys.argv[4]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[800, 3200], help="numbers of images (two for RSS)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--baseline-n", type=int, default=400, help="images in the single-process OpenCV loop")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cardio-preprocess-"))
    paths = make_files(work / "png", max(args.n))
    for p in paths[: len(set(sorted(SAMPLE.rglob("*.png"))))]:  # warm the page cache
        Path(p).read_bytes()
    base = opencv_baseline(paths[: args.baseline_n], args.size)
    print(f"{args.size}px from 1024x1024 NIH PNGs; baseline: single-process OpenCV {base:.1f} img/s")
    print(
        f"{'N':>6} {'workers':>7} {'check/s':>8} {'decode/s':>9} {'total/s':>8} {'target/s':>9} "
        f"{'ratio':>6} {'RSS main MB':>12} {'RSS pool MB':>12}"
    )
    for n in args.n:
        listing = work / f"paths_{n}.txt"
        listing.write_text("\n".join(paths[:n]))
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(listing), str(work / f"cache_{n}"), str(args.size)],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        target = 0.9 * r["workers"] * base
        print(
            f"{n:>6} {r['workers']:>7} {r['check_per_s']:>8.0f} {r['decode_per_s']:>9.1f} {r['total_per_s']:>8.1f} "
            f"{target:>9.1f} {r['decode_per_s'] / (r['workers'] * base):>6.2f} {r['rss_self_mb']:>12.0f} "
            f"{r['rss_worker_mb']:>12.0f}"
        )
    print("ratio = decode/s / (workers x baseline); the target is 0.9")
    return 0


if __name__ == "__main__":
    sys.exit(main())
