"""Reports on cell records: a paper-ready summary (markdown, LaTeX, HTML, text) and figures.

``summary()`` states what a paper's "compute and emissions" paragraph needs: cells, duration,
energy, CO2e and equivalents, what was measured and what estimated (and how), the grid with
its source, basis and year, PUE, the embodied share and the method. It needs no matplotlib.

``energy_figure()`` and ``power_figure()`` return matplotlib Figures built directly on the Agg
canvas: pyplot is never imported, so no global backend or state changes. They show inline in
IPython and ``save()`` writes them. matplotlib is optional (``pip install matplotlib``).
"""

from __future__ import annotations

import html
import io
import textwrap
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


# --- the summary -------------------------------------------------------------------------


def summary(records, detection=None, grid=None, settings=None, format: str = "markdown") -> str:
    """Return a summary of ``records`` (CellRecords) as markdown, LaTeX, HTML or text.

    ``detection`` (greenjupyter.sources()) says which source read each component; ``grid``
    (a carbon Grid) gives the intensity's source and the PUE's origin; ``settings`` says
    whether an embodied share is included and which units equivalents use. Each is optional:
    without it the summary says what the records alone tell.
    """
    if format not in FORMATS:
        raise ConfigError(f"unknown summary format {format!r}; accepted: {', '.join(FORMATS)}")
    sentences, rows = _facts(list(records), detection, grid, settings)
    # Names and previews come from notebooks: no control character reaches a terminal or a document.
    sentences = [fmt.printable(s) for s in sentences]
    rows = [(fmt.printable(label), fmt.printable(value)) for label, value in rows]
    return RENDERERS[format](sentences, rows)


def _facts(records, detection, grid, settings) -> tuple[list[str], list[tuple[str, str]]]:
    """Return the summary as plain-text sentences and (quantity, value) rows; renderers escape them."""
    if not records:
        return ["No cells were measured."], [("Cells", "0")]
    t = Totals.of(records)
    sentences = [
        _cells_sentence(records, t),
        _energy_sentence(t),
        *_components_sentences(t),
        *_hardware_sentences(detection),
        *_grid_sentences(t, grid),
        _co2e_sentence(t, grid, settings),
        *_embodied_sentences(settings),
        *_costliest_sentences(records, t),
        _method_sentence(t, settings),
    ]
    return sentences, _rows(t, grid)


def _cells_sentence(records, t: Totals) -> str:
    notebooks = sorted({r.notebook for r in records if r.notebook})
    where = ""
    if len(notebooks) == 1:
        where = f" of the notebook “{notebooks[0]}”"
    elif notebooks:
        where = f" of {len(notebooks)} notebooks ({', '.join(notebooks)})"
    text = f"{_plural(t.cells, 'cell')}{where} ran for {fmt.duration(t.duration_s)} in total"
    if t.failed_cells:
        text += f"; {t.failed_cells} of them raised an error and {'is' if t.failed_cells == 1 else 'are'} counted all the same"
    return text + "."


def _energy_sentence(t: Totals) -> str:
    text = f"They drew {_kwh_and_j(t.energy_j)}"
    if t.uncertainty_j:
        text += f", ± {fmt.energy(t.uncertainty_j)} for the measured components (counter update periods, power that moved between polls, sensor accuracy)"
    return text + "."


def _components_sentences(t: Totals) -> list[str]:
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


def _hardware_sentences(detection) -> list[str]:
    """Return which source reads each component, and how, from ``describe()``; and what is missing."""
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


def _grid_sentences(t: Totals, grid) -> list[str]:
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


