"""Measurement windows: read every source at a window's edges and turn the difference into a Measurement."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from .measurement import Measurement
from .sampler import Sampler
from .sources.base import NAN, Source

# The power history is kept in memory: an hour at 4 Hz is 14,400 samples (a few MB); beyond
# this many, older samples are dropped whatever history_s asks for.
MAX_SAMPLES = 20_000


@dataclass(slots=True)
class Reading:
    """Every counter at one moment: perf_counter time, wall-clock time, joules per component,
    names, and how many component failures the meter had logged by then.

    A window is two readings, its start and its stop; windows are independent, so they nest.
    """

    t: float
    wall: float
    values: list[float]
    faults: int
    components: tuple[str, ...]
    spread_s: float = 0.0  # how long the reads took: t is uncertain by half of it


class Meter:
    """Own the sources and the sampler; open and close measurement windows.

    ``begin()``/``end()`` read the counters themselves, so a window's edges are exact and
    never wait for a sampler tick. Sources may be added later (GPUs are found on the
    sampler thread, because loading NVML is slow); a window only reports the components
    that existed when it began.
    """

    def __init__(self, sources: list[Source] = (), sample_interval_s: float = 0.25, history_s: float = 3600.0):
        self._lock = threading.Lock()
        self.sources: list[Source] = []
        self.components: tuple[str, ...] = ()
        self._readers: list = []
        self._fault_log: list[int] = []  # component index, once each time one starts failing
        self._failing: set[int] = set()
        self._ready = threading.Event()
        self._ready.set()
        self.detection = None  # what found the sources, and why others are missing (set by its owner)
        capacity = min(MAX_SAMPLES, max(1, int(history_s / sample_interval_s)))
        self.sampler = Sampler(self.read, sample_interval_s, capacity)
        self.add_sources(sources)

    def add_sources(self, sources: list[Source]) -> None:
        with self._lock:
            self.sources += sources
            self.components = tuple(c for s in self.sources for c in s.components)
            self._readers = [s.read for s in self.sources]
            self._period = tuple(p for s in self.sources for p in s.update_period_s)
            self._power_error = tuple(e for s in self.sources for e in s.power_error_w)
            self._estimated = tuple(s.estimated for s in self.sources for _ in s.components)

    @property
    def estimated_flags(self) -> tuple[bool, ...]:
        """Return, per component, whether it is modelled rather than measured."""
        return self._estimated

    def start(self, late_setup=None) -> None:
        """Start the sampler; ``late_setup()`` runs on its thread and returns sources to add.

        Windows that begin before it finishes wait for it (up to 10 s), so no cell misses a GPU.
        """
        if late_setup is None:
            self.sampler.start()
            return
        self._ready.clear()

        def setup():
            try:
                self.add_sources(late_setup())
            finally:
                self._ready.set()

        self.sampler.start(first=setup)

    def close(self) -> None:
        self.sampler.stop()
        self.wait_ready()
        with self._lock:
            for source in self.sources:
                source.close()
            self.sources, self._readers = [], []

    def read(self) -> tuple[float, list[float], tuple[str, ...]]:
        """Return (perf_counter time, cumulative joules per component, component names)."""
        with self._lock:
            return self._read_locked(False)[:3]

    def snapshot(self) -> Reading:
        """Return every counter now, as a window's edge (the start or the stop)."""
        wall = time.time()
        with self._lock:
            t, values, components, spread = self._read_locked(True)
            return Reading(t, wall, values, len(self._fault_log), components, spread)

    def _read_locked(self, edge: bool):
        before = time.perf_counter()
        values = []
        for read in self._readers:
            values += read(edge)
        after = time.perf_counter()
        t = (before + after) / 2  # the reads' moment, within half their spread even if we were preempted
        # Sources mark a failed read with this very NAN object, so `in` finds it by identity.
        if NAN in values or self._failing:
            for i, value in enumerate(values):
                if value is not NAN:
                    self._failing.discard(i)
                elif i not in self._failing:  # log each spell of failure once
                    self._failing.add(i)
                    self._fault_log.append(i)
        return t, values, self.components, after - before

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until sources found on the sampler thread (GPUs) have been added."""
        if not self._ready.is_set():
            self._ready.wait(timeout)

    def begin(self) -> Reading:
        """Return the start of a window (waits for GPU detection the first time)."""
        self.wait_ready()
        return self.snapshot()

    def end(self, start: Reading) -> Measurement:
        return self.measurement(start, self.snapshot())

    def measurement(self, start: Reading, stop: Reading) -> Measurement:
        """Return the Measurement of the window from ``start`` to ``stop`` (later, on any thread, is fine)."""
        duration = stop.t - start.t
        recent, peak = self.sampler.window_stats(start.t, stop.t)
        recent_w = recent.watts if recent is not None and recent.components == stop.components else None
        names, estimated_flags = stop.components, self._estimated
        edge_spread = (start.spread_s + stop.spread_s) / 2  # a preempted read blurs its edge's time
        failed_reads = set(self._fault_log[start.faults : stop.faults]) if stop.faults != start.faults else ()
        parts, estimated, failed = {}, [], []
        energy = uncertainty = 0.0
        for i in range(len(start.values)):
            joules = stop.values[i] - start.values[i]
            if joules != joules or i in failed_reads:
                failed.append(names[i])
                continue
            parts[names[i]] = joules
            energy += joules
            if estimated_flags[i]:
                estimated.append(names[i])
                continue
            # A counter read just after a tick and just before one misses up to one
            # update period of energy at either edge; sensors add their stated error.
            watts = joules / duration if duration > 0 else 0.0
            if recent_w is not None and recent_w[i] > watts:
                watts = recent_w[i]
            uncertainty += watts * (self._period[i] + edge_spread) + self._power_error[i] * duration
        average = energy / duration if duration > 0 else 0.0
        return Measurement(
            started_at=datetime.fromtimestamp(start.wall, timezone.utc),
            duration_s=duration,
            energy_j=energy,
            components=parts,
            estimated=bool(estimated),
            avg_power_w=average,
            peak_power_w=peak if peak > average else average,
            uncertainty_j=uncertainty,
            estimated_components=tuple(estimated),
            failed_components=tuple(failed),
        )
