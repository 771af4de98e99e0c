"""Process-wide settings a long run needs, applied once when a Kedro session starts."""

from __future__ import annotations

import ctypes
import sys

M_TOP_PAD, M_MMAP_THRESHOLD = -2, -3  # glibc's mallopt parameters
HEAP_MMAP_THRESHOLD = 32 * 2**20
HEAP_TOP_PAD = 64 * 2**20


def keep_arrays_on_the_heap() -> bool:
    """Pin glibc's mmap threshold at 32 MiB and its top pad at 64 MiB, so numpy arrays reuse heap memory.

    TensorFlow's generator dataset op (any ``PyDataset`` input, e.g. the stream loader) sets
    ``M_TRIM_THRESHOLD``, which freezes glibc's adaptive mmap threshold at 128 KB for the rest of the
    process. Every array of more than 16,000 float64 is then mapped, page-faulted and unmapped anew:
    the reporting bootstrap over 22,500 test images ran 2-4x slower. Setting the threshold
    explicitly first keeps it where it is. Returns whether it was set (False off glibc).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # another C library (musl): it has no such threshold
        return False
    # the op's 128 KB trim threshold would hand a freed array back to the system at once: a top pad of
    # 64 MiB keeps that much when the heap is trimmed
    return bool(libc.mallopt(M_MMAP_THRESHOLD, HEAP_MMAP_THRESHOLD) and libc.mallopt(M_TOP_PAD, HEAP_TOP_PAD))
