"""The report page and the sentence to quote: what they say, that the page stands alone and prints,
that no legend covers a bar, the CLI's page and figures from a real history, and the page in Chromium."""

import base64
import os
import re
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
from IPython.utils.capture import capture_output

from greenjupyter import CellRecord, __version__, cli, report
from greenjupyter.carbon.context import grid_for
from greenjupyter.ipython import extension
from greenjupyter.settings import GreenJupyter
from greenjupyter.store import Store, StoredCell
from tests.test_report_export import cell

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
FR = 44.18  # g/kWh: France, Ember 2024 via CO2.js, as the embedded table has it
PNG = b"\x89PNG\r\n\x1a\n"


def fr_cell(count, at_s, duration_s, components, estimated=(), uncertainty_j=0.0, **options):
    """A cell on the French grid, its CO2e worked out from its energy as the meter would."""
    co2e_g = sum(components.values()) / 3.6e6 * FR
    return cell(count, at_s, duration_s, components, estimated, co2e_g=co2e_g, intensity=FR,
                uncertainty_j=uncertainty_j, **options)


@pytest.fixture
def records():
    return [
        # 7,200 J read from counters, ± 3.6 J.
        fr_cell(1, 0, 10.0, {"cpu:package-0": 5400.0, "dram:0": 1800.0}, uncertainty_j=3.6, source="df = load()"),
        # RAPL without a DRAM zone: 3,600 J measured and 360 J of estimated memory.
        fr_cell(2, 30, 5.0, {"cpu:package-0": 3600.0, "dram:process": 360.0}, estimated=("dram:process",),
                source="model.fit(df)"),
    ]


@pytest.fixture
def france():
    settings = GreenJupyter()
    settings.set("region", "FR", "test")
    return grid_for(settings), settings


# --- the sentence to quote -------------------------------------------------------------------


def test_summary_line_gives_energy_its_accuracy_co2e_the_grid_and_what_measured_it(records, france):
    grid, settings = france
    # 11,160 J = 0.0031 kWh; 10,800 J measured (96.8%) ± 3.6 J (0.033%); 360 J estimated (3.23%);
    # 0.0031 kWh × 44.18 g/kWh = 137 mg.
    assert report.summary_line(records, None, grid, settings) == (
        f"The analysis in this notebook (2 cells, 15 s) used 0.0031 kWh of electricity (96.8% read from hardware "
        f"counters, to within ± 0.033%; 3.23% estimated from a model, with no error bound), emitting about 137 mg "
        f"CO2e on the FR grid (2024 average from Ember 2024 via CO2.js, 44.18 g/kWh, PUE 1), measured with "
        f"greenjupyter {__version__} (RAPL counters for the CPU and memory, an estimate for memory)."
    )
    assert 11160 / 3.6e6 * FR == pytest.approx(0.137, abs=0.0005)  # the 137 mg above


def test_summary_line_without_the_grid_reads_the_records(records):
    line = report.summary_line(records)
    assert "on the FR grid (2024 average from Ember 2024 via CO2.js, 44.18 g/kWh, PUE 1)" in line


def shared(record, component):
    return CellRecord(record.measurement.replace(shared_components=(component,)), record.execution_count)


@pytest.mark.parametrize("make, expected", [
    # All from counters: the bound alone.
    (lambda: [fr_cell(1, 0, 2.0, {"gpu:0": 3.6e6}, uncertainty_j=360.0)],
     "used 1 kWh of electricity (read from hardware counters, to within ± 0.01%)"),
    # All estimated, small: no bound claimed, and no "1.9e-07 kWh".
    (lambda: [fr_cell(1, 0, 0.4, {"cpu:process": 0.672, "dram:process": 0.0042}, estimated=("cpu:process", "dram:process"))],
     "used 676 mJ of electricity (estimated from a model, with no error bound)"),
    # Two GPUs, one shared with other processes; a lost component.
    (lambda: [shared(cell(1, 0, 2.0, {"gpu:0": 100.0, "gpu:1": 100.0}, failed=("cpu:package-0",)), "gpu:1")],
     "(NVML for 2 GPUs; gpu:1: whole device, shared with other processes; cpu:package-0: lost during some cells)"),
    # CO2e known for some cells only, on two grids.
    (lambda: [fr_cell(1, 0, 1.0, {"gpu:0": 10.0}), cell(2, 5, 1.0, {"gpu:0": 10.0}, co2e_g=1.0, region="US-CA"),
              cell(3, 9, 1.0, {"gpu:0": 10.0})],
     "emitting about 1 g CO2e (for the 2 cells whose CO2e is known) on 2 grids (FR, US-CA), measured"),
    # An intensity that is not the table's: its source is not invented.
    (lambda: [cell(1, 0, 1.0, {"gpu:0": 10.0}, co2e_g=1.0, intensity=123.0)],
     "on the FR grid (source not recorded, 123 g/kWh, PUE 1)"),
])
def test_summary_line_says_what_was_measured_estimated_or_lost(make, expected):
    assert expected in report.summary_line(make())


