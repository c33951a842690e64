"""Exports (CodeCarbon-compatible CSV, JSON) and reports (summaries, figures) over hand-built cell records."""

import csv
import io
import json
import re
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from greenjupyter import CellRecord, ConfigError, GreenJupyterError, Measurement, __version__
from greenjupyter import export, report
from greenjupyter.carbon.context import grid_for
from greenjupyter.settings import GreenJupyter
from greenjupyter.sources import detect_cpu_memory, detect_gpus

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
IMG = "<img src=x onerror=alert(1)>"
NOTEBOOK = "50%_done & more.ipynb"
# CodeCarbon 3.3.2's emissions.csv columns, in order (codecarbon/output_methods/emissions_data.py, EmissionsData).
CODECARBON_EMISSIONS_CSV = (
    "timestamp project_name run_id experiment_id duration emissions emissions_rate cpu_power gpu_power "
    "ram_power cpu_energy gpu_energy ram_energy energy_consumed water_consumed country_name country_iso_code "
    "region cloud_provider cloud_region os python_version codecarbon_version cpu_count cpu_model gpu_count "
    "gpu_model longitude latitude ram_total_size tracking_mode cpu_utilization_percent gpu_utilization_percent "
    "ram_utilization_percent ram_used_gb on_cloud pue wue"
).split()


def cell(count, at_s, duration_s, components, estimated=(), source="", co2e_g=None, region="FR",
         intensity=750.0, pue=1.0, uncertainty_j=0.0, success=True, error=None, failed=()):
    energy = sum(components.values())
    m = Measurement(
        started_at=T0 + timedelta(seconds=at_s),
        duration_s=duration_s,
        energy_j=energy,
        components=components,
        estimated=bool(estimated),
        avg_power_w=energy / duration_s,
        peak_power_w=energy / duration_s * 1.5,
        uncertainty_j=uncertainty_j,
        estimated_components=tuple(estimated),
        failed_components=tuple(failed),
        co2e_g=co2e_g,
        intensity_g_per_kwh=None if co2e_g is None else intensity,
        region=None if co2e_g is None else region,
        pue=None if co2e_g is None else pue,
    )
    return CellRecord(m, count, cell_id=f"id-{count}", notebook=NOTEBOOK, success=success, error=error, source_preview=source)


@pytest.fixture
def records():
    return [
        # 7,200 J = 0.002 kWh, all measured; 1.5 g = 0.0015 kg.
        cell(1, 0, 10.0, {"cpu:package-0": 3600.0, "dram:0": 3600.0}, source="x = load()", co2e_g=1.5, uncertainty_j=0.5),
        # All estimated, and the cell failed.
        cell(2, 20, 5.0, {"cpu:process": 90.0, "dram:process": 10.0}, estimated=("cpu:process", "dram:process"),
             source="1/0", co2e_g=0.02, success=False, error="ZeroDivisionError"),
        # Two GPUs, on a US state's grid; the costliest cell.
        cell(3, 60, 60.0, {"cpu:package-0": 1000.0, "dram:0": 200.0, "gpu:0": 18000.0, "gpu:1": 2000.0},
             source=IMG, co2e_g=2.0, region="US-CA", intensity=200.0, uncertainty_j=2.0),
        # RAPL without a DRAM zone: measured CPU, estimated memory; a cloud region.
        cell(5, 180, 1.0, {"cpu:package-0": 50.0, "dram:process": 5.0}, estimated=("dram:process",),
             source="fit()", co2e_g=0.01, region="gcp:europe-west1", intensity=126.43, pue=1.1),
    ]


def read_csv(text):
    return list(csv.DictReader(io.StringIO(text)))


def csv_text(records):
    out = io.StringIO()
    export.to_csv(records, out)
    return out.getvalue()


# --- CSV -------------------------------------------------------------------------------------


def test_csv_header_has_codecarbons_names_in_codecarbons_order_then_ours(records):
    header = next(csv.reader(io.StringIO(csv_text(records))))
    shared = [name for name in header if name in CODECARBON_EMISSIONS_CSV]
    assert header[: len(shared)] == shared  # CodeCarbon's columns come first ...
    assert shared == [name for name in CODECARBON_EMISSIONS_CSV if name in shared]  # ... in its order
    for name in ("timestamp", "duration", "emissions", "emissions_rate", "cpu_energy", "gpu_energy", "ram_energy",
                 "energy_consumed", "cpu_power", "gpu_power", "ram_power", "country_iso_code", "region", "pue"):
        assert name in shared
    assert header[len(shared):] == list(export.OWN_COLUMNS)
    for name in ("execution_count", "cell_id", "notebook", "success", "error", "estimated", "uncertainty_j",
                 "intensity_g_per_kwh", "source_preview", "components_j"):
        assert name in export.OWN_COLUMNS


