"""Footprint arithmetic against hand-computed values, and the equivalents chosen for an amount."""

import math
import os
import re
from datetime import datetime, timezone

import pytest

from greenjupyter.carbon import context
from greenjupyter.carbon.equivalents import equivalents, units_for
from greenjupyter.carbon.footprint import embodied_g, operational_g
from greenjupyter.measurement import Measurement
from greenjupyter.settings import load


def test_operational_emissions_by_hand():
    # 1 kWh (3.6 MJ) at PUE 1.1 on a 56 g/kWh grid: 1 x 1.1 x 56 = 61.6 g.
    assert operational_g(3.6e6, 1.1, 56.0) == pytest.approx(61.6)
    # 120 W for 10 s = 1,200 J = 1/3000 kWh; x 1.0 x 472.94 g/kWh = 0.157647 g.
    assert operational_g(1200.0, 1.0, 472.94) == pytest.approx(0.15764667, rel=1e-6)


def test_embodied_share_per_sci():
    # A 2,500 kg server over a 4-year life, used for one hour: 2,500,000 g x 3600 / (4 x 365.25 x 86400 s).
    assert embodied_g(3600.0, 2500.0, 4.0) == pytest.approx(71.2988, rel=1e-5)
    assert embodied_g(3600.0, 2500.0, 4.0, share=0.25) == pytest.approx(71.2988 / 4, rel=1e-5)
    assert embodied_g(3600.0, 0.0, 4.0) == 0.0


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """An 8-CPU machine whose process may use CPUs 0 and 1, with a cgroup tree under tmp_path."""
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(context, "CGROUP_ROOT", str(tmp_path / "cgroup"))
    monkeypatch.setattr(context, "PROC_SELF_CGROUP", str(tmp_path / "self-cgroup"))
    (tmp_path / "cgroup").mkdir()
    (tmp_path / "self-cgroup").write_text("0::/\n")
    context.auto_resource_share.cache_clear()
    yield tmp_path
    context.auto_resource_share.cache_clear()


def test_auto_share_is_the_cpus_this_process_may_use(machine):
    assert context.auto_resource_share() == (0.25, "auto, from CPU affinity: 2 of 8 CPUs this process may use")
    for unlimited in ("max 100000\n", "garbled\n", "0 100000\n"):  # no quota, or none that can be read
        (machine / "cgroup" / "cpu.max").write_text(unlimited)
        context.auto_resource_share.cache_clear()
        assert context.auto_resource_share()[0] == 0.25


