"""The loaders alone: images/s that ``model.fit`` draws from the pixel cache when the model costs nothing.

A model that reads 1 pixel in 256 makes the loader the bound, as it is on a fast GPU: the memory
loader (the split gathered into RAM) against the stream loader (batches from the memory map) with
1, 2, 4 and 8 threads, in the same process. On Keras 3.15 more threads slowed the stream loader.

    python benchmarks/loader_throughput.py                 # TensorFlow
    KERAS_BACKEND=jax python benchmarks/loader_throughput.py
"""

import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np

from cardio_kedro.modeling.feeds import feed


def main() -> int:
    n, s = 8192, 224
    path = Path(tempfile.mkdtemp()) / "pixels.npy"
    pix = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, s, s))
    pix[:] = 7
    pix.flush()
    pix = np.load(path, mmap_mode="r")
    y = (np.arange(n) % 4 == 0).astype("float32")
    inp = keras.Input((s, s, 1), dtype="uint8")
    x = keras.layers.Lambda(lambda t: keras.ops.mean(keras.ops.cast(t[:, ::16, ::16, :], "float32"), axis=(1, 2)))(inp)
    model = keras.Model(inp, keras.layers.Dense(1, activation="sigmoid")(x))
    model.compile("adam", "binary_crossentropy", jit_compile="auto")
    print(f"{n} images of {s} px, batch 64, backend {keras.backend.backend()}")
    for loader, workers in (("memory", 1), ("stream", 1), ("stream", 2), ("stream", 4), ("stream", 8)):
        f = feed(pix, np.arange(n), y, 64, loader=loader, max_loader_memory_gb=8, loader_workers=workers, shuffle=True)
        model.fit(**f, epochs=1, verbose=0)  # warm-up
        start = time.perf_counter()
        model.fit(**f, epochs=2, verbose=0)
        print(f"{loader:<7} threads {workers}: {2 * n / (time.perf_counter() - start):>9,.0f} img/s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