def test_csv_values_in_codecarbons_units(records):
    first, failed, gpu, cloud = read_csv(csv_text(records))
    assert first["energy_consumed"] == "0.002"  # 7,200 J
    assert first["emissions"] == "0.0015"  # 1.5 g, in kg
    assert first["cpu_energy"] == first["ram_energy"] == "0.001" and first["gpu_energy"] == "0.0"
    assert first["cpu_power"] == first["ram_power"] == "360.0"  # 3,600 J over 10 s
    assert float(first["emissions_rate"]) == pytest.approx(0.0015 / 10)  # kg/s
    assert first["duration"] == "10.0" and first["pue"] == "1.0"
    assert first["timestamp"] == "2025-03-01T12:00:10+00:00"  # when the cell ended, as CodeCarbon stamps a run
    assert first["started_at"] == "2025-03-01T12:00:00+00:00"
    assert (first["country_iso_code"], first["country_name"], first["region"], first["on_cloud"]) == ("FRA", "France", "", "N")
    assert (first["project_name"], first["experiment_id"]) == (NOTEBOOK, "id-1")
    assert (failed["success"], failed["error"], failed["estimated"]) == ("False", "ZeroDivisionError", "True")
    assert json.loads(failed["estimated_components"]) == ["cpu:process", "dram:process"]
    assert float(gpu["gpu_energy"]) == pytest.approx(20000 / 3.6e6) and float(gpu["gpu_power"]) == pytest.approx(20000 / 60)
    assert (gpu["country_iso_code"], gpu["region"]) == ("USA", "california")
    assert (cloud["cloud_provider"], cloud["cloud_region"], cloud["on_cloud"], cloud["country_iso_code"]) == ("gcp", "europe-west1", "Y", "BEL")
    assert float(cloud["ram_energy"]) == pytest.approx(5 / 3.6e6)  # dram:process counts as RAM


def test_csv_round_trip(records, tmp_path):
    path = tmp_path / "cells.csv"
    export.export(records, path)
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(records)
    for row, record in zip(rows, records):
        m = record.measurement
        assert json.loads(row["components_j"]) == dict(m.components)
        assert float(row["energy_consumed"]) * 3.6e6 == pytest.approx(m.energy_j)
        assert float(row["emissions"]) * 1000 == pytest.approx(m.co2e_g)
        assert float(row["duration"]) == m.duration_s and float(row["uncertainty_j"]) == m.uncertainty_j
        assert datetime.fromisoformat(row["started_at"]) == m.started_at
        assert row["source_preview"] == record.source_preview and row["notebook"] == NOTEBOOK
        assert int(row["execution_count"]) == record.execution_count and row["cell_id"] == record.cell_id
        assert float(row["intensity_g_per_kwh"]) == m.intensity_g_per_kwh and row["grid_region"] == m.region


def test_csv_leaves_unknown_carbon_empty():
    (row,) = read_csv(csv_text([cell(7, 0, 2.0, {"cpu:process": 4.0}, estimated=("cpu:process",))]))
    assert row["emissions"] == row["emissions_rate"] == row["pue"] == row["country_iso_code"] == ""
    assert row["energy_consumed"] == str(4.0 / 3.6e6)


# Texts a spreadsheet would run (OWASP's CSV injection examples), and ones it would not.
FORMULAS = ("=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(1+1)", "\t=1+1", "\r=1+1")


def test_csv_neutralises_every_text_that_a_spreadsheet_would_run_and_json_keeps_it(tmp_path):
    records = [
        CellRecord(cell(i, i, 2.0, {"cpu:process": -1.0 if i == 0 else 4.0}).measurement, i, cell_id=formula,
                   notebook=formula, success=False, error=formula, source_preview=formula)
        for i, formula in enumerate(FORMULAS)
    ] + [cell(9, 9, 2.0, {"cpu:process": 4.0}, source="x = '=1+1'  # safe: starts with x")]
    rows = read_csv(csv_text(records))
    for row, formula in zip(rows, FORMULAS):
        for column in ("source_preview", "notebook", "project_name", "error", "cell_id", "experiment_id"):
            assert row[column] == "'" + formula, column
    assert rows[-1]["source_preview"] == "x = '=1+1'  # safe: starts with x"
    # Numbers stay numbers, a negative one included (a spreadsheet reads -1 as a number, not a formula).
    assert float(rows[0]["cpu_energy"]) == pytest.approx(-1.0 / 3.6e6) and rows[0]["duration"] == "2.0"
    assert not any(value.startswith(("=", "+", "@", "\t", "\r")) for row in rows for value in row.values())
    export.export(records, tmp_path / "cells.json")
    assert [r.source_preview for r in export.read_json(tmp_path / "cells.json")] == [*FORMULAS, records[-1].source_preview]


