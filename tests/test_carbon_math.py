"""Footprint arithmetic against hand-computed values, and the equivalents chosen for an amount."""

import math

import pytest

from greenjupyter.carbon.equivalents import equivalents, units_for
from greenjupyter.carbon.footprint import embodied_g, operational_g


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
