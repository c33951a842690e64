"""One long-lived thread that reads every source at a steady rate.

Each tick turns the energy since the previous tick into watts per component and keeps
them in a ring that holds ``history_s`` seconds (the live view, peak power). Reading often
is also what keeps wrapping RAPL counters exact and what integrates GPUs that only report
power.
"""

from __future__ import annotations

import math
import threading
from array import array
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


class SampleRing:
    """The last ``capacity`` samples of one set of components, in compact arrays.

    Times are kept as doubles and watts as 4-byte floats (a sensor's watts need no more than
    7 digits): an hour at 4 Hz with six components takes under 600 KB, against about 5 MB as
    Sample objects. Samples are built back on demand (indexing, iteration); a change of
    components (a source added) starts the ring afresh. Appends come from one thread; readers
    on other threads may see a sample more or less, never a torn one, because a slot is
    filled before the count that exposes it grows.
    """

    def __init__(self, capacity: int = MAX_SAMPLES):
        self.capacity = capacity
        self.components: tuple[str, ...] = ()
        self._t0, self._t1, self._watts = array("d"), array("d"), array("f")
        self._first = 0  # slot of the oldest sample
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> Sample:
        count = self._count
        if index < 0:
            index += count
        if not 0 <= index < count:
            raise IndexError("sample index out of range")
        return self._sample((self._first + index) % self.capacity)

    def __iter__(self):
        first, count, capacity = self._first, self._count, self.capacity
        for i in range(count):
            yield self._sample((first + i) % capacity)

    def _sample(self, slot: int) -> Sample:
        n = len(self.components)
        watts = tuple(self._watts[slot * n : slot * n + n])
        return Sample(self._t0[slot], self._t1[slot], self.components, watts, sum(w for w in watts if w == w))

    def append(self, sample: Sample) -> None:
        if sample.components != self.components:
            self.clear(sample.components)
        n = len(self.components)
        if self._count < self.capacity:
            slot = (self._first + self._count) % self.capacity
            if slot == len(self._t0):  # still growing
                self._t0.append(sample.t0)
                self._t1.append(sample.t1)
                self._watts.extend(sample.watts)
                self._count += 1
                return
            self._write(slot, sample, n)
            self._count += 1
            return
        self._write(self._first, sample, n)  # full: overwrite the oldest
        self._first = (self._first + 1) % self.capacity

    def replace_last(self, sample: Sample) -> None:
        self._write((self._first + self._count - 1) % self.capacity, sample, len(self.components))

    def drop_oldest(self) -> None:
        self._first = (self._first + 1) % self.capacity
        self._count -= 1

    def _write(self, slot: int, sample: Sample, n: int) -> None:
        self._t0[slot], self._t1[slot] = sample.t0, sample.t1
        self._watts[slot * n : slot * n + n] = array("f", sample.watts)

    def clear(self, components: tuple[str, ...] = ()) -> None:
        self.components = components
        self._t0, self._t1, self._watts = array("d"), array("d"), array("f")
        self._first = self._count = 0

    def since(self, t: float) -> list[Sample]:
        """Return the samples that end at or after ``t``, oldest first (scans from the newest)."""
        out = []
        for i in range(self._count - 1, -1, -1):
            sample = self[i]
            if sample.t1 < t:
                break
            out.append(sample)
        return out[::-1]

    def nbytes(self) -> int:
        """Return the bytes the arrays hold."""
        return sum(a.buffer_info()[1] * a.itemsize for a in (self._t0, self._t1, self._watts))


class Sampler:
    """Call ``read()`` every ``interval_s`` on one daemon thread; keep ``history_s`` of samples.

    ``read`` returns (perf_counter time, cumulative joules per component, component names).
    ``caps(components)``, when given, returns the most watts each component may show (models
    are capped at their maximum). ``listeners`` are called with each new Sample from the
    sampler thread; each is guarded on its own, so one failing does not skip the others.
    """

    def __init__(self, read: Callable, interval_s: float = DEFAULT_INTERVAL_S, history_s: float = 3600.0,
                 caps: Callable | None = None, capacity: int = MAX_SAMPLES):
        self.interval_s = interval_s
        self.history_s = history_s
        self.samples = SampleRing(capacity)
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
        """Samples shorter than this are merged, so the ring's capacity spans history_s."""
        return self.history_s / self.samples.capacity

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
                samples.replace_last(_merged(last, sample))
            else:
                samples.append(sample)
            oldest = sample.t1 - self.history_s
            while samples and samples[0].t1 < oldest:
                samples.drop_oldest()

    def window_stats(self, t0: float, t1: float) -> tuple[float | None, tuple[float, ...] | None]:
        """Return (the highest total power, the highest power per component) of the samples that
        overlap [t0, t1]; (None, None) when none does yet."""
        peak, highest = None, None
        with self._lock:
            samples = self.samples
            for index in range(len(samples) - 1, -1, -1):
                sample = samples[index]
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
