"""What if it ran elsewhere: the rows' arithmetic and choice, against the data files read here
independently; the magic in a real IPython shell; greenjupyter.whatif(); the CLI over a history."""

import csv
import math
import os

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import greenjupyter
from greenjupyter import cli, runtime
from greenjupyter import format as fmt
from greenjupyter.carbon import context, regions, whatif
from greenjupyter.errors import ConfigError, GreenJupyterError
from greenjupyter.settings import load

CLOUD_VARS = ("AWS_REGION", "AWS_DEFAULT_REGION", "GOOGLE_CLOUD_REGION", "CLOUD_ML_REGION", "FUNCTION_REGION", "REGION_NAME")
KWH = 3.6e6


def table(name):
    with open(os.path.join(regions.DATA_DIR, name), newline="", encoding="utf-8") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def setup(monkeypatch, **values):
    """Settings with ``values`` set, and the Grid they give (as the grid in force)."""
    for name in CLOUD_VARS:
        monkeypatch.delenv(name, raising=False)
    settings = load()
    for name, value in values.items():
        settings.set(name, value, "test")
    return settings, context.grid_for(settings)


def by_region(result):
    return {row.region: row for row in result}


def test_every_row_is_energy_times_pue_times_intensity(monkeypatch):
    settings, grid = setup(monkeypatch, region="FR")
    result = whatif.compare(2 * KWH, grid, settings, "aws:eu-north-1,US-CA")
    yours, *others = result
    assert (yours.region, yours.g_per_kwh, yours.pue, yours.change_pct) == ("FR", 44.18, 1.0, 0.0)
    assert yours.co2e_g == pytest.approx(2 * 44.18, rel=1e-12)
    assert yours.why.startswith("your grid (region: region from test")
    for row in result:
        assert row.energy_j == 2 * KWH
        assert row.co2e_g == pytest.approx(2 * row.pue * row.g_per_kwh, rel=1e-12)
        assert row.change_pct == pytest.approx((row.pue * row.g_per_kwh / 44.18 - 1) * 100, rel=1e-12)
    # Figures worked out by hand from the data files: Stockholm is on Sweden's grid at AWS's PUE.
    sweden = next(r for r in table("countries.csv") if r["alpha2"] == "SE")
    aws = next(r for r in table("cloud_regions.csv") if r["code"] == "aws:eu-north-1")
    row = by_region(result)["aws:eu-north-1"]
    assert (row.g_per_kwh, row.pue) == (float(sweden["g_per_kwh"]), float(aws["pue"])) == (35.89, 1.15)
    assert row.co2e_g == pytest.approx(2 * 1.15 * 35.89, rel=1e-12)  # 82.547 g
    assert row.change_pct == pytest.approx((1.15 * 35.89 / 44.18 - 1) * 100, rel=1e-12)  # -6.58 %
    assert row.pue_origin == "AWS's published PUE" and row.why == "named"
    california = by_region(result)["US-CA"]
    assert california.pue == 1.0 and california.pue_origin.startswith("none (1.0)")
    assert "eGRID2023" in california.source and "direct" in california.source
    # Your grid first, then the others from the lowest CO2e.
    assert [r.co2e_g for r in others] == sorted(r.co2e_g for r in others)


def test_the_rows_chosen_off_a_cloud_follow_the_stated_rules(monkeypatch):
    settings, grid = setup(monkeypatch, region="DE")
    result = whatif.compare(KWH, grid, settings)
    # The cleanest region of each provider, worked out from cloud_regions.csv and the grids they map to.
    countries = {r["alpha2"]: float(r["g_per_kwh"]) for r in table("countries.csv")}
    grids = {**countries, **{r["code"]: float(r["g_per_kwh"]) for r in table("subnational.csv")}}
    clouds = table("cloud_regions.csv")

    def intensity(row):
        return float(row["g_per_kwh"]) if row["g_per_kwh"] else grids.get(row["grid"], countries[row["grid"][:2]])

    for provider, label in (("gcp", "Google Cloud"), ("aws", "AWS"), ("azure", "Azure")):
        rows = [r for r in clouds if r["code"].startswith(provider + ":")]
        best = min(rows, key=lambda r: (intensity(r), r["code"]))
        [chosen] = [r for r in result if r.why == f"cleanest {label} region"]
        assert chosen.region == best["code"] and chosen.g_per_kwh == intensity(best) and chosen.pue == float(best["pue"])
    # Well-known grids: the 3 lowest and 3 highest countries among those hosting a cloud region.
    hosts = sorted({r["grid"].split("-")[0] for r in clouds if r["grid"]}, key=lambda c: (countries[c], c))
    assert [r.region for r in result if r.why == "low-carbon grid"] == hosts[:3]
    assert [r.region for r in result if r.why == "high-carbon grid"] == hosts[-3:]
    assert len(result) == 1 + 3 + 6


