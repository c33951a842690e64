"""Carbon per unit of work: SCI = (E·I + M) / R, the Green Software Foundation's Software Carbon
Intensity (ISO/IEC 21031:2024).

E is the window's energy in kWh with the facility's PUE applied, I the grid's intensity in
gCO2e/kWh, M the embodied share in g (``embodied_kg`` × time used ÷ life × resource share; 0
while ``embodied_kg`` is not set), R the functional units the window served (1000 predictions,
1e3 rows). A Measurement's CO2e is already E·I + M (greenjupyter.carbon.context.footprint), so
SCI is derived from it and R; the Measurement itself is unchanged.
"""

from __future__ import annotations

import html
import math
import numbers
from dataclasses import dataclass

from ..errors import ConfigError, GreenJupyterError
from ..format import printable, short_repr
from ..measurement import JOULES_PER_KWH

ACCEPTED = 'a number above 0, alone or followed by what one unit is: 1000, "1000 predictions", "1e3 rows"'


def parse_units(value, given: str = "units") -> tuple[float, str | None]:
    """Return (R, what one unit is or None) from 1000, "1000 predictions" or "1e3 rows".

    Raise ConfigError (a ValueError) naming the value for zero, a negative, NaN, infinity, a bool
    or text without a number first. ``given`` names the value in the message (``--per``).
    """
    name = None
    number = value
    if isinstance(value, str):
        number, *rest = value.split(None, 1) or [""]
        name = " ".join(rest[0].split()) if rest else None
    if isinstance(number, bool) or not isinstance(number, (str, numbers.Real)):
        raise ConfigError(f"{given} {short_repr(value)} is not a number of units; accepted: {ACCEPTED}")
    try:
        count = float(number)
    except ValueError:
        raise ConfigError(f"{given} {short_repr(value)} does not start with a number; accepted: {ACCEPTED}") from None
    if not math.isfinite(count) or count <= 0 or not math.isfinite(1 / count):  # 1e-320 would make SCI infinite
        raise ConfigError(f"{given} {short_repr(value)} must be a finite number above 0; accepted: {ACCEPTED}")
    return count, name


@dataclass(frozen=True)
class SCI:
    """Software Carbon Intensity of a window: ``g_per_unit`` = (E·I + M) / R, with each term."""

    energy_kwh: float  # E, PUE applied
    intensity_g_per_kwh: float  # I
    embodied_g: float  # M
    units: float  # R
    unit_name: str | None = None  # what one unit is, e.g. "predictions"; None: "units"
    pue: float | None = 1.0  # the PUE in E (None: several, each cell's own)

    @property
    def g_per_unit(self) -> float:
        """Return grams CO2e per functional unit."""
        return (self.energy_kwh * self.intensity_g_per_kwh + self.embodied_g) / self.units

    def __str__(self) -> str:
        """Return e.g. 'SCI 0.000134 gCO2e per prediction (E 0.0004 kWh × I 285 g/kWh + M 0.02 g) / R 1000 predictions'."""
        name = printable(self.unit_name) if self.unit_name else None
        pue = " (PUE applied)" if self.pue is None else f" (PUE {self.pue:g} applied)" if self.pue != 1 else ""
        text = (f"SCI {self.g_per_unit:.3g} gCO2e per {singular(name) if name else 'unit'} "
                f"(E {self.energy_kwh:.3g} kWh{pue} × I {self.intensity_g_per_kwh:.4g} g/kWh + M {self.embodied_g:.3g} g) "
                f"/ R {self.units:g}" + (f" {name}" if name else ""))
        if self.embodied_g == 0:
            text += " · M is 0: no embodied share set (setting embodied_kg)"
        return text

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        return f'<div class="greenjupyter-sci" style="font-family:monospace;font-size:90%">{html.escape(str(self))}</div>'


def sci(measurement, units) -> SCI:
    """Return the SCI of ``measurement`` (a Measurement with its CO2e) for ``units`` functional units.

    ``units``: a number above 0, or text such as "1000 predictions"; anything else raises
    ConfigError. A Measurement without CO2e (its carbon could not be worked out) raises
    GreenJupyterError.
    """
    return for_units(measurement, *parse_units(units))


def for_units(m, count: float, name: str | None) -> SCI:
    """Return the SCI of ``m`` for ``count`` units (already checked: parse_units) called ``name``."""
    if m.co2e_g is None or m.intensity_g_per_kwh is None:
        raise GreenJupyterError("this measurement has no CO2e, so no SCI: its carbon could not be worked out")
    pue = 1.0 if m.pue is None else m.pue
    energy_kwh = m.energy_j / JOULES_PER_KWH * pue
    # CO2e = E·I + M exactly as context.footprint adds them; without an embodied share this is exactly 0.
    embodied = max(m.co2e_g - energy_kwh * m.intensity_g_per_kwh, 0.0)
    return SCI(energy_kwh, m.intensity_g_per_kwh, embodied, count, name, pue)


def total(parts: list[SCI]) -> SCI:
    """Return the SCI of several windows together: E, E·I, M and R summed; I is E·I ÷ E."""
    energy = sum(p.energy_kwh for p in parts)
    operational = sum(p.energy_kwh * p.intensity_g_per_kwh for p in parts)
    intensity = operational / energy if energy > 0 else parts[-1].intensity_g_per_kwh
    pues = {p.pue for p in parts}
    return SCI(energy, intensity, sum(p.embodied_g for p in parts), sum(p.units for p in parts),
               parts[0].unit_name, pues.pop() if len(pues) == 1 else None)


def per_unit(records) -> list[SCI]:
    """Return one SCI per kind of unit over the CellRecords given units (``%%carbon --per``) with CO2e."""
    kinds: dict = {}
    for r in records:
        if r.units and r.measurement.co2e_g is not None:
            kinds.setdefault(r.unit_name, []).append(for_units(r.measurement, r.units, r.unit_name))
    return [total(parts) for parts in kinds.values()]


def singular(name: str) -> str:
    """Return what one unit is called: 'predictions' -> 'prediction', 'queries' -> 'query', 'test images' -> 'test image'."""
    head, _, word = name.rpartition(" ")
    lower = word.lower()
    if lower.endswith("ies") and len(word) > 3:
        word = word[:-3] + "y"
    elif lower.endswith(("sses", "shes", "ches", "xes")):
        word = word[:-2]
    elif lower.endswith("s") and not lower.endswith(("ss", "us", "is")):
        word = word[:-1]
    return f"{head} {word}" if head else word
