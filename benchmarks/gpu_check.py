"""Every GPU check in one command, for the few minutes a GPU machine is at hand.

Sections, in order of importance (each prints its figures as it finishes and adds them to
``gpu_check.json``; a section that fails is recorded and the next one runs; sections that would
start after ``--budget-s`` are skipped and listed):

1. ``env``: Keras and JAX versions, the devices the run trains on, the GPU's name.
2. ``kedro``: ``data_processing`` + ``model_training`` through a Kedro session on a phantom cohort,
   once per loader (``memory`` and ``stream``), with ``require_accelerator: true``, against the
   bare model's ``model.fit`` on in-memory arrays in the same process: images/s per phase (frozen
   backbone, fine-tuning everything) and the ratio (target >= 0.9).
3. ``inference``: the inference pipeline on 1024 px PNGs against decoding on every core and the
   bare ``predict`` on the GPU; the bound min(decode, predict) and the ratio to it.
4. ``frozen_parts``: where a Kedro run's frozen phase loses time against the bare model, one part
   added at a time to the bare model on in-memory arrays (the gradient cap, weight averaging with
   its swap callback, the auxiliary view head, validation each epoch, the epoch monitor with early
   stopping and the plateau callback): images/s and the ratio to the bare model after each.
5. ``sweep``: the bare model's training images/s (training steps only, no validation) per phase,
   batch size and image size (224 px and the seed's 512 px), with ``steps_per_execution`` as a
   second knob: the figure to set against plain PyTorch's 4,846 img/s (full fine-tuning, 224 px,
   H200).

The models are the NIH run's architecture (conf/nih: VGG16, attention on block 5 at stride 16) with
random weights; precision ``auto`` (mixed_bfloat16 on the GPU).

On the GPU machine (wheels from ``../shared/tools/gpu-wheelhouse``, see docs/gpu.md)::

    KERAS_BACKEND=jax python3 benchmarks/gpu_check.py --out $OUT

Smoke mode on a CPU (every section, tiny sizes, a few minutes on 2 cores)::

    python benchmarks/gpu_check.py --smoke --out /tmp/gpu_check
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "benchmarks")]

# sizes of a full check and of the CPU smoke run
FULL = {
    "size": 224,
    "patients": 12000,
    "native": 256,
    "epochs": 3,
    "batch": 64,
    "width": 1.0,
    "infer_n": 20000,  # decoding 1024 px PNGs on 16 cores runs at about 800/s: start-up must not dominate
    "sweep": [(224, "fine_tune", 64, 1), (224, "fine_tune", 256, 1), (512, "fine_tune", 32, 1), (512, "head", 32, 1),
              (224, "fine_tune", 128, 4), (224, "fine_tune", 128, 1), (224, "head", 256, 1)],
    "sweep_steps": 30,
}  # fmt: skip
SMOKE = {
    "size": 32,
    "patients": 120,
    "native": 64,
    "epochs": 2,
    "batch": 16,
    "width": 0.125,
    "infer_n": 64,
    "sweep": [(32, "fine_tune", 16, 1), (32, "fine_tune", 16, 2), (64, "head", 8, 1)],
    "sweep_steps": 3,
}


class Report:
    """Figures by section, written to ``gpu_check.json`` after every change; a deadline for new sections."""

    def __init__(self, out: Path, budget_s: float):
        self.path = out / "gpu_check.json"
        self.deadline = time.monotonic() + budget_s
        self.data: dict = {"sections": {}, "skipped": [], "errors": {}}
        out.mkdir(parents=True, exist_ok=True)

    def save(self) -> None:
        self.path.write_text(json.dumps(self.data, indent=2, default=str))

    @contextmanager
    def section(self, name: str, needs_s: float):
        """Runs the block unless fewer than ``needs_s`` seconds are left; records its figures or its error."""
        left = self.deadline - time.monotonic()
        if left < needs_s:
            print(f"\n== {name}: skipped ({left:.0f}s left, needs about {needs_s:.0f}s)", flush=True)
            self.data["skipped"].append(name)
            self.save()
            yield None
            return
        print(f"\n== {name} ({left:.0f}s left)", flush=True)
        figures: dict = {}
        self.data["sections"][name] = figures
        start = time.monotonic()
        try:
            yield figures
        except Exception as exc:  # one broken section must not cost the others their figures
            traceback.print_exc()
            self.data["errors"][name] = f"{type(exc).__name__}: {exc}"
        figures["seconds"] = round(time.monotonic() - start, 1)
        print(f"== {name}: {figures['seconds']}s", flush=True)
        self.save()


def env_section(figures: dict) -> None:
    import keras

    from cardio_kedro.modeling.devices import device_summary

    figures.update(keras=keras.__version__, backend=keras.backend.backend(), devices=device_summary())
    if keras.backend.backend() == "jax":
        import jax

        figures["jax"] = jax.__version__
    try:
        smi = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=False)
        figures["nvidia_smi"] = smi.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        figures["nvidia_smi"] = None
    figures["cpus"] = os.cpu_count()
    figures["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    for key, value in figures.items():
        print(f"{key}: {value}")


def kedro_section(figures: dict, sizes: dict) -> None:
    import train_throughput as tt

    args = SimpleNamespace(
        size=sizes["size"],
        batch=sizes["batch"],
        patients=sizes["patients"],
        native=sizes["native"],
        epochs=sizes["epochs"],
        backbone="vgg16",
        width=sizes["width"],
        arch="nih",
        loader_workers=1,  # more threads slowed the stream loader (docs/gpu.md)
    )
    project = tt.scratch_project(args, extra={"require_accelerator": not SMOKE_RUN})
    cwd = os.getcwd()
    try:
        histories, n_train, n_val, timings = tt.kedro_run(project, ["memory", "stream"])
    finally:
        os.chdir(cwd)
    bare = tt.bare_throughput(args, n_train, n_val)
    rows = tt.kedro_vs_bare(histories, bare, n_train)
    figures.update(
        images=n_train, validated=n_val, size=args.size, batch=args.batch, timings=timings, rows=rows, project=project
    )
    print(f"training images {n_train} (+{n_val} validated per epoch), {args.size}px, batch {args.batch}")
    print(f"data_processing {timings['data_processing']:.1f}s; model_training memory {timings['memory']:.1f}s, "
          f"stream {timings['stream']:.1f}s")  # fmt: skip
    print(f"{'loader':<8} {'phase':<10} {'kedro run img/s':>16} {'bare img/s':>12} {'ratio':>7}")
    for row in rows:
        print(f"{row['loader']:<8} {row['phase']:<10} {row['kedro']:>16.0f} {row['bare']:>12.0f} {row['ratio']:>7.2f}")


def inference_section(figures: dict, sizes: dict) -> None:
    import inference_throughput as it

    cwd = os.getcwd()
    try:
        result = it.measure(sizes["size"], sizes["infer_n"], "phantom", "nih", requests=0)
    finally:
        os.chdir(cwd)
    figures.update(result)
    print("\n".join(result["lines"]))
    # at the seed's 512 px: decoding on every core and the bare predict (a full NIH run's extrapolation)
    size = 64 if SMOKE_RUN else 512
    sources = [Path(p) for p in result.pop("sources")]
    n = min(sizes["infer_n"] // 2, 4000)
    import keras

    from cardio_kedro.modeling.training import resolve_precision

    keras.mixed_precision.set_dtype_policy(resolve_precision("auto"))  # as the trained model would be
    model = it.trained_layout(Path("/tmp"), size, it.NIH_MODEL, save=False)
    figures[f"decode_{size}"] = it.decode_rate(sources, n, size)
    figures[f"predict_{size}"] = it.bare_rate(model, sources, n, size)
    print(f"{size}px: decode on every core {figures[f'decode_{size}']:.1f} img/s, "
          f"bare predict {figures[f'predict_{size}']:.1f} img/s")  # fmt: skip


FROZEN_PARTS = ("bare", "+ gradient clipnorm", "+ weight averaging", "+ view head", "+ validation", "+ epoch callbacks")


def _nih_training_config(width: float):
    """conf/base's training parameters with the NIH architecture (random weights, ``width``)."""
    import yaml
    from train_throughput import ARCHITECTURES

    from cardio_kedro.config import ModelTrainingParams

    conf = yaml.safe_load((ROOT / "conf/base/parameters_model_training.yml").read_text())["model_training"]
    conf["model"].update(backbone_width=width, backbone_weights=None, **ARCHITECTURES["nih"])
    return ModelTrainingParams.model_validate(conf)