def test_on_a_cloud_region_the_cleanest_others_of_that_provider(monkeypatch):
    settings, grid = setup(monkeypatch, region="us-central1", pue="1.3")
    result = whatif.compare(KWH, grid, settings)
    yours = result[0]
    assert (yours.region, yours.pue) == ("gcp:us-central1", 1.3)  # the pue setting wins for your grid, as for cells
    google = sorted((float(r["g_per_kwh"]), r["code"]) for r in table("cloud_regions.csv")
                    if r["code"].startswith("gcp:") and r["code"] != "gcp:us-central1")
    cloud_rows = [r for r in result if r.why.startswith("cleanest")]
    assert [r.region for r in cloud_rows] == [code for _, code in google[:3]]
    assert all(r.why == "cleanest Google Cloud region" and r.pue == 1.1 for r in cloud_rows)
    # A country grid takes the pue setting, and says so.
    country = next(r for r in result if r.why == "low-carbon grid")
    assert country.pue == 1.3 and country.pue_origin == "pue from test"
    assert "gcp:us-central1" not in [r.region for r in result[1:]]


def test_named_regions_merge_and_an_unknown_one_is_left_out_with_suggestions(monkeypatch):
    settings, grid = setup(monkeypatch, region="FR")
    result = whatif.compare(KWH, grid, settings, ["SE, us-central1", "Frnace", "FR", " "])
    rows = by_region(result)
    assert rows["SE"].why == "low-carbon grid; named"  # one row, both reasons
    assert rows["gcp:us-central1"].why == "named"
    assert [r.region for r in result].count("FR") == 1  # your own grid named again is not repeated
    assert result.notes[1:] == ["left out: unknown region 'Frnace'; did you mean France (FR)?"]
    assert result.notes[0].startswith("lifecycle and direct figures side by side")  # Ember and Google's
    assert len(result) == 1 + 3 + 6 + 1  # everything else still shown
    text = result.text()
    assert "left out: unknown region 'Frnace'; did you mean France (FR)?" in text


@pytest.mark.parametrize("energy", [math.nan, math.inf, -1.0, "12", True, None])
def test_energy_that_cannot_be_is_refused_naming_it(monkeypatch, energy):
    settings, grid = setup(monkeypatch, region="FR")
    with pytest.raises(ConfigError) as caught:
        whatif.compare(energy, grid, settings)
    assert f"energy_j={energy!r} is refused; accepted: a number of joules, 0 or more" == str(caught.value)


def test_a_region_that_is_not_text_is_refused(monkeypatch):
    settings, grid = setup(monkeypatch, region="FR")
    with pytest.raises(ConfigError, match="regions: 42 is not a region name"):
        whatif.compare(KWH, grid, settings, ["FR", 42])


def test_a_grid_of_zero_intensity_has_no_change_in_percent(monkeypatch):
    settings, grid = setup(monkeypatch, region="FR", intensity_g_per_kwh="0")
    result = whatif.compare(KWH, grid, settings)
    assert all(r.change_pct is None for r in result) and result[0].co2e_g == 0.0
    assert "intensity_g_per_kwh from test" in result[0].source
    assert " n/a " in result.text()


def test_text_html_and_dataframe_say_where_the_figures_come_from(monkeypatch):
    settings, grid = setup(monkeypatch, region="FR")
    result = whatif.compare(0.5 * KWH, grid, settings, "us-central1", scope="a test")
    text = result.text()
    assert text.startswith("greenjupyter what if: 500 Wh of IT energy (a test) on other grids")
    assert "your grid: Ember 2024 via CO2.js, lifecycle, annual average, location-based; PUE 1" in text
    assert "other rows: embedded annual averages (" in text and "Google Cloud region-carbon-info 2025, direct" in text
    assert "  FR  " in text and "22.1 g" in text and "−" in text  # France: 0.5 kWh x 44.18 g/kWh
    page = result._repr_html_()
    assert page.count("<tr>") == len(result) + 1 and "Montréal" in page and "<script" not in page
    pandas = pytest.importorskip("pandas")
    frame = result.to_dataframe()
    assert isinstance(frame, pandas.DataFrame) and list(frame["region"]) == [r.region for r in result]
    assert frame["co2e_g"].iloc[0] == pytest.approx(0.5 * 44.18)


# --- in IPython ---------------------------------------------------------------------------------


@pytest.fixture
def in_notebook(monkeypatch):
    monkeypatch.setenv("JPY_SESSION_NAME", "analysis.ipynb")


@pytest.fixture
def shell(monkeypatch):
    for name in CLOUD_VARS:
        monkeypatch.delenv(name, raising=False)
    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext greenjupyter")
    shell.run_cell("%carbon config region=FR")
    yield shell
    shell.run_cell("%unload_ext greenjupyter")
    for name in ("r", "total", "greenjupyter"):
        shell.user_ns.pop(name, None)


def shown(shell, source):
    """(text/plain, text/html) of what ``source`` displayed."""
    with capture_output() as captured:
        result = shell.run_cell(source, store_history=True)
    result.raise_error()
    return [(o.data["text/plain"], o.data.get("text/html")) for o in captured.outputs]


def session_energy():
    from greenjupyter.ipython.extension import current_recorder

    return current_recorder().totals.energy_j


