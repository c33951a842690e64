"""Human-readable figures: energy and power with sensible units, measurements as text and HTML."""

from __future__ import annotations

import html
import os
import re

from . import fastpath
from .measurement import Measurement

# Characters a terminal or a table would act on rather than show: C0/C1 controls and DEL (ESC, BEL,
# newline ...), line and paragraph separators, and the bidirectional overrides that reorder text.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text) -> str:
    """Return ``text`` (from a notebook: a cell's first line, a notebook or error name) safe to print:
    control characters shown escaped, as Python writes them (ESC as ``\\x1b``, newline as ``\\n``)."""
    return _UNPRINTABLE.sub(_escape, "" if text is None else str(text))


def short_repr(value, limit: int = 60) -> str:
    """Return repr(value), cut short: a message names a value, it does not repeat a megabyte of it."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 20]}…{text[-10:]} ({len(text)} characters)"


def _escape(match) -> str:
    c = match.group()
    return _NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def energy(joules: float) -> str:
    """Return e.g. '850 mJ', '12.3 J', '4.56 Wh' or '1.23 kWh'."""
    if joules != joules:
        return "n/a"
    if abs(joules) < 1:
        return f"{joules * 1e3:.3g} mJ"
    if abs(joules) < 360:  # below 0.1 Wh joules read better
        return f"{joules:.3g} J"
    wh = joules / 3600
    if abs(wh) < 1000:
        return f"{wh:.3g} Wh"
    return f"{wh / 1000:.3g} kWh"


def power(watts: float) -> str:
    if watts != watts:
        return "n/a"
    if abs(watts) < 1:
        return f"{watts * 1e3:.3g} mW"
    if abs(watts) < 1000:
        return f"{watts:.3g} W"
    return f"{watts / 1000:.3g} kW"


def co2e(grams: float) -> str:
    """Return e.g. '4.2 µg', '12.3 mg', '4.56 g', '7.8 kg' or '1.2 t' (of CO2e)."""
    if grams != grams:
        return "n/a"
    for limit, scale, unit in ((1e-3, 1e6, "µg"), (1, 1e3, "mg"), (1e3, 1, "g"), (1e6, 1e-3, "kg")):
        if abs(grams) < limit:
            return f"{grams * scale:.3g} {unit}"
    return f"{grams * 1e-6:.3g} t"


def duration(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    if seconds < 60:
        return f"{seconds:.3g} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes:.0f} min {secs:.0f} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours:.0f} h {minutes:.0f} min"


def kind(m: Measurement) -> str:
    if not m.components:
        return "nothing measured"
    if not m.estimated:
        return "measured"
    if len(m.estimated_components) == len(m.components):
        return "estimated"
    return f"partly estimated ({', '.join(m.estimated_components)})"


def _energy_with_uncertainty(m: Measurement) -> str:
    text = energy(m.energy_j)
    if m.uncertainty_j and m.uncertainty_j >= 0.0005 * max(m.energy_j, 1e-12):
        text += f" ± {energy(m.uncertainty_j)}"
    return text


# A shared component's figure is its whole device's, other processes' energy included.
SHARED = "whole device, shared with other processes"


def measurement_text(m: Measurement, sci=None) -> str:
    """Return a two-line summary: totals, then energy by component; then CO2e, and the SCI line when
    ``sci`` (greenjupyter.carbon.sci.SCI: carbon per functional unit) is given."""
    head = (
        f"{_energy_with_uncertainty(m)} in {duration(m.duration_s)} · avg {power(m.avg_power_w)}, "
        f"peak {power(m.peak_power_w)} · {kind(m)}"
    )
    parts = ", ".join(f"{name} {energy(j)}" for name, j in m.components.items())
    if m.failed_components:
        parts += f" · failed: {', '.join(m.failed_components)}"
    if m.shared_components:
        parts += f" · {', '.join(m.shared_components)}: {SHARED}"
    lines = [head] + ([f"  {parts}"] if parts else [])
    if m.co2e_g is not None:
        lines.append(f"  {carbon_line(m.co2e_g, m.region, m.intensity_g_per_kwh, m.pue, _units_of(m.region))}")
    if sci is not None:
        lines.append(f"  {sci}")
    return "\n".join(lines)


def _units_of(region) -> str:
    from .carbon.equivalents import units_for
    from .carbon.regions import UnknownRegion, lookup

    try:
        return units_for(lookup(region).country)
    except UnknownRegion:
        return "metric"


def carbon_line(grams, region, intensity, pue, units: str = "metric") -> str:
    """Return e.g. '1.23 g CO2e · FR 56 g/kWh, PUE 1 · ≈ 10% of a smartphone charge, …'."""
    from .carbon.equivalents import equivalents

    same = ", ".join(e.text for e in equivalents(grams, units, 2))
    return f"{co2e(grams)} CO2e · {region} {intensity:.4g} g/kWh, PUE {pue:g}" + (f" · {same}" if same else "")


def measurement_html(m: Measurement, sci=None) -> str:
    """Return a compact HTML block; every value is escaped."""
    head, *rest = measurement_text(m, sci).split("\n")
    tag = "estimated" if m.estimated else "measured"
    return (
        f'<div class="greenjupyter-measurement" data-kind="{tag}" style="font-family:monospace;font-size:90%">'
        f"⚡ {html.escape(head)}"
        + "".join(f'<br><span style="opacity:0.7">{html.escape(line.strip())}</span>' for line in rest)
        + "</div>"
    )


def sources_text(detection) -> str:
    """Return a table of what is measured, estimated and missing, with fixes."""
    rows = []
    for source in detection.sources:
        tag = "estimated" if source.estimated else "measured"
        rows += [f"  {tag:<10}{line}" for line in source.describe()]
    for missing in detection.unavailable:
        rows.append(f"  {'missing':<10}{missing.kind}: {missing.reason}")
        if missing.hint:
            rows.append(f"  {'':<10}fix: {missing.hint}")
    rows += [f"  {'note':<10}{note}" for note in detection.notes]
    rows.append(f"  {'cell path':<10}{CELL_PATH[fastpath.BUILT]}")
    return "greenjupyter sources\n" + "\n".join(rows)


CELL_PATH = {
    True: "counters read and journal entries stored by the C module (greenjupyter/_cellpath.c)",
    False: "the C module was not built (no C compiler when greenjupyter was installed): the same work in "
           "Python, about 27 µs more per cell (bench/cell_path_parts.py)",
}


class Text(str):
    """A string that IPython shows as-is (no quotes) under a cell."""

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(self)


def totals_text(totals, grid=None, units: str = "auto") -> str:
    if not totals.cells:
        return "greenjupyter: no cells measured yet in this session"
    lines = [
        f"greenjupyter session: {totals.cells} cells in {duration(totals.duration_s)}, "
        f"{energy(totals.energy_j)} (avg {power(totals.energy_j / totals.duration_s if totals.duration_s else 0)}, "
        f"peak {power(totals.peak_power_w)})"
    ]
    if totals.idle_s:
        lines.append(f"  {between_cells(totals)}")
    if grid is not None:
        from .carbon.equivalents import units_for

        lines.append(f"  {carbon_line(totals.co2e_g, grid.region, grid.g_per_kwh, grid.pue, units_for(grid.country, units))}")
        lines += grid_lines(grid)
    for name, joules in sorted(totals.components.items(), key=lambda item: -item[1]):
        tag = "estimated" if name in totals.estimated_components else "measured"
        lines.append(f"  {name:<16}{energy(joules):>12}  {tag}")
    if totals.failed_cells:
        lines.append(f"  {totals.failed_cells} of the cells raised an error (measured all the same)")
    if totals.failed_components:
        lines.append(f"  failed during some cells (missing there): {', '.join(sorted(totals.failed_components))}")
    if totals.shared_components:
        lines.append(f"  {SHARED} in some cells: {', '.join(sorted(totals.shared_components))}")
    return "\n".join(lines)


def between_cells(totals) -> str:
    """Return "cells: X, between cells: Y (Z% of the session)", how long no cell ran, and whether
    it is estimated (the time between cells is read from the same components as the cells)."""
    whole = totals.energy_j + totals.idle_j
    share = f" ({totals.idle_j / whole * 100:.3g}% of the session)" if whole > 0 else ""
    text = f"cells: {energy(totals.energy_j)}, between cells: {energy(totals.idle_j)}{share} in {duration(totals.idle_s)}"
    if totals.estimated_components:
        text += " · partly estimated" if set(totals.components) - totals.estimated_components else " · estimated"
    return text


# The figures every table of cells shows, after its own leading columns.
CELL_COLUMNS = f"{'duration':>9}  {'energy':>9}  {'CO2e':>9}  {'avg':>8}  {'peak':>8}  {'kind':<9}  source"


def cell_columns(record) -> str:
    """Return a cell's figures lined up under CELL_COLUMNS, its source and, if it raised, the error."""
    m = record.measurement
    grams = "n/a" if m.co2e_g is None else co2e(m.co2e_g)
    status = "" if record.success else f"  [{printable(record.error)}]"
    return (
        f"{duration(m.duration_s):>9}  {energy(m.energy_j):>9}  {grams:>9}  {power(m.avg_power_w):>8}  "
        f"{power(m.peak_power_w):>8}  {short_kind(m):<9}  {printable(record.source_preview)}{status}"
    )


