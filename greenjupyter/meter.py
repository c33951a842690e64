"""Measurement windows: read every source at a window's edges and turn the difference into a Measurement."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from .fastpath import read_counters
from .measurement import Measurement
from .sampler import Sampler
from .sources.base import Source

EMPTY: frozenset = frozenset()


@dataclass(slots=True)
class Reading:
    """Every counter at one moment: a window's start or stop.

    ``t`` is perf_counter time, uncertain by half of ``spread_s`` (how long the reads took);
    ``values`` are joules per component; ``variation`` the polled sources' running
    |ΔP|·Δt/2 (see PowerIntegral); ``events`` how many failures and sharing spells the
    sampler had logged by then, and ``shared`` the components shared with other processes
    at that moment. A window is two readings; windows are independent, so they nest.
    """

    t: float
    wall: float
    values: list[float]
    events: int
    components: tuple[str, ...]
    spread_s: float = 0.0
    variation: list[float] | None = None
    shared: frozenset = EMPTY


@dataclass(frozen=True, slots=True)
class _Layout:
    """What the sources are, per component; replaced whole when sources are added."""

    sources: tuple[Source, ...] = ()
    components: tuple[str, ...] = ()
    period_s: tuple[float, ...] = ()
    power_error_w: tuple[float, ...] = ()
    estimated: tuple[bool, ...] = ()
    polled: bool = False
    counters: Source | None = None  # the only source, when it reads counter files (RAPL): an edge is one call


class Meter:
    """Own the sources and the sampler; open and close measurement windows.

    ``begin()``/``end()`` read the counters themselves, so a window's edges are exact; they
    take no lock and never wait for the sampler, whose reads run at the same time on its own
    thread. Sources may be added later (GPUs are found on the sampler thread, because loading
    NVML is slow); a window only reports the components that existed when it began.

    The sampler's reads also keep a log of events per component: a failure (a read that gave
    NaN), or the start of a spell where other processes share the device. A window that saw
    a failure leaves that component out; one that saw sharing says so.
    """

    def __init__(self, sources: list[Source] = (), sample_interval_s: float = 0.25, history_s: float = 3600.0):
        self._add_lock = threading.Lock()
        self._layout = _Layout()
        self._events: list[tuple[str, int]] = []  # ("failed" | "shared", component index)
        self._failing: set[int] = set()
        self._shared_now: frozenset = EMPTY
        self._ready = threading.Event()
        self._ready.set()
        self._info = None  # (layout, ComponentInfo) for the layout in force
        self.wall_offset = time.time() - time.perf_counter()  # wall clock = perf_counter + this
        self.detection = None  # what found the sources, and why others are missing (set by its owner)
        self.sampler = Sampler(self.read, sample_interval_s, history_s, caps=self._model_caps)
        self.add_sources(sources)

    @property
    def sources(self) -> list[Source]:
        return list(self._layout.sources)

    @property
    def layout(self) -> "_Layout":
        return self._layout

    @property
    def components(self) -> tuple[str, ...]:
        return self._layout.components

    @property
    def estimated_flags(self) -> tuple[bool, ...]:
        """Return, per component, whether it is modelled rather than measured."""
        return self._layout.estimated

    def add_sources(self, sources: list[Source]) -> None:
        with self._add_lock:
            all_sources = self._layout.sources + tuple(sources)
            self._layout = _Layout(
                all_sources,
                tuple(c for s in all_sources for c in s.components),
                tuple(p for s in all_sources for p in s.update_period_s),
                tuple(e for s in all_sources for e in s.power_error_w),
                tuple(s.estimated for s in all_sources for _ in s.components),
                any(s.polled for s in all_sources),
                all_sources[0] if len(all_sources) == 1 and hasattr(all_sources[0], "fds") else None,
            )

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
        with self._add_lock:
            layout, self._layout = self._layout, _Layout()
        for source in layout.sources:
            source.close()

    def read(self) -> tuple[float, list[float], tuple[str, ...]]:
        """Read every source as the sampler does; return (perf_counter time, joules per component, names).

        Only the sampler thread may call this: its reads move the sources' state, and it keeps
        the log of failures and sharing.
        """
        layout = self._layout
        before = time.perf_counter()
        values = []
        for source in layout.sources:
            values += source.read(False)
        after = time.perf_counter()
        self.wall_offset = time.time() - after  # follows the wall clock's steps, for edges' wall times
        self._log_failures(values)
        self._log_sharing(layout)
        return (before + after) / 2, values, layout.components

    def snapshot(self) -> Reading:
        """Return every counter now, as a window's edge (the start or the stop); any thread, no lock."""
        return self.reading(self.edge())

    def edge(self) -> tuple:
        """Capture every counter now, as cheaply as it can be done: a cell's edge (any thread, no lock).

        Returns (perf_counter before the reads, after them, the layout, each source's capture,
        events logged so far, components shared now). ``reading`` turns it into a Reading later,
        on any thread; the journal keeps it as it is.
        """
        layout = self._layout
        source = layout.counters
        if source is not None:  # the usual case on a machine with RAPL: one call reads every counter
            state = source.state  # taken before the reads: never newer than they are
            before, after, texts = read_counters(source.fds)
            return before, after, layout, ((state, texts),), len(self._events), self._shared_now
        before = time.perf_counter()
        if layout.polled:
            captured = [source.read_polled(True) for source in layout.sources]
        else:
            captured = [source.capture() for source in layout.sources]
        return before, time.perf_counter(), layout, captured, len(self._events), self._shared_now

    def reading(self, edge: tuple) -> Reading:
        """Return the Reading of an edge from ``edge()``."""
        before, after, layout, captured, events, shared = edge
        values, variation = [], None
        if layout.polled:
            variation = []
            for joules, varied in captured:
                values += joules
                variation += varied
        else:
            for source, capture in zip(layout.sources, captured):
                values += source.values_at(capture, after)
        t = (before + after) / 2
        return Reading(t, t + self.wall_offset, values, events, layout.components, after - before, variation, shared)

    def _log_failures(self, values: list[float]) -> None:
        if not self._failing and not any(v != v for v in values):
            return
        for i, value in enumerate(values):
            if value == value:
                self._failing.discard(i)
            elif i not in self._failing:  # log each spell of failure once
                self._failing.add(i)
                self._events.append(("failed", i))

    def _log_sharing(self, layout: _Layout) -> None:
        shared, offset = set(), 0
        for source in layout.sources:
            sharing = getattr(source, "sharing", None)
            if sharing is not None:
                shared.update(offset + i for i, others in enumerate(sharing()) if others)
            offset += len(source.components)
        if shared != self._shared_now:
            for i in shared - self._shared_now:
                self._events.append(("shared", i))
            self._shared_now = frozenset(shared)

    def _model_caps(self, components) -> tuple[float, ...]:
        """Return the most watts each component may show: the model's maximum for estimates."""
        caps = []
        for source in self._layout.sources:
            limits = source.max_power_w if source.estimated else ()
            caps += [limits[i] if i < len(limits) else math.inf for i in range(len(source.components))]
        return tuple(caps) if len(caps) == len(components) else (math.inf,) * len(components)

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

    def window_flags(self, start: Reading, stop: Reading) -> tuple[set[int], set[int]]:
        """Return (components that failed, components shared with other processes) within a window, by index."""
        return self.flags_between(start.events, stop.events, start.shared, stop.shared)

    def flags_between(self, first: int, last: int, shared_first, shared_last) -> tuple[set[int], set[int]]:
        """``window_flags`` from the events logged and the components shared at the two edges (edges or Readings)."""
        if first == last and not shared_first and not shared_last:
            return EMPTY, EMPTY  # the usual case, on a cell's path: nothing to look at
        failed, shared = set(), set(shared_first) | set(shared_last)
        if last != first:
            for kind, i in self._events[first:last]:
                (failed if kind == "failed" else shared).add(i)
        return failed, shared

    def component_info(self) -> "ComponentInfo":
        """Return what a window's figure needs to know of each component (kept with journal entries)."""
        layout = self._layout
        info = self._info
        if info is None or info[0] is not layout:
            caps = self._model_caps(layout.components)
            info = self._info = (layout, ComponentInfo(layout.components, layout.period_s, layout.power_error_w,
                                                       layout.estimated, caps))
        return info[1]

    def measurement(self, start: Reading, stop: Reading) -> Measurement:
        """Return the Measurement of the window from ``start`` to ``stop`` (later, on any thread, is fine)."""
        peak, highest = self.sampler.window_stats(start.t, stop.t)
        failed, shared = self.window_flags(start, stop)
        return window_measurement(start, stop, self.component_info(), failed, shared, peak, highest)


