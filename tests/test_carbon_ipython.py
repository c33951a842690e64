"""Carbon in the extension: settings by magic, region resolution with its origin, CO2e on every record."""

import re

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import greenjupyter
from greenjupyter.carbon import context
from greenjupyter.carbon.footprint import operational_g
from greenjupyter.carbon.regions import lookup


@pytest.fixture
def shell(monkeypatch):
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "GOOGLE_CLOUD_REGION", "CLOUD_ML_REGION", "FUNCTION_REGION", "REGION_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TZ", "UTC")  # no country: the world average, unless a test says otherwise
    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext greenjupyter")
    yield shell
    shell.run_cell("%unload_ext greenjupyter")
    shell.user_ns.pop("m", None)


def run(shell, source):
    return shell.run_cell(source, store_history=True)


def text_of(shell, source):
    with capture_output() as captured:
        run(shell, source)
    return "\n".join(o.data["text/plain"] for o in captured.outputs)


def test_every_record_carries_co2e_for_the_configured_region(shell):
    run(shell, "%carbon config region=FR pue=1.1")
    run(shell, "import time; time.sleep(0.05)")
    m = greenjupyter.cells()[-1].measurement
    france = lookup("FR")
    assert (m.region, m.pue, m.intensity_g_per_kwh) == ("FR", 1.1, france.g_per_kwh)
    assert m.co2e_g == pytest.approx(m.energy_j / 3.6e6 * 1.1 * france.g_per_kwh)


def test_config_shows_every_setting_with_its_origin(shell, monkeypatch):
    run(shell, "%carbon config region=DE")
    text = text_of(shell, "%carbon config")
    assert "region" in text and "'DE'" in text and "%carbon config" in text
    assert "sample_interval_s" in text and "default" in text
    assert "grid: Germany (DE)" in text and "region: region from %carbon config" in text