def test_summary_line_names_the_live_source_and_the_embodied_share(france):
    grid, settings = france
    settings.set("embodied_kg", "2500", "test")
    live = grid.__class__(**{**grid.__dict__, "g_per_kwh": 61.0, "intensity_source": "electricitymaps live, lifecycle"})
    line = report.summary_line([cell(1, 0, 1.0, {"gpu:0": 10.0}, co2e_g=1.0, intensity=61.0)], None, live, settings)
    assert "on the FR grid (electricitymaps live, lifecycle, 61 g/kWh, PUE 1), an embodied share included, measured" in line


def test_every_format_opens_with_the_line_and_keeps_it_paste_ready(records, france):
    grid, settings = france
    line = report.summary_line(records, None, grid, settings)
    markdown = report.summary(records, None, grid, settings, "markdown")
    assert markdown.split("\n\n")[1] == line  # the first paragraph, as it is: nothing in it needs escaping
    assert "<" not in markdown  # no HTML in the markdown
    text = report.summary(records, None, grid, settings, "text")
    assert " ".join(text.split("\n\n")[1].split()) == line
    html_text = report.summary(records, None, grid, settings, "html")
    assert '<p class="greenjupyter-line">The analysis in this notebook (2 cells' in html_text
    assert "137 mg CO<sub>2</sub>e on the FR grid" in html_text


def test_latex_line_is_escaped(records, france):
    grid, settings = france
    latex = report.summary(records, None, grid, settings, "latex")
    first = latex.split("\n\n")[0].split("\n", 1)[1]  # after \paragraph{...}
    assert first == report.latex_escape(report.summary_line(records, None, grid, settings))
    assert r"96.8\% read from hardware counters, to within $\pm$ 0.033\%; 3.23\%" in first
    assert r"137 mg CO\textsubscript{2}e" in first
    assert not re.search(r"(?<!\\)[%&_#]", first)  # every special character escaped
    # A notebook name full of LaTeX's specials, in the details that follow.
    assert r"50\%\_done \& more.ipynb" in latex


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no pdflatex on this machine")
def test_latex_line_with_an_odd_region_from_a_history_compiles(tmp_path):
    odd = cell(1, 0, 1.0, {"gpu:0": 10.0}, co2e_g=1.0, region="lab_#1 & 50%~{x}")
    body = report.summary([odd], format="latex")
    assert r"on the lab\_\#1 \& 50\%\textasciitilde{}\{x\} grid" in body
    (tmp_path / "doc.tex").write_text("\\documentclass{article}\n\\begin{document}\n" + body + "\\end{document}\n")
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:]


# --- the page --------------------------------------------------------------------------------


class Tags(HTMLParser):
    """Every start tag with its attributes, and the text of <style> elements."""

    def __init__(self, text):
        super().__init__()
        self.tags, self.styles, self._in_style = [], [], False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data)


def images(page: str) -> list[bytes]:
    return [base64.b64decode(attrs["src"].split(",", 1)[1]) for tag, attrs in Tags(page).tags if tag == "img"]


def test_page_stands_alone_and_prints_well(records, france):
    grid, settings = france
    page = report.page(records, grid=grid, settings=settings, title="analysis & co.ipynb")
    parsed = Tags(page)
    assert page.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in page
    # Nothing to fetch: no script, no link, no external URL in any attribute or in the CSS.
    assert not [tag for tag, _ in parsed.tags if tag in ("script", "link", "iframe", "object", "embed")]
    for tag, attrs in parsed.tags:
        for name in ("src", "href", "srcset", "action", "poster"):
            assert not attrs.get(name) or attrs[name].startswith("data:image/png;base64,"), (tag, name)
    css = "".join(parsed.styles)
    assert "url(" not in css and "@import" not in css and "@font-face" not in css
    assert not re.search(r"https?://", page)
    # Styled, and printable: no figure, table or the quoted line split across pages.
    assert "@media print" in css and "@page" in css
    assert re.search(r"@media print\{.*\.gj-report figure,[^}]*break-inside:avoid", css, re.S)
    # Both figures embedded, as PNGs, each with a caption.
    pictures = images(page)
    assert len(pictures) == 2 and all(p.startswith(PNG) and len(p) > 5000 for p in pictures)
    assert page.count("<figcaption><b>Figure ") == 2
    assert "<title>Compute and emissions: analysis &amp; co.ipynb</title>" in page