@dataclass(frozen=True)
class ComponentInfo:
    """Per component: its name, counter update period, sensor error (for polled power), whether
    it is modelled, and the model's most watts (inf for measured ones)."""

    names: tuple[str, ...]
    period_s: tuple[float, ...]
    power_error_w: tuple[float, ...]
    estimated: tuple[bool, ...]
    caps_w: tuple[float, ...]


def window_measurement(start: Reading, stop: Reading, info: ComponentInfo, failed=(), shared=(),
                       peak: float | None = None, highest: tuple[float, ...] | None = None) -> Measurement:
    """Return the Measurement of the window from ``start`` to ``stop``.

    ``failed``/``shared`` are component indices the sampler saw fail or shared during it;
    ``peak`` and ``highest`` the sampler intervals' highest total and per-component power
    around it (None when none covers it, as for a window recovered from the journal).

    Counters: each edge may miss up to one update period of energy, at the highest power
    the component showed around the window. Polled power: how much the power moved between
    the polls inside the window (PowerIntegral), plus the sensor's stated error. Models carry
    no bound, and are capped at the model's maximum power for the window's length.
    """
    duration = stop.t - start.t
    if highest is not None and len(highest) < len(start.values):
        highest = None
    edge_spread = (start.spread_s + stop.spread_s) / 2  # a preempted read blurs its edge's time
    names = info.names
    parts, estimated, failed_names = {}, [], []
    energy = uncertainty = 0.0
    for i in range(len(start.values)):
        joules = stop.values[i] - start.values[i]
        if joules != joules or i in failed:
            failed_names.append(names[i])
            continue
        if info.estimated[i]:
            joules = min(joules, info.caps_w[i] * duration) if duration > 0 else 0.0
            estimated.append(names[i])
        else:
            watts = joules / duration if duration > 0 else 0.0
            if highest is not None and highest[i] > watts:
                watts = highest[i]
            if start.variation is not None and stop.variation is not None and info.power_error_w[i] > 0:
                varied = stop.variation[i] - start.variation[i]
                uncertainty += varied + info.power_error_w[i] * duration + watts * edge_spread
            else:
                uncertainty += watts * (info.period_s[i] + edge_spread)
        parts[names[i]] = joules
        energy += joules
    average = energy / duration if duration > 0 else 0.0
    return Measurement(
        started_at=datetime.fromtimestamp(start.wall, timezone.utc),
        duration_s=duration,
        energy_j=energy,
        components=parts,
        estimated=bool(estimated),
        avg_power_w=average,
        peak_power_w=peak if peak is not None else average,
        uncertainty_j=uncertainty,
        estimated_components=tuple(estimated),
        failed_components=tuple(failed_names),
        shared_components=tuple(names[i] for i in sorted(shared) if i < len(start.values)),
    )
