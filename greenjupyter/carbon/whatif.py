"""What the measured energy would emit on other grids: ``%carbon whatif`` and ``greenjupyter.whatif()``.

Rows, each CO2e = IT energy x PUE x intensity (``footprint.operational_g``, as for every cell):

- your grid: the grid in force (its intensity may be live or your setting, and says so);
- cloud: on a cloud region, the ``CLOUD_SHOWN`` cleanest other regions of the same provider;
  elsewhere the cleanest region of each provider;
- well-known grids: of the countries that host at least one cloud region in the tables (the
  places a job can be moved to), the ``GRIDS_SHOWN`` lowest and the ``GRIDS_SHOWN`` highest;
- the regions named.

PUE: a cloud region's provider figure; for any other grid the ``pue`` setting, else 1.0 (a
machine of your own). Every other row's intensity is the embedded annual average, and the
table says which sources and years it comes from.
"""

from __future__ import annotations

import html
import math
from dataclasses import asdict, dataclass
from datetime import datetime

from ..errors import ConfigError, GreenJupyterError
from ..format import co2e, energy, printable, short_repr
from . import regions as tables  # not `regions`: whatif() takes an argument of that name
from .footprint import operational_g

CLOUD_SHOWN = 3
GRIDS_SHOWN = 3


@dataclass(frozen=True)
class WhatIfRow:
    """One grid: its intensity and PUE, and the CO2e of the energy there."""

    region: str  # canonical code: "FR", "gcp:europe-west9"
    name: str
    why: str  # "your grid", "cleanest AWS region", "low-carbon grid", "high-carbon grid", "named"
    g_per_kwh: float
    pue: float
    pue_origin: str
    energy_j: float  # IT energy, as measured
    co2e_g: float
    change_pct: float | None  # against your grid; None when your grid's intensity is 0
    source: str  # where the intensity comes from, with its year and basis


class WhatIf(list):
    """WhatIfRows, your grid first, then the others from the lowest CO2e; ``to_dataframe()`` with pandas.

    ``energy_j`` and ``scope`` say what energy was compared, ``notes`` what to keep in mind and
    anything left out (an unknown region, with suggestions). Shown as a table: text in a terminal,
    HTML in a notebook.
    """

    def __init__(self, rows, energy_j: float, scope: str, notes=()):
        super().__init__(rows)
        self.energy_j, self.scope, self.notes = energy_j, scope, list(notes)

    def to_dataframe(self):
        try:
            import pandas
        except ImportError:
            raise GreenJupyterError("to_dataframe() needs pandas: pip install pandas") from None
        return pandas.DataFrame([asdict(row) for row in self])

    def _head(self) -> str:
        return f"greenjupyter what if: {energy(self.energy_j)} of IT energy ({self.scope}) on other grids"

    def _footer(self) -> list[str]:
        yours, others = self[0], sorted({row.source for row in self[1:]})
        lines = [f"your grid: {yours.source}; PUE {yours.pue:g}: {yours.pue_origin}",
                 f"other rows: embedded annual averages ({'; '.join(others)})",
                 "PUE: a cloud region's provider figure; other grids the pue setting, else 1.0"]
        return lines + [printable(note) for note in self.notes]

    def text(self) -> str:
        cells = [COLUMNS, *(_cells(row) for row in self)]
        widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
        right = (False, False, True, True, True, True, False)
        lines = ["  " + "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(line, widths, right)).rstrip()
                 for line in cells]
        return "\n".join([self._head(), *lines, *(f"  {line}" for line in self._footer())])

    def html(self) -> str:
        head = "".join(f"<th>{h}</th>" for h in COLUMNS)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(row)) + "</tr>" for row in self)
        notes = "<br>".join(html.escape(line) for line in self._footer())
        return (f'<div class="greenjupyter-whatif"><b>{html.escape(self._head())}</b>'
                f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
                f'<span style="opacity:0.7;font-size:90%">{notes}</span></div>')

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(self.text())

    def _repr_html_(self) -> str:
        return self.html()

    def __str__(self) -> str:
        return self.text()