def _co2e_sentence(t: Totals, grid, settings) -> str:
    if not t.co2e_cells:
        return "CO2e was not worked out for these cells."
    from .carbon.equivalents import equivalents, units_for

    units = units_for(grid.country if grid else None, settings.units if settings else "auto")
    same = "; ".join(e.text for e in equivalents(t.co2e_g, units, 3))
    known = "" if t.co2e_cells == t.cells else f" (for the {t.co2e_cells} cells whose CO2e is known)"
    extra_grids = ""
    if grid is not None and any(region != grid.region for region, _, _ in t.grids):
        others = sorted({region for region, _, _ in t.grids if region != grid.region})
        extra_grids = f"; some cells were counted on another grid ({', '.join(others)})"
    return f"Emissions: {fmt.co2e(t.co2e_g)} CO2e{known}" + (f", {same}" if same else "") + extra_grids + "."


def _embodied_sentences(settings) -> list[str]:
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


def _costliest_sentences(records, t: Totals) -> list[str]:
    if len(records) < 2 or t.energy_j <= 0:
        return []
    top = max(records, key=lambda r: r.measurement.energy_j)
    count = "" if top.execution_count is None else f" (In [{top.execution_count}])"  # its execution count, as Jupyter shows it
    preview = f" “{top.source_preview}”" if top.source_preview else ""
    share = top.measurement.energy_j / t.energy_j * 100
    return [f"The costliest cell{count}{preview} drew {fmt.energy(top.measurement.energy_j)} ({share:.3g}% of the total)."]


def _method_sentence(t: Totals, settings) -> str:
    from . import __version__

    text = f"Method: greenjupyter {__version__} read the energy counters at the start and end of each cell"
    if t.estimated_components:
        text += (
            "; components without a counter were estimated from the kernel process's CPU time and "
            "resident memory and are labelled estimated"
        )
    embodied = " + an embodied share" if settings is not None and settings.embodied_kg > 0 else ""
    return text + f"; CO2e = energy × PUE × grid intensity (location-based){embodied}."


def _rows(t: Totals, grid) -> list[tuple[str, str]]:
    rows = [
        ("Cells", f"{t.cells}" + (f" ({t.failed_cells} failed)" if t.failed_cells else "")),
        ("Duration", fmt.duration(t.duration_s)),
        ("Energy", _kwh_and_j(t.energy_j)),
    ]
    rows += [
        (name, f"{_kwh_and_j(joules)}, {'estimated' if name in t.estimated_components else 'measured'}")
        for name, joules in t.components.items()
    ]
    if grid is not None:
        rows += [("Grid intensity", f"{grid.g_per_kwh:.4g} gCO2e/kWh ({grid.region})"), ("PUE", f"{grid.pue:g}")]
    if t.co2e_cells:
        rows.append(("CO2e", fmt.co2e(t.co2e_g)))
    return rows


def _kwh_and_j(joules: float) -> str:
    j = f"{joules:,.0f}" if abs(joules) >= 1000 else f"{joules:.4g}"
    return f"{joules / JOULES_PER_KWH:.4g} kWh ({j} J)"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# --- renderers: each escapes every value for its format ------------------------------------


def _text(sentences, rows) -> str:
    width = max(len(label) for label, _ in rows)
    table = "\n".join(f"  {label:<{width}}  {value}" for label, value in rows)
    return f"{HEADING}\n\n{textwrap.fill(' '.join(sentences), 100)}\n\n{table}\n"


# Characters that markdown (or the HTML it may contain) would read as markup: $ starts maths in
# Jupyter, & an HTML entity, ~~ strikes through in GFM. Newlines are escaped as text before.
MARKDOWN_SPECIAL = set("\\`*_[]<>|#$&~")


def _md(text: str) -> str:
    return "".join("\\" + c if c in MARKDOWN_SPECIAL else c for c in text)


def _markdown(sentences, rows) -> str:
    table = "\n".join(f"| {_md(label)} | {_md(value)} |" for label, value in rows)
    return f"## {HEADING}\n\n{_md(' '.join(sentences))}\n\n| Quantity | Value |\n|---|---|\n{table}\n"


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


