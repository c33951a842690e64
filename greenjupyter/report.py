"""Reports on cell records: a paper-ready summary (markdown, LaTeX, HTML, text), figures, and a page.

``summary()`` opens with one sentence a paper can quote as it is (``summary_line()``): the
energy with its error bound and what was estimated, the CO2e on which grid and from which
figures, and what measured it. Then what a "compute and emissions" paragraph needs: cells,
duration, what was measured and what estimated (and how), the grid with its source, basis and
year, PUE, the embodied share and the method, and a table of totals. It needs no matplotlib.

``energy_figure()`` and ``power_figure()`` return matplotlib Figures built directly on the Agg
canvas: pyplot is never imported, so no global backend or state changes. They show inline in
IPython and ``save()`` writes them. matplotlib is optional (``pip install matplotlib``).

``page()`` puts it all on one self-contained HTML page (inline CSS, figures embedded as PNG, no
script, nothing fetched) that also prints well.
"""

from __future__ import annotations

import base64
import html
import io
import math
import textwrap
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cache

from . import format as fmt
from .errors import ConfigError, GreenJupyterError
from .measurement import JOULES_PER_KWH
from .totals import Totals

FORMATS = ("markdown", "latex", "html", "text")
HEADING = "Compute and emissions"
MATPLOTLIB_HINT = "figures need matplotlib: pip install matplotlib (or pip install 'greenjupyter[report]')"
# Component name prefix -> group label in the energy figure; each GPU is its own group.
GROUP_LABELS = {"cpu": "CPU", "dram": "memory"}
# Component name prefix -> what reads it when it is measured (estimates say "an estimate").
MEASURED_BY = {"cpu": "RAPL counters", "dram": "RAPL counters", "gpu": "NVML"}
PAGE_DPI = 192  # PNGs at twice the width they are shown at: sharp on high-density screens and on paper


# --- what a report says ------------------------------------------------------------------


@dataclass(frozen=True)
class Facts:
    """What every sentence and row of a report is worked out from."""

    records: list
    totals: Totals
    detection: object = None  # greenjupyter.sources(): which source read each component
    grid: object = None  # carbon Grid: the intensity's source, the PUE's origin
    settings: object = None  # embodied share, units of equivalents


@dataclass(frozen=True)
class Summary:
    """A report's plain text, before a renderer escapes it for its format."""

    line: str  # the sentence to quote in a paper
    sentences: list  # the details, method and sources
    rows: list  # (quantity, value)


def summary(records, detection=None, grid=None, settings=None, format: str = "markdown") -> str:
    """Return a summary of ``records`` (CellRecords) as markdown, LaTeX, HTML or text.

    ``detection`` (greenjupyter.sources()) says which source read each component; ``grid``
    (a carbon Grid) gives the intensity's source and the PUE's origin; ``settings`` says
    whether an embodied share is included and which units equivalents use. Each is optional:
    without it the summary says what the records alone tell.
    """
    if format not in FORMATS:
        raise ConfigError(f"unknown summary format {format!r}; accepted: {', '.join(FORMATS)}")
    return RENDERERS[format](summarise(records, detection, grid, settings))


def summary_line(records, detection=None, grid=None, settings=None) -> str:
    """Return the one sentence to paste into a paper, as plain text."""
    return summarise(records, detection, grid, settings).line


def summarise(records, detection=None, grid=None, settings=None) -> Summary:
    """Return the report's line, sentences and rows as plain text (renderers escape them)."""
    records = list(records)
    if not records:
        return Summary("No cells were measured.", [], [("Cells", "0")])
    f = Facts(records, Totals.of(records), detection, grid, settings)
    # Names and previews come from notebooks: no control character reaches a terminal or a document.
    return Summary(
        fmt.printable(_line(f)),
        [fmt.printable(s) for part in SENTENCES for s in part(f)],
        [(fmt.printable(label), fmt.printable(value)) for part in ROWS for label, value in part(f)],
    )


# The sentence to quote.


def _line(f: Facts) -> str:
    t = f.totals
    return (
        f"{_scope(f.records)} ({_plural(t.cells, 'cell')}, {fmt.duration(t.duration_s)}) used "
        f"{_energy_for_line(t.energy_j)} of electricity ({_accuracy(t)}){_emitted(f)}, "
        f"measured with greenjupyter {_version()} ({_measured_by(t)})."
    )


def _scope(records) -> str:
    notebooks = {r.notebook for r in records if r.notebook}
    if len(notebooks) == 1:
        return "The analysis in this notebook"
    return f"The analysis in these {len(notebooks)} notebooks" if notebooks else "This analysis"