COLUMNS = ("region", "name", "g/kWh", "PUE", "CO2e", "change", "why")


def _cells(row: WhatIfRow) -> tuple[str, ...]:
    return (row.region, row.name, f"{row.g_per_kwh:.4g}", f"{row.pue:g}", co2e(row.co2e_g), _change(row.change_pct),
            row.why)


def _change(pct: float | None) -> str:
    if pct is None:
        return "n/a"
    return "0%" if round(pct, 1) == 0 else f"{pct:+.1f}%".replace("-", "−")


def compare(energy_j: float, grid, settings, named=(), scope: str = "the energy given") -> WhatIf:
    """Return the energy's CO2e on ``grid`` (a context.Grid, the one in force) and on the other grids."""
    energy_j = _checked_energy(energy_j)
    yours = WhatIfRow(grid.region, grid.name, f"your grid (region: {grid.region_origin})", grid.g_per_kwh, grid.pue,
                      grid.pue_origin, energy_j, operational_g(energy_j, grid.pue, grid.g_per_kwh),
                      0.0 if grid.g_per_kwh * grid.pue > 0 else None, grid.intensity_source)
    notes, chosen = [], {}  # region -> (GridIntensity, reasons)
    for found, why in [*_cloud_choices(grid.region), *_well_known()]:
        chosen.setdefault(found.region, (found, []))[1].append(why)
    for text in _names(named):
        try:
            found = tables.lookup(text)
        except tables.UnknownRegion as error:
            notes.append(f"left out: {error}")
            continue
        chosen.setdefault(found.region, (found, []))[1].append("named")
    if len({found.basis for found, _ in chosen.values()}) > 1:
        notes.insert(0, "lifecycle and direct figures side by side (each row's source says which): direct ones "
                        "leave out fuel supply and building the plants, so they read lower")
    rows = [_row(found, "; ".join(why), energy_j, settings, yours) for found, why in chosen.values()
            if found.region != grid.region]
    rows.sort(key=lambda row: (row.co2e_g, row.g_per_kwh * row.pue, row.region))
    return WhatIf([yours, *rows], energy_j, scope, notes)


def _checked_energy(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"energy_j={short_repr(value)} is refused; accepted: a number of joules, 0 or more")
    return float(value)


def _names(named) -> list[str]:
    """The region names in ``named``: "FR,us-central1" or a list of names."""
    if isinstance(named, str):
        named = named.split(",")
    names = []
    for item in named or ():
        if not isinstance(item, str):
            raise ConfigError(f"regions: {short_repr(item)} is not a region name; accepted: names such as "
                              "'FR', 'us-central1', 'aws:eu-north-1', or one text with commas between them")
        names += [part.strip() for part in item.split(",") if part.strip()]
    return names


def _row(found: tables.GridIntensity, why: str, energy_j: float, settings, yours: WhatIfRow) -> WhatIfRow:
    if found.pue is not None:
        pue, pue_origin = found.pue, f"{_provider_label(found.region)}'s published PUE"
    elif settings.pue is not None:
        pue, pue_origin = settings.pue, f"pue from {settings.origin['pue']}"
    else:
        pue, pue_origin = 1.0, "none (1.0): a machine of your own"
    here = found.g_per_kwh * pue
    base = yours.g_per_kwh * yours.pue
    change = (here / base - 1) * 100 if base > 0 else None
    return WhatIfRow(found.region, found.name, why, found.g_per_kwh, pue, pue_origin, energy_j,
                     operational_g(energy_j, pue, found.g_per_kwh), change,
                     f"{found.source}, {found.basis}" + ("" if str(found.year) in found.source else f", {found.year}"))