def test_page_reads_in_order_line_totals_figures_then_method(records, france):
    grid, settings = france
    page = report.page(records, grid=grid, settings=settings)
    line = report._h(report.summary_line(records, None, grid, settings))
    order = [page.index(part) for part in (
        "<h1>Compute and emissions</h1>", f'<p class="gj-line">{line}</p>', "<h2>Totals</h2>",
        "<td>Energy</td><td>0.0031 kWh (11,160 J)</td>", "<b>Figure 1.</b> Energy of each cell",
        "<b>Figure 2.</b> Average power of each cell", "<h2>Details, method and sources</h2>",
        "<li>Method: greenjupyter",
    )]
    assert order == sorted(order)
    assert "<td>CO<sub>2</sub>e</td><td>137 mg</td>" in page
    assert "Hatched: estimated from a model" in page  # cell 2's memory
    assert "Red labels" not in page  # no cell failed


def test_page_escapes_what_notebooks_wrote():
    hostile = [cell(1, 0, 1.0, {"gpu:0": 5.0}, source="<script>alert(1)</script>"),
               cell(2, 2, 1.0, {"gpu:0": 9.0}, source="<img src=http://x/y onerror=alert(1)>")]
    page = report.page(hostile, title="<b>x</b>")
    assert "<script" not in page and "<img src=http" not in page and "<b>x</b>" not in page
    assert "&lt;img src=http://x/y onerror=alert(1)&gt;" in page  # shown, as text
    assert all(attrs.get("src", "data:").startswith("data:") for _, attrs in Tags(page).tags)


def test_page_without_matplotlib_says_so_and_keeps_the_text(records, monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    page = report.page(records)
    assert "No figure: figures need matplotlib: pip install matplotlib" in page and "<img" not in page
    assert "The analysis in this notebook (2 cells, 15 s)" in page


def test_page_inside_a_notebook_is_the_same_article_with_scoped_style(records):
    inner = report.page(records, standalone=False)
    assert inner.startswith("<style>") and "<html" not in inner and "<body" not in inner
    rules = re.sub(r"@media print\{|\}\s*$", "", Tags(inner).styles[0].strip())
    selectors = [s.strip() for block in re.findall(r"([^{}]+)\{", rules) for s in block.split(",")]
    assert selectors and all(s.startswith(".gj-report") for s in selectors), selectors  # the notebook's styles untouched
    assert len(images(inner)) == 2


# --- figures: the legend never covers a bar ---------------------------------------------------


def many(n, tallest):
    """``n`` cells, cell ``tallest`` far above the others, mixed measured, estimated and GPU parts."""
    return [
        cell(i + 1, 10 * i, 2.0, {"cpu:package-0": 50.0 * (1 + i % 3) * (20 if i == tallest else 1), "dram:process": 10.0,
                                  "gpu:0": 80.0 * (20 if i == tallest else 1)}, estimated=("dram:process",))
        for i in range(n)
    ]


@pytest.mark.parametrize("n, tallest", [(1, 0), (4, 0), (4, 3), (12, 0), (12, 11), (60, 0), (60, 30)])
def test_energy_legend_covers_no_bar(n, tallest):
    fig = report.energy_figure(many(n, tallest))
    renderer = fig.canvas.get_renderer()
    fig.canvas.draw()
    (ax,) = fig.axes
    legend = ax.get_legend().get_window_extent(renderer)
    bars = [p for container in ax.containers for p in container.patches if p.get_height() > 0]
    top = max(bars, key=lambda p: p.get_y() + p.get_height())
    assert top.get_x() == pytest.approx(tallest - 0.4)  # the tallest bar is among those checked
    for bar in bars:
        assert not legend.overlaps(bar.get_window_extent(renderer)), (n, tallest, bar.get_x())
    assert not legend.overlaps(ax.get_window_extent(renderer))  # outside the axes: nothing there to cover
    assert fig.get_tightbbox(renderer).contains(legend.x1 / fig.dpi - 0.01, legend.y0 / fig.dpi + 0.01)  # and saved


def test_power_legend_is_outside_the_axes(records):
    fig = report.power_figure([], records, t0_wall=0.0)
    renderer = fig.canvas.get_renderer()
    fig.canvas.draw()
    (ax,) = fig.axes
    assert not ax.get_legend().get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))