def short_kind(m: Measurement) -> str:
    if not m.estimated:
        return "measured"
    return "estimated" if len(m.estimated_components) >= len(m.components) else "partly"


def cells_text(records) -> str:
    if not records:
        return "greenjupyter: no cells measured yet in this session"
    lines = [f"{'#':>5}  {CELL_COLUMNS}"]
    for r in records:
        count = "" if r.execution_count is None else str(r.execution_count)
        lines.append(f"{count:>5}  {cell_columns(r)}")
    return "\n".join(lines)


def grid_lines(grid) -> list[str]:
    """Return where the region, intensity and PUE came from (location-based, annual average, lifecycle)."""
    lines = [
        f"  grid: {grid.name} ({grid.region}), {grid.g_per_kwh:.4g} gCO2e/kWh — {grid.intensity_source}; "
        f"region: {grid.region_origin}",
        f"  PUE {grid.pue:g}: {grid.pue_origin}",
    ]
    if grid.hint:
        lines.append(f"  hint: {grid.hint}")
    return lines


def config_text(described, grid, db_path: str | None = None) -> str:
    """Return every setting, the value in force and where it came from, then the grid that follows from them.

    Settings left automatic (region, pue, intensity, db_path ...) show what they resolved to, not
    their empty value. ``db_path``: the history database in use (its real path), None when none is.
    """
    rows = [_in_force(name, value, origin, grid, db_path) for name, value, origin in described]
    width = max(len(name) for name, _, _ in rows)
    lines = [f"  {name:<{width}}  {value:<24} {origin}" for name, value, origin in rows]
    return "greenjupyter settings (name, value in force, where it came from)\n" + "\n".join(lines + grid_lines(grid))