def _energy_for_line(joules: float) -> str:
    kwh = joules / JOULES_PER_KWH
    return f"{kwh:.3g} kWh" if abs(kwh) >= 0.001 else fmt.energy(joules)  # no "1.9e-07 kWh" in a paper


def _accuracy(t: Totals) -> str:
    """Return how exact the energy is: the measured part's error bound, and what was estimated."""
    estimated_j = sum(j for name, j in t.components.items() if name in t.estimated_components)
    measured_j = t.energy_j - estimated_j
    bound = f", to within ± {_percent(t.uncertainty_j, measured_j, 2)}" if t.uncertainty_j > 0 and measured_j > 0 else ""
    if not t.components:
        return "no component could be read"
    if not t.estimated_components:
        return f"read from hardware counters{bound}"
    if len(t.estimated_components) == len(t.components) or t.energy_j <= 0:
        return "estimated from a model, with no error bound"
    return (f"{_percent(measured_j, t.energy_j)} read from hardware counters{bound}; "
            f"{_percent(estimated_j, t.energy_j)} estimated from a model, with no error bound")


def _emitted(f: Facts) -> str:
    t = f.totals
    if not t.co2e_cells:
        return ""
    known = "" if t.co2e_cells == t.cells else f" (for the {t.co2e_cells} cells whose CO2e is known)"
    embodied = ", an embodied share included" if f.settings is not None and f.settings.embodied_kg > 0 else ""
    return f", emitting about {fmt.co2e(t.co2e_g)} CO2e{known} {_on_grid(f)}{embodied}"


def _on_grid(f: Facts) -> str:
    """Return "on the FR grid (2024 average from ..., 44.18 g/kWh, PUE 1)", or the grids' codes."""
    regions = sorted({region for region, _, _ in f.totals.grids}, key=str)
    if len(regions) != 1:
        return f"on {len(regions)} grids ({', '.join(map(str, regions))})"
    region = regions[0]
    intensities = sorted({g for _, g, _ in f.totals.grids})
    pues = sorted({pue for _, _, pue in f.totals.grids})
    source = f.grid.intensity_source if f.grid is not None and f.grid.region == region else ""
    return f"on the {region} grid ({_intensity_origin(region, intensities, source)}, " \
           f"{_span(intensities, '.4g')} g/kWh, PUE {_span(pues, 'g')})"


def _intensity_origin(region: str, intensities: list, source: str) -> str:
    """Return e.g. "2024 average from Ember 2024 via CO2.js" when the embedded table gave the figure."""
    from .carbon.regions import UnknownRegion, lookup

    try:
        found = lookup(region)
    except UnknownRegion:
        found = None
    table = found is not None and intensities == [found.g_per_kwh] and (not source or source.startswith(found.source))
    if table:
        return f"{found.year} average from {found.source}"
    return source or "source not recorded"


def _span(values: list, spec: str) -> str:
    return format(values[0], spec) if len(values) == 1 else f"{values[0]:{spec}}–{values[-1]:{spec}}"


def _measured_by(t: Totals) -> str:
    """Return e.g. "RAPL counters for the CPU and memory, NVML for 2 GPUs, an estimate for memory"."""
    by_source: dict[str, list] = {}
    for name in t.components:
        estimated = name in t.estimated_components
        by_source.setdefault("an estimate" if estimated else MEASURED_BY.get(name.split(":")[0], "readings"), []).append(name)
    order = sorted(by_source, key=lambda source: source == "an estimate")  # counters first
    text = ", ".join(f"{source} for {_devices(by_source[source])}" for source in order) or "nothing read"
    if t.shared_components:
        text += f"; {', '.join(sorted(t.shared_components))}: whole device, shared with other processes"
    if t.failed_components:
        text += f"; {', '.join(sorted(t.failed_components))}: lost during some cells"
    return text


def _devices(names: list) -> str:
    words = []
    gpus = [name for name in names if name.startswith("gpu:")]
    for name in names:
        kind = name.split(":")[0]
        word = {"cpu": "the CPU", "dram": "memory"}.get(kind) or (
            ("the GPU" if len(gpus) == 1 else f"{len(gpus)} GPUs") if kind == "gpu" else name)
        if word not in words:
            words.append(word)
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _percent(part: float, whole: float, digits: int = 3) -> str:
    return f"{part / whole * 100:.{digits}g}%"


# The details: each function returns its sentences (none when it has nothing to say). A new kind
# of sentence in every format is one function added to SENTENCES.


