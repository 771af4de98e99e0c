"""External validation figures: a model trained on one cohort, scored on another it never saw.

Two studies, each in a scratch copy of the project's conf (nothing is written to the project):

- ``real``: cross-validated training on the 970 real NIH thumbnails (``kedro run
  --pipelines=cross_validation --env=small_real``, 260 patients, 66 Cardiomegaly images), then
  ``--pipelines=external_validation`` on the 200 real NIH sample films (other patients, full-size PNGs
  decoded to 64 px) with ``external.recalibrate``.
- ``phantom``: the phantom demo (``kedro run --pipelines=demo``), then external validation on phantoms
  drawn with another seed and a lower prevalence, recalibrated with ``intercept`` and with ``logistic``.

Prints, for each: the internal figures beside the external ones (ROC AUC with CIs, PR AUC, Brier, ECE,
calibration slope and intercept, O/E), the pixel baseline on the external cohort with the paired
difference, the evaluation part before and after recalibration, and wall times.

    python benchmarks/external_validation.py                       # both studies
    python benchmarks/external_validation.py --studies real --keep /tmp/ev

``conf/small_real`` starts from the phantom backbone: the real study trains it first (the phantom demo,
as ``benchmarks/real_cohort.py`` does) unless ``--backbone-weights FILE`` gives one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_NIH = ROOT.parent / "shared" / "data" / "nih"
sys.path.insert(0, str(ROOT / "benchmarks"))
# the same scratch project and phantom backbone as the cross-validation benchmark
from real_cohort import phantom_backbone, scratch_project  # noqa: E402


def kedro(project: Path, pipeline: str, params: str, env: str | None = None) -> float:
    """One ``kedro run``; its wall time. A failure prints the log's end and stops."""
    command = [sys.executable, "-m", "kedro", "run", f"--pipelines={pipeline}", *([f"--env={env}"] if env else []),
               *([f"--params={params}"] if params else [])]  # fmt: skip
    env_vars = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(ROOT / "src")}
    started = time.monotonic()
    done = subprocess.run(command, cwd=project, env=env_vars, capture_output=True, text=True, check=False)
    (project / f"{pipeline}.log").write_text(done.stdout + done.stderr)
    if done.returncode:
        print((done.stdout + done.stderr)[-4000:])
        sys.exit(f"kedro run failed ({done.returncode}): {' '.join(command)}")
    return time.monotonic() - started


def newest(project: Path, pattern: str) -> Path:
    return sorted(project.glob(f"data/{pattern}/*/*"))[-1]