# --- JSON ------------------------------------------------------------------------------------


def test_json_round_trip_keeps_every_field(records, tmp_path):
    path = tmp_path / "cells.json"
    export.export(records, path)
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["schema"] == export.SCHEMA and document["generator"] == f"greenjupyter {__version__}"
    first = document["cells"][0]
    assert set(first) == set(CellRecord.__dataclass_fields__)
    assert set(first["measurement"]) == set(Measurement.__dataclass_fields__)
    assert first["measurement"]["started_at"] == "2025-03-01T12:00:00+00:00"
    assert export.read_json(path) == records


def test_unknown_extension_is_refused_with_the_accepted_ones(records, tmp_path):
    with pytest.raises(ConfigError) as caught:
        export.export(records, tmp_path / "cells.xlsx")
    assert "'.xlsx'" in str(caught.value) and ".csv" in str(caught.value) and ".json" in str(caught.value)
    assert not (tmp_path / "cells.xlsx").exists()


# --- summaries -------------------------------------------------------------------------------


@pytest.fixture
def context(gpus):
    settings = GreenJupyter()
    settings.set("region", "FR", "test")
    detection = detect_cpu_memory("/nonexistent-powercap")
    detection.extend(detect_gpus())
    yield detection, grid_for(settings), settings
    for source in detection.sources:
        source.close()


def test_markdown_summary_states_totals_grid_and_what_was_measured(records, context):
    detection, grid, settings = context
    text = report.summary(records, detection, grid, settings)
    assert text.startswith("## Compute and emissions\n\n") and "| Quantity | Value |" in text
    assert "4 cells of the notebook “50%\\_done \\& more.ipynb”" in text and "1 of them raised an error" in text
    assert "0.007932 kWh (28,555 J)" in text  # 7,200 + 100 + 21,200 + 55 J
    assert "3.53 g CO2e" in text and "≈ 0.28 smartphone charges" in text  # 1.5 + 0.02 + 2 + 0.01 g
    assert "France (FR), 44.18 gCO2e/kWh (Ember 2024 via CO2.js, lifecycle, annual average, location-based)" in text
    assert "PUE 1 (default for a machine of your own)" in text
    assert "Measured by hardware counters: cpu:package-0, dram:0, gpu:0, gpu:1." in text
    assert "Estimated from a model" in text and "cpu:process, dram:process." in text
    assert "Measured sources: gpu:0: NVIDIA H100 80GB HBM3, NVML total-energy counter; NVML index 0, GPU-" in text
    assert "; gpu:1: Tesla P100" in text
    assert "Estimated sources: cpu:process: kernel CPU time" in text and "Not available: rapl (no powercap tree" in text
    assert "no embodied share is included" in text
    assert "read the energy counters at the start and end of each cell" in text
    assert "| gpu:0 | 0.005 kWh (18,000 J), measured |" in text
    assert "| dram:process | 4.167e-06 kWh (15 J), estimated |" in text


def test_summary_says_when_an_embodied_share_is_included(records, context):
    detection, grid, settings = context
    settings.set("embodied_kg", "2500", "test")
    text = " ".join(report.summary(records, detection, grid, settings, format="text").split())  # unwrapped
    assert "includes an embodied share (SCI): 2500 kg CO2e" in text and "4-year life" in text


def test_summary_says_which_devices_were_shared_with_other_processes(records, context):
    detection, grid, settings = context
    m = records[2].measurement.replace(shared_components=("gpu:0",))
    text = " ".join(report.summary([records[0], records[2].__class__(m, 3)], detection, grid, settings, format="text").split())
    assert "Shared with other processes during some cells, so those figures are the whole device's" in text
    assert "include others' energy: gpu:0." in text
    assert "Shared with other" not in report.summary(records, detection, grid, settings, format="text")


def test_summary_from_records_alone(records):
    text = " ".join(report.summary(records, format="text").split())
    assert "Grid (source not given): FR at 750 gCO2e/kWh, PUE 1" in text and "gcp:europe-west1" in text
    assert "0.007932 kWh" in text and "Hardware:" not in text
    assert report.summary([], format="text").startswith("Compute and emissions\n\nNo cells were measured.")
    with pytest.raises(ConfigError, match="accepted: markdown, latex, html, text"):
        report.summary(records, format="docx")


