"""Settings from the environment, the measure() API and human-readable figures."""

import time
from datetime import datetime, timezone

import pytest

import greenjupyter
from greenjupyter import ConfigError, format as fmt
from greenjupyter.measurement import Measurement
from traitlets.config import Config

from greenjupyter.settings import load


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


def test_partly_estimated_measurement_says_which_part():
    m = sample_measurement(estimated=True, estimated_components=("dram:process",), failed_components=("gpu:0",))
    assert "partly estimated (dram:process)" in str(m)
    assert "failed: gpu:0" in str(m)
    assert m.energy_kwh == pytest.approx(240 / 3.6e6)
