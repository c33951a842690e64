"""One long-lived thread that reads every source at a steady rate.

Each tick turns the energy since the previous tick into watts per component and keeps
them in a ring that holds ``history_s`` seconds (the live view, peak power). Reading often
is also what keeps wrapping RAPL counters exact and what integrates GPUs that only report
power.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Callable

from .notices import notice

# The ring never holds more samples than this (each is a few hundred bytes). When the
# interval is short against history_s, consecutive samples are merged so that the ring
# still reaches history_s back.
MAX_SAMPLES = 20_000
DEFAULT_INTERVAL_S = 0.25


@dataclass(frozen=True, slots=True)
class Sample:
    """Average power per component over one sampler interval [t0, t1] (perf_counter seconds)."""

    t0: float
    t1: float
    components: tuple[str, ...]
    watts: tuple[float, ...]  # NaN for a component that failed during the interval
    total_w: float


class Sampler:
    """Call ``read()`` every ``interval_s`` on one daemon thread; keep ``history_s`` of samples.

    ``read`` returns (perf_counter time, cumulative joules per component, component names).
    ``caps(components)``, when given, returns the most watts each component may show (models
    are capped at their maximum). ``listeners`` are called with each new Sample from the
    sampler thread; each is guarded on its own, so one failing does not skip the others.
    """

    def __init__(self, read: Callable, interval_s: float = DEFAULT_INTERVAL_S, history_s: float = 3600.0,
                 caps: Callable | None = None):
        self.interval_s = interval_s
        self.history_s = history_s
        self.samples: deque[Sample] = deque(maxlen=MAX_SAMPLES)
        self.listeners: list[Callable[[Sample], None]] = []
        self._read = read
        self._caps = caps
        self._cap_w = None  # (components, caps), worked out on the first tick
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._previous = None
        self._thread = None

    @property
    def _merge_below_s(self) -> float:
        """Samples shorter than this are merged, so MAX_SAMPLES of them span history_s."""
        return self.history_s / MAX_SAMPLES

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
            interval = self.interval_s
            if not (isinstance(interval, (int, float)) and math.isfinite(interval) and interval > 0):
                interval = DEFAULT_INTERVAL_S  # settings refuse such values; never spin if one slips by
            if self._stop.wait(interval):
                return

    def tick(self) -> Sample | None:
        """Read the sources once and return the new sample (None on the first read)."""
        t, values, components = self._read()
        previous, self._previous = self._previous, (t, values, components)
        if previous is None or previous[2] != components or t <= previous[0]:
            return None
        span = t - previous[0]
        watts = tuple(min((now - then) / span, cap) for now, then, cap in zip(values, previous[1], self._caps_for(components)))
        sample = Sample(previous[0], t, components, watts, sum(w for w in watts if w == w))
        self._keep(sample)
        for listener in list(self.listeners):
            try:
                listener(sample)
            except Exception as error:
                name = getattr(listener, "__qualname__", repr(listener))
                notice(f"listener-{name}", f"{name} failed on a power sample ({error!r}); the others carry on")
        return sample

    def _caps_for(self, components) -> tuple[float, ...]:
        if self._cap_w is None or self._cap_w[0] != components:
            caps = tuple(self._caps(components)) if self._caps is not None else ()
            self._cap_w = (components, caps if len(caps) == len(components) else (math.inf,) * len(components))
        return self._cap_w[1]

    def _keep(self, sample: Sample) -> None:
        with self._lock:
            samples = self.samples
            last = samples[-1] if samples else None
            if (last is not None and last.t1 - last.t0 < self._merge_below_s and last.t1 == sample.t0
                    and last.components == sample.components):
                samples[-1] = _merged(last, sample)
            else:
                samples.append(sample)
            oldest = sample.t1 - self.history_s
            while samples and samples[0].t1 < oldest:
                samples.popleft()

    def window_stats(self, t0: float, t1: float) -> tuple[float | None, tuple[float, ...] | None]:
        """Return (the highest total power, the highest power per component) of the samples that
        overlap [t0, t1]; (None, None) when none does yet."""
        peak, highest = None, None
        with self._lock:
            for sample in reversed(self.samples):
                if sample.t0 >= t1:
                    continue
                if sample.t1 <= t0:
                    break
                if peak is None or sample.total_w > peak:
                    peak = sample.total_w
                if highest is None:
                    highest = sample.watts
                elif len(highest) == len(sample.watts):
                    highest = tuple(a if a >= b or b != b else b for a, b in zip(highest, sample.watts))
        return peak, highest


def _merged(a: Sample, b: Sample) -> Sample:
    """Return one sample spanning two contiguous ones (energy-weighted average power)."""
    da, db = a.t1 - a.t0, b.t1 - b.t0
    watts = tuple((x * da + y * db) / (da + db) for x, y in zip(a.watts, b.watts))
    return Sample(a.t0, b.t1, a.components, watts, sum(w for w in watts if w == w))