def _latex(sentences, rows) -> str:
    table = "\n".join(f"{latex_escape(label)} & {latex_escape(value)} \\\\" for label, value in rows)
    return (
        f"\\paragraph{{{HEADING}}}\n{latex_escape(' '.join(sentences))}\n\n"
        f"\\begin{{tabular}}{{ll}}\n\\hline\nQuantity & Value \\\\\n\\hline\n{table}\n\\hline\n\\end{{tabular}}\n"
    )


def _h(text: str) -> str:
    return html.escape(text).replace("CO2e", "CO<sub>2</sub>e")


def _html(sentences, rows) -> str:
    body = "".join(f"<tr><td>{_h(label)}</td><td>{_h(value)}</td></tr>" for label, value in rows)
    return (
        f'<section class="greenjupyter-summary"><h3>{_h(HEADING)}</h3><p>{_h(" ".join(sentences))}</p>'
        f"<table><thead><tr><th>Quantity</th><th>Value</th></tr></thead><tbody>{body}</tbody></table></section>"
    )


RENDERERS = {"markdown": _markdown, "latex": _latex, "html": _html, "text": _text}


# --- figures -------------------------------------------------------------------------------


def energy_figure(records):
    """Return a Figure: one bar per cell (labelled by execution count), stacked by component group.

    Groups: CPU (``cpu:*``), memory (``dram:*``) and each GPU (``gpu:N``). Within a group the
    measured part is solid and the estimated part hatched. Failed cells' labels are red.
    """
    records = list(records)
    fig = _new_figure(figsize=(min(16, 4 + 0.25 * len(records)), 4))
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
    """Return a Figure of total power over time, with each cell's span shaded and labelled #N.

    ``samples`` are greenjupyter.sampler.Sample (perf_counter seconds); records carry
    ``started_at`` (UTC). ``t0_wall`` maps one clock onto the other: the wall-clock time
    (Unix seconds, or an aware datetime) at which ``time.perf_counter()`` read 0 in the
    process that took the samples, i.e. ``time.time() - time.perf_counter()`` there. None
    works it out now, which is right when that process is this one. Cells outside the
    samples' time range are left out (all are shown when there are no samples).
    """
    samples, records = list(samples), list(records)
    offset = _clock_offset(t0_wall)
    spans = [(r, r.measurement.started_at.timestamp() - offset) for r in records]
    if samples:
        low, high = samples[0].t0, samples[-1].t1
        spans = [(r, start) for r, start in spans if start <= high and start + r.measurement.duration_s >= low]
    origin = samples[0].t0 if samples else min((start for _, start in spans), default=0.0)
    fig = _new_figure(figsize=(10, 3.5))
    ax = fig.add_subplot()
    xs, ys = [], []
    for s in samples:  # each sample is a flat step over its own interval
        xs += [s.t0 - origin, s.t1 - origin]
        ys += [s.total_w, s.total_w]
    ax.plot(xs, ys, color="C0", linewidth=1, label="total power")
    top = ax.get_xaxis_transform()  # x in data, y in axes fraction: labels sit at the top
    for r, start in spans:
        begin, end = start - origin, start - origin + r.measurement.duration_s
        ax.axvspan(begin, end, color="C1", alpha=0.2, linewidth=0, gid="cell")
        if r.execution_count is not None:
            ax.text((begin + end) / 2, 1.0, f"[{r.execution_count}]", transform=top, ha="center", va="bottom", fontsize=7)
    when = datetime.fromtimestamp(origin + offset, timezone.utc)
    ax.set_xlabel(f"seconds since {when:%Y-%m-%d %H:%M:%S} UTC")
    ax.set_ylabel("power (W)")
    ax.set_ylim(bottom=0)
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
    ax.legend(handles=handles, fontsize=8, loc="upper left")


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

        def _repr_png_(self):
            buffer = io.BytesIO()
            save(self, buffer, format="png", dpi=100)
            return buffer.getvalue()

    return ReportFigure