def frozen_part_rates(size: int, batch: int, steps: int, width: float) -> list[dict]:
    """Frozen-phase training images/s of the bare NIH model with the Kedro run's parts added one by one."""
    import keras
    import numpy as np

    from cardio_kedro.modeling import build_model, with_view_head
    from cardio_kedro.modeling.fitting import compile_options
    from cardio_kedro.modeling.training import (
        EpochMonitor,
        averaged_weights,
        compile_model,
        monitored,
        resolve_precision,
        set_trainable,
    )

    config = _nih_training_config(width)
    keras.mixed_precision.set_dtype_policy(resolve_precision("auto"))
    rng = np.random.default_rng(0)
    n, n_val = batch * steps, max(batch, batch * steps // 4)
    x = rng.integers(0, 256, (n, size, size, 1), dtype=np.uint8)
    y = (rng.random(n) < 0.25).astype("float32")
    view = (rng.random(n) < 0.4).astype("float32")
    x_val = rng.integers(0, 256, (n_val, size, size, 1), dtype=np.uint8)
    y_val, view_val = (rng.random(n_val) < 0.25).astype("float32"), (rng.random(n_val) < 0.4).astype("float32")
    rows = []
    for k, part in enumerate(FROZEN_PARTS):
        keras.utils.set_random_seed(0)
        model = build_model(size, **config.model.model_dump())
        set_trainable(model, 0)
        with_view = k >= FROZEN_PARTS.index("+ view head")
        trainer = with_view_head(model) if with_view else model
        averaging = config.weight_averaging if k >= FROZEN_PARTS.index("+ weight averaging") else None
        options = compile_options(config) | {
            "clipnorm": config.gradient_clipnorm if k >= 1 else None,
            "view_loss_weight": config.view_loss_weight if with_view else 0.0,
            "weight_averaging": averaging,
        }
        compile_model(trainer, config.head.learning_rate, config.loss, **options)
        targets = (y, view) if with_view else y
        callbacks = averaged_weights(averaging)
        if k >= FROZEN_PARTS.index("+ epoch callbacks"):  # as train_model has them, on the validation AUC
            callbacks += [
                EpochMonitor(n),
                keras.callbacks.EarlyStopping(monitor=monitored(trainer), mode="max", patience=100),
                keras.callbacks.ReduceLROnPlateau(monitor=monitored(trainer), mode="max", patience=100),
            ]
        validation = None
        if k >= FROZEN_PARTS.index("+ validation"):
            validation = (x_val, (y_val, view_val) if with_view else y_val)
        fit = {"batch_size": batch, "verbose": 0, "validation_data": validation}
        trainer.fit(x, targets, epochs=1, callbacks=callbacks, **fit)  # compile + warm-up
        start = time.perf_counter()
        trainer.fit(x, targets, epochs=3, initial_epoch=1, callbacks=callbacks, **fit)
        rate = 2 * n / (time.perf_counter() - start)  # training images/s; validation time counted in, as a run has it
        rows.append({"part": part, "img_s": rate, "ratio": rate / rows[0]["img_s"] if rows else 1.0})
        print(f"  {part:<22} {rate:>8.0f} img/s {rows[-1]['ratio']:>6.2f} x bare", flush=True)
        keras.backend.clear_session()
    return rows


def frozen_parts_section(figures: dict, sizes: dict) -> None:
    print(f"frozen phase, {sizes['size']}px, batch {sizes['batch']}, {sizes['sweep_steps']} steps an epoch:")
    figures["rows"] = frozen_part_rates(sizes["size"], sizes["batch"], sizes["sweep_steps"], sizes["width"])


def bare_train_rate(size: int, phase: str, batch: int, steps_per_execution: int, steps: int, width: float) -> float:
    """Training images/s of the bare NIH-architecture model on in-memory uint8 arrays (no validation)."""
    import keras
    import numpy as np

    from cardio_kedro.modeling import build_model
    from cardio_kedro.modeling.fitting import compile_options
    from cardio_kedro.modeling.training import compile_model, resolve_precision, set_trainable

    config = _nih_training_config(width)
    keras.mixed_precision.set_dtype_policy(resolve_precision("auto"))
    keras.utils.set_random_seed(0)
    model = build_model(size, **config.model.model_dump())
    set_trainable(model, 0 if phase == "head" else "all")
    compile_model(model, 1e-4, config.loss, **compile_options(config) | {"steps_per_execution": steps_per_execution})
    rng = np.random.default_rng(0)
    n = batch * steps
    x = rng.integers(0, 256, (n, size, size, 1), dtype=np.uint8)
    y = (rng.random(n) < 0.25).astype("float32")
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0)  # compile + warm-up
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=2, verbose=0)
    rate = 2 * n / (time.perf_counter() - start)
    keras.backend.clear_session()
    return rate


