"""Settings from the environment, the measure() API and human-readable figures."""

import math
import time
from datetime import datetime, timezone

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from traitlets import TraitError
from traitlets.config import Config

import greenjupyter
from greenjupyter import ConfigError, cli, format as fmt, runtime
from greenjupyter.measurement import Measurement
from greenjupyter.settings import LIMITS, GreenJupyter, accepted, load
from tests.kernels import kernel_environment, kernel_manager


def test_environment_values_are_used_with_their_origin(monkeypatch):
    monkeypatch.setenv("GREENJUPYTER_SAMPLE_INTERVAL_S", "0.5")
    settings = load()
    assert settings.sample_interval_s == 0.5
    assert settings.origin["sample_interval_s"] == "environment GREENJUPYTER_SAMPLE_INTERVAL_S"
    assert settings.origin["cells_kept"] == "default"


@pytest.mark.parametrize(
    "value, message",
    [
        ("fast", "sample_interval_s='fast' is refused (accepted: a number from 0.01 to 60)"),
        ("0", "sample_interval_s='0' is refused (out of range; accepted: a number from 0.01 to 60)"),
    ],
)
def test_bad_environment_value_keeps_the_default_and_says_why(monkeypatch, capsys, value, message):
    monkeypatch.setenv("GREENJUPYTER_SAMPLE_INTERVAL_S", value)
    assert load().sample_interval_s == 0.25
    assert message in capsys.readouterr().err


def test_later_layers_win_and_each_value_keeps_its_origin(monkeypatch):
    config = Config()
    config.GreenJupyter.pue = 1.3
    config.GreenJupyter.region = "DE"
    monkeypatch.setenv("GREENJUPYTER_REGION", "FR")
    settings = load(config)
    assert (settings.pue, settings.origin["pue"]) == (1.3, "config file")
    assert (settings.region, settings.origin["region"]) == ("FR", "environment GREENJUPYTER_REGION")
    settings.set("region", "us-central1", "%carbon config")
    assert (settings.region, settings.origin["region"]) == ("us-central1", "%carbon config")


def test_bad_config_file_value_is_reported_and_skipped(capsys):
    config = Config()
    config.GreenJupyter.pue = 0.8
    assert load(config).pue is None
    assert "config file: pue=0.8 is refused (out of range; accepted: a number from 1 to 3, or empty for automatic)" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize(
    "name, raw, message",
    [
        ("pue", "-1", "pue='-1' is refused (out of range; accepted: a number from 1 to 3, or empty for automatic)"),
        ("intensity_g_per_kwh", "lots", "intensity_g_per_kwh='lots' is refused (accepted: a number from 0 to 2,000"),
        ("units", "furlongs", "units='furlongs' is refused (accepted: one of 'auto', 'metric', 'imperial')"),
        ("cells_kept", "2.5", "cells_kept='2.5' is refused (accepted: a whole number from 1 to 1,000,000)"),
    ],
)
def test_bad_values_name_the_value_and_what_is_accepted_and_keep_the_old_one(name, raw, message):
    settings = load()
    before = getattr(settings, name)
    with pytest.raises(ConfigError) as caught:
        settings.set(name, raw, "%carbon config")
    assert str(caught.value).startswith(message)
    assert getattr(settings, name) == before and settings.origin[name] == "default"


def test_empty_means_automatic_for_optional_numbers():
    settings = load()
    settings.set("pue", "1.2", "%carbon config")
    settings.set("pue", "", "%carbon config")
    assert settings.pue is None


def test_unknown_setting_suggests_and_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown setting 'regoin'; did you mean region\\? Known settings: cells_kept"):
        load().set("regoin", "FR", "%carbon config")


def test_measure_as_context_manager_and_decorator():
    with greenjupyter.measure() as m:
        time.sleep(0.05)
    assert isinstance(m.result, Measurement) and m.duration_s >= 0.05 and m.energy_j >= 0
    assert m.region is not None and m.co2e_g == pytest.approx(m.energy_j / 3.6e6 * m.pue * m.intensity_g_per_kwh)

    measured = greenjupyter.measure()

    @measured
    def work(n):
        return sum(range(n))

    assert work(10**5) == 4999950000
    first = measured.result
    work(10**6)
    assert measured.result is not first and measured.result.duration_s > 0


def test_measure_result_is_not_available_inside_the_block():
    with greenjupyter.measure() as m:
        with pytest.raises(AttributeError, match="not finished yet"):
            m.energy_j


def test_sources_api_says_what_is_missing():
    report = greenjupyter.sources()
    assert [u.kind for u in report.unavailable] == ["rapl", "nvml"]
    assert "missing   nvml: no NVIDIA driver loaded" in str(report)


@pytest.mark.parametrize(
    "joules, text",
    [(0.000123, "0.123 mJ"), (0.5, "500 mJ"), (12.34, "12.3 J"), (359, "359 J"), (3600, "1 Wh"), (7.2e6, "2 kWh")],
)
def test_energy_units(joules, text):
    assert fmt.energy(joules) == text