def _cells_sentences(f: Facts) -> list[str]:
    t = f.totals
    notebooks = sorted({r.notebook for r in f.records if r.notebook})
    where = ""
    if len(notebooks) == 1:
        where = f" of the notebook “{notebooks[0]}”"
    elif notebooks:
        where = f" of {len(notebooks)} notebooks ({', '.join(notebooks)})"
    text = f"{_plural(t.cells, 'cell')}{where} ran for {fmt.duration(t.duration_s)} in total"
    if t.failed_cells:
        text += f"; {t.failed_cells} of them raised an error and {'is' if t.failed_cells == 1 else 'are'} counted all the same"
    return [text + "."]


def _energy_sentences(f: Facts) -> list[str]:
    t = f.totals
    text = f"They drew {_kwh_and_j(t.energy_j)}"
    if t.uncertainty_j:
        text += f", ± {fmt.energy(t.uncertainty_j)} for the measured components (counter update periods, power that moved between polls, sensor accuracy)"
    return [text + "."]


def _idle_sentences(f: Facts) -> list[str]:
    """Return what was drawn between the cells (kept with each cell; after the last one it is not)."""
    t = f.totals
    if not t.idle_s:
        return []
    whole = t.energy_j + t.idle_j
    share = f" ({_percent(t.idle_j, whole)} of the energy of the cells and the time between them)" if whole > 0 else ""
    if not t.estimated_components:
        how = "read from the same counters as the cells"
    elif t.estimated_components >= set(t.components):
        how = "estimated by the same model as the cells"
    else:
        how = "read and estimated as the cells were"
    return [f"Between the cells, while none ran, a further {_kwh_and_j(t.idle_j)} was drawn over "
            f"{fmt.duration(t.idle_s)}{share}, {how}; the time after the last cell is not counted."]


def _components_sentences(f: Facts) -> list[str]:
    t = f.totals
    measured = [name for name in t.components if name not in t.estimated_components]
    estimated = [name for name in t.components if name in t.estimated_components]
    out = []
    if measured:
        out.append(f"Measured by hardware counters: {', '.join(measured)}.")
    if estimated:
        out.append(f"Estimated from a model, labelled as such, with no error bound claimed: {', '.join(estimated)}.")
    if t.failed_components:
        out.append(f"Lost during some cells and left out of their energy: {', '.join(sorted(t.failed_components))}.")
    if t.shared_components:
        out.append(
            f"Shared with other processes during some cells, so those figures are the whole device's and "
            f"include others' energy: {', '.join(sorted(t.shared_components))}."
        )
    return out


def _hardware_sentences(f: Facts) -> list[str]:
    """Return which source reads each component, and how, from ``describe()``; and what is missing."""
    detection = f.detection
    if detection is None:
        return []
    measured = [line for s in detection.sources if not s.estimated for line in s.describe()]
    estimated = [line for s in detection.sources if s.estimated for line in s.describe()]
    out = []
    if measured:
        out.append(f"Measured sources: {'; '.join(measured)}.")
    if estimated:
        out.append(f"Estimated sources: {'; '.join(estimated)}.")
    if detection.unavailable:
        out.append(f"Not available: {'; '.join(f'{u.kind} ({u.reason})' for u in detection.unavailable)}.")
    return out


def _grid_sentences(f: Facts) -> list[str]:
    grid, t = f.grid, f.totals
    if grid is not None:
        return [
            f"Grid: {grid.name} ({grid.region}), {grid.g_per_kwh:.4g} gCO2e/kWh ({grid.intensity_source}); "
            f"region: {grid.region_origin}.",
            f"PUE {grid.pue:g} ({grid.pue_origin}).",
        ]
    if not t.grids:
        return []
    # Without the Grid the records still tell where and at what intensity, not from which source.
    used = "; ".join(f"{region} at {g:.4g} gCO2e/kWh, PUE {pue:g}" for region, g, pue in t.grids)
    return [f"Grid (source not given): {used}."]


def _co2e_sentences(f: Facts) -> list[str]:
    t, grid, settings = f.totals, f.grid, f.settings
    if not t.co2e_cells:
        return ["CO2e was not worked out for these cells."]
    from .carbon.equivalents import equivalents, units_for

    units = units_for(grid.country if grid else None, settings.units if settings else "auto")
    same = "; ".join(e.text for e in equivalents(t.co2e_g, units, 3))
    known = "" if t.co2e_cells == t.cells else f" (for the {t.co2e_cells} cells whose CO2e is known)"
    extra_grids = ""
    if grid is not None and any(region != grid.region for region, _, _ in t.grids):
        others = sorted({region for region, _, _ in t.grids if region != grid.region})
        extra_grids = f"; some cells were counted on another grid ({', '.join(others)})"
    return [f"Emissions: {fmt.co2e(t.co2e_g)} CO2e{known}" + (f", {same}" if same else "") + extra_grids + "."]


