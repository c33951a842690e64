"""Energy between cells: the gaps from one cell's end to the next one's start, and one hint when a
GPU drew power through a long gap.

A gap is measured as a cell is: its edges are the previous cell's stop reading and the next cell's
start reading, both already taken by the hooks, so the meter turns them into a Measurement
(counters where they exist, the estimate model where not) off the cell's path, and a cell pays
nothing more for it.
"""

from __future__ import annotations

import dataclasses

from .format import co2e, duration, power
from .meter import window_measurement
from .notices import notice

HINT_KEY = "idle-gpu"


class Gaps:
    """The gaps between one kernel session's cells; ``close`` is called for each cell in the order they ended."""

    def __init__(self, meter):
        self.meter = meter
        self.last = meter.snapshot()  # the first gap starts when the extension is loaded
        self._found = None  # a reading that covers the sources found after the load
        self.hinted = False
        meter.sampler.listeners.append(self._on_first_tick)

    def _on_first_tick(self, sample) -> None:
        # GPUs are found on the sampler's thread before its first tick, usually after the load's
        # reading: a reading now lets the first gap count them from here on.
        self.meter.sampler.listeners.remove(self._on_first_tick)
        if len(self.meter.components) > len(self.last.values):
            self._found = self.meter.snapshot()

    def close(self, start, stop):
        """Return the Measurement of the gap that ends at a cell's ``start``, and start the next gap at
        its ``stop``. None when that cell began before the previous one ended (a cell run from
        inside another), or when the gap could not be measured (said once)."""
        previous = self.last
        if stop.t > previous.t:
            self.last = stop
        return self._measure(previous, start)

    def pending(self, until=None):
        """Return the gap from the last cell's end until ``until`` (the running cell's start) or now.

        Shown live and asked for again and again, so its peak and bound are not worked out: they
        would scan the sampler's samples of the whole gap (an hour of them takes ~70 ms); the
        energy is the same.
        """
        return self._measure(self.last, until or self.meter.snapshot(), live=True)

    def _measure(self, previous, until, live=False):
        if until.t < previous.t:
            return None
        try:
            start = self._covering(previous, until)
            if not live:
                return self.meter.measurement(start, until)
            failed, shared = self.meter.window_flags(start, until)
            return window_measurement(start, until, self.meter.component_info(), failed, shared)
        except Exception as error:
            notice("idle-measure", f"could not measure the time between cells ({error!r}); cells are not affected")
            return None

    def _covering(self, previous, later):
        """Return ``previous`` with the components it lacks (GPUs found after the load) added,
        from the reading taken when they were found, else from ``later`` (they then count from there)."""
        n = len(previous.values)
        if n >= len(later.values):
            return previous
        found = self._found
        if found is None or found.t > later.t or len(found.values) != len(later.values):
            found = later
        variation = None
        if later.variation is not None:
            # A source without polled power has no variation: zeros, which its figure never reads.
            variation = (previous.variation or [0.0] * n)[:n] + (found.variation or [0.0] * len(found.values))[n:]
        return dataclasses.replace(previous, values=previous.values[:n] + found.values[n:],
                                   components=found.components, variation=variation)


def session_totals(recorder):
    """Return the session's Totals with the time since the last cell counted between cells: until the
    running cell's start, or until now. A copy; the recorder's own totals are left as they are."""
    totals = dataclasses.replace(recorder.totals)  # finishes the queued cells first
    gap = recorder.gaps.pending(recorder.running_start())
    if gap is not None:
        totals.idle_j += gap.energy_j
        totals.idle_s += gap.duration_s
    return totals


def add_to_sessions(groups, cells) -> list:
    """Add ``idle_j`` and ``idle_s``, the energy and time between cells, to each of ``groups``
    (greenjupyter.history.sessions of ``cells``) whose rows keep them (older rows do not); return ``groups``."""
    sums: dict = {}
    for stored in cells:
        record = stored.record
        if record.idle_before_j is not None:
            joules, seconds = sums.get(stored.session, (0.0, 0.0))
            sums[stored.session] = (joules + record.idle_before_j, seconds + (record.idle_before_s or 0.0))
    for group in groups:
        if group["session"] in sums:
            group["idle_j"], group["idle_s"] = sums[group["session"]]
    return groups


def check_hint(gaps: Gaps, gap, execution_count, carbon, settings) -> None:
    """Say once, when a gap of at least ``idle_hint_after_s`` had a GPU above ``idle_hint_gpu_w`` on
    average, what that GPU drew while no cell ran and what frees it.

    A GPU other processes used during the gap is left out: its figure is the whole device's.
    """
    try:
        _hint(gaps, gap, execution_count, carbon, settings)
    except Exception as error:  # a hint must never cost a cell its record
        notice("idle-hint", f"could not check the GPUs' idle time ({error!r}); cells are not affected")


def _hint(gaps: Gaps, gap, execution_count, carbon, settings) -> None:
    after = settings.idle_hint_after_s
    if gaps.hinted or not after or gap.duration_s < after:
        return
    hot = {name: joules for name, joules in gap.components.items()
           if name.startswith("gpu:") and name not in gap.shared_components
           and joules / gap.duration_s > settings.idle_hint_gpu_w}
    if not hot:
        return
    gaps.hinted = True
    joules = sum(hot.values())
    grams = carbon(gap.replace(energy_j=joules, components=hot, estimated=False, estimated_components=())).co2e_g
    models = gpu_models(gaps.meter)
    held = ", ".join(f"{name}" + (f" ({models[name]})" if name in models else "") +
                     f" drew {power(j / gap.duration_s)}" for name, j in hot.items())
    cost = f"{joules / 3600:.3g} Wh" + ("" if grams is None else f", {co2e(grams)} CO2e")
    before = "" if execution_count is None else f" before cell [{execution_count}]"
    notice(HINT_KEY, (
        f"{held} on average for {duration(gap.duration_s)} while no cell ran{before}: {cost}. "
        "Freeing memory (del model, torch.cuda.empty_cache()) keeps the kernel's CUDA context on the GPU; "
        "shutting the kernel down when you step away releases it (the notebook and its outputs stay; "
        "on a cloud VM only stopping the VM ends the GPU's draw). "
        "%carbon config idle_hint_after_s=0 turns this hint off."
    ))


def gpu_models(meter) -> dict:
    """Return {component: GPU model} for the GPUs the meter reads."""
    return {name: model for source in meter.sources
            for name, model in zip(source.components, getattr(source, "names", ())) if name.startswith("gpu:")}