def test_latex_summary_escapes_and_balances(records, context):
    detection, grid, settings = context
    tricky = cell(9, 300, 100.0, {"gpu:0": 1e6}, source=r"cost = price$ ^ {2} ~ #tag \ back", co2e_g=100.0)
    text = report.summary(records + [tricky], detection, grid, settings, format="latex")
    assert r"50\%\_done \& more.ipynb" in text
    assert r"price\$ \textasciicircum{} \{2\} \textasciitilde{} \#tag \textbackslash{} back" in text
    assert r"\textless{}img src=x onerror=alert(1)\textgreater{}" not in text  # not the costliest any more
    assert r"CO\textsubscript{2}e" in text and r"\begin{tabular}{ll}" in text and r"\end{tabular}" in text
    assert r"\documentclass" not in text
    # Every special character left is part of a command we wrote: none bare from a value.
    bare = re.sub(r"\\[a-zA-Z]+|\\[%_&#${}]|\$\\[a-z]+\$|\\\\", "", text)
    assert not re.search(r"[%_&#$~^]", bare.replace(" & ", " "))  # table column separators aside
    assert text.count("{") - text.count(r"\{") == text.count("}") - text.count(r"\}")
    assert not re.search(r"[≈×±µ…→“”—]", text)  # pdflatex's UTF-8 input does not know these


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no pdflatex on this machine")
def test_latex_summary_compiles(records, context, tmp_path):
    detection, grid, settings = context
    tricky = cell(9, 300, 100.0, {"gpu:0": 1e6}, source=r"cost = price$ ^ {2} ~ #tag \ back <x> | y … é", co2e_g=100.0)
    body = report.summary(records + [tricky], detection, grid, settings, format="latex")
    (tmp_path / "doc.tex").write_text("\\documentclass{article}\n\\begin{document}\n" + body + "\\end{document}\n")
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:]
    assert "Warning" not in run.stdout


def test_html_summary_escapes_every_value(records, context):
    detection, grid, settings = context
    text = report.summary(records, detection, grid, settings, format="html")
    assert "<img" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text  # the costliest cell's preview
    assert "50%_done &amp; more.ipynb" in text and "CO<sub>2</sub>e" in text
    assert text.startswith('<section class="greenjupyter-summary"><h3>') and "<table>" in text


HOSTILE_NAME = "evil\n# heading\n$x$ ~~gone~~ &amp; \x1b]0;pwned\x07.ipynb"
HOSTILE_PREVIEW = "print('\x1b[2J\x1b]0;title\x07') # $E=mc^2$ \u202eevil"


def hostile_records():
    return [
        CellRecord(cell(1, 0, 1.0, {"cpu:process": 10.0}).measurement, 1, notebook=HOSTILE_NAME, source_preview="x"),
        CellRecord(cell(2, 5, 1.0, {"cpu:process": 90.0}).measurement, 2, notebook=HOSTILE_NAME,
                   success=False, error="Err\x1b[31m", source_preview=HOSTILE_PREVIEW),
    ]


@pytest.mark.parametrize("form", report.FORMATS)
def test_summaries_escape_control_characters_from_names_and_previews(form):
    text = report.summary(hostile_records(), format=form)
    assert not re.search("[\x00-\x09\x0b-\x1f\x7f\u202e]", text)  # newlines are the summary's own
    assert "pwned" in text and "title" in text  # shown, escaped, not dropped
    if form == "text":
        assert "evil\\n# heading\\n$x$ ~~gone~~ &amp; \\x1b]0;pwned\\x07.ipynb" in " ".join(text.split())
        assert "\\x1b[2J\\x1b]0;title\\x07" in text and "\\u202eevil" in text


def test_markdown_summary_escapes_newlines_maths_and_entities_in_names_and_previews():
    text = report.summary(hostile_records(), format="markdown")
    line, paragraph = text.split("\n\n")[1:3]  # the sentence to quote, then the details
    assert "\n" not in line and line.startswith("The analysis in this notebook (2 cells, 2 s) used 100 J")
    assert "\n" not in paragraph and "\\\\n\\# heading\\\\n" in paragraph  # the name's newlines as text
    assert "\\$x\\$" in paragraph and "\\$E=mc^2\\$" in paragraph  # no maths from a name or a preview
    assert "\\~\\~gone\\~\\~" in paragraph and "\\&amp;" in paragraph
    # Every $ ~ & left in the whole document is escaped.
    assert not re.search(r"(?<!\\)[$~&]", text)


