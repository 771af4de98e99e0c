"""Parallel, streaming map over CPU cores with progress in the log."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

logger = logging.getLogger(__name__)


def default_workers() -> int:
    """Number of CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)


class Progress:
    """Logs ``done/total`` with rate and ETA at most every ``every`` seconds."""

    def __init__(self, total: int, what: str, every: float = 5.0, quiet_if_fast: bool = False):
        self.total, self.what, self.every = total, what, every
        self.quiet_if_fast = quiet_if_fast  # no line at all for work done within ``every`` seconds
        self.done = 0
        self.start = self.last = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        finished = self.done == self.total and not (self.quiet_if_fast and now - self.start < self.every)
        if now - self.last >= self.every or finished:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            eta = (self.total - self.done) / rate if rate else float("inf")
            logger.info(
                "%s: %d/%d (%.0f%%), %.0f/s, ETA %.0fs",
                self.what,
                self.done,
                self.total,
                100.0 * self.done / max(self.total, 1),
                rate,
                eta,
            )


def imap_progress(
    func: Callable[[T], R],
    items: Iterable[T],
    total: int,
    what: str,
    workers: int | None = None,
    chunksize: int = 8,
) -> Iterator[R]:
    """Yield ``func(item)`` in order, computed on ``workers`` processes, logging progress.

    Results stream back in order with a bounded window, so memory stays flat however many
    items there are. ``workers=1`` runs in this process (no pickling, easy to debug).
    """
    workers = workers or default_workers()
    progress = Progress(total, what)
    if workers <= 1 or total <= chunksize:
        for item in items:
            yield func(item)
            progress.update()
        return
    ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(workers, initializer=_init_worker) as pool:
        for result in pool.imap(func, items, chunksize=chunksize):
            yield result
            progress.update()