def _v(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _ci(d: dict, key: str = "value") -> str:
    low, high = d.get("ci_low"), d.get("ci_high")
    return f"{_v(d.get(key))} ({_v(low)}-{_v(high)})" if low is not None else _v(d.get(key))


def show(title: str, m: dict, wall: dict[str, float]) -> None:
    ext, internal, base = m["external"], m["internal"], m["baseline"]
    cal, cil = ext["calibration"], ext["calibration"]["in_the_large"]
    print(f"\n## {title}\n")
    print(f"model {m['model']['model']} (threshold {m['model']['threshold']:.3f}); external cohort "
          f"{m['cohort']['name']}: {m['cohort']['n_images']} images, {m['cohort']['n_patients']} patients, "
          f"{m['cohort']['n_positive']} positive; quality guard {m['cohort']['quality']}")  # fmt: skip
    print(f"\n| metric | {internal['where']} | external |\n| --- | --- | --- |")
    rows = [
        ("ROC AUC (95% CI)", f"{_v(internal.get('auc'))} ({_v(internal.get('auc_ci_low'))}-"
         f"{_v(internal.get('auc_ci_high'))})", _ci(ext["roc_auc"], "auc")),
        ("PR AUC", _v(internal.get("pr_auc")), _ci(ext["pr_auc_ci"])),
        ("Brier", _v(internal.get("brier")), _ci(cal["brier"])),
        ("ECE", _v(internal.get("ece")), _ci(cal["ece"])),
        ("calibration slope", _v(internal.get("calibration_slope")), _ci(cal["calibration_slope"])),
        ("calibration intercept", _v(internal.get("calibration_intercept")), _ci(cal["calibration_intercept"])),
        ("mean predicted / observed", "",
         f"{_v(cil['mean_predicted']['value'])} / {_v(cil['observed_rate']['value'])}"),
        ("observed / expected", "", _ci(cil["observed_expected"])),
        ("sensitivity / specificity at the threshold", f"{_v(internal.get('sensitivity'))} / "
         f"{_v(internal.get('specificity'))}", f"{_v(ext['sensitivity'])} / {_v(ext['specificity'])}"),
        ("pixel baseline ROC AUC", _v(internal.get("baseline_auc")), _ci(base["roc_auc"], "auc")),
        ("paired difference model - baseline", "", _ci(base["paired_difference"], "difference")),
    ]  # fmt: skip
    for name, a, b in rows:
        print(f"| {name} | {a} | {b} |")
    r = m["recalibration"]
    if r:
        fitted, judged = r["fitted_on"], r["evaluation_part"]
        print(f"\nrecalibration {r['method']}: logit p' = {r['intercept']:.3f} + {r['slope']:.3f} logit p, fitted on "
              f"{fitted['n_images']} images ({fitted['n_positive']} positive); evaluation part "
              f"{judged['n_images']} images ({judged['n_positive']} positive):")  # fmt: skip
        print("\n| evaluation part | mean predicted | observed | O/E (95% CI) | intercept (95% CI) | slope | Brier |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for when in ("before", "after"):
            x = r[when]
            print(f"| {when} | {_v(x['in_the_large']['mean_predicted']['value'])} | "
                  f"{_v(x['in_the_large']['observed_rate']['value'])} | {_ci(x['in_the_large']['observed_expected'])} "
                  f"| {_ci(x['calibration_intercept'])} | {_v(x['calibration_slope']['value'])} | "
                  f"{_v(x['brier']['value'])} |")  # fmt: skip
    print("\nwall: " + ", ".join(f"{k} {v:.0f} s" for k, v in wall.items()), flush=True)


def real_study(project: Path, recalibrate: str, backbone_weights: Path | None) -> None:
    for part in ("sample", "thumbs"):
        if not (SHARED_NIH / part / "Data_Entry_2017.csv").is_file():
            sys.exit(f"No {SHARED_NIH / part}: this study needs the shared NIH material")
    phantom_backbone(project, "small_real", backbone_weights, "", force=False)  # the file conf/small_real names
    thumbs = f"cohort_dir={SHARED_NIH / 'thumbs'}"
    wall = {"cross_validation on the thumbnails": kedro(project, "cross_validation", thumbs, "small_real")}
    wall["external_validation on the sample"] = kedro(
        project, "external_validation",
        f"external.cohort_dir={SHARED_NIH / 'sample'},external.recalibrate={recalibrate}", "small_real",
    )  # fmt: skip
    m = json.loads(newest(project, "08_reporting/external_validation_metrics.json").read_text())
    show("real: trained on the NIH thumbnails (5-fold), validated on the NIH sample", m, wall)
    print(f"report: {newest(project, '08_reporting/external_validation_report.html')}")


def phantom_study(project: Path, work: Path, prevalence: float, seed: int) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.helpers import make_phantom_cohort  # the phantom drawing the tests use, at conf/base's sizes

    wall = {"demo": kedro(project, "demo", "")}
    site = make_phantom_cohort(work / "site_b", n_patients=600, prevalence=prevalence, seed=seed, native_size=256,
                               images_per_folder=1000, workers=None)  # fmt: skip
    for method in ("intercept", "logistic"):
        wall[f"external_validation ({method})"] = kedro(
            project, "external_validation", f"external.cohort_dir={site},external.recalibrate={method}"
        )
        m = json.loads(newest(project, "08_reporting/external_validation_metrics.json").read_text())
        show(f"phantom: the demo model on phantoms of seed {seed}, prevalence {prevalence} ({method})", m, wall)
    print(f"report: {newest(project, '08_reporting/external_validation_report.html')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", nargs="*", default=["real", "phantom"], choices=["real", "phantom"])
    parser.add_argument("--recalibrate", default="intercept", help="the real study's external.recalibrate")
    parser.add_argument("--prevalence", type=float, default=0.08, help="the phantom site's patient prevalence")
    parser.add_argument("--seed", type=int, default=7, help="the phantom site's seed")
    parser.add_argument("--keep", type=Path, help="keep the scratch projects here (reports, MLflow stores)")
    parser.add_argument(
        "--backbone-weights",
        type=Path,
        help="the real study's phantom backbone (conf/small_real) instead of training one",
    )
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="external_validation_"))
    try:
        if "real" in args.studies:
            real_study(scratch_project(work / "real"), args.recalibrate, args.backbone_weights)
        if "phantom" in args.studies:
            phantom_study(scratch_project(work / "phantom"), work, args.prevalence, args.seed)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