@pytest.mark.parametrize(
    "line, message",
    [
        ("config region=Frnace", "did you mean France"),
        ("config pue=0.5", "pue='0.5' is refused (out of range; accepted: a number from 1 to 3"),
        ("config intensity_g_per_kwh=abc", "intensity_g_per_kwh='abc' is refused"),
        ("config colour=green", "unknown setting 'colour'"),
        ("config region", "'region' is not NAME=VALUE"),
        ("cells region=FR", "unexpected 'region=FR': %carbon cells takes nothing more"),
    ],
)
def test_bad_config_is_a_usage_error_and_changes_nothing(shell, line, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        shell.run_line_magic("carbon", line)
    settings = greenjupyter.runtime.get_settings()
    assert settings.region == "" and settings.pue is None


def test_one_cell_on_another_grid(shell):
    run(shell, "%%carbon -q -o m --region us-central1\nimport time\ntime.sleep(0.05)")
    m = shell.user_ns["m"]
    grid = lookup("gcp:us-central1")
    assert m.region == "gcp:us-central1" and m.intensity_g_per_kwh == grid.g_per_kwh and m.pue == grid.pue
    assert m.co2e_g == pytest.approx(operational_g(m.energy_j, grid.pue, grid.g_per_kwh))
    assert greenjupyter.cells()[-1].measurement.region == "WORLD"  # the session's own record keeps its grid


def test_unknown_region_for_one_cell_is_refused_before_it_runs(shell):
    with pytest.raises(UsageError, match="did you mean"):
        shell.run_cell_magic("carbon", "--region Californa", "ran = True")
    assert "ran" not in shell.user_ns


def test_region_from_the_time_zone_then_the_cloud(shell, monkeypatch):
    monkeypatch.setenv("TZ", "Europe/Paris")
    greenjupyter.runtime._located.clear()
    grid = greenjupyter.runtime.current_grid()
    assert (grid.region, grid.region_origin, grid.pue) == ("FR", "time zone Europe/Paris", 1.0)
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    greenjupyter.runtime._located.clear()
    grid = greenjupyter.runtime.current_grid()
    assert grid.region_origin == "cloud region from the environment"
    assert grid.pue == lookup("aws:eu-west-3").pue


def test_world_average_comes_with_a_hint(shell):
    text = text_of(shell, "%carbon")
    run(shell, "x = 1")
    text = text_of(shell, "%carbon")
    assert "CO2e · WORLD" in text
    assert "region: no region known: world average" in text
    assert "hint: set it with %carbon config region=FR" in text


def test_cell_result_shows_co2e_with_the_embodied_share_and_equivalents(shell):
    # 25 t embodied over 4 years is 0.198 mg per ms of use: a 0.1 s cell carries ~20 mg.
    run(shell, "%carbon config region=FR embodied_kg=25000 lifetime_years=4")
    text = text_of(shell, "%%carbon -o m\nimport time\ntime.sleep(0.1)")
    m = shell.user_ns["m"]
    share = context.auto_resource_share()[0]  # the CPUs this process may use: 1 unless restricted
    embodied = 25000e3 * m.duration_s / (4 * 365.25 * 86400) * share
    assert m.co2e_g == pytest.approx(operational_g(m.energy_j, 1.0, lookup("FR").g_per_kwh) + embodied)
    assert "CO2e · FR" in text and "% of a smartphone charge" in text


def test_jupyter_config_file_values_are_used_with_their_origin(monkeypatch):
    from traitlets.config import Config

    shell = InteractiveShell.instance()
    saved = shell.config
    config = Config(saved)
    config.GreenJupyter.region = "DE"
    config.GreenJupyter.pue = 1.25
    monkeypatch.setattr(shell, "config", config)
    shell.run_cell("%load_ext greenjupyter")
    try:
        settings = greenjupyter.runtime.get_settings()
        assert (settings.region, settings.origin["region"]) == ("DE", "config file")
        grid = greenjupyter.runtime.current_grid()
        assert (grid.region, grid.pue, grid.pue_origin) == ("DE", 1.25, "pue from config file")
    finally:
        shell.run_cell("%unload_ext greenjupyter")


def test_live_intensity_is_used_when_fresh_and_falls_back_with_one_notice(shell, monkeypatch, capsys):
    """Live readings come from a local server standing in for Electricity Maps."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from greenjupyter import runtime
    from greenjupyter.carbon import live

    answers = [(200, {"zone": "FR", "carbonIntensity": 31, "datetime": "2026-11-23T17:00:00Z"}), (401, {})]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            status, body = answers[0]
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps(body).encode())

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    real_make_live = live.make_live
    monkeypatch.setattr(live, "make_live", lambda provider, zone: real_make_live(provider, zone, base=base, ttl_s=0.0))
    monkeypatch.setenv("ELECTRICITYMAPS_TOKEN", "secret-token")
    monkeypatch.setenv("no_proxy", "*")
    try:
        run(shell, "%carbon config region=FR live_intensity=electricitymaps")
        runtime.current_grid()  # starts the first fetch in the background
        runtime._live[2].wait(5)
        grid = runtime.current_grid()
        assert grid.g_per_kwh == 31.0 and grid.intensity_source.startswith("Electricity Maps live, lifecycle")
        answers.pop(0)  # from now on the token is rejected
        runtime._live[2].wait(5)
        runtime.current_grid()
        runtime._live[2].wait(5)
        assert runtime.current_grid().g_per_kwh == 31.0  # the last good value stays
        err = capsys.readouterr().err
        assert err.count("token rejected") == 1 and "secret-token" not in err
    finally:
        server.shutdown()


def test_uk_live_intensity_is_not_applied_outside_great_britain(shell, capsys):
    from greenjupyter import runtime

    run(shell, "%carbon config region=FR live_intensity=ukci")
    grid = runtime.current_grid()
    assert grid.g_per_kwh == lookup("FR").g_per_kwh and runtime._live is None
    assert "live_intensity=ukci covers Great Britain only; FR keeps its embedded figure" in capsys.readouterr().err
