"""SCI per functional unit, (E·I + M) / R: greenjupyter.sci(), measure(units=) and %%carbon --per."""

import time

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import greenjupyter
from greenjupyter.carbon import context
from greenjupyter.carbon.sci import parse_units, per_unit, singular
from greenjupyter.errors import ConfigError, GreenJupyterError
from greenjupyter.ipython import extension
from greenjupyter.measurement import CellRecord
from greenjupyter.settings import GreenJupyter
from tests.test_settings_and_format import sample_measurement

YEAR_S = 365.25 * 86400


def run(shell, source):
    return shell.run_cell(source, store_history=True)


@pytest.fixture
def rapl_shell(powercap):
    """A real IPython shell with greenjupyter loaded on the fake RAPL tree, at a known grid."""
    shell = InteractiveShell.instance()
    run(shell, "%load_ext greenjupyter")
    run(shell, "%carbon config intensity_g_per_kwh=285 pue=1")
    yield shell
    run(shell, "%unload_ext greenjupyter")
    for name in ("m", "ran"):
        shell.user_ns.pop(name, None)


# --- the arithmetic -----------------------------------------------------------------------


def test_sci_is_e_times_i_plus_m_over_r_for_known_terms():
    # E 0.0004 kWh (1440 J, PUE 1), I 285 g/kWh, M 0.02 g, R 1000: (0.114 + 0.02) / 1000 = 0.000134 g each.
    m = sample_measurement(energy_j=1440.0, co2e_g=0.0004 * 285 + 0.02, intensity_g_per_kwh=285.0, region="XX", pue=1.0)
    s = greenjupyter.sci(m, "1000 predictions")
    assert s.energy_kwh == pytest.approx(0.0004, rel=1e-12)
    assert s.intensity_g_per_kwh == 285.0
    assert s.embodied_g == pytest.approx(0.02, rel=1e-9)
    assert (s.units, s.unit_name) == (1000.0, "predictions")
    assert s.g_per_unit == pytest.approx(0.000134, rel=1e-9)
    assert str(s) == "SCI 0.000134 gCO2e per prediction (E 0.0004 kWh × I 285 g/kWh + M 0.02 g) / R 1000 predictions"


def test_pue_and_the_embodied_share_come_from_the_footprint_greenjupyter_worked_out():
    settings = GreenJupyter()
    for name, value in (("embodied_kg", 2500), ("lifetime_years", 4), ("resource_share", 0.5)):
        settings.set(name, value, "test")
    grid = context.Grid("FR", "France", 50.0, 1.2, "test figure", "test", "test")
    m = context.footprint(sample_measurement(energy_j=3600.0, duration_s=3600.0), grid, settings)
    s = greenjupyter.sci(m, 250)
    energy_kwh = 3600.0 / 3.6e6 * 1.2  # 0.0012 kWh: PUE applied, as in the CO2e
    embodied = 2500e3 * 3600.0 / (4 * YEAR_S) * 0.5  # an hour of a 4-year life, half the machine: 35.6 g
    assert s.energy_kwh == pytest.approx(energy_kwh, rel=1e-12)
    assert s.embodied_g == pytest.approx(embodied, rel=1e-9)
    assert s.g_per_unit == pytest.approx((energy_kwh * 50.0 + embodied) / 250, rel=1e-9)
    assert s.g_per_unit == pytest.approx(m.co2e_g / 250, rel=1e-12)
    assert str(s) == (f"SCI {(0.06 + embodied) / 250:.3g} gCO2e per unit (E 0.0012 kWh (PUE 1.2 applied) × I 50 g/kWh "
                      f"+ M {embodied:.3g} g) / R 250")


def test_without_an_embodied_share_m_is_exactly_zero_and_said_so():
    m = sample_measurement(energy_j=720.0, co2e_g=720.0 / 3.6e6 * 1.1 * 400.0, intensity_g_per_kwh=400.0, pue=1.1)
    s = greenjupyter.sci(m, "3 batches")
    assert s.embodied_g == 0.0  # the CO2e is E·I alone, so nothing is left for M, not even a rounding error
    assert str(s).endswith("/ R 3 batches · M is 0: no embodied share set (setting embodied_kg)")
    assert "per batch " in str(s)


def test_a_measurement_without_co2e_has_no_sci():
    with pytest.raises(GreenJupyterError, match="has no CO2e"):
        greenjupyter.sci(sample_measurement(), 10)