def test_energy_caption_says_what_the_hatching_and_colours_mean(records):
    assert "Hatched: estimated from a model; solid: read from hardware counters." in report.energy_caption(records)
    guessed = [cell(1, 0, 1.0, {"cpu:process": 2.0}, estimated=("cpu:process",), success=False)]
    caption = report.energy_caption(guessed)
    assert "Every part is estimated from a model (hatched)" in caption and "solid" not in caption
    assert "Red labels: cells that raised an error." in caption
    assert "Hatched" not in report.energy_caption([cell(1, 0, 1.0, {"gpu:0": 2.0})])


def test_method_speaks_of_counters_only_when_some_were_read():
    guessed = [cell(1, 0, 1.0, {"cpu:process": 2.0}, estimated=("cpu:process",))]
    text = " ".join(report.summary(guessed, format="text").split())
    assert "measured each cell from its start to its end; components without a counter were estimated" in text
    assert "counters at the start" not in text


def test_power_labels_leave_out_those_that_would_overlap():
    # A burst of 60 short cells, then one long one: [n] labels 1/30 of the axis apart at least.
    burst = [cell(i + 1, 0.05 * i, 0.02, {"gpu:0": 1.0}) for i in range(60)] + [cell(61, 10, 50.0, {"gpu:0": 9.0})]
    fig = report.power_figure([], burst, t0_wall=0.0)
    (ax,) = fig.axes
    xs = [text.get_position()[0] for text in ax.texts]
    assert ax.texts[0].get_text() == "[1]" and ax.texts[-1].get_text() == "[61]"
    assert 2 <= len(xs) <= 30 and min(b - a for a, b in zip(xs, xs[1:])) >= 60 / 30
    assert len([p for p in ax.patches if p.get_gid() == "cell"]) == 61  # every cell still shaded


# --- the power figure from a history, which keeps no samples ----------------------------------


def test_power_figure_without_samples_draws_each_cells_average_power(records):
    slow = fr_cell(7, 3600, 100.0, {"gpu:0": 25_000.0})  # an hour later: the axis turns to minutes
    fig = report.power_figure([], records + [slow], t0_wall=0.0)
    (ax,) = fig.axes
    (line,) = ax.lines
    assert line.get_label() == "average power of each cell"
    xs, ys = list(line.get_xdata()), list(line.get_ydata())
    steps = [(xs[i], xs[i + 1], ys[i]) for i in range(0, len(xs), 3)]  # begin, end, watts; then a break
    assert steps == [pytest.approx((0, 10 / 60, 720)), pytest.approx((0.5, 35 / 60, 792)),
                     pytest.approx((60, 61 + 40 / 60, 250))]
    assert all(y != y for y in ys[2::3])  # NaN between cells: nothing is known there
    assert ax.get_xlabel() == "minutes since 2025-03-01 12:00:00 UTC"
    assert fig.cells_shown == 3
    assert "history keeps no power samples" in report.power_caption(records, [], fig.cells_shown)
    assert "1 cell ran outside the sampled period and is not shown." in report.power_caption(records, ["s"], 1)


# --- the CLI, over a real history database -----------------------------------------------------


def history_with(records, path):
    store = Store(str(path))
    for record in records:
        store.add(StoredCell(record, "session-1", "kernel-1", "cpu"))
    store.close()
    return str(path)


