"""Emissions from energy: operational (energy x PUE x grid intensity) plus the SCI embodied share.

Pure arithmetic, no data and no I/O. The SCI (Green Software Foundation, ISO/IEC 21031:2024)
counts a device's embodied emissions M = total embodied x (time used / expected life) x share.
"""

from __future__ import annotations

JOULES_PER_KWH = 3.6e6
SECONDS_PER_YEAR = 365.25 * 86400


def operational_g(energy_j: float, pue: float, intensity_g_per_kwh: float) -> float:
    """Return grams CO2e of ``energy_j`` joules drawn at a facility of ``pue`` on a grid of that intensity."""
    return energy_j / JOULES_PER_KWH * pue * intensity_g_per_kwh


def embodied_g(duration_s: float, embodied_kg: float, lifetime_years: float, share: float = 1.0) -> float:
    """Return grams CO2e of embodied emissions for ``duration_s`` of use (SCI's M term)."""
    if embodied_kg <= 0:
        return 0.0
    return embodied_kg * 1000 * duration_s / (lifetime_years * SECONDS_PER_YEAR) * share
