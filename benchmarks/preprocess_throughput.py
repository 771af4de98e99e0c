"""Preprocessing throughput and memory: the project's pixel cache against a plain OpenCV loop.

Uses real-format 1024x1024 NIH PNGs (the shared sample, repeated through symbolic links so every
path is a distinct cache entry). In the same run it times:

* baseline: one process, ``cv2.imread`` + gray + ``cv2.resize(INTER_AREA)`` over the same files;
* project: the ``resolve_image_files`` node (file checks) and the ``decode_images`` node (decode,
  resize on every core) with each chunk appended by ``PixelCacheDataset.save``, as a Kedro run
  does it, in a fresh process per N, with that process's peak RSS and its workers'.

Target: project >= 0.9 x cores x the single-core OpenCV rate, and peak RSS flat in N.

With ``--decoders`` it compares PNG decoders on one core instead, on the same real files (the
shared sample's 8-bit grayscale and RGBA PNGs, and 16-bit copies of them): OpenCV (the project's
decoder) against the candidates that are installed (``pyspng``, ``imagecodecs``' libpng, Pillow with
its zlib-ng), each checked for identical 8-bit grayscale pixels first, then timed in interleaved
rounds (A B C A B C ..., the order rotated each round) so that a noisy machine moves all of them
alike; beside them the inflate floor (zlib's ``decompress`` of each file's IDAT stream alone, and
ISA-L's where ``isal`` is installed). The decode target is 0.7 x cores x the zlib floor.

    python benchmarks/preprocess_throughput.py --n 800 3200
    python benchmarks/preprocess_throughput.py --decoders --rounds 6
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
    from cardio_kedro.settings import load_parameters  # Kedro's loader, the project's settings

    params = load_parameters(str(ROOT / "conf"), env="base")["data_processing"]
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


def _idat(data: bytes) -> bytes:
    """A PNG's compressed image data: its IDAT chunks joined."""
    import struct

    out, i = [], 8
    while i < len(data):
        (n,) = struct.unpack(">I", data[i : i + 4])
        if data[i + 4 : i + 8] == b"IDAT":
            out.append(data[i + 8 : i + 8 + n])
        i += 12 + n
    return b"".join(out)


def _row_filters(files: list[bytes]) -> dict[str, float]:
    """Share of image rows per PNG filter type (8-bit grayscale files): Average and Paeth rows depend on
    the pixel to their left, so unfiltering them is a serial loop (libpng's C, not numpy)."""
    import zlib

    import numpy as np

    counts = np.zeros(5)
    for data in files:
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        raw = np.frombuffer(zlib.decompress(_idat(data)), np.uint8)
        counts += np.bincount(raw[:: width + 1][:height], minlength=5)[:5]
    return dict(zip(("none", "sub", "up", "average", "paeth"), counts / counts.sum()))


def _decoders() -> dict:
    """PNG bytes -> the decoded array with its channel order, per installed decoder."""
    import io

    import cv2
    import numpy as np

    out = {"opencv": lambda d: (cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_UNCHANGED), "bgr")}
    try:
        import pyspng

        out["pyspng"] = lambda d: (pyspng.load(d), "rgb")
    except ImportError:
        pass
    try:
        import imagecodecs

        out["imagecodecs"] = lambda d: (imagecodecs.png_decode(d), "rgb")
    except ImportError:
        pass
    from PIL import Image

    def pillow(data: bytes):
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im), "rgb"

    out["pillow"] = pillow
    return out


def _gray8(decoded):
    """8-bit grayscale as the project makes it (``imaging.to_gray8``), whatever the channel order."""
    import cv2
    import numpy as np

    image, order = decoded
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 2:  # gray + alpha (pyspng gives 16-bit gray so)
        image = np.ascontiguousarray(image[..., 0])
    if image.ndim == 3:
        codes = {("bgr", 3): cv2.COLOR_BGR2GRAY, ("bgr", 4): cv2.COLOR_BGRA2GRAY}
        codes |= {("rgb", 3): cv2.COLOR_RGB2GRAY, ("rgb", 4): cv2.COLOR_RGBA2GRAY}
        image = cv2.cvtColor(np.ascontiguousarray(image), codes[order, image.shape[2]])
    return image


