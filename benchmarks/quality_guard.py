"""The quality guard's flag rates on the real NIH cohort of ../shared and on what is not a frontal film.

Fits the guard as training does (template on 60% of the 1,170 real films, threshold on 20%), then
prints the share flagged, and the reason given, for the other 20% of real frontal films (target: at
most 2%), for those films inverted, rotated by 90/180/270 degrees and flipped left-right, for
images that are not radiographs (photographs, drawings and an MRI slice that matplotlib and
scikit-learn ship, with random crops; rendered text; noise), for blank and saturated images and for
the demo's phantoms (which the guard has not seen: a template of real films).

    python benchmarks/quality_guard.py [--size 64] [--seed 0]
"""

from __future__ import annotations

import argparse
import gzip
import sys
from collections import Counter
from pathlib import Path

import cv2
import matplotlib
import numpy as np
import sklearn

ROOT = Path(__file__).resolve().parents[1]
SHARED_NIH = ROOT.parent / "shared" / "data" / "nih"


def non_radiographs(rng: np.random.Generator, size: int) -> list[np.ndarray]:
    """Photographs, drawings and an MRI slice that matplotlib and scikit-learn ship (whole and 20 random
    square crops of each), 20 pages of rendered text and 20 noise images, at ``size`` px."""
    mpl = Path(matplotlib.get_data_path()) / "sample_data"
    skl = Path(sklearn.__file__).parent / "datasets" / "images"
    files = (mpl / "grace_hopper.jpg", mpl / "Minduka_Present_Blue_Pack.png", mpl / "logo2.png",
             skl / "china.jpg", skl / "flower.jpg")  # fmt: skip
    sources = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in files]
    mri = np.frombuffer(gzip.open(mpl / "s1045.ima.gz").read(), np.uint16).reshape(256, 256)
    sources.append((mri / mri.max() * 255).astype(np.uint8))
    images = []
    for source in sources:
        h, w = source.shape
        images.append(source)
        for _ in range(20):
            side = int(min(h, w) * rng.uniform(0.4, 1.0))
            y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
            images.append(source[y : y + side, x : x + side])
    for k in range(20):  # a scanned report: dark on light, or light on dark
        page = np.full((256, 256), 235 if k % 2 else 20, np.uint8)
        for line in range(7):
            cv2.putText(page, f"Findings {k}: no acute", (6, 28 + 34 * line), cv2.FONT_HERSHEY_SIMPLEX, 0.7,
                        20 if k % 2 else 235, 2)  # fmt: skip
        images.append(page)
    images += [rng.integers(0, 256, (size, size)).astype(np.uint8) for _ in range(20)]
    return [cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA) for img in images]


def phantom_films(size: int, seed: int) -> list[np.ndarray]:
    """40 patients' phantom films as the demo draws them (conf/base), at ``size`` px."""

    from cardio_kedro.pipelines.phantom_cohort.nodes import generate_phantom_cohort
    from cardio_kedro.settings import load_parameters  # Kedro's loader, the project's settings

    params = load_parameters(str(ROOT / "conf"), env="base")["phantoms"]
    images, _, _ = generate_phantom_cohort({**params, "n_patients": 40, "native_size": 256, "seed": seed, "workers": 1})
    return [cv2.resize(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE), (size, size),
                       interpolation=cv2.INTER_AREA) for _, png in images]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64, help="px the model sees (the demo: 64)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from cardio_kedro.cohort.imaging import load_gray
    from cardio_kedro.cohort.quality import OK, fit_quality_guard

    paths = sorted((SHARED_NIH / "sample").glob("images_*/images/*.png")) + sorted(
        (SHARED_NIH / "thumbs" / "images").glob("*.png")
    )
    if not paths:
        sys.exit(f"No shared NIH images under {SHARED_NIH}")
    films = np.stack([load_gray(p, args.size)[0] for p in paths])
    rng = np.random.default_rng(args.seed)
    train, held, test = np.split(rng.permutation(len(films)), [int(0.6 * len(films)), int(0.8 * len(films))])
    guard, report = fit_quality_guard(films[train], films[held], 0.01, 0.35, 32, 2.0, 0.5)
    print(f"template from {len(train)} real films; threshold {guard.min_correlation:.3f} (1% of {len(held)} held-out, "
          f"at most 0.35: {report['held_out_correlation'][0.01]:.3f})")  # fmt: skip
    test_films = films[test]
    burnt = test_films.copy()
    burnt[:, :, : int(0.7 * args.size)] = 255
    kinds = {
        "real frontal films (held out)": list(test_films),
        "inverted": [255 - f for f in test_films],
        "rotated 90": [np.ascontiguousarray(np.rot90(f, 1)) for f in test_films],
        "rotated 180": [np.ascontiguousarray(np.rot90(f, 2)) for f in test_films],
        "rotated 270": [np.ascontiguousarray(np.rot90(f, 3)) for f in test_films],
        "flipped left-right": [np.ascontiguousarray(f[:, ::-1]) for f in test_films],
        "not radiographs": non_radiographs(rng, args.size),
        "blank": [np.full((args.size, args.size), v, np.uint8) for v in range(0, 256, 8)],
        "saturated (70% burnt white)": list(burnt),
    }
    kinds["phantoms (synthetic films)"] = phantom_films(args.size, args.seed)
    print("| input | images | flagged | reasons |\n| --- | --- | --- | --- |")
    for name, images in kinds.items():
        verdicts = Counter(guard.check(img) for img in images)
        flagged = 1 - verdicts.get(OK, 0) / len(images)
        reasons = ", ".join(f"{k} {v}" for k, v in verdicts.most_common())
        print(f"| {name} | {len(images)} | {100 * flagged:.1f}% | {reasons} |")


if __name__ == "__main__":
    main()
