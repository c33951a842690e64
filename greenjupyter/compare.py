"""Energy beside quality: metrics and a run name attached to cells, and the named runs compared.

``log(accuracy=0.93)`` attaches metrics to the running cell's record; ``tag("resnet18-70pct")``
names the run of this cell and the following ones. ``compare(records)`` groups tagged cells into
runs (energy, CO2e and time summed over the run's cells; each metric's last logged value) and
gives a table and a scatter of energy against one metric with the Pareto front marked.
"""

from __future__ import annotations

import html
import math
import numbers
import os
import sys
from dataclasses import dataclass
from typing import Mapping

from . import format as fmt
from .errors import ConfigError, GreenJupyterError
from .notices import notice

ACCEPTED_METRIC = "a finite real number (int, float, a NumPy scalar, a one-element array or tensor), not a bool"
# A metric whose name contains one of these is better when lower; any other when higher.
LOWER_IS_BETTER = ("loss", "error", "rmse", "mse", "mae", "perplexity")
# A logged value the scatter can draw: matplotlib's margins and ticks overflow for spans near the float maximum.
PLOTTABLE = 1e300
NOT_LOADED = "greenjupyter is not loaded: run %load_ext greenjupyter first"


def log(**metrics) -> None:
    """Attach metrics to the running cell's record (kept in history): ``log(accuracy=0.93, loss=0.21)``.

    Several calls in one cell merge; a name logged again keeps its last value. A value that is
    not a finite real number is left out with a message naming it (once per metric name); the
    other values are kept and the cell runs on. Outside a measured cell nothing is recorded and
    a message says why.
    """
    accepted = {}
    for name, value in metrics.items():
        number, problem = _real(value)
        if problem:
            notice(f"log-{name}", f"log({name}={fmt.short_repr(value)}) is not recorded: {problem}; "
                                  f"accepted: {ACCEPTED_METRIC}")
        else:
            accepted[name] = number
    recorder = _recorder()
    if recorder is None:
        notice("log-not-loaded", f"log() attaches metrics to the running cell, but {NOT_LOADED}; nothing was recorded")
    elif recorder.pid != os.getpid():
        notice("log-child", "log() in a child process records nothing: the cells are the parent's; call it there")
    elif accepted and not recorder.attach(metrics=accepted):
        notice("log-no-cell", "log() was called while no cell was running; those metrics were not recorded")


def tag(name) -> None:
    """Name the run this cell and the following ones belong to, until another ``tag()``; ``tag(None)`` ends it.

    Cells with the same tag make one run in ``%carbon compare``, across kernel sessions.
    """
    if name is not None and (not isinstance(name, str) or not name.strip()):
        print(f"greenjupyter: tag({fmt.short_repr(name)}) is refused; accepted: a name (a non-empty str), or None "
              "to stop tagging; the tag in force is unchanged", file=sys.stderr)
        return
    recorder = _recorder()
    if recorder is None:
        print(f"greenjupyter: tag() names the cells' run, but {NOT_LOADED}; no tag is set", file=sys.stderr)
        return
    recorder.set_tag(name.strip() if name is not None else None)


def _recorder():
    from .ipython.extension import current_recorder

    return current_recorder()


def _real(value) -> tuple[float | None, str]:
    """Return (value as a float, "") for a finite real number, else (None, what is wrong with it)."""
    if not isinstance(value, (bool, numbers.Real)) and hasattr(value, "item"):
        try:
            value = value.item()  # NumPy scalars and arrays, torch tensors: one element only
        except Exception:
            return None, "an array or tensor with more than one element"
    if isinstance(value, bool):
        return None, "a bool"
    if not isinstance(value, numbers.Real):
        return None, "not a real number"
    number = float(value)
    if not math.isfinite(number):
        return None, "not finite"
    return number, ""


@dataclass(frozen=True)
class Run:
    """The cells that share one tag: energy, CO2e and time summed, and each metric's last logged value."""

    tag: str
    cells: int
    energy_j: float
    co2e_g: float  # over the cells whose CO2e is known
    duration_s: float
    estimated: bool  # some energy is modelled rather than read from counters
    metrics: Mapping[str, float]