def test_the_magic_shows_the_session_as_a_table_text_and_html(shell):
    shell.run_cell("sum(i * i for i in range(300_000))")
    shell.run_cell("sum(i * i for i in range(300_000))")
    energy = session_energy()
    assert energy > 0
    [(text, page)] = shown(shell, "%carbon whatif --regions us-central1,Narnia")
    assert text.startswith(f"greenjupyter what if: {fmt.energy(energy)} of IT energy")
    assert "of IT energy (this session's 3 cells)" in text  # two sums and the %carbon config cell
    assert "left out: unknown region 'Narnia'" in text and "gcp:us-central1" in text
    assert "<table>" in page and "Narnia" in page


def test_whatif_returns_rows_of_the_session_energy(shell):
    shell.run_cell("sum(i * i for i in range(200_000))")
    before = session_energy()
    shell.run_cell("import greenjupyter; r = greenjupyter.whatif(regions=['SE'])")
    result = shell.user_ns["r"]
    assert isinstance(result, list) and isinstance(result[0], whatif.WhatIfRow)
    assert result.energy_j == pytest.approx(before, rel=1e-12)
    assert result[0].region == "FR" and result[0].co2e_g == pytest.approx(before / KWH * 44.18, rel=1e-12)
    given = greenjupyter.whatif(energy_j=KWH, regions="IS")
    assert by_region(given)["IS"].co2e_g == pytest.approx(float(next(
        r for r in table("countries.csv") if r["alpha2"] == "IS")["g_per_kwh"]), rel=1e-12)


def test_stored_cells_by_since_and_notebook(in_notebook, shell):
    for _ in range(3):
        shell.run_cell("sum(i * i for i in range(200_000))")
    from greenjupyter.ipython.extension import current_recorder

    current_recorder().finish()
    stored = runtime.get_store().cells()  # what the next cell reads: it is not stored before it ends
    total = sum(c.record.measurement.energy_j for c in stored)
    [(text, _)] = shown(shell, "%carbon whatif --since 1h")
    assert text.startswith(f"greenjupyter what if: {fmt.energy(total)} of IT energy ({len(stored)} stored cells in "
                           "the last 1h)")
    assert greenjupyter.whatif(since="1h").energy_j > total > 0  # now with the %carbon whatif cell
    [(text, _)] = shown(shell, "%carbon whatif --notebook")  # alone: this notebook's
    assert "stored cells of analysis.ipynb)" in text
    [(text, _)] = shown(shell, "%carbon whatif --notebook other.ipynb")
    assert "0 mJ of IT energy (0 stored cells of other.ipynb)" in text


@pytest.mark.parametrize(("line", "message"), [
    ("%carbon cells --regions FR", "--regions applies only to %carbon whatif, not to %carbon cells"),
    ("%carbon whatif --notebook", "--notebook alone means this notebook's cells, and this kernel runs outside a notebook"),
    ("%carbon whatif --since yesterday", "since='yesterday' is not understood; accepted: a datetime, or a span"),
    ("%carbon whatif FR", "unexpected 'FR': %carbon whatif takes nothing more"),
])
def test_bad_arguments_say_what_is_accepted(shell, monkeypatch, line, message):
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    with pytest.raises(UsageError) as caught:
        shell.run_line_magic("carbon", line.removeprefix("%carbon "))
    assert message in str(caught.value)


def test_without_a_history_stored_cells_are_refused_plainly(monkeypatch):
    monkeypatch.setenv("GREENJUPYTER_DB_PATH", "off")
    for name in CLOUD_VARS:
        monkeypatch.delenv(name, raising=False)
    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext greenjupyter")
    try:
        with pytest.raises(UsageError, match="no history database in use"):
            shell.run_line_magic("carbon", "whatif --since 7d")
    finally:
        shell.run_cell("%unload_ext greenjupyter")


def test_outside_a_session_the_function_says_what_to_pass():
    with pytest.raises(GreenJupyterError, match=r"load the extension \(%load_ext greenjupyter\), or pass energy_j="):
        greenjupyter.whatif()


# --- the command line -----------------------------------------------------------------------------


def test_cli_whatif_over_the_history_reads_only(shell, tmp_path, capsys):
    for _ in range(2):
        shell.run_cell("sum(i * i for i in range(200_000))")
    shell.run_cell("%unload_ext greenjupyter")  # the kernel's rows are in; the file is left alone from here
    path = os.environ["GREENJUPYTER_DB_PATH"]
    with open(path, "rb") as f:
        before = f.read()
    from greenjupyter.store import Store

    store = Store(path, read_only=True)
    stored = store.cells()
    store.close()
    total = sum(c.record.measurement.energy_j for c in stored)
    assert cli.main(["whatif", "--regions", "FR,Narnia", "--since", "1h"]) == 0
    out = capsys.readouterr().out
    assert f"{fmt.energy(total)} of IT energy ({len(stored)} stored cells in the last 1h)" in out
    assert "left out: unknown region 'Narnia'" in out and "low-carbon grid" in out
    with open(path, "rb") as f:
        assert f.read() == before
    assert cli.main(["whatif", "--since", "soon"]) == 2
    assert "--since: since='soon' is not understood" in capsys.readouterr().err
    shell.run_cell("%load_ext greenjupyter")  # for the fixture's own unload