def test_the_sci_of_several_cells_sums_each_term_per_kind_of_unit():
    def record(joules, intensity, units, name):
        m = sample_measurement(energy_j=joules, co2e_g=joules / 3.6e6 * intensity + 0.5, intensity_g_per_kwh=intensity, pue=1.0)
        return CellRecord(m, 1, units=units, unit_name=name)

    records = [record(3600.0, 100.0, 1000, "predictions"), record(7200.0, 400.0, 500, "predictions"),
               record(36.0, 100.0, 10, "rows"), record(99.0, 100.0, None, None),
               CellRecord(sample_measurement(), 2, units=5, unit_name="rows")]  # no CO2e: left out
    predictions, rows = per_unit(records)
    assert (predictions.units, predictions.unit_name, rows.units, rows.unit_name) == (1500, "predictions", 10, "rows")
    assert predictions.energy_kwh == pytest.approx(0.003, rel=1e-12)
    assert predictions.intensity_g_per_kwh == pytest.approx((0.001 * 100 + 0.002 * 400) / 0.003, rel=1e-12)  # 300
    assert predictions.embodied_g == pytest.approx(1.0, rel=1e-9)
    assert predictions.g_per_unit == pytest.approx((0.1 + 0.5 + 0.8 + 0.5) / 1500, rel=1e-9)


# --- what a unit is -------------------------------------------------------------------------


@pytest.mark.parametrize("given, parsed", [
    (1000, (1000.0, None)),
    (2.5, (2.5, None)),
    ("1000", (1000.0, None)),
    ("1000 predictions", (1000.0, "predictions")),
    ("1e3 rows", (1000.0, "rows")),
    ("  2.5   GB of\ttext ", (2.5, "GB of text")),
    ("1_000 images", (1000.0, "images")),
])
def test_units_accepted(given, parsed):
    assert parse_units(given) == parsed


@pytest.mark.parametrize("given, why", [
    (0, "above 0"), (-5, "above 0"), ("0 rows", "above 0"), ("-1 rows", "above 0"),
    (float("nan"), "above 0"), ("nan rows", "above 0"), (float("inf"), "above 0"), ("1e400 rows", "above 0"), ("1e-320 rows", "above 0"),
    ("predictions", "does not start with a number"), ("", "does not start with a number"),
    ("   ", "does not start with a number"), ("1,000 rows", "does not start with a number"),
    (True, "is not a number"), ([1000], "is not a number"), (None, "is not a number"),
])
def test_units_refused_name_the_value_and_what_is_accepted(given, why):
    with pytest.raises(ConfigError) as refused:
        parse_units(given, "--per")
    message = str(refused.value)
    assert message.startswith(f"--per {given!r}") and why in message
    assert 'accepted: a number above 0, alone or followed by what one unit is: 1000, "1000 predictions"' in message


@pytest.mark.parametrize("plural, one", [
    ("predictions", "prediction"), ("queries", "query"), ("batches", "batch"), ("boxes", "box"),
    ("classes", "class"), ("test images", "test image"), ("GB", "GB"), ("bus", "bus"), ("tokens", "token"),
])
def test_one_unit_is_named_in_the_singular(plural, one):
    assert singular(plural) == one


# --- measure(units=) --------------------------------------------------------------------------


def test_measure_with_units_gives_the_sci_of_its_window(powercap, monkeypatch):
    for name, value in (("INTENSITY_G_PER_KWH", "285"), ("PUE", "1.1"), ("EMBODIED_KG", "2500"),
                        ("RESOURCE_SHARE", "0.5")):
        monkeypatch.setenv(f"GREENJUPYTER_{name}", value)
    with greenjupyter.measure(units="1000 predictions") as m:
        time.sleep(0.2)
    s = m.sci
    assert m.energy_j > 0 and s.units == 1000 and s.unit_name == "predictions"
    assert s.energy_kwh == pytest.approx(m.energy_j / 3.6e6 * 1.1, rel=1e-12)
    assert s.intensity_g_per_kwh == 285.0
    assert s.embodied_g == pytest.approx(2500e3 * m.duration_s / (4 * YEAR_S) * 0.5, rel=1e-9)
    assert s.g_per_unit == pytest.approx(m.co2e_g / 1000, rel=1e-12)
    assert str(m).splitlines()[-1] == f"  {s}" and "per prediction" in str(s)
    assert "SCI " in m._repr_html_()
    assert m.result.energy_j == m.energy_j  # the Measurement itself is unchanged