def _embodied_sentences(f: Facts) -> list[str]:
    settings = f.settings
    if settings is None:
        return []
    if settings.embodied_kg > 0:
        from .carbon.context import resource_share

        share, origin = resource_share(settings)
        return [
            f"The CO2e includes an embodied share (SCI): {settings.embodied_kg:g} kg CO2e of embodied emissions "
            f"spread over a {settings.lifetime_years:g}-year life, in proportion to the time used, "
            f"times a resource share of {share:.3g} ({origin})."
        ]
    return ["The CO2e is operational only: no embodied share is included."]


def _sci_sentences(f: Facts) -> list[str]:
    """Return the carbon per functional unit, one sentence per kind of unit the cells were given (%%carbon --per)."""
    from .carbon.sci import per_unit

    return [f"Per functional unit: {s}." for s in per_unit(f.records)]


def _costliest_sentences(f: Facts) -> list[str]:
    records, t = f.records, f.totals
    if len(records) < 2 or t.energy_j <= 0:
        return []
    top = max(records, key=lambda r: r.measurement.energy_j)
    count = "" if top.execution_count is None else f" (In [{top.execution_count}])"  # its execution count, as Jupyter shows it
    preview = f" “{top.source_preview}”" if top.source_preview else ""
    share = top.measurement.energy_j / t.energy_j * 100
    return [f"The costliest cell{count}{preview} drew {fmt.energy(top.measurement.energy_j)} ({share:.3g}% of the total)."]


def _method_sentences(f: Facts) -> list[str]:
    t = f.totals
    if set(t.components) - t.estimated_components:
        text = f"Method: greenjupyter {_version()} read the energy counters at the start and end of each cell"
    else:  # nothing had a counter: no reading to speak of
        text = f"Method: greenjupyter {_version()} measured each cell from its start to its end"
    if t.estimated_components:
        text += (
            "; components without a counter were estimated from the kernel process's CPU time and "
            "resident memory and are labelled estimated"
        )
    embodied = " + an embodied share" if f.settings is not None and f.settings.embodied_kg > 0 else ""
    return [text + f"; CO2e = energy × PUE × grid intensity (location-based){embodied}."]


SENTENCES = (
    _cells_sentences, _energy_sentences, _idle_sentences, _components_sentences, _hardware_sentences, _grid_sentences,
    _co2e_sentences, _embodied_sentences, _sci_sentences, _costliest_sentences, _method_sentences,
)


# The table: each function returns its (quantity, value) rows. A new row is one function in ROWS.


def _totals_rows(f: Facts) -> list[tuple[str, str]]:
    t = f.totals
    return [
        ("Cells", f"{t.cells}" + (f" ({t.failed_cells} failed)" if t.failed_cells else "")),
        ("Duration", fmt.duration(t.duration_s)),
        ("Energy", _kwh_and_j(t.energy_j)),
    ]


def _component_rows(f: Facts) -> list[tuple[str, str]]:
    t = f.totals
    return [
        (name, f"{_kwh_and_j(joules)}, {'estimated' if name in t.estimated_components else 'measured'}")
        for name, joules in t.components.items()
    ]


def _grid_rows(f: Facts) -> list[tuple[str, str]]:
    grid = f.grid
    if grid is None:
        return []
    return [("Grid intensity", f"{grid.g_per_kwh:.4g} gCO2e/kWh ({grid.region})"), ("PUE", f"{grid.pue:g}")]


def _co2e_rows(f: Facts) -> list[tuple[str, str]]:
    return [("CO2e", fmt.co2e(f.totals.co2e_g))] if f.totals.co2e_cells else []


ROWS = (_totals_rows, _component_rows, _grid_rows, _co2e_rows)


def _kwh_and_j(joules: float) -> str:
    j = f"{joules:,.0f}" if abs(joules) >= 1000 else f"{joules:.4g}"
    return f"{joules / JOULES_PER_KWH:.4g} kWh ({j} J)"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _version() -> str:
    from . import __version__

    return __version__


# --- renderers: each escapes every value for its format ------------------------------------


def _text(s: Summary) -> str:
    width = max(len(label) for label, _ in s.rows)
    table = "\n".join(f"  {label:<{width}}  {value}" for label, value in s.rows)
    paragraphs = "".join(f"{textwrap.fill(p, 100)}\n\n" for p in (s.line, " ".join(s.sentences)) if p)
    return f"{HEADING}\n\n{paragraphs}{table}\n"


