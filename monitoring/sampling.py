"""A rate sampler: polls a counter on a background thread, so a bench can plot throughput over time
without changing how it waits for the worker."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateSampler:
    """Samples `read()` (a monotonically growing count) every `interval` seconds while running.

    `points` are [seconds since start, count per second over the last interval]."""

    def __init__(self, read: Callable[[], float], interval: float = 0.5) -> None:
        self.read = read
        self.interval = interval
        self.points: list[list[float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rate-sampler", daemon=True)

    def __enter__(self) -> RateSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        start = last_t = time.perf_counter()
        last = self.read()
        while not self._stop.wait(self.interval):
            now, value = time.perf_counter(), self.read()
            self.points.append([round(now - start, 3), round((value - last) / (now - last_t), 1)])
            last, last_t = value, now
