"""Cross-validated figures on a real NIH cohort: does a configuration beat the pixel baseline?

Builds the real 1,170-image cohort of ``../shared/data/nih`` (the 200 sample images and the 970
thumbnails: 460 patients, 84 Cardiomegaly images) in a temporary folder (links, no copies), then runs
``kedro run --pipelines=cross_validation`` in a scratch copy of the project's conf, once per
configuration, all on one pixel cache. Prints for each: the model's and the baseline's pooled
out-of-fold ROC AUC with CIs, the paired difference with its CI, Brier against the prevalence-only
Brier, ECE, calibration slope and wall time; then a Markdown table of them all.

    python benchmarks/real_cohort.py                                  # conf/small_real as it ships
    python benchmarks/real_cohort.py --env base                       # conf/base's training settings
    python benchmarks/real_cohort.py --configs "" "model_training.fine_tune.learning_rate=3e-4"

Each ``--configs`` entry is a ``--params`` string added to ``--params`` for one run. ``--seeds 42 7 1``
runs each configuration once per training seed (``model_training.seed``; the folds stay) and adds,
per configuration, the spread over the seeds: how many beat the baseline, the lowest lower bound.
``conf/small_real`` starts from the phantom demo's backbone (``data/06_models/phantom_backbone.weights.h5``,
what ``make phantom-backbone`` writes): when the environment names such a file and the scratch project
has none, the benchmark makes it the same way first (``kedro run --pipelines=demo``, synthetic films
only: nothing of the real cohort; then ``python -m cardio_kedro.modeling.pretrained export``) and
prints that wall time apart; ``--backbone-weights FILE`` puts an existing file there instead.
``--pretrain-on-phantoms`` does the same for an environment that names no weights file and starts
every configuration from it.
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

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SHARED_NIH = ROOT.parent / "shared" / "data" / "nih"
PARTS = ("sample", "thumbs")


def build_cohort(target: Path) -> Path:
    """The sample and the thumbnails as one NIH-layout cohort in ``target``: one label table, the
    image folders linked."""
    tables = []
    for part in PARTS:
        source = SHARED_NIH / part
        if not (source / "Data_Entry_2017.csv").is_file():
            sys.exit(f"No {source}/Data_Entry_2017.csv: this benchmark needs the shared NIH material")
        tables.append(pd.read_csv(source / "Data_Entry_2017.csv", dtype=str, keep_default_na=False))
        for folder in sorted(p for p in source.iterdir() if p.is_dir()):
            (target / part).mkdir(parents=True, exist_ok=True)
            os.symlink(folder, target / part / folder.name)
    table = pd.concat(tables, ignore_index=True)
    table.to_csv(target / "Data_Entry_2017.csv", index=False)
    positives = table["Finding Labels"].str.contains("Cardiomegaly").sum()
    print(f"cohort: {len(table)} images, {table['Patient ID'].nunique()} patients, {positives} Cardiomegaly")
    return target


def scratch_project(project: Path) -> Path:
    """A copy of the project's conf in ``project``, with its own MLflow store; the package is the installed one."""
    shutil.copytree(ROOT / "conf", project / "conf", ignore=shutil.ignore_patterns("local"), dirs_exist_ok=True)
    (project / "conf" / "local").mkdir(exist_ok=True)
    (project / "src").mkdir(exist_ok=True)
    shutil.copy(ROOT / "pyproject.toml", project / "pyproject.toml")
    mlflow_yml = (ROOT / "conf" / "base" / "mlflow.yml").read_text()
    (project / "conf" / "local" / "mlflow.yml").write_text(
        mlflow_yml.replace("sqlite:///mlflow.db", f"sqlite:///{project / 'mlflow.db'}")
    )
    return project


