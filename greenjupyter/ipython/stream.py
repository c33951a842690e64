"""The live stream to the frontend: small versioned JSON messages on IOPub, sent from the sampler thread.

Each message is an ``update_display_data`` with the MIME type below and a display id that no
cell output owns, so notebooks ignore it while the sidebar, listening to the kernel's IOPub,
reads it even while a cell is busy. Kinds:

- ``update``: power samples since the last message and the cells finished since then; sent every
  sampler tick while a cell runs, every ``idle_every_s`` otherwise (a few hundred bytes each). One
  that carries cells also carries the session's ``totals`` as they stand after them;
- ``snapshot``: the whole recent state (components, the last minute of samples, recent cells,
  session totals, the grid), at the first tick and every ``snapshot_every_s``, so that a page that was
  reloaded or opened late catches up.

``totals`` is ``{cells, duration_s, energy_j, co2e_g, components, equivalents, idle_j, idle_s}``,
where ``equivalents`` is ``[{key, text}, ...]``: the same everyday equivalents as ``%carbon`` shows,
so the frontend keeps no table of its own and never adds totals up itself; ``idle_j`` and ``idle_s``
are the energy and time between cells, until the message was sent (or the running cell began).

Every message carries ``v`` (the schema version), ``kind``, ``seq`` (counting per kernel
session, so a gap shows a lost message) and ``session`` (new at every load, so a restart shows).
"""

from __future__ import annotations

import time

from .. import runtime
from ..carbon.equivalents import equivalents, units_for
from ..idle import session_totals
from ..notices import notice

MIME = "application/vnd.greenjupyter.v1+json"
VERSION = 1
DISPLAY_ID = "greenjupyter-stream"
RECENT_CELLS = 50
SNAPSHOT_SAMPLES_S = 60.0
TOTALS_EQUIVALENTS = 2  # as many as %carbon shows under its totals