def runs(records) -> list[Run]:
    """Return the runs among ``records`` (CellRecords, oldest first) with a tag, lowest energy first."""
    grouped: dict[str, list] = {}
    for record in records:
        if record.tag is not None:
            grouped.setdefault(record.tag, []).append(record)
    found = []
    for name, cells in grouped.items():
        metrics: dict[str, float] = {}
        for record in cells:
            metrics.update(record.metrics)
        found.append(Run(
            name, len(cells), sum(r.measurement.energy_j for r in cells),
            sum(r.measurement.co2e_g or 0.0 for r in cells), sum(r.measurement.duration_s for r in cells),
            any(r.measurement.estimated for r in cells), metrics,
        ))
    return sorted(found, key=lambda run: run.energy_j)


def lower_is_better(metric: str) -> bool:
    """Return True for a metric whose name contains loss, error, rmse, mse, mae or perplexity."""
    return any(word in metric.lower() for word in LOWER_IS_BETTER)


def pareto_front(points, lower_better: bool = False) -> list[int]:
    """Return the indices of the non-dominated (energy, metric) points, in the order given.

    A point is dominated when another uses no more energy and scores no worse, and is strictly
    better in one of the two. Equal points do not dominate each other: ties stay on the front.
    """
    sign = -1.0 if lower_better else 1.0

    def dominates(a, b) -> bool:
        (energy_a, score_a), (energy_b, score_b) = (a[0], sign * a[1]), (b[0], sign * b[1])
        return energy_a <= energy_b and score_a >= score_b and (energy_a < energy_b or score_a > score_b)

    return [i for i, p in enumerate(points) if not any(dominates(q, p) for q in points)]


def compare(records, metric: str | None = None, lower_better: bool | None = None, where: str = "") -> "Comparison":
    """Return the tagged runs among ``records`` side by side, judged on ``metric`` (default: the first logged).

    ``lower_better`` None follows the metric's name (see ``lower_is_better``). A metric that no
    run logged raises ConfigError naming the ones that were. ``where`` says whose cells these are.
    """
    records = list(records)
    found = runs(records)
    logged = list(dict.fromkeys(name for r in records if r.tag is not None for name in r.metrics))
    if metric is not None and metric not in logged:
        accepted = ", ".join(logged) if logged else "none was logged: greenjupyter.log(accuracy=...) in a tagged cell"
        raise ConfigError(f"metric {fmt.short_repr(metric)} was not logged by these runs; accepted: {accepted}")
    metric = metric if metric is not None else (logged[0] if logged else None)
    if lower_better is None and metric is not None:
        lower_better = lower_is_better(metric)
    return Comparison(found, logged, metric, bool(lower_better), where)