def test_auto_share_honours_a_smaller_cgroup_quota_here_or_above(machine):
    (machine / "cgroup" / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs, fewer than the 2 of the affinity
    assert context.auto_resource_share() == (0.1875, "auto, from cgroup cpu.max: 1.5 of 8 CPUs this process may use")
    # A quota on the process's own cgroup, below the root's: the smallest one limits.
    (machine / "self-cgroup").write_text("0::/user.slice/job\n")
    (machine / "cgroup" / "user.slice" / "job").mkdir(parents=True)
    (machine / "cgroup" / "user.slice" / "job" / "cpu.max").write_text("50000 100000\n")
    context.auto_resource_share.cache_clear()
    assert context.auto_resource_share()[0] == pytest.approx(0.5 / 8)
    # A quota above the affinity changes nothing.
    (machine / "cgroup" / "user.slice" / "job" / "cpu.max").write_text("400000 100000\n")
    (machine / "cgroup" / "cpu.max").write_text("max 100000\n")
    context.auto_resource_share.cache_clear()
    assert context.auto_resource_share()[0] == 0.25


def test_auto_share_is_read_once(machine):
    assert context.auto_resource_share()[0] == 0.25
    (machine / "cgroup" / "cpu.max").write_text("100000 100000\n")
    assert context.auto_resource_share()[0] == 0.25  # cached: a cell never reads sysfs


def measured_for(duration_s, energy_j=0.0):
    return Measurement(datetime.now(timezone.utc), duration_s, energy_j, {"cpu:process": energy_j}, True, 0.0, 0.0,
                       estimated_components=("cpu:process",))


def test_footprint_charges_the_resource_share_of_the_embodied_term(machine):
    # SCI = (E x I + M) per R; an hour on a 2,500 kg server with a 4-year life, 3.6 MJ (1 kWh) on a 100 g/kWh grid:
    # E x I = 1 kWh x 1.1 x 100 = 110 g; M = 2,500,000 g x 3600 / (4 x 365.25 x 86400) x share.
    grid = context.Grid("XX", "test grid", 100.0, 1.1, "test", "test", "test")
    settings = load()
    settings.set("embodied_kg", "2500", "test")
    settings.set("resource_share", "0.5", "test")
    assert context.footprint(measured_for(3600.0, 3.6e6), grid, settings).co2e_g == pytest.approx(110 + 35.6494, rel=1e-5)
    settings.set("resource_share", "", "test")  # auto: 2 of 8 CPUs
    assert context.resource_share(settings) == (0.25, "auto, from CPU affinity: 2 of 8 CPUs this process may use")
    assert context.footprint(measured_for(3600.0, 3.6e6), grid, settings).co2e_g == pytest.approx(110 + 17.8247, rel=1e-5)
    settings.set("embodied_kg", "0", "test")
    assert context.footprint(measured_for(3600.0, 3.6e6), grid, settings).co2e_g == pytest.approx(110)


def test_config_and_report_show_the_share_and_where_it_came_from(machine):
    from greenjupyter import format as fmt, report
    from greenjupyter.measurement import CellRecord

    settings = load()
    settings.set("embodied_kg", "2500", "test")
    rows = {name: (value, origin) for name, value, origin in settings.describe()}
    assert rows["resource_share"] == (0.25, "auto, from CPU affinity: 2 of 8 CPUs this process may use")
    grid = context.Grid("XX", "test grid", 100.0, 1.0, "test", "test", "test")
    assert re.search(r"resource_share +0.25 +auto, from CPU affinity", fmt.config_text(settings.describe(), grid))
    record = CellRecord(context.footprint(measured_for(1.0, 10.0), grid, settings), 1, None, "x.ipynb", True, None, "1")
    text = " ".join(report.summary([record], None, grid, settings, "text").split())
    assert "times a resource share of 0.25 (auto, from CPU affinity: 2 of 8 CPUs this process may use)" in text
    settings.set("resource_share", "0.125", "%carbon config")
    text = " ".join(report.summary([record], None, grid, settings, "text").split())
    assert "times a resource share of 0.125 (resource_share from %carbon config)" in text


@pytest.mark.parametrize(
    "grams, first",
    [
        (0.005, "≈ 0.04% of a smartphone charge"),  # 0.005 / 12.4 g
        (12.4, "≈ a smartphone charge"),
        (5000.0, "≈ 29 km driven by car"),  # 5,000 / 175 g per km
        (80000.0, "≈ 457 km driven by car"),
    ],
)
def test_equivalents_read_naturally_at_each_amount(grams, first):
    chosen = equivalents(grams)
    assert chosen[0].text == first
    assert all(e.source and e.year >= 2021 for e in chosen)


def test_imperial_regions_drive_in_miles():
    assert units_for("US") == units_for("GB") == "imperial"
    assert units_for("FR") == "metric" and units_for("US", "metric") == "metric"
    (distance,) = [e for e in equivalents(393.0 * 3, "imperial") if "driven" in e.key]
    assert distance.text == "≈ 3 miles driven by car"  # EPA: 393 g per mile
    assert math.isclose(distance.count, 3.0)


def test_no_equivalents_for_nothing_or_next_to_nothing():
    assert equivalents(0.0) == [] and equivalents(float("nan")) == []
    # 2.6 µg: under a hundredth of a percent of a phone charge (12.4 g) and of 10 cm driven.
    assert equivalents(2.6e-6) == []


@pytest.mark.parametrize("grams, text", [(2.59e-6, "2.59 µg"), (0.0123, "12.3 mg"), (4.56, "4.56 g"), (7800, "7.8 kg"), (1.2e6, "1.2 t")])
def test_co2e_units(grams, text):
    from greenjupyter.format import co2e

    assert co2e(grams) == text
