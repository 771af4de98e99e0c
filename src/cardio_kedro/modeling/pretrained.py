"""ImageNet weights fetched ahead of time, with a timeout and retries, into the Keras cache.

Keras downloads ``weights="imagenet"`` with no timeout: on a network that accepts connections and
never answers, a run hangs. ``fetch_imagenet_weights`` downloads once, with a timeout per attempt
and a few retries, into the Keras cache (``$KERAS_HOME/models``, default ``~/.keras/models``), where
Keras finds it later without the network. Run it on a machine with network access:

    python -m cardio_kedro.modeling.pretrained vgg16      # or: make weights BACKBONE=vgg16

and it prints the local file, which ``backbone_weights`` also accepts.

``export_backbone`` writes the backbone of a trained classifier (the phantom demo's, say) as such a
file, so that another run starts from it (pretraining on phantoms, fine-tuning on real films):

    python -m cardio_kedro.modeling.pretrained export MODEL.keras OUT.weights.h5

The backbone, image size, width and batch normalisation are read from the model itself
(``--backbone``, ``--image-size``, ``--width``, ``--batchnorm`` override them). ``make
phantom-backbone`` trains the phantom demo and writes ``data/06_models/phantom_backbone.weights.h5``,
where ``conf/small_real`` starts from.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

TIMEOUT_S = 30.0  # per attempt: connecting and each read
RETRIES = 3
BACKBONES = ("vgg16", "densenet121", "efficientnetb0", "mobilenetv3small")
_FILE_STEMS = {"mobilenetv3small": "mobilenet_v3_small"}


def keras_cache() -> Path:
    """The folder Keras keeps downloaded weights in."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser() / "models"


def cached_weights(backbone: str) -> Path | None:
    """The newest cached headless ImageNet weights file of ``backbone``, if any."""
    stem = _FILE_STEMS.get(backbone, backbone)
    files = [p for p in keras_cache().glob(f"*{stem}*no*top*.h5")] if keras_cache().is_dir() else []
    return max(files, key=lambda p: p.stat().st_mtime) if files else None


def fetch_imagenet_weights(backbone: str, timeout: float | None = None, retries: int | None = None) -> Path:
    """Download (or find cached) the headless ImageNet weights of ``backbone``; returns the local file.

    Each attempt builds the Keras application with ``weights="imagenet"`` under a socket timeout;
    a failed attempt is retried after a short pause. Raises ``RuntimeError`` that says what to do.
    ``timeout`` and ``retries`` default to ``TIMEOUT_S`` and ``RETRIES``.
    """
    timeout = TIMEOUT_S if timeout is None else timeout
    retries = RETRIES if retries is None else retries
    if backbone not in BACKBONES:
        raise ValueError(f"backbone '{backbone}' has no ImageNet weights here; use one of {list(BACKBONES)}")
    from .builder import _application  # imported late: the CLI's --help needs no Keras

    errors = []
    for attempt in range(1, retries + 1):
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(timeout)
        try:
            _application(backbone, (64, 64, 3), imagenet=True)
            path = cached_weights(backbone)
            if path is not None:
                return path
            errors.append("downloaded, but no weights file in the Keras cache")
        except Exception as exc:  # noqa: BLE001 - any network or file failure is retried, then reported
            errors.append(f"{type(exc).__name__}: {exc.__cause__ or exc}")
        finally:
            socket.setdefaulttimeout(previous)
        if attempt < retries:
            time.sleep(min(timeout, 2.0 * attempt))
    raise RuntimeError(
        f"Could not fetch the ImageNet weights of {backbone} in {retries} attempt(s) of up to {timeout:g} s "
        f"(last: {errors[-1]}). Without network access, fetch them on a machine that has it "
        f"('make weights BACKBONE={backbone}' prints the file) and set backbone_weights to that file, "
        "or set backbone_weights to null (random initialisation)."
    )


def _backbone(model):
    """The classifier's backbone; an ensemble's (``model_training.cross_validation.members``): its first member's."""
    from cardio_kedro.modeling.builder import ensemble_members

    members = ensemble_members(model)
    return (members[0] if members else model).get_layer("backbone")