# Characters that markdown (or the HTML it may contain) would read as markup: $ starts maths in
# Jupyter, & an HTML entity, ~~ strikes through in GFM. Newlines are escaped as text before.
MARKDOWN_SPECIAL = set("\\`*_[]<>|#$&~")


def _md(text: str) -> str:
    return "".join("\\" + c if c in MARKDOWN_SPECIAL else c for c in text)


def _markdown(s: Summary) -> str:
    table = "\n".join(f"| {_md(label)} | {_md(value)} |" for label, value in s.rows)
    paragraphs = "".join(f"{_md(p)}\n\n" for p in (s.line, " ".join(s.sentences)) if p)
    return f"## {HEADING}\n\n{paragraphs}| Quantity | Value |\n|---|---|\n{table}\n"


LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "{": r"\{",
    "}": r"\}",
    "$": r"\$",
    "&": r"\&",
    "#": r"\#",
    "%": r"\%",
    "_": r"\_",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",  # OT1 fonts would print ¡ and ¿ for < and >
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    # Symbols that pdflatex's default UTF-8 input does not know.
    "≈": r"$\approx$",
    "×": r"$\times$",
    "±": r"$\pm$",
    "µ": r"$\mu$",
    "→": r"$\rightarrow$",
    "…": r"\dots{}",
    "·": r"$\cdot$",
    "“": "``",
    "”": "''",
    "—": "---",
    "–": "--",
}


def latex_escape(text: str) -> str:
    """Return ``text`` safe inside a LaTeX paragraph or table cell (one pass, so escapes are not escaped)."""
    escaped = "".join(LATEX_SPECIAL.get(c, c) for c in text)
    return escaped.replace("CO2e", r"CO\textsubscript{2}e")


def _latex(s: Summary) -> str:
    table = "\n".join(f"{latex_escape(label)} & {latex_escape(value)} \\\\" for label, value in s.rows)
    paragraphs = "".join(f"{latex_escape(p)}\n\n" for p in (s.line, " ".join(s.sentences)) if p)
    return (
        f"\\paragraph{{{HEADING}}}\n{paragraphs}"
        f"\\begin{{tabular}}{{ll}}\n\\hline\nQuantity & Value \\\\\n\\hline\n{table}\n\\hline\n\\end{{tabular}}\n"
    )


def _h(text: str) -> str:
    return html.escape(text).replace("CO2e", "CO<sub>2</sub>e")


def _html_table(rows) -> str:
    body = "".join(f"<tr><td>{_h(label)}</td><td>{_h(value)}</td></tr>" for label, value in rows)
    return f"<table><thead><tr><th>Quantity</th><th>Value</th></tr></thead><tbody>{body}</tbody></table>"


def _html(s: Summary) -> str:
    details = f"<p>{_h(' '.join(s.sentences))}</p>" if s.sentences else ""
    return (
        f'<section class="greenjupyter-summary"><h3>{_h(HEADING)}</h3><p class="greenjupyter-line">{_h(s.line)}</p>'
        f"{details}{_html_table(s.rows)}</section>"
    )


RENDERERS = {"markdown": _markdown, "latex": _latex, "html": _html, "text": _text}


# --- the page ------------------------------------------------------------------------------

# Every rule is scoped to the report's own element, so the page shown inside a notebook leaves the
# notebook's styles alone; dark text on white whatever the surrounding theme.
PAGE_CSS = """
.gj-report{color:#1f2328;background:#fff;font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;max-width:56rem;margin:0 auto;padding:1.5rem 1.75rem}
.gj-report h1{font-size:1.55rem;line-height:1.25;margin:0 0 .2rem}
.gj-report h2{font-size:1.08rem;margin:1.6rem 0 .6rem;padding-bottom:.2rem;border-bottom:1px solid #d0d7de}
.gj-report .gj-meta{color:#59636e;font-size:.88rem;margin:0 0 1.2rem}
.gj-report .gj-line{margin:0;padding:.8rem 1rem;border-left:4px solid #1a7f37;background:#f0f7f2;font-size:1.02rem}
.gj-report .gj-hint{color:#59636e;font-size:.82rem;margin:.35rem 0 0}
.gj-report table{border-collapse:collapse;font-variant-numeric:tabular-nums}
.gj-report th,.gj-report td{text-align:left;vertical-align:top;padding:.28rem 1.2rem .28rem 0;border-bottom:1px solid #e6e8eb}
.gj-report th{font-weight:600;border-bottom:1.5px solid #8c959f}
.gj-report figure{margin:1.4rem 0}
.gj-report figure img{display:block;max-width:100%;height:auto}
.gj-report figcaption{color:#31373d;font-size:.88rem;margin-top:.45rem}
.gj-report .gj-details{padding-left:1.2rem}
.gj-report .gj-details li{margin:.25rem 0}
.gj-report .gj-note{color:#9a6700}
@media print{
.gj-report{max-width:none;padding:0;font-size:10.5pt}
.gj-report .gj-line{background:none}
.gj-report .gj-hint{display:none}
.gj-report figure,.gj-report table,.gj-report .gj-line,.gj-report li{break-inside:avoid;page-break-inside:avoid}
.gj-report h1,.gj-report h2{break-after:avoid;page-break-after:avoid}
}
"""
PAGE_DOCUMENT_CSS = "@page{margin:16mm}html{background:#fff}body{margin:0}"