# --- figures ---------------------------------------------------------------------------------


def test_energy_figure_stacks_each_cells_components(records):
    fig = report.energy_figure(records)
    (ax,) = fig.axes
    assert ax.get_ylabel() == "energy (Wh)"  # the largest cell, 21,200 J, is over 1 Wh
    expected = {  # joules per (group, estimated) per cell
        "CPU": [3600, 0, 1000, 50], "memory": [3600, 0, 200, 0], "CPU, estimated": [0, 90, 0, 0],
        "memory, estimated": [0, 10, 0, 5], "GPU 0": [0, 0, 18000, 0], "GPU 1": [0, 0, 2000, 0],
    }
    bars = {container.get_label(): container.patches for container in ax.containers}
    assert set(bars) == set(expected)
    for label, patches in bars.items():
        assert [p.get_height() for p in patches] == pytest.approx([j / 3600 for j in expected[label]])
        assert all(p.get_hatch() == ("//" if "estimated" in label else None) for p in patches)
    tops = [max(p.get_y() + p.get_height() for patches in bars.values() for p in [patches[i]]) for i in range(4)]
    assert tops == pytest.approx([r.measurement.energy_j / 3600 for r in records])  # stacked, not overlaid
    labels = ax.get_xticklabels()
    assert [t.get_text() for t in labels] == ["1", "2", "3", "5"]
    assert labels[1].get_color() == "tab:red"  # cell 2 raised an error


def span_x(patch):
    xs = patch.get_patch_transform().transform(patch.get_path().vertices)[:, 0]
    return min(xs), max(xs)


def test_power_figure_shades_each_cell(records):
    clock = T0.timestamp() - 1000.0  # perf_counter read 1000 at 12:00:00 UTC
    samples = [report_sample(995.0 + i, 100.0 + i) for i in range(200)]  # 995 .. 1195
    late = cell(8, 3600, 5.0, {"cpu:process": 1.0}, estimated=("cpu:process",))  # an hour later: no samples
    fig = report.power_figure(samples, records + [late], t0_wall=clock)
    (ax,) = fig.axes
    spans = [p for p in ax.patches if p.get_gid() == "cell"]
    assert len(spans) == len(records)
    assert [span_x(p) for p in spans] == [
        pytest.approx(x) for x in [(5, 15), (25, 30), (65, 125), (185, 186)]  # seconds since the first sample
    ]
    assert [t.get_text() for t in ax.texts] == ["[1]", "[2]", "[3]", "[5]"]  # execution counts, as Jupyter shows them
    (line,) = ax.lines
    assert max(line.get_ydata()) == 299.0 and ax.get_ylabel() == "power (W)"
    assert "2025-03-01 11:59:55 UTC" in ax.get_xlabel()
    same = report.power_figure(samples, records, t0_wall=datetime.fromtimestamp(clock, timezone.utc))
    assert [span_x(p) for p in same.axes[0].patches] == [span_x(p) for p in spans]


def report_sample(t0, watts):
    from greenjupyter.sampler import Sample

    return Sample(t0, t0 + 1.0, ("cpu:package-0",), (watts,), watts)


def test_figures_save_and_show_inline(records, tmp_path):
    fig = report.energy_figure(records)
    path = tmp_path / "energy.png"
    report.save(fig, path)
    assert path.read_bytes().startswith(b"\x89PNG") and path.stat().st_size > 1000
    assert fig._repr_png_().startswith(b"\x89PNG")
    report.save(report.power_figure([], records, t0_wall=0.0), tmp_path / "power.pdf")
    assert (tmp_path / "power.pdf").read_bytes().startswith(b"%PDF")


def test_figures_leave_pyplot_and_the_backend_alone():
    code = (
        # The raw rcParams value: matplotlib.get_backend() would itself import pyplot.
        "import sys, matplotlib; backend = lambda: dict.__getitem__(matplotlib.rcParams, 'backend')\n"
        "before = backend()\n"
        "from greenjupyter import report\n"
        "report.save(report.energy_figure([]), '/dev/null', format='png')\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n"
        "assert backend() == before, 'backend changed'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_without_matplotlib_figures_say_how_to_install_it_and_summaries_still_work(records, monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(GreenJupyterError, match="pip install matplotlib"):
        report.energy_figure(records)
    with pytest.raises(GreenJupyterError, match="pip install matplotlib"):
        report.power_figure([], records, t0_wall=0.0)
    assert "0.007932 kWh" in report.summary(records)