def backbone_spec(model) -> dict:
    """What ``build_backbone`` needs to rebuild a trained classifier's backbone, read from the model:
    ``backbone`` (its name, ``vgg16_attention`` -> ``vgg16``), ``image_size`` (its input), ``width``
    (VGG16's first convolution has 64 x width filters) and ``batchnorm`` (VGG16-BN)."""
    name = model.name.split("_attention")[0]
    if name not in BACKBONES:
        raise ValueError(f"model '{model.name}' is not a classifier of this project (no backbone in {list(BACKBONES)})")
    layers = _backbone(model).layers
    first = next((layer for layer in layers if layer.name == "block1_conv1"), None)
    return {
        "backbone": name,
        "image_size": int(model.inputs[0].shape[1]),
        "width": first.filters / 64 if name == "vgg16" and first is not None else 1.0,
        "batchnorm": name == "vgg16" and any(type(layer).__name__ == "BatchNormalization" for layer in layers),
    }


def export_backbone(
    model_path: str | Path,
    out: str | Path,
    backbone: str | None = None,
    image_size: int | None = None,
    width: float | None = None,
    batchnorm: bool | None = None,
) -> Path:
    """The backbone of the trained model at ``model_path`` as a headless weights file (``*.weights.h5``)
    that ``model_training.model.backbone_weights`` loads into the same backbone. Layers the model did
    not use (above its attention stride) keep their random initialisation. What is not given is read
    from the model (``backbone_spec``). Returns ``out``."""
    from cardio_kedro.modeling.builder import build_backbone
    from cardio_kedro.modeling.io import load_model

    out = Path(out)
    if not out.name.endswith(".weights.h5"):
        raise ValueError(f"{out}: the file name must end with .weights.h5 (Keras' weights format)")
    model = load_model(str(model_path))
    given = {"backbone": backbone, "image_size": image_size, "width": width, "batchnorm": batchnorm}
    spec = backbone_spec(model) | {k: v for k, v in given.items() if v is not None}
    backbone, image_size, width, batchnorm = spec["backbone"], spec["image_size"], spec["width"], spec["batchnorm"]
    trained = {layer.name: layer for layer in _backbone(model).layers}
    headless = build_backbone(backbone, image_size, None, width, batchnorm)
    copied = 0
    for layer in headless.layers:
        if layer.name in trained and layer.weights:
            layer.set_weights(trained[layer.name].get_weights())
            copied += 1
    if not copied:
        raise ValueError(f"{model_path} has no layer of a {backbone} backbone (width {width}, batchnorm {batchnorm})")
    out.parent.mkdir(parents=True, exist_ok=True)
    headless.save_weights(out)
    return out


def _export(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Write a trained model's backbone as a headless weights file.")
    parser.add_argument("model", type=Path, help="a trained classifier (.keras)")
    parser.add_argument("out", type=Path, help="the weights file to write (*.weights.h5)")
    parser.add_argument("--backbone", choices=BACKBONES, help="default: the model's")
    parser.add_argument("--image-size", type=int, help="default: the model's input size")
    parser.add_argument("--width", type=float, help="VGG16's width (default: the model's)")
    parser.add_argument("--batchnorm", action=argparse.BooleanOptionalAction, help="VGG16-BN (default: the model's)")
    args = parser.parse_args(argv)
    path = export_backbone(args.model, args.out, args.backbone, args.image_size, args.width, args.batchnorm)
    print(path)
    print(f"use it: --params=model_training.model.backbone_weights={path}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["export"]:
        return _export(argv[1:])
    parser = argparse.ArgumentParser(description="Fetch ImageNet weights into the Keras cache; print the file.")
    parser.add_argument("backbone", choices=BACKBONES)
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds per attempt")
    parser.add_argument("--retries", type=int, default=RETRIES)
    args = parser.parse_args(argv)
    try:
        path = fetch_imagenet_weights(args.backbone, args.timeout, args.retries)
    except RuntimeError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    print(path)
    print(f"offline later: --params=model_training.model.backbone_weights={path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