def page(records, samples=None, t0_wall=None, detection=None, grid=None, settings=None, title: str = "",
         standalone: bool = True) -> str:
    """Return the report as HTML: the sentence to quote, the totals, both figures, then the details.

    ``samples`` (greenjupyter.sampler.Sample) and ``t0_wall`` are as in ``power_figure()``;
    without samples the power figure shows each cell's average power. ``standalone`` gives a
    whole document that opens offline (inline CSS, figures as data: URLs, no script); False
    gives the element alone, with its scoped style, to show inside a notebook.
    """
    records = list(records)
    s = summarise(records, detection, grid, settings)
    name = fmt.printable(title)
    meta = " · ".join(filter(None, [
        _h(name), f"{len(records)} cells" if len(records) != 1 else "1 cell",
        f"generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by greenjupyter {_version()}",
    ]))
    details = "".join(f"<li>{_h(sentence)}</li>" for sentence in s.sentences)
    article = (
        f'<article class="gj-report">\n<header><h1>{_h(HEADING)}</h1><p class="gj-meta">{meta}</p></header>\n'
        f'<section><h2>Summary for a paper</h2><p class="gj-line">{_h(s.line)}</p>'
        '<p class="gj-hint">One sentence to quote as it is; the details, method and sources are below.</p></section>\n'
        f"<section><h2>Totals</h2>{_html_table(s.rows)}</section>\n"
        f"{_page_figures(records, samples, t0_wall)}\n"
        + (f'<section><h2>Details, method and sources</h2><ul class="gj-details">{details}</ul></section>\n' if details else "")
        + "</article>"
    )
    if not standalone:
        return f"<style>{PAGE_CSS}</style>\n{article}"
    heading = f"{HEADING}: {name}" if name else f"{HEADING} (greenjupyter)"
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(heading)}</title>\n<style>{PAGE_DOCUMENT_CSS}{PAGE_CSS}</style>\n</head>\n"
        f"<body>\n{article}\n</body>\n</html>\n"
    )


def _page_figures(records, samples, t0_wall) -> str:
    """Return both figures as <figure>s with captions, or a note saying why there are none."""
    if not records:
        return ""
    try:
        energy = energy_figure(records)
        power = power_figure(samples or [], records, t0_wall)
    except GreenJupyterError as error:  # no matplotlib: the text alone, and why
        return f'<p class="gj-note greenjupyter-note">No figure: {html.escape(str(error))}.</p>'
    return "\n".join((
        _figure_html(energy, 1, "Energy per cell", energy_caption(records)),
        _figure_html(power, 2, "Power over time", power_caption(records, samples, power.cells_shown)),
    ))


def _figure_html(fig, number: int, alt: str, caption: str) -> str:
    buffer = io.BytesIO()
    save(fig, buffer, format="png", dpi=PAGE_DPI)
    png = buffer.getvalue()
    width = int.from_bytes(png[16:20], "big") * 96 // PAGE_DPI  # PNG's IHDR width, shown at 96 px per inch
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(alt)}" width="{width}" src="data:image/png;base64,{data}">'
        f"<figcaption><b>Figure {number}.</b> {_h(caption)}</figcaption></figure>"
    )


def energy_caption(records) -> str:
    """Return the energy figure's caption: what the bars, the hatching and the colours say."""
    records = list(records)
    parts = ["Energy of each cell, labelled by execution count (In [n]), stacked by component: "
             f"{', '.join(_group_label(g) for g in _groups(records))}."]
    estimated = {name for r in records for name in r.measurement.estimated_components}
    if estimated and estimated >= {name for r in records for name in r.measurement.components}:
        parts.append("Every part is estimated from a model (hatched): no hardware counter could be read.")
    elif estimated:
        parts.append("Hatched: estimated from a model; solid: read from hardware counters.")
    if not all(r.success for r in records):
        parts.append("Red labels: cells that raised an error.")
    return " ".join(parts)