def _in_force(name: str, value, origin: str, grid, db_path: str | None) -> tuple[str, str, str]:
    """Return (name, the value in force as text, where it came from) for one setting."""
    automatic = value is None or value == ""
    if name == "region" and automatic:
        return name, repr(grid.region), f"automatic: {grid.region_origin}"
    if name == "pue" and automatic:
        return name, f"{grid.pue:g}", f"automatic: {grid.pue_origin}"
    if name == "intensity_g_per_kwh" and automatic:
        return name, f"{grid.g_per_kwh:.4g}", f"automatic: {grid.region}'s figure, {grid.intensity_source}"
    if name == "live_intensity" and automatic:
        return name, "off", f"{origin}: embedded annual averages only"
    if name == "db_path":
        if str(value).strip().lower() == "off":
            return name, repr("off"), f"{origin}: no history kept"
        if db_path is None:
            return name, repr(value) if value else "(none)", f"{origin}; no database in use: it could not be opened"
        if automatic:
            return name, repr(db_path), f"{origin}: greenjupyter/history.sqlite in the Jupyter data directory"
        if os.path.realpath(str(value)) != db_path:
            return name, repr(value), f"{origin}; from the next %reload_ext greenjupyter (in use now: {db_path})"
        return name, repr(db_path), origin
    return name, repr(value) if isinstance(value, str) else f"{value:g}" if isinstance(value, float) else str(value), origin


def sessions_text(groups, notebook) -> str:
    """Return a table of past kernel sessions (greenjupyter.history.sessions), newest first; with
    ``idle_j`` in a group, the energy between its cells too (after its last cell is not kept)."""
    where = printable(notebook) or "cells run outside a notebook"
    if not groups:
        return f"greenjupyter history: no past sessions for {where}"
    lines = [f"greenjupyter history for {where} (newest first)",
             f"  {'started (UTC)':<17} {'cells':>5}  {'duration':>10}  {'energy':>10}  {'between cells':>13}  "
             f"{'CO2e':>10}  kind"]
    for g in groups:
        idle = energy(g["idle_j"]) if "idle_j" in g else "n/a"
        lines.append(
            f"  {g['started_at']:%Y-%m-%d %H:%M} {g['cells']:>5}  {duration(g['duration_s']):>10}  "
            f"{energy(g['energy_j']):>10}  {idle:>13}  {co2e(g['co2e_g']):>10}  "
            f"{'estimated' if g['estimated'] else 'measured'}"
        )
    return "\n".join(lines)
