"""ImageNet weights fetched ahead of time, with a timeout and retries, into the Keras cache.

Keras downloads ``weights="imagenet"`` with no timeout: on a network that accepts connections and
never answers, a run hangs. ``fetch_imagenet_weights`` downloads once, with a timeout per attempt
and a few retries, into the Keras cache (``$KERAS_HOME/models``, default ``~/.keras/models``), where
Keras finds it later without the network. Run it on a machine with network access:

    python -m cardio_kedro.modeling.pretrained vgg16      # or: make weights BACKBONE=vgg16

and it prints the local file, which ``backbone_weights`` also accepts.
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


def main(argv: list[str] | None = None) -> int:
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