def power_caption(records, samples, cells_shown: int) -> str:
    """Return the power figure's caption; it says when power is each cell's average, not samples."""
    if samples:
        text = "Total power over time, as the sampler read it (each step one sampling interval)"
    else:
        text = ("Average power of each cell over its own run, one step per cell: the history keeps no power "
                "samples, so changes within a cell and power between cells are not shown")
    text += "; shaded: the cells, labelled [n] by execution count."
    left_out = len(list(records)) - cells_shown
    if left_out:
        text += f" {_plural(left_out, 'cell')} ran outside the sampled period and {'is' if left_out == 1 else 'are'} not shown."
    return text


# --- figures -------------------------------------------------------------------------------


def energy_figure(records):
    """Return a Figure: one bar per cell (labelled by execution count), stacked by component group.

    Groups: CPU (``cpu:*``), memory (``dram:*``) and each GPU (``gpu:N``). Within a group the
    measured part is solid and the estimated part hatched. Failed cells' labels are red. The
    legend sits outside the axes, so it never covers a bar.
    """
    records = list(records)
    fig = _new_figure(figsize=(min(16, max(6, 4 + 0.25 * len(records))), 4))
    ax = fig.add_subplot()
    groups = _groups(records)
    unit, scale = _energy_unit(max((r.measurement.energy_j for r in records), default=0.0))
    x = list(range(len(records)))
    bottom = [0.0] * len(records)
    for i, group in enumerate(groups):
        for estimated in (False, True):
            heights = [_group_energy(r.measurement, group, estimated) / scale for r in records]
            if not any(heights):
                continue
            label = f"{_group_label(group)}, estimated" if estimated else _group_label(group)
            ax.bar(x, heights, bottom=bottom, color=f"C{i}", label=label, width=0.8,
                   hatch="//" if estimated else None, edgecolor="white" if estimated else f"C{i}", linewidth=0.5)
            bottom = [b + h for b, h in zip(bottom, heights)]
    _label_cells(ax, records)
    ax.set_ylabel(f"energy ({unit})")
    ax.set_title("Energy per cell")
    _energy_legend(ax, groups)
    return fig


def power_figure(samples, records, t0_wall=None):
    """Return a Figure of total power over time, with each cell's span shaded and labelled [n].

    ``samples`` are greenjupyter.sampler.Sample (perf_counter seconds); records carry
    ``started_at`` (UTC). ``t0_wall`` maps one clock onto the other: the wall-clock time
    (Unix seconds, or an aware datetime) at which ``time.perf_counter()`` read 0 in the
    process that took the samples, i.e. ``time.time() - time.perf_counter()`` there. None
    works it out now, which is right when that process is this one. Cells outside the
    samples' time range are left out (``fig.cells_shown`` counts those drawn). Without
    samples (a history keeps none) each cell's average power is drawn as a step over its run.
    """
    samples, records = list(samples), list(records)
    offset = _clock_offset(t0_wall)
    spans = [(r, r.measurement.started_at.timestamp() - offset) for r in records]
    if samples:
        low, high = samples[0].t0, samples[-1].t1
        spans = [(r, start) for r, start in spans if start <= high and start + r.measurement.duration_s >= low]
    origin = samples[0].t0 if samples else min((start for _, start in spans), default=0.0)
    end = max([samples[-1].t1] if samples else [start + r.measurement.duration_s for r, start in spans] or [origin])
    unit, scale = _time_unit(end - origin)
    fig = _new_figure(figsize=(10, 3.5))
    fig.cells_shown = len(spans)
    ax = fig.add_subplot()
    xs, ys = [], []
    if samples:
        for s in samples:  # each sample is a flat step over its own interval
            xs += [(s.t0 - origin) / scale, (s.t1 - origin) / scale]
            ys += [s.total_w, s.total_w]
    else:
        for r, start in spans:  # one flat step per cell, broken between cells (nothing is known there)
            xs += [(start - origin) / scale, (start - origin + r.measurement.duration_s) / scale, math.nan]
            ys += [r.measurement.avg_power_w, r.measurement.avg_power_w, math.nan]
    ax.plot(xs, ys, color="C0", linewidth=1, label="total power" if samples else "average power of each cell")
    top = ax.get_xaxis_transform()  # x in data, y in axes fraction: labels sit at the top
    gap, last = (end - origin) / scale / 30, -math.inf  # a label closer than 1/30 of the axis to the last would overlap it
    for i, (r, start) in enumerate(spans):
        begin, finish = (start - origin) / scale, (start - origin + r.measurement.duration_s) / scale
        ax.axvspan(begin, finish, color="0.55", alpha=0.2, linewidth=0, gid="cell", label="cell running" if i == 0 else None)
        if r.execution_count is not None and (begin + finish) / 2 - last >= gap:
            last = (begin + finish) / 2
            ax.text(last, 1.0, f"[{r.execution_count}]", transform=top, ha="center", va="bottom", fontsize=7)
    when = datetime.fromtimestamp(origin + offset, timezone.utc)
    ax.set_xlabel(f"{unit} since {when:%Y-%m-%d %H:%M:%S} UTC")
    ax.set_ylabel("power (W)")
    highest = max((y for y in ys if y == y), default=0.0)  # NaN breaks aside
    ax.set_ylim(0, highest * 1.1 if highest > 0 else 1.0)  # headroom: the highest step is not drawn on the frame
    ax.set_title("Power over time", pad=14)  # above the [n] labels
    if xs or spans:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)
    return fig