@pytest.mark.parametrize("seconds, text", [(0.0000123, "12 µs"), (0.25, "250 ms"), (12.5, "12.5 s"), (125, "2 min 5 s"), (7380, "2 h 3 min")])
def test_durations(seconds, text):
    assert fmt.duration(seconds) == text


def sample_measurement(**changes):
    fields = dict(
        started_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
        duration_s=2.0,
        energy_j=240.0,
        components={"cpu:package-0": 200.0, "dram:0": 40.0},
        estimated=False,
        avg_power_w=120.0,
        peak_power_w=150.0,
        uncertainty_j=0.24,
    )
    fields.update(changes)
    return Measurement(**fields)


def test_measurement_text_and_html_escape_everything():
    m = sample_measurement(components={"<img src=x onerror=alert(1)>": 240.0})
    assert str(m).splitlines()[0] == "240 J ± 240 mJ in 2 s · avg 120 W, peak 150 W · measured"
    assert "<img" not in m._repr_html_() and "&lt;img" in m._repr_html_()


@pytest.mark.parametrize("text, shown", [
    ("x\x1b]0;pwned\x07y", "x\\x1b]0;pwned\\x07y"),  # retitles a terminal when printed raw
    ("a\nb\r\tc", "a\\nb\\r\\tc"),
    ("\x00\x7f\x85\x9b", "\\x00\\x7f\\x85\\x9b"),  # NUL, DEL, C1 NEL and CSI
    ("\u202eevil\u2066\u2028", "\\u202eevil\\u2066\\u2028"),  # bidi overrides and a line separator
    ("é ≈ 漢字 🌍 \\x1b", "é ≈ 漢字 🌍 \\x1b"),  # printable text and backslashes stay as they are
    (None, ""),
])
def test_printable_escapes_control_characters_as_python_writes_them(text, shown):
    assert fmt.printable(text) == shown


def test_tables_of_cells_and_sessions_escape_what_comes_from_notebooks():
    from greenjupyter.history import sessions
    from greenjupyter.measurement import CellRecord
    from greenjupyter.store import StoredCell

    m = sample_measurement()
    hostile = CellRecord(m, 3, notebook="a\nb\x1b[2J.ipynb", success=False, error="E\x07", source_preview="x = '\x1b]0;t\x07'")
    cells = fmt.cells_text([CellRecord(m, 1, source_preview="ok"), hostile])
    assert cells.count("\n") == 2 and not any(c in cells for c in "\x1b\x07")
    assert cells.splitlines()[2].endswith("x = '\\x1b]0;t\\x07'  [E\\x07]")
    history = fmt.sessions_text(sessions([StoredCell(hostile, "s1")]), hostile.notebook)
    assert history.splitlines()[0] == "greenjupyter history for a\\nb\\x1b[2J.ipynb (newest first)"
    assert history.count("\n") == 2 and "\x1b" not in history


def test_partly_estimated_measurement_says_which_part():
    m = sample_measurement(estimated=True, estimated_components=("dram:process",), failed_components=("gpu:0",))
    assert "partly estimated (dram:process)" in str(m)
    assert "failed: gpu:0" in str(m)
    assert m.energy_kwh == pytest.approx(240 / 3.6e6)


# --- no numeric setting accepts NaN or infinity, whichever way it arrives ---------------------

POISON = ["nan", "inf", "-inf", "NaN", "1e999"]  # 1e999 reads as float infinity
ROUTES = ["%carbon config", "environment", "config file", "attribute", "command line"]


def _cases():
    for name in sorted(LIMITS):
        for raw in POISON:
            for route in ROUTES:
                if route != "command line" or name == "pue":  # the only setting with its own flag
                    yield pytest.param(name, raw, route, id=f"{name}-{raw}-{route}")


@pytest.mark.parametrize("name, raw, route", list(_cases()))
def test_no_numeric_setting_accepts_nan_or_infinity_from_any_route(name, raw, route, monkeypatch, capsys, tmp_path):
    default = GreenJupyter.class_traits()[name].default_value
    if route == "%carbon config":
        shell = InteractiveShell.instance()
        shell.run_line_magic("load_ext", "greenjupyter")
        try:
            with pytest.raises(UsageError) as caught:
                shell.run_line_magic("carbon", f"config {name}={raw}")
            value = getattr(runtime.get_settings(), name)
        finally:
            shell.run_line_magic("unload_ext", "greenjupyter")
        said = str(caught.value)
    elif route == "environment":
        monkeypatch.setenv(f"GREENJUPYTER_{name.upper()}", raw)
        value = getattr(load(), name)
        said = capsys.readouterr().err
        assert said.count(f"{name}='{raw}' is refused") == 1  # said once, then the default is used
    elif route == "config file":
        config = Config()
        config.GreenJupyter[name] = float(raw)  # what c.GreenJupyter.<name> = float('nan') puts there
        value = getattr(load(config), name)
        said = capsys.readouterr().err
        assert said.count(f"config file: {name}={float(raw)!r} is refused") == 1
    elif route == "attribute":
        settings = load()
        with pytest.raises(TraitError) as caught:
            setattr(settings, name, float(raw))
        value, said = getattr(settings, name), str(caught.value)
        assert repr(float(raw)) in said
    else:
        notebook = tmp_path / "ok.ipynb"
        notebook.write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
        assert cli.main(["measure", str(notebook), f"--pue={raw}"]) == 2  # "--pue -inf" would read as an option
        said, value = capsys.readouterr().err, default
    assert value == default and (value is None or math.isfinite(value))
    if route != "attribute" or name != "cells_kept":  # traitlets' own Int refuses a float first
        assert f"accepted: {accepted(name)}" in said