def _provider_label(region: str) -> str:
    return tables.PROVIDER_LABELS.get(region.split(":", 1)[0], region)


def _every_grid() -> list[tables.GridIntensity]:
    # The index maps every name and code to its grid; each grid once, by its code.
    return list({g.region: g for g in tables._load().values()}.values())


def _cleanest(grid: tables.GridIntensity) -> tuple:
    return (grid.g_per_kwh * (grid.pue or 1.0), grid.region)


def _cloud_choices(yours: str) -> list[tuple[tables.GridIntensity, str]]:
    cloud = [g for g in _every_grid() if ":" in g.region]
    provider = yours.split(":", 1)[0] if ":" in yours else None
    if provider in tables.PROVIDER_LABELS:
        same = sorted((g for g in cloud if g.region.startswith(f"{provider}:") and g.region != yours), key=_cleanest)
        return [(g, f"cleanest {tables.PROVIDER_LABELS[provider]} region") for g in same[:CLOUD_SHOWN]]
    choices = []
    for key, label in tables.PROVIDER_LABELS.items():
        same = sorted((g for g in cloud if g.region.startswith(f"{key}:")), key=_cleanest)
        choices += [(g, f"cleanest {label} region") for g in same[:1]]
    return choices


def _well_known() -> list[tuple[tables.GridIntensity, str]]:
    """The lowest and highest-intensity countries among those that host a cloud region in the tables."""
    hosts = {g.country for g in _every_grid() if ":" in g.region and g.country}
    countries = sorted((tables.lookup(code) for code in hosts), key=_cleanest)
    return ([(g, "low-carbon grid") for g in countries[:GRIDS_SHOWN]]
            + [(g, "high-carbon grid") for g in countries[-GRIDS_SHOWN:]])


def whatif(energy_j=None, regions=None, notebook=None, since=None) -> WhatIf:
    """Return the CO2e of measured energy on the grid in force and on other grids (a WhatIf of rows).

    The energy: ``energy_j`` joules when given; else the cells in the history database of
    ``notebook`` (a path) and/or ``since`` (a datetime, a timedelta or '7d', '12h' ...); else
    this kernel session's cells. ``regions``: more regions to show ("FR,us-central1" or a list);
    an unknown one is left out with a note naming it and the closest names.
    """
    from .. import runtime

    if energy_j is not None:
        energy_j, scope = _checked_energy(energy_j), "the energy given"
    elif notebook is not None or since is not None:
        energy_j, scope = _stored_energy(notebook, since)
    else:
        energy_j, scope = _session_energy()
    return compare(energy_j, runtime.current_grid(), runtime.get_settings(), regions or (), scope)


def _session_energy() -> tuple[float, str]:
    from ..ipython.extension import current_recorder

    recorder = current_recorder()
    if recorder is None:
        raise GreenJupyterError("no session to compare: load the extension (%load_ext greenjupyter), or pass "
                                "energy_j=, notebook= or since=")
    totals = recorder.totals
    return totals.energy_j, f"this session's {totals.cells} cell{'' if totals.cells == 1 else 's'}"


def _stored_energy(notebook, since) -> tuple[float, str]:
    from ..history import history
    from ..ipython.extension import current_recorder

    recorder = current_recorder()
    if recorder is not None:
        recorder.finish()  # this session's last cells into the database first
    if notebook is not None and not isinstance(notebook, str):
        raise ConfigError(f"notebook={short_repr(notebook)} is refused; accepted: a notebook's path, as the "
                          "history stores it")
    cells = history(notebook=notebook, since=since)
    scope = f"{len(cells)} stored cell{'' if len(cells) == 1 else 's'}"
    if notebook is not None:
        scope += f" of {printable(notebook)}"
    if since is not None:
        scope += f" since {since:%Y-%m-%d %H:%M}" if isinstance(since, datetime) else f" in the last {printable(since)}"
    return sum(c.record.measurement.energy_j for c in cells), scope