def run_config(project: Path, cohort: Path, env: str, params: str, label: str) -> dict:
    """One ``kedro run --pipelines=cross_validation``; its figures."""
    runtime = ",".join(p for p in (f"cohort_dir={cohort}", params) if p)
    command = [sys.executable, "-m", "kedro", "run", "--pipelines=cross_validation", f"--env={env}",
               f"--params={runtime}"]  # fmt: skip
    env_vars = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(ROOT / "src")}
    started = time.monotonic()
    done = subprocess.run(command, cwd=project, env=env_vars, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    (project / "last_run.log").write_text(done.stdout + done.stderr)
    if done.returncode:
        print((done.stdout + done.stderr)[-4000:])
        sys.exit(f"kedro run failed ({done.returncode}): {' '.join(command)}")
    metrics_file = sorted(project.glob("data/08_reporting/cross_validation_metrics.json/*/*"))[-1]
    m = json.loads(metrics_file.read_text())
    oof, paired, base = m["out_of_fold"], m["paired_difference"], m["baseline"]["roc_auc"]
    return {
        "config": label,
        "auc": oof["roc_auc"]["auc"],
        "auc_ci": (oof["roc_auc"]["ci_low"], oof["roc_auc"]["ci_high"]),
        "baseline": base["auc"],
        "baseline_ci": (base["ci_low"], base["ci_high"]),
        "difference": paired["difference"],
        "difference_ci": (paired["ci_low"], paired["ci_high"]),
        "brier": oof["brier"],
        "brier_prevalence_only": oof["prevalence_only_brier"],
        "ece": oof["calibration"]["calibrated"]["ece"]["value"],
        "slope": oof["calibration"]["calibrated"]["calibration_slope"]["value"],
        "fold_aucs": [f["auc"] for f in m["folds"]],
        "beats": m["beats_baseline"],
        "wall_s": wall,
        "report": str(sorted(project.glob("data/08_reporting/cross_validation_report.html/*/*"))[-1]),
    }


def shipped_backbone_weights(env: str) -> str | None:
    """``model_training.model.backbone_weights`` as ``env`` sets it over conf/base."""
    import yaml

    value = yaml.safe_load((ROOT / "conf" / "base" / "parameters_model_training.yml").read_text())["model_training"]
    value = value["model"]["backbone_weights"]
    for file in sorted((ROOT / "conf" / env).glob("parameters*.yml")) if env != "base" else []:
        model = ((yaml.safe_load(file.read_text()) or {}).get("model_training") or {}).get("model") or {}
        value = model.get("backbone_weights", value)
    return value


def phantom_backbone(project: Path, env: str, given: Path | None, params: str, force: bool) -> tuple[Path | None, bool]:
    """The phantom backbone in ``project``, where ``env`` names a project file for it (or ``force``): ``given``
    copied there, else trained once (``pretrain_on_phantoms``). Returns its path (``None``: not wanted) and
    whether ``env`` names it (otherwise a run must be pointed at it)."""
    shipped = shipped_backbone_weights(env)
    named = shipped not in (None, "imagenet") and not Path(shipped).is_absolute()
    if not (force or named):
        return None, False
    weights = project / (shipped if named else "data/06_models/phantom_backbone.weights.h5")
    if given:
        weights.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(given, weights)
    elif not weights.is_file():
        pretrain_on_phantoms(project, params, weights)
    return weights, named


def pretrain_on_phantoms(project: Path, params: str, out: Path) -> Path:
    """The phantom demo trained in ``project`` (base conf), its backbone written to ``out``."""
    env_vars = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, "-m", "kedro", "run", "--pipelines=demo", *([f"--params={params}"] if params else [])]
    started = time.monotonic()
    done = subprocess.run(command, cwd=project, env=env_vars, capture_output=True, text=True, check=False)
    (project / "pretrain.log").write_text(done.stdout + done.stderr)
    if done.returncode:
        print((done.stdout + done.stderr)[-4000:])
        sys.exit("the phantom pretraining run failed")
    model = sorted(project.glob("data/06_models/classifier.keras/*/classifier.keras"))[-1]
    export = [sys.executable, "-m", "cardio_kedro.modeling.pretrained", "export", str(model), str(out)]
    subprocess.run(export, env=env_vars, check=True, capture_output=True)
    print(f"pretrained on phantoms in {time.monotonic() - started:.0f} s: {out}", flush=True)
    return out