def save(fig, path, **options) -> None:
    """Write ``fig`` to ``path``; the format follows the extension (png, pdf, svg, ...)."""
    fig.savefig(path, **{"dpi": 150, "bbox_inches": "tight", **options})


def _groups(records) -> list[str]:
    """Return the group keys present, CPU first, then memory, GPUs, anything else."""
    found = {_group_of(name) for r in records for name in r.measurement.components}
    order = {"cpu": 0, "dram": 1}
    return sorted(found, key=lambda g: (order.get(g, 2 if g.startswith("gpu:") else 3), g))


def _group_of(component: str) -> str:
    prefix = component.split(":")[0]
    return prefix if prefix in GROUP_LABELS else component


def _group_label(group: str) -> str:
    if group.startswith("gpu:"):
        return f"GPU {group.split(':', 1)[1]}"
    return GROUP_LABELS.get(group, group)


def _group_energy(m, group: str, estimated: bool) -> float:
    return sum(
        j for name, j in m.components.items()
        if _group_of(name) == group and (name in m.estimated_components) == estimated
    )


def _energy_unit(largest_j: float) -> tuple[str, float]:
    for unit, scale in (("kWh", JOULES_PER_KWH), ("Wh", 3600.0)):
        if largest_j >= scale:
            return unit, scale
    return "J", 1.0


def _time_unit(span_s: float) -> tuple[str, float]:
    for unit, scale in (("hours", 3600.0), ("minutes", 60.0)):
        if span_s >= 10 * scale:
            return unit, scale
    return "seconds", 1.0


def _label_cells(ax, records) -> None:
    step = max(1, len(records) // 40)  # at most ~40 labels, so they stay readable
    ticks = list(range(0, len(records), step))
    ax.set_xticks(ticks)
    ax.set_xticklabels(["–" if records[i].execution_count is None else str(records[i].execution_count) for i in ticks])
    for tick, i in zip(ax.get_xticklabels(), ticks):
        if not records[i].success:
            tick.set_color("tab:red")
    ax.set_xlabel("cell (execution count; red: raised an error)")


def _energy_legend(ax, groups) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(color=f"C{i}", label=_group_label(g)) for i, g in enumerate(groups)]
    handles.append(Patch(facecolor="white", edgecolor="dimgrey", hatch="//", label="estimated"))
    # Outside the axes, to their right: inside, it covered the tallest bar whenever that one was near a corner.
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)


def _clock_offset(t0_wall) -> float:
    """Return wall-clock seconds minus perf_counter seconds."""
    if t0_wall is None:
        import time

        return time.time() - time.perf_counter()
    if isinstance(t0_wall, datetime):
        return t0_wall.timestamp()
    return float(t0_wall)


def _new_figure(**options):
    """Return a Figure on the Agg canvas; pyplot and the global backend are left alone."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError:
        raise GreenJupyterError(MATPLOTLIB_HINT) from None
    fig = _figure_class()(**options)
    FigureCanvasAgg(fig)
    return fig


@cache
def _figure_class():
    from matplotlib.figure import Figure

    class ReportFigure(Figure):
        """A Figure that IPython shows inline as PNG even when no matplotlib backend is set up."""

        cells_shown = 0  # power_figure: the cells drawn (those inside the samples' time range)

        def _repr_png_(self):
            buffer = io.BytesIO()
            save(self, buffer, format="png", dpi=100)
            return buffer.getvalue()

    return ReportFigure