def _real_pngs(folder: Path) -> dict[str, list[bytes]]:
    """The shared sample's PNGs by kind: 8-bit grayscale, RGBA, and 16-bit copies of the grayscale ones."""
    import cv2
    import numpy as np

    kinds: dict[str, list[bytes]] = {"8-bit gray": [], "RGBA": [], "16-bit gray": []}
    for path in sorted(SAMPLE.rglob("*.png")):
        data = path.read_bytes()
        color_type = data[25]  # IHDR: 0 gray, 6 RGBA
        kinds["RGBA" if color_type == 6 else "8-bit gray"].append(data)
    folder.mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(kinds["8-bit gray"][:20]):
        gray = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED).astype(np.uint16)
        path = folder / f"{i}_16bit.png"
        cv2.imwrite(str(path), (gray << 8) | gray)
        kinds["16-bit gray"].append(path.read_bytes())
    return kinds


def _rate(function, items) -> float:
    start = time.perf_counter()
    for item in items:
        function(item)
    return len(items) / (time.perf_counter() - start)


def compare_decoders(rounds: int, count: int) -> int:
    """Identical pixels first, then one-core rates in interleaved rounds, beside the inflate floor."""
    import statistics
    import zlib

    import cv2
    import numpy as np

    from cardio_kedro.common.parallel import default_workers

    cv2.setNumThreads(1)
    decoders = _decoders()
    kinds = _real_pngs(Path(tempfile.mkdtemp(prefix="cardio-decoders-")))
    print("pixels against OpenCV's (8-bit grayscale, max |difference| over the files of each kind):")
    identical = {}
    for name, decode in decoders.items():
        worst = {}
        for kind, files in kinds.items():
            worst[kind] = max(
                int(np.abs(_gray8(decode(d)).astype(int) - _gray8(decoders["opencv"](d)).astype(int)).max())
                for d in files
            )
        identical[name] = not any(worst.values())
        print(f"  {name:12} " + ", ".join(f"{k} ({len(kinds[k])} files) {v}" for k, v in worst.items()))
    files = (kinds["8-bit gray"] * (count // len(kinds["8-bit gray"]) + 1))[:count]
    idats = [_idat(d) for d in files]
    floors = {"zlib inflate": zlib.decompress}
    try:
        from isal import isal_zlib

        floors["isal inflate"] = isal_zlib.decompress
    except ImportError:
        pass
    timed = {
        **{n: (f, idats) for n, f in floors.items()},
        **{n: (lambda d, f=f: _gray8(f(d)), files) for n, f in decoders.items()},
    }
    rates: dict[str, list[float]] = {name: [] for name in timed}
    names = list(timed)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # the order rotates every round
            function, items = timed[name]
            rates[name].append(_rate(function, items))
    floor, cores = statistics.median(rates["zlib inflate"]), default_workers()
    base = rates["opencv"]
    print(f"\none core, {count} real 1024x1024 NIH PNGs a round, {rounds} interleaved rounds (img/s, median):")
    print(f"  {'':16} {'img/s':>8} {'x OpenCV (per round, median)':>30} {'pixels':>9}")
    for name, values in rates.items():
        ratio = statistics.median(v / b for v, b in zip(values, base))
        pixels = "" if name in floors else ("identical" if identical[name] else "DIFFER")
        print(f"  {name:16} {statistics.median(values):>8.1f} {ratio:>30.2f} {pixels:>9}")
    filters = _row_filters(kinds["8-bit gray"])
    ms = {name: 1000 / statistics.median(values) for name, values in rates.items()}
    print(
        f"\nper image: zlib's inflate {ms['zlib inflate']:.1f} ms of OpenCV's {ms['opencv']:.1f} ms; the rest is "
        f"unfiltering, conversion and copies. Row filters: " + ", ".join(f"{k} {v:.0%}" for k, v in filters.items())
    )
    best = max((n for n in decoders if identical[n]), key=lambda n: statistics.median(rates[n]))
    print(
        f"\ntarget: decode >= 0.7 x cores x zlib floor = 0.7 x {cores} x {floor:.0f} = {0.7 * cores * floor:.0f} img/s "
        f"({0.7 * floor:.0f} per core); best decoder with identical pixels: {best}, "
        f"{statistics.median(rates[best]):.0f} per core ({statistics.median(rates[best]) / floor:.2f} x the floor)"
    )
    return 0


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        project_run(*sys.argv[2:4], int(sys.argv[4]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[800, 3200], help="numbers of images (two for RSS)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--baseline-n", type=int, default=400, help="images in the single-process OpenCV loop")
    parser.add_argument("--decoders", action="store_true", help="compare PNG decoders on one core instead")
    parser.add_argument("--rounds", type=int, default=6, help="--decoders: interleaved rounds")
    parser.add_argument("--count", type=int, default=120, help="--decoders: files per round")
    args = parser.parse_args()
    if args.decoders:
        return compare_decoders(args.rounds, args.count)

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
