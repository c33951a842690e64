"""The result of one measured window: `Measurement`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Mapping, Optional

JOULES_PER_KWH = 3.6e6


@dataclass(frozen=True, slots=True)
class Measurement:
    """Energy drawn during one window (a cell, a ``with measure():`` block).

    All figures are SI with the unit in the name. ``energy_j`` is the sum of ``components``
    (joules per component, e.g. ``"cpu:package-0"``, ``"dram:0"``, ``"gpu:0"``).
    ``estimated`` is True when any component comes from a model rather than a counter;
    ``estimated_components`` names them. ``uncertainty_j`` bounds the error of the measured
    components (counter update period, power that moved between polls, sensor accuracy); modelled components carry model
    error that no bound is claimed for. ``failed_components`` were lost during the window
    and are missing from ``energy_j``. ``shared_components`` are whole-device figures of a device
    that other processes used during the window (a GPU shared with other jobs, or a MIG slice's
    GPU): their energy is in it too, so the kernel's own share is less. ``peak_power_w`` is the
    highest sampler-interval average overlapping the window (the window's own average only
    until the sampler has covered it), so a window of a few milliseconds never sets a peak.
    Estimated components never exceed their model's maximum power.
    The carbon fields stay None until a footprint has been worked out.
    """

    started_at: datetime
    duration_s: float
    energy_j: float
    components: Mapping[str, float]
    estimated: bool
    avg_power_w: float
    peak_power_w: float
    uncertainty_j: float = 0.0
    estimated_components: tuple[str, ...] = ()
    failed_components: tuple[str, ...] = ()
    shared_components: tuple[str, ...] = ()
    co2e_g: Optional[float] = None
    intensity_g_per_kwh: Optional[float] = None
    region: Optional[str] = None
    pue: Optional[float] = None

    @property
    def energy_kwh(self) -> float:
        """Return the total energy in kilowatt-hours."""
        return self.energy_j / JOULES_PER_KWH

    def replace(self, **changes) -> "Measurement":
        """Return a copy with some fields changed (e.g. the carbon fields)."""
        return replace(self, **changes)

    def __str__(self) -> str:
        from .format import measurement_text

        return measurement_text(self)

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        from .format import measurement_html

        return measurement_html(self)


@dataclass(frozen=True, slots=True)
class CellRecord:
    """One executed notebook cell and what it drew."""

    measurement: Measurement
    execution_count: Optional[int]
    cell_id: Optional[str] = None
    notebook: Optional[str] = None
    success: bool = True
    error: Optional[str] = None  # the exception's type name when the cell failed
    source_preview: str = ""
    metrics: Mapping[str, float] = field(default_factory=dict)  # greenjupyter.log(accuracy=0.93, ...)
    tag: Optional[str] = None  # greenjupyter.tag("resnet18-70pct"): the run the cell belongs to
    units: Optional[float] = None  # functional units the cell served (%%carbon --per), for SCI
    unit_name: Optional[str] = None  # what one unit is ("predictions"), or None
    idle_before_j: Optional[float] = None  # energy drawn between the previous cell's end and this cell's start
    idle_before_s: Optional[float] = None  # and how long that was
