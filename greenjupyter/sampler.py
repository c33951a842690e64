"""One long-lived thread that reads every source at a steady rate.

Each tick turns the energy since the previous tick into watts per component and keeps
them in a bounded ring buffer (the live view, peak power). Reading often is also what keeps
wrapping RAPL counters exact and what integrates GPUs that only report power.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Callable

from .notices import notice


@dataclass(frozen=True, slots=True)
class Sample:
    """Average power per component over one sampler interval [t0, t1] (perf_counter seconds)."""

    t0: float
    t1: float
    components: tuple[str, ...]
    watts: tuple[float, ...]  # NaN for a component that failed during the interval
    total_w: float


class Sampler:
    """Call ``read()`` every ``interval_s`` on one daemon thread; keep the last ``capacity`` samples.

    ``read`` returns (perf_counter time, cumulative joules per component, component names).
    ``listeners`` are called with each new Sample from the sampler thread.
    """

    def __init__(self, read: Callable, interval_s: float = 0.25, capacity: int = 14400):
        self.interval_s = interval_s
        self.samples: deque[Sample] = deque(maxlen=capacity)
        self.listeners: list[Callable[[Sample], None]] = []
        self._read = read
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._previous = None
        self._thread = None

    def start(self, first: Callable[[], None] | None = None) -> None:
        """Start the thread; ``first`` runs on it before the first tick (slow set-up off the main thread)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(first,), name="greenjupyter-sampler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None
        self._previous = None

    def _run(self, first) -> None:
        if first is not None:
            try:
                first()
            except Exception as error:  # never let set-up kill the thread
                notice("sampler-setup", f"sampler set-up failed: {error!r}")
        while True:
            try:
                self.tick()
            except Exception as error:
                notice("sampler-tick", f"sampler could not read the sources: {error!r}")
            if self._stop.wait(self.interval_s):
                return

    def tick(self) -> Sample | None:
        """Read the sources once and return the new sample (None on the first read)."""
        t, values, components = self._read()
        previous, self._previous = self._previous, (t, values, components)
        if previous is None or previous[2] != components or t <= previous[0]:
            return None
        span = t - previous[0]
        watts = tuple((now - then) / span for now, then in zip(values, previous[1]))
        total = sum(w for w in watts if w == w)
        sample = Sample(previous[0], t, components, watts, total)
        with self._lock:
            self.samples.append(sample)
        for listener in self.listeners:
            listener(sample)
        return sample

    def window_stats(self, t0: float, t1: float) -> tuple[Sample | None, float]:
        """Return (the newest sample that ended by t1, the highest total power of samples inside [t0, t1] or 0.0)."""
        recent, peak = None, 0.0
        with self._lock:
            for sample in reversed(self.samples):
                if sample.t1 > t1:
                    continue
                if recent is None:
                    recent = sample
                if sample.t0 < t0:
                    break
                if sample.total_w > peak:
                    peak = sample.total_w
        return recent, peak