class Comparison:
    """Tagged runs side by side: ``runs``, ``front`` (the Pareto-optimal runs), ``text``, ``html``, ``figure()``.

    Shown as the table (HTML in a notebook, text in a terminal).
    """

    def __init__(self, runs: list[Run], metrics: list[str], metric: str | None, lower_better: bool, where: str):
        self.runs, self.metrics, self.metric, self.lower_better, self.where = runs, metrics, metric, lower_better, where
        scored = [r for r in runs if metric in r.metrics]
        self.front = [scored[i] for i in pareto_front([(r.energy_j, r.metrics[metric]) for r in scored], lower_better)]

    @property
    def judged(self) -> str:
        """Return e.g. 'energy against accuracy (higher is better)'."""
        return f"energy against {self.metric} ({'lower' if self.lower_better else 'higher'} is better)"

    def _title(self) -> str:
        if not self.runs:
            return (f"greenjupyter compare: no tagged runs{f' in {self.where}' if self.where else ''}; "
                    "name them with greenjupyter.tag('name') in the cells of each run")
        return (f"greenjupyter compare: {len(self.runs)} tagged run{'s' if len(self.runs) > 1 else ''}"
                f"{f' in {self.where}' if self.where else ''}, lowest energy first")

    def _rows(self) -> list[list[str]]:
        """Return the header and one row per run, as plain text (printable), the front mark first."""
        rows = [["", "run", "energy", "CO2e", "duration", "cells", "kind", *map(fmt.printable, self.metrics)]]
        for r in self.runs:
            rows.append([
                "*" if r in self.front else "", fmt.printable(r.tag), fmt.energy(r.energy_j), fmt.co2e(r.co2e_g),
                fmt.duration(r.duration_s), str(r.cells), "estimated" if r.estimated else "measured",
                *(f"{r.metrics[m]:.4g}" if m in r.metrics else "—" for m in self.metrics),
            ])
        return rows

    def _footnote(self) -> str:
        return f"* on the Pareto front of {self.judged}" if self.front else ""

    @property
    def text(self) -> str:
        if not self.runs:
            return self._title()
        rows = self._rows()
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        words = (0, 1, 6)  # the front mark, the run and its kind go left; figures go right
        lines = ["  ".join(cell.ljust(w) if i in words else cell.rjust(w) for i, (cell, w) in
                           enumerate(zip(row, widths))).rstrip() for row in rows]
        return "\n".join([fmt.printable(self._title()), *("  " + line for line in lines), self._footnote()]).rstrip()

    @property
    def html(self) -> str:
        title = f"<p>{html.escape(fmt.printable(self._title()))}</p>"
        if not self.runs:
            return f'<div class="greenjupyter-compare">{title}</div>'
        head, *body = self._rows()
        table = (f"<table><thead><tr>{_html_cells(head, 'th')}</tr></thead><tbody>"
                 + "".join(f"<tr>{_html_cells(row, 'td')}</tr>" for row in body) + "</tbody></table>")
        note = f"<p><small>{html.escape(self._footnote())}</small></p>" if self.front else ""
        return f'<div class="greenjupyter-compare">{title}{table}{note}</div>'

    def figure(self):
        """Return a matplotlib Figure: each run that logged the metric at (energy, metric), labelled with its
        tag; the Pareto front as a step line through its runs, ringed. ``.savefig(path)`` writes it."""
        from .report import _energy_unit, _new_figure

        scored = [r for r in self.runs if self.metric in r.metrics]
        if not scored:
            raise GreenJupyterError("no metric to plot: greenjupyter.log(accuracy=...) in the cells of tagged runs")
        if any(abs(r.metrics[self.metric]) > PLOTTABLE for r in scored):
            raise GreenJupyterError(f"{fmt.printable(self.metric)} values beyond ±{PLOTTABLE:g} cannot be plotted; "
                                    "the table shows them")
        unit, scale = _energy_unit(max(r.energy_j for r in scored))
        fig = _new_figure(figsize=(7, 4.5))
        ax = fig.add_subplot()
        ax.scatter([r.energy_j / scale for r in scored], [r.metrics[self.metric] for r in scored],
                   color="C0", zorder=2, gid="runs", label="run")
        front = sorted(self.front, key=lambda r: r.energy_j)
        xs, ys = [r.energy_j / scale for r in front], [r.metrics[self.metric] for r in front]
        ax.step(xs, ys, where="post", color="C2", zorder=1, gid="pareto-front", label="Pareto front")
        ax.scatter(xs, ys, s=120, facecolors="none", edgecolors="C2", zorder=3, gid="pareto")
        for r in scored:
            ax.annotate(fmt.printable(r.tag), (r.energy_j / scale, r.metrics[self.metric]),
                        textcoords="offset points", xytext=(5, 5), fontsize=8)
        ax.set_xlabel(f"energy ({unit})")
        ax.set_ylabel(f"{fmt.printable(self.metric)} ({'lower' if self.lower_better else 'higher'} is better)")
        ax.set_title(f"Runs: {fmt.printable(self.judged)}")
        ax.legend(fontsize=8, loc="best")
        return fig

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        return {"text/plain": self.text, "text/html": self.html}

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(self.text)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"<greenjupyter Comparison of {len(self.runs)} runs; .runs .front .text .html .figure()>"


def _html_cells(row, element: str) -> str:
    return "".join(f"<{element}>{html.escape(cell)}</{element}>" for cell in row)