def test_refusals_say_whether_the_value_is_not_finite_or_out_of_range():
    settings = load()
    with pytest.raises(ConfigError, match=r"^pue='NaN' is refused \(not a finite number; accepted: a number from 1 to 3"):
        settings.set("pue", "NaN", "%carbon config")
    with pytest.raises(ConfigError, match=r"^resource_share='0' is refused \(out of range; accepted: a number above 0 up to 1, "
                                          r"or empty for automatic\)"):
        settings.set("resource_share", "0", "%carbon config")
    settings.set("resource_share", "1", "%carbon config")
    settings.set("pue", "1.2", "%carbon config")
    with pytest.raises(TraitError, match=r"^pue=inf is refused \(not a finite number; accepted: a number from 1 to 3"):
        settings.pue = float("inf")
    assert (settings.pue, settings.origin["pue"], settings.resource_share) == (1.2, "%carbon config", 1.0)


def test_the_extension_loads_with_poisoned_environment_and_config_values(monkeypatch, capsys):
    # Before, GREENJUPYTER_SAMPLE_INTERVAL_S=nan stopped the extension from loading at all.
    monkeypatch.setenv("GREENJUPYTER_SAMPLE_INTERVAL_S", "nan")
    monkeypatch.setenv("GREENJUPYTER_HISTORY_S", "inf")
    shell = InteractiveShell.instance()
    shell.config.GreenJupyter.pue = float("nan")
    try:
        shell.run_line_magic("load_ext", "greenjupyter")
        result = shell.run_cell("x = sum(range(1000))", store_history=True)
        settings = runtime.get_settings()
        records = greenjupyter.cells()
        shell.run_line_magic("unload_ext", "greenjupyter")
    finally:
        del shell.config["GreenJupyter"]
    assert result.success
    assert (settings.sample_interval_s, settings.history_s, settings.pue) == (0.25, 3600.0, None)
    assert len(records) == 1 and math.isfinite(records[0].measurement.co2e_g)
    err = capsys.readouterr().err
    assert "could not load" not in err
    for said in ("environment GREENJUPYTER_SAMPLE_INTERVAL_S: sample_interval_s='nan' is refused (not a finite number",
                 "environment GREENJUPYTER_HISTORY_S: history_s='inf' is refused (not a finite number",
                 "config file: pue=nan is refused (not a finite number; accepted: a number from 1 to 3"):
        assert err.count(said) == 1


def test_a_real_kernel_loads_the_extension_despite_poisoned_settings(tmp_path):
    # An IPython profile whose kernel config sets pue to NaN, and NaN in the environment.
    profile = tmp_path / "ipython" / "profile_default"
    profile.mkdir(parents=True)
    (profile / "ipython_kernel_config.py").write_text("c.GreenJupyter.pue = float('nan')\n")
    env = {**kernel_environment(tmp_path), "IPYTHONDIR": str(tmp_path / "ipython"),
           "GREENJUPYTER_SAMPLE_INTERVAL_S": "nan"}
    manager = kernel_manager(tmp_path)
    manager.start_kernel(env=env)
    client = manager.client()
    try:
        client.start_channels()
        client.wait_for_ready(timeout=60)
        code = ("%load_ext greenjupyter\nsum(range(1000))\nimport greenjupyter.runtime as r\n"
                "s = r.get_settings()\nprint(s.sample_interval_s, s.pue, s.origin['pue'])")
        out, err = [], []

        def collect(message):
            if message["msg_type"] == "stream":
                (out if message["content"]["name"] == "stdout" else err).append(message["content"]["text"])

        reply = client.execute_interactive(code, timeout=60, output_hook=collect)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    assert reply["content"]["status"] == "ok"
    assert "".join(out).strip() == "0.25 None default"
    err = "".join(err)
    assert "could not load" not in err
    assert "sample_interval_s='nan' is refused (not a finite number; accepted: a number from 0.01 to 60)" in err
    assert "config file: pue=nan is refused (not a finite number" in err
