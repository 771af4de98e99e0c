"""The heap setting: after TensorFlow's generator op, numpy arrays of 256 KB still reuse heap memory."""

import subprocess
import sys

import pytest

SCRIPT = """
import resource, sys
import numpy as np
from cardio_kedro.hooks.process import keep_arrays_on_the_heap
if sys.argv[1] == "guarded":
    assert keep_arrays_on_the_heap()
import keras
from cardio_kedro.modeling.feeds import CachedImages
model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(1)])
model.predict(CachedImages(np.zeros((64, 8, 8), np.uint8), np.arange(64), np.zeros(64), 16), verbose=0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    np.ones(32768).sum()  # 256 KB, allocated and freed
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a glibc setting")
def test_arrays_stay_on_the_heap_after_a_pydataset_input():
    guarded, unguarded = _page_faults("guarded"), _page_faults("plain")
    assert guarded < 1000 < unguarded  # 200 x 64 pages mapped anew without the setting