class Stream:
    """Turn sampler ticks and finished cells into messages; ``publish(message)`` sends one."""

    def __init__(self, publish, recorder, grid=None, snapshot_every_s: float = 30.0, idle_every_s: float = 5.0):
        self._publish = publish
        self._recorder = recorder
        self._grid = grid or (lambda: None)  # returns the Grid in force, or None
        self.snapshot_every_s = snapshot_every_s
        self.idle_every_s = idle_every_s
        self.session = recorder.session
        self._seq = 0
        self._samples: list = []
        self._cells: list = []
        self._sent_components = None
        # Samples carry perf_counter times; the frontend wants wall-clock (Unix) seconds.
        self._wall_offset = time.time() - time.perf_counter()
        self._last_update = 0.0
        self._last_snapshot = -float("inf")  # the first tick sends a snapshot, off the loading thread

    def start(self) -> None:
        self._recorder.listeners.append(self.on_cell)
        self._recorder.meter.sampler.listeners.append(self.on_sample)

    def stop(self) -> None:
        for listeners, callback in (
            (self._recorder.listeners, self.on_cell),
            (self._recorder.meter.sampler.listeners, self.on_sample),
        ):
            if callback in listeners:
                listeners.remove(callback)

    def request_snapshot(self) -> None:
        """Send a snapshot on the next tick (a page that was just reloaded asks for one)."""
        self._last_snapshot = -float("inf")

    def on_cell(self, record) -> None:
        self._cells.append(cell_json(record))

    def on_sample(self, sample) -> None:
        """Called on the sampler thread after each tick (after the recorder finished its cells)."""
        try:
            self._samples.append(sample)
            now = time.monotonic()
            if now - self._last_snapshot >= self.snapshot_every_s:
                self.snapshot()
            elif self._recorder.busy or self._cells or now - self._last_update >= self.idle_every_s:
                self.update()
        except Exception as error:  # the stream must never stop the sampler
            notice("stream", f"the live stream to the sidebar failed ({error!r}); measuring goes on")

    def update(self) -> None:
        samples, self._samples = self._samples, []
        cells, self._cells = self._cells, []
        message = {"busy": self._recorder.busy, "samples": [self._sample_json(s) for s in samples], "cells": cells}
        components = samples[-1].components if samples else None
        if components is not None and components != self._sent_components:
            message["components"] = list(components)  # only when they change: GPUs can join late
            self._sent_components = components
        if cells:  # totals change only when cells finish; the rest of the time they would be wasted bytes
            message["totals"] = self._totals_json(self._grid())
        self._send("update", message)
        self._last_update = time.monotonic()

    def snapshot(self) -> None:
        """Send the whole recent state."""
        sampler = self._recorder.meter.sampler
        newest = sampler.samples[-1].t1 if sampler.samples else 0.0
        recent = sampler.samples.since(newest - SNAPSHOT_SAMPLES_S)
        meter = self._recorder.meter
        grid = self._grid()
        message = {
            "busy": self._recorder.busy,
            "components": list(meter.components),
            "estimated": [name for name, flag in zip(meter.components, meter.estimated_flags) if flag],
            "samples": [self._sample_json(s) for s in recent if s.components == meter.components],
            "cells": [cell_json(r) for r in list(self._recorder.records)[-RECENT_CELLS:]],
            "totals": self._totals_json(grid),
        }
        if grid is not None:
            message["grid"] = {
                "region": grid.region,
                "name": grid.name,
                "g_per_kwh": grid.g_per_kwh,
                "pue": grid.pue,
                "source": grid.intensity_source,
                "origin": grid.region_origin,
            }
        self._samples, self._cells = [], []  # the snapshot holds them
        self._sent_components = meter.components
        self._send("snapshot", message)
        self._last_snapshot = self._last_update = time.monotonic()

    def _totals_json(self, grid) -> dict:
        totals = session_totals(self._recorder)  # between cells up to now, as %carbon counts it
        # As %carbon chooses them: two, in the `units` setting's system ("auto": by the grid's country).
        units = units_for(grid.country if grid is not None else None, runtime.get_settings().units)
        same = equivalents(totals.co2e_g, units, TOTALS_EQUIVALENTS)
        return {
            "cells": totals.cells,
            "duration_s": totals.duration_s,
            "energy_j": totals.energy_j,
            "co2e_g": totals.co2e_g,
            "components": dict(totals.components),
            "equivalents": [{"key": e.key, "text": e.text} for e in same],
            "idle_j": totals.idle_j,
            "idle_s": totals.idle_s,
        }

    def _send(self, kind: str, body: dict) -> None:
        self._seq += 1
        self._publish({"v": VERSION, "kind": kind, "seq": self._seq, "session": self.session, "t": time.time(), **body})

    def _sample_json(self, sample) -> list:
        """[start, end (Unix s), total W, W per component] with 3 decimals: small on the wire."""
        watts = [round(w, 3) if w == w else None for w in sample.watts]
        return [round(sample.t0 + self._wall_offset, 3), round(sample.t1 + self._wall_offset, 3), round(sample.total_w, 3), watts]


def cell_json(record) -> dict:
    m = record.measurement
    return {
        "execution_count": record.execution_count,
        "cell_id": record.cell_id,
        "source_preview": record.source_preview,
        "success": record.success,
        "error": record.error,
        "started_at": m.started_at.timestamp(),
        "duration_s": m.duration_s,
        "energy_j": m.energy_j,
        "components": dict(m.components),
        "estimated": m.estimated,
        "avg_power_w": m.avg_power_w,
        "peak_power_w": m.peak_power_w,
        "co2e_g": m.co2e_g,
    }


def publisher(shell):
    """Return a function that sends a message on the kernel's IOPub, or None outside a kernel."""
    if getattr(shell, "kernel", None) is None:
        return None  # a terminal IPython would print the messages

    def publish(message: dict) -> None:
        shell.display_pub.publish({MIME: message}, {}, transient={"display_id": DISPLAY_ID}, update=True)

    return publish
