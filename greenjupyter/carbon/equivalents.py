"""Everyday equivalents of an amount of CO2e, chosen to read naturally at that amount."""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from functools import lru_cache

DATA = os.path.join(os.path.dirname(__file__), "data", "equivalents.csv")
# Regions whose road distances are in miles.
IMPERIAL = {"US", "GB", "LR", "MM"}


@dataclass(frozen=True)
class Equivalent:
    key: str
    count: float
    unit: str  # plural, e.g. "smartphone charges"
    one: str  # e.g. "a smartphone charge"
    source: str
    year: int

    @property
    def text(self) -> str:
        """Return e.g. '≈ 3.2 smartphone charges' or '≈ 40 m driven by car'."""
        count, unit = self.count, self.unit
        if self.key == "km_driven" and count < 1:
            count, unit = count * 1000, "m driven by car"
        elif self.key == "mile_driven" and count < 1:
            count, unit = count * 5280, "feet driven by car"
        elif count < 0.1:  # a share of one reads better than a tiny count
            return f"≈ {_round(count * 100)}% of {self.one}"
        shown = _round(count)
        return f"≈ {self.one}" if shown == "1" else f"≈ {shown} {unit}"


@lru_cache(maxsize=1)
def _factors() -> tuple[dict, ...]:
    with open(DATA, encoding="utf-8") as f:
        rows = [line for line in f if not line.startswith("#")]
    return tuple(csv.DictReader(rows))


def units_for(region_country: str | None, setting: str = "auto") -> str:
    """Return 'metric' or 'imperial': the setting, or by the grid's country when it is 'auto'."""
    if setting in ("metric", "imperial"):
        return setting
    return "imperial" if region_country in IMPERIAL else "metric"


# Below a hundredth of a percent of one unit an equivalent says nothing; none is shown.
MIN_SHARE = 1e-4
# Which equivalents read naturally, by amount: a share of a phone charge for milligrams,
# distance driven for kilograms, flights for tonnes.
PREFERENCE = (
    (1.0, ("smartphone_charge", "video_hour", "km_driven", "mile_driven")),
    (1000.0, ("smartphone_charge", "km_driven", "mile_driven", "video_hour")),
    (20000.0, ("km_driven", "mile_driven", "tree_month", "smartphone_charge")),
    (math.inf, ("km_driven", "mile_driven", "flight_paris_london", "tree_month")),
)


def equivalents(co2e_g: float, units: str = "metric", how_many: int = 3) -> list[Equivalent]:
    """Return up to ``how_many`` equivalents of ``co2e_g`` grams, the most natural first."""
    if not co2e_g or co2e_g <= 0 or not math.isfinite(co2e_g):
        return []
    order = next(keys for limit, keys in PREFERENCE if co2e_g < limit)
    rows = {row["key"]: row for row in _factors() if row["units_system"] in ("any", units)}
    found = []
    for key in order:
        if key in rows:
            row = rows[key]
            count = co2e_g / float(row["grams_per_unit"])
            if count < MIN_SHARE:
                continue
            found.append(Equivalent(key, count, row["unit"], row["one"], row["source"], int(row["year"])))
    return found[:how_many]


def _round(x: float) -> str:
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.2g}" if x >= 0.01 else f"{x:.1g}"