def test_cli_report_writes_the_page_with_both_figures_and_the_figure_files(records, tmp_path, capsys):
    db = history_with(records, tmp_path / "history.sqlite")
    page_path, figures = tmp_path / "report.html", tmp_path / "figures"
    assert cli.main(["report", "--db", db, "--output", str(page_path), "--figures", str(figures)]) == 0
    err = capsys.readouterr().err
    assert f"report on 2 cells written to {page_path}" in err and "figures written: " in err
    page = page_path.read_text(encoding="utf-8")
    assert len(images(page)) == 2 and all(p.startswith(PNG) for p in images(page))
    # The line, with the numbers of the stored cells; the grid as recorded with them (source from the table).
    assert "used 0.0031 kWh of electricity (96.8% read from hardware counters, to within ± 0.033%" in page
    assert "137 mg CO<sub>2</sub>e on the FR grid (2024 average from Ember 2024 via CO2.js, 44.18 g/kWh, PUE 1)" in page
    assert "Average power of each cell over its own run" in page and "history keeps no power samples" in page
    for name in ("energy-per-cell", "power-over-time"):
        assert (figures / f"{name}.pdf").read_bytes().startswith(b"%PDF")
        assert (figures / f"{name}.png").read_bytes().startswith(PNG)

    assert cli.main(["report", "--db", db, "--format", "html"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("<!DOCTYPE html>") and len(images(printed)) == 2
    assert cli.main(["report", "--db", db, "--format", "latex"]) == 0
    latex = capsys.readouterr().out
    assert r"to within $\pm$ 0.033\%; 3.23\% estimated" in latex and r"137 mg CO\textsubscript{2}e" in latex
    assert cli.main(["report", "--db", db, "--format", "markdown", "--notebook", "/elsewhere", "--figures", str(figures)]) == 0
    assert "no cells, so no figures" in capsys.readouterr().err


def test_cli_figures_into_a_place_that_cannot_be_a_folder(records, tmp_path, capsys):
    db = history_with(records, tmp_path / "history.sqlite")
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli.main(["report", "--db", db, "--figures", str(blocker / "figures")]) == 2
    assert f"cannot write the figures into {blocker / 'figures'}" in capsys.readouterr().err


# --- in a notebook ------------------------------------------------------------------------------


def test_carbon_report_html_shows_the_page_and_markdown_the_figures_beside(shell):
    shell.run_cell("%carbon config region=FR", store_history=True)
    shell.run_cell("sum(range(200000))", store_history=True)
    sampler = extension.current_recorder().meter.sampler
    ticks = len(sampler.samples) + 2  # samples that reach past the cell, whatever the machine's load
    deadline = time.monotonic() + 30
    while len(sampler.samples) < ticks and time.monotonic() < deadline:
        time.sleep(0.05)
    with capture_output() as captured:
        shell.run_cell("%carbon report --format html", store_history=True)
    (output,) = captured.outputs
    page = output.data["text/html"]
    assert '<article class="gj-report">' in page and page.startswith("<style>")
    assert len(images(page)) == 2 and '<p class="gj-line">This analysis (' in page  # run outside a notebook
    assert "as the sampler read it" in page  # this session's samples, not per-cell averages
    assert output.data["text/plain"].startswith("Compute and emissions")
    with capture_output() as captured:
        shell.run_cell("%carbon report", store_history=True)
    kinds = [set(o.data) for o in captured.outputs]
    assert "text/markdown" in kinds[0] and sum("image/png" in k for k in kinds[1:]) == 2


# --- in Chromium ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    sys.path.insert(0, str(ROOT / "bench"))
    import panel_redraw  # bench/ is not a package; it knows where Debian's Chromium is and how to start it

    if not os.path.exists(panel_redraw.CHROMIUM):
        pytest.skip(f"no Chromium at {panel_redraw.CHROMIUM}: scripts/test.sh installs Debian's as root")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=panel_redraw.CHROMIUM, args=panel_redraw.CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_page_in_chromium_shows_both_figures_without_errors(browser, records, tmp_path, france):
    grid, settings = france
    path = tmp_path / "report.html"
    path.write_text(report.page(records, grid=grid, settings=settings, title="analysis.ipynb"), encoding="utf-8")
    context = browser.new_context(viewport={"width": 1100, "height": 900}, offline=True)
    page = context.new_page()
    problems, requests = [], []
    page.on("console", lambda m: m.type in ("error", "warning") and problems.append((m.type, m.text)))
    page.on("pageerror", lambda error: problems.append(("pageerror", str(error))))
    page.on("request", lambda r: requests.append(r.url))
    try:
        page.goto(path.as_uri(), wait_until="load")
        sizes = page.eval_on_selector_all(
            "figure img", "imgs => imgs.map(i => [i.complete, i.naturalWidth, i.getBoundingClientRect().width, "
            "i.getBoundingClientRect().height])")
        assert len(sizes) == 2
        for complete, natural, width, height in sizes:
            assert complete and natural > 500 and 300 < width <= 1100 and height > 150
        assert problems == []
        assert [url for url in requests if not url.startswith(("file:", "data:"))] == []
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report-page.png"), full_page=True)
        # Printed, the print rules apply: no figure split across two pages.
        page.emulate_media(media="print")
        assert page.eval_on_selector_all("figure", "fs => fs.map(f => getComputedStyle(f).breakInside)") == ["avoid"] * 2
        assert page.pdf(format="A4").startswith(b"%PDF")
    finally:
        context.close()
