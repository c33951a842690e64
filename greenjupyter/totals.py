"""Running sums over cell records: what a session, a report or a history selection adds up to."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Totals:
    """Sums over CellRecords; ``add`` one at a time (the session) or ``of(records)`` at once (reports)."""

    cells: int = 0
    failed_cells: int = 0
    duration_s: float = 0.0
    energy_j: float = 0.0
    uncertainty_j: float = 0.0
    co2e_g: float = 0.0
    co2e_cells: int = 0  # cells whose CO2e is known
    components: dict = field(default_factory=dict)
    estimated_components: set = field(default_factory=set)
    failed_components: set = field(default_factory=set)
    shared_components: set = field(default_factory=set)  # whole-device figures others shared in some cells
    peak_power_w: float = 0.0
    grids: dict = field(default_factory=dict)  # (region, intensity, pue) -> cells
    idle_j: float = 0.0  # energy drawn between cells (before each cell, where known)
    idle_s: float = 0.0  # and for how long

    @classmethod
    def of(cls, records) -> "Totals":
        totals = cls()
        for record in records:
            totals.add(record)
        return totals

    def add(self, record) -> None:
        m = record.measurement
        self.cells += 1
        self.failed_cells += not record.success
        self.duration_s += m.duration_s
        self.energy_j += m.energy_j
        self.uncertainty_j += m.uncertainty_j
        for name, joules in m.components.items():
            self.components[name] = self.components.get(name, 0.0) + joules
        if m.estimated:
            self.estimated_components.update(m.estimated_components)
        if m.failed_components:
            self.failed_components.update(m.failed_components)
        if m.shared_components:
            self.shared_components.update(m.shared_components)
        if m.peak_power_w > self.peak_power_w:
            self.peak_power_w = m.peak_power_w
        if record.idle_before_j is not None:
            self.idle_j += record.idle_before_j
            self.idle_s += record.idle_before_s or 0.0
        if m.co2e_g is not None:
            self.co2e_g += m.co2e_g
            self.co2e_cells += 1
            key = (m.region, m.intensity_g_per_kwh, m.pue)
            self.grids[key] = self.grids.get(key, 0) + 1

    def __str__(self) -> str:
        from .format import totals_text

        return totals_text(self)

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(str(self))