def sweep_section(figures: dict, sizes: dict, report: Report) -> None:
    figures["rows"] = rows = []
    print(f"{'px':>4} {'phase':<10} {'batch':>5} {'steps/exec':>10} {'img/s':>8}")
    for size, phase, batch, spe in sizes["sweep"]:
        if report.deadline - time.monotonic() < 30:
            print("(out of time: the rest of the sweep is skipped)")
            figures["cut_short"] = True
            break
        try:
            rate = bare_train_rate(size, phase, batch, spe, sizes["sweep_steps"], sizes["width"])
        except Exception as exc:  # e.g. out of GPU memory at a large batch: the row says so
            rows.append({"size": size, "phase": phase, "batch": batch, "steps_per_execution": spe, "error": str(exc)})
            report.data["errors"][f"sweep {size}px {phase} batch {batch} x{spe}"] = f"{type(exc).__name__}: {exc}"[:500]
            print(f"{size:>4} {phase:<10} {batch:>5} {spe:>10} {type(exc).__name__}: {str(exc)[:200]}")
            continue
        rows.append({"size": size, "phase": phase, "batch": batch, "steps_per_execution": spe, "img_s": rate})
        print(f"{size:>4} {phase:<10} {batch:>5} {spe:>10} {rate:>8.0f}", flush=True)
        report.save()