def test_measure_without_units_has_no_sci_and_bad_units_are_refused_before_the_work():
    with greenjupyter.measure() as m:
        pass
    assert m.sci is None and "SCI" not in str(m)
    ran = []
    with pytest.raises(ConfigError, match=r"units 0 must be a finite number above 0"):
        with greenjupyter.measure(units=0):
            ran.append(1)
    assert ran == []


# --- %%carbon --per ------------------------------------------------------------------------


def test_a_carbon_cell_per_unit_shows_the_sci_and_keeps_the_units_in_its_record(rapl_shell):
    with capture_output() as captured:
        run(rapl_shell, '%%carbon --per "1000 predictions" -o m\nimport time\ntime.sleep(0.1)')
    m, record = rapl_shell.user_ns["m"], greenjupyter.cells()[-1]
    s = greenjupyter.sci(m, "1000 predictions")
    assert s.intensity_g_per_kwh == 285.0 and s.embodied_g == 0.0
    assert s.g_per_unit == pytest.approx(m.energy_j / 3.6e6 * 285.0 / 1000, rel=1e-12)
    (shown,) = captured.outputs
    assert shown.data["text/plain"] == f"{m}\n  {s}"
    assert f"SCI {s.g_per_unit:.3g} gCO2e per prediction" in shown.data["text/html"]
    assert (record.units, record.unit_name) == (1000.0, "predictions") and record.measurement is m
    (stored,) = [c.record for c in extension.current_recorder().store.cells() if c.record.units]
    assert (stored.units, stored.unit_name, stored.measurement.energy_j) == (1000.0, "predictions", m.energy_j)


@pytest.mark.parametrize("line, units, name", [
    ("--per 1e3 rows", 1000.0, "rows"),  # unquoted: the words after the number name the unit
    ("--per 500 -q", 500.0, None),
    ("-q --per '2 GB of text'", 2.0, "GB of text"),
])
def test_the_per_option_takes_a_number_and_an_optional_unit(rapl_shell, line, units, name):
    with capture_output() as captured:
        run(rapl_shell, f"%%carbon {line}\nran = 1")
    assert rapl_shell.user_ns["ran"] == 1
    record = greenjupyter.cells()[-1]
    assert (record.units, record.unit_name) == (units, name)
    if "-q" in line:
        assert captured.outputs == []
    else:
        assert "gCO2e per row " in captured.outputs[0].data["text/plain"]


@pytest.mark.parametrize("line, shown", [
    ("--per 0", "'0' must be a finite number above 0"),
    ("--per -3 rows", "'-3 rows' must be a finite number above 0"),
    ("--per nan", "'nan' must be a finite number above 0"),
    ("--per inf", "'inf' must be a finite number above 0"),
    ("--per predictions", "'predictions' does not start with a number"),
])
def test_a_bad_per_is_a_usage_error_naming_it_before_the_cell_runs(rapl_shell, line, shown):
    with pytest.raises(UsageError) as refused:
        rapl_shell.run_cell_magic("carbon", line, "ran = 1")
    assert f"--per {shown}" in str(refused.value) and "accepted: a number above 0" in str(refused.value)
    assert "ran" not in rapl_shell.user_ns


def test_per_is_for_the_cell_magic_only(rapl_shell):
    with pytest.raises(UsageError, match="--per applies only to the cell magic"):
        rapl_shell.run_line_magic("carbon", "cells --per 5")


def test_the_hooks_record_no_units_for_a_plain_cell(rapl_shell):
    run(rapl_shell, "x = 1")
    record = greenjupyter.cells()[-1]
    assert (record.units, record.unit_name, dict(record.metrics), record.tag) == (None, None, {}, None)


# --- the report ---------------------------------------------------------------------------


def test_the_report_states_the_sci_when_units_were_given(rapl_shell):
    from greenjupyter import report

    run(rapl_shell, "%%carbon --per 200 images -q\nimport time\ntime.sleep(0.05)")
    run(rapl_shell, "%%carbon --per 300 images -q\nimport time\ntime.sleep(0.05)")
    records = greenjupyter.cells()
    (s,) = per_unit(records)
    assert s.units == 500 and s.g_per_unit == pytest.approx(sum(r.measurement.co2e_g for r in records[-2:]) / 500)
    text = report.summary(records, format="text")
    assert f"SCI {s.g_per_unit:.3g} gCO2e per image" in " ".join(text.split())
    assert "SCI" not in report.summary(records[:-2], format="text").replace("embodied share (SCI)", "")