def _ci(pair) -> str:
    low, high = pair
    return "n/a" if low is None else f"{low:.3f} to {high:.3f}" if min(low, high) < 0 else f"{low:.3f}-{high:.3f}"


def show(r: dict) -> None:
    print(
        f"{r['config']}\n"
        f"  model AUC {r['auc']:.3f} ({_ci(r['auc_ci'])}), "
        f"pixel baseline {r['baseline']:.3f} ({_ci(r['baseline_ci'])})\n"
        f"  paired difference {r['difference']:+.3f} ({_ci(r['difference_ci'])}): "
        f"{'BEATS' if r['beats'] else 'does not beat'} the baseline\n"
        f"  Brier {r['brier']:.4f} against prevalence-only {r['brier_prevalence_only']:.4f}; ECE {r['ece']:.3f}, "
        f"slope {r['slope'] if r['slope'] is None else round(r['slope'], 3)}\n"
        f"  fold AUCs {[None if a is None else round(a, 3) for a in r['fold_aucs']]}; wall {r['wall_s']:.0f} s\n"
        f"  report {r['report']}",
        flush=True,
    )


def seed_spread(label: str, runs: list[dict]) -> str:
    """One line on how a configuration fares over training seeds."""
    lows = [r["difference_ci"][0] for r in runs]
    differences = [r["difference"] for r in runs]
    return (
        f"{label}: beats the baseline at {sum(bool(r['beats']) for r in runs)} of {len(runs)} seeds; "
        f"OOF AUC {min(r['auc'] for r in runs):.3f}-{max(r['auc'] for r in runs):.3f}, "
        f"difference {min(differences):+.3f} to {max(differences):+.3f}, lowest lower bound {min(lows):+.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="small_real", help="the conf environment (default: small_real)")
    parser.add_argument("--params", default="", help="a --params string for every run")
    parser.add_argument("--configs", nargs="*", default=[""], help="one --params string per run")
    parser.add_argument("--seeds", nargs="*", type=int, default=[], help="run each configuration at these seeds")
    parser.add_argument("--keep", type=Path, help="keep the scratch project here (reports, MLflow store)")
    parser.add_argument("--pretrain-on-phantoms", action="store_true", help="start from the phantom demo's backbone")
    parser.add_argument("--pretrain-params", default="", help="a --params string for the phantom demo run")
    parser.add_argument("--backbone-weights", type=Path, help="the phantom backbone to use instead of training it")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="real_cohort_"))
    try:
        cohort = build_cohort(work / "cohort")
        project = scratch_project(args.keep or work / "project")
        results = []
        common = args.params
        weights, named = phantom_backbone(
            project, args.env, args.backbone_weights, args.pretrain_params, args.pretrain_on_phantoms
        )
        if weights is not None and not named:
            common = ",".join(p for p in (common, f"model_training.model.backbone_weights={weights}") if p)
        spreads = []
        for config in args.configs:
            label = ", ".join(p for p in (args.params, config) if p) or f"conf/{args.env} as shipped"
            label += " (backbone pretrained on phantoms)" if args.pretrain_on_phantoms else ""
            runs = []
            for seed in args.seeds or [None]:
                seeded = None if seed is None else f"model_training.seed={seed}"
                params = ",".join(p for p in (common, config, seeded) if p)
                runs.append(run_config(project, cohort, args.env, params, label + (f", seed {seed}" if seeded else "")))
                show(runs[-1])
            results += runs
            if len(runs) > 1:
                spreads.append(seed_spread(label, runs))
        print(
            "\n| configuration | OOF AUC (95% CI) | baseline (95% CI) | difference (95% CI) "
            "| Brier / prevalence-only | ECE | wall |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for r in results:
            print(
                f"| {r['config']} | {r['auc']:.3f} ({_ci(r['auc_ci'])}) | "
                f"{r['baseline']:.3f} ({_ci(r['baseline_ci'])}) | {r['difference']:+.3f} ({_ci(r['difference_ci'])}) | "
                f"{r['brier']:.4f} / {r['brier_prevalence_only']:.4f} | {r['ece']:.3f} | {r['wall_s'] / 60:.1f} min |"
            )
        for line in spreads:
            print(line)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
