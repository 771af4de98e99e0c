"""What the Keras backend trains on: the devices it sees, a line for the log, the accelerator check."""

from __future__ import annotations

import keras


def visible_devices() -> list[str]:
    """The backend's devices, e.g. ``["gpu:0"]`` on JAX with a GPU or ``["cpu:0"]``."""
    return list(keras.distribution.list_devices())


def accelerators(devices: list[str]) -> list[str]:
    """The devices that are not the CPU (GPUs, TPUs)."""
    return [d for d in devices if not d.lower().startswith("cpu") and "device:cpu" not in d.lower()]


def device_summary(devices: list[str] | None = None) -> str:
    """``backend jax on gpu:0 (NVIDIA H100 80GB HBM3)``: the backend, its devices and, on JAX, their kind."""
    devices = visible_devices() if devices is None else devices
    backend = keras.backend.backend()
    kinds = ""
    if backend == "jax":
        import jax

        names = sorted({d.device_kind for d in jax.devices()})
        kinds = f" ({', '.join(names)})" if names else ""
    return f"backend {backend} on {', '.join(devices) or 'no device'}{kinds}"


def accelerator_problem(devices: list[str] | None = None) -> str | None:
    """Why a run that requires an accelerator cannot start here (None: one is visible)."""
    devices = visible_devices() if devices is None else devices
    if accelerators(devices):
        return None
    backend = keras.backend.backend()
    hint = (
        "Install the GPU extra and let the Makefile pick the backend: `make run-gpu ENV=nih COHORT=/path/to/nih` "
        '(or `pip install -e ".[gpu]"` and KERAS_BACKEND=jax)'
    )
    if backend == "jax":
        hint = (
            'JAX found no GPU: check `nvidia-smi` and that `pip install -e ".[gpu]"` installed jax\'s CUDA plugin '
            "(python -c 'import jax; print(jax.devices())')"
        )
    return f"no GPU or TPU is visible to the Keras backend ({backend}: {', '.join(devices) or 'no device'}). {hint}."