SMOKE_RUN = False


def main() -> int:
    global SMOKE_RUN
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("gpu_check_out"), help="folder of gpu_check.json")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for a CPU")
    parser.add_argument("--budget-s", type=float, default=480, help="no section starts after this many seconds")
    parser.add_argument(
        "--only", default="env,kedro,inference,frozen_parts,sweep", help="sections to run, comma-separated"
    )
    args = parser.parse_args()
    SMOKE_RUN = args.smoke
    sizes = SMOKE if args.smoke else FULL
    report = Report(args.out, args.budget_s)
    report.data.update(mode="smoke" if args.smoke else "full", sizes=sizes)
    wanted = args.only.split(",")
    # rough seconds each section needs on an H100/H200 (compiles included), to skip what cannot finish
    needs = {"env": 0, "kedro": 150, "inference": 90, "frozen_parts": 60, "sweep": 60}
    if args.smoke:
        needs = dict.fromkeys(needs, 0)
    for name in wanted:
        with report.section(name, needs[name]) as figures:
            if figures is None:
                continue
            if name == "env":
                env_section(figures)
            elif name == "kedro":
                kedro_section(figures, sizes)
            elif name == "inference":
                inference_section(figures, sizes)
            elif name == "frozen_parts":
                frozen_parts_section(figures, sizes)
            elif name == "sweep":
                sweep_section(figures, sizes, report)
    print(f"\nfigures in {report.path}; errors: {report.data['errors'] or 'none'}; skipped: {report.data['skipped']}")
    return 1 if report.data["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
