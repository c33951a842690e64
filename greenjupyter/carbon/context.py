"""Which grid a machine draws from, and the grams CO2e of a Measurement on it.

Region, always with where it came from: the ``region`` setting, else a cloud region named
by the environment, else the country of the machine's time zone, else the world average
(with a hint to set it). Intensity: the ``intensity_g_per_kwh`` setting, else a live reading
when one is configured and fresh, else the region's embedded annual average. PUE: the
setting, else the cloud provider's figure, else 1.0 (a machine of your own). Resource share
(SCI's embodied term): the setting, else the share of the machine's CPUs this process may use.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

from ..measurement import Measurement
from . import regions
from .footprint import embodied_g, operational_g

# Where cgroup v2 is mounted, and where this process's cgroup is named; tests point these elsewhere.
CGROUP_ROOT = "/sys/fs/cgroup"
PROC_SELF_CGROUP = "/proc/self/cgroup"

SET_REGION_HINT = "set it with %carbon config region=FR (a country, US state, or cloud region)"


@dataclass(frozen=True)
class Grid:
    """The grid in use: its intensity, the facility's PUE, and where each figure came from."""

    region: str
    name: str
    g_per_kwh: float
    pue: float
    intensity_source: str  # e.g. "Ember 2024 via CO2.js, lifecycle, annual average"
    region_origin: str  # e.g. "time zone Europe/Paris"
    pue_origin: str
    country: str | None = None
    hint: str = ""


def locate(setting: str = "", environ=os.environ) -> tuple[regions.GridIntensity, str, str]:
    """Return (the region's grid intensity, where the region came from, a hint or "")."""
    if setting:
        return regions.lookup(setting), "setting region", ""
    cloud = regions.cloud_region_from_environment(environ)
    if cloud:
        return regions.lookup(cloud), "cloud region from the environment", ""
    zone = regions.local_timezone()
    country = regions.country_from_timezone(zone) if zone else None
    if country:
        try:
            return regions.lookup(country), f"time zone {zone}", ""
        except regions.UnknownRegion:
            pass
    return regions.lookup("world"), "no region known: world average", SET_REGION_HINT


def grid_for(settings, region: str | None = None, live=None, located=None) -> Grid:
    """Return the Grid for ``settings`` (or for ``region`` instead of the region setting).

    ``located`` is what ``locate()`` returned for that region, when the caller keeps it.
    """
    found, origin, hint = located or locate(settings.region if region is None else region)
    if region is not None:
        origin = "this cell's --region"
    elif settings.region:
        origin = f"region from {settings.origin['region']}"
    intensity, source = found.g_per_kwh, f"{found.source}, {found.basis}, annual average, location-based"
    reading = live.current() if live is not None else None
    if settings.intensity_g_per_kwh is not None:
        intensity, source = settings.intensity_g_per_kwh, f"intensity_g_per_kwh from {settings.origin['intensity_g_per_kwh']}"
    elif reading is not None:
        intensity, source = reading.g_per_kwh, f"{reading.provider} live, {reading.basis}, fetched {reading.fetched_at:%H:%M} UTC"
    if settings.pue is not None:
        pue, pue_origin = settings.pue, f"pue from {settings.origin['pue']}"
    elif found.pue is not None:
        pue, pue_origin = found.pue, "the cloud provider's published PUE"
    else:
        pue, pue_origin = 1.0, "default for a machine of your own"
    return Grid(found.region, found.name, intensity, pue, source, origin, pue_origin, found.country, hint)


def footprint(m: Measurement, grid: Grid, settings) -> Measurement:
    """Return ``m`` with its carbon fields filled: operational emissions plus any embodied share."""
    grams = operational_g(m.energy_j, grid.pue, grid.g_per_kwh)
    if settings.embodied_kg > 0:
        share, _ = resource_share(settings)
        grams += embodied_g(m.duration_s, settings.embodied_kg, settings.lifetime_years, share)
    return m.replace(co2e_g=grams, intensity_g_per_kwh=grid.g_per_kwh, region=grid.region, pue=grid.pue)


def resource_share(settings) -> tuple[float, str]:
    """Return (the share of the machine charged in the embodied term, where it came from)."""
    if settings.resource_share is not None:
        return settings.resource_share, f"resource_share from {settings.origin['resource_share']}"
    return auto_resource_share()


@functools.cache
def auto_resource_share() -> tuple[float, str]:
    """Return (the share of the machine's CPUs this process may use, how it was found); read once.

    CPU affinity, or a cgroup v2 CPU quota (``cpu.max``) of this process's cgroup or any above it
    when that allows fewer CPUs. Only files are read: no process is spawned.
    """
    machine = os.cpu_count() or 1
    try:
        allowed, how = float(len(os.sched_getaffinity(0))), "CPU affinity"
    except (AttributeError, OSError):  # no affinity on macOS
        allowed, how = float(machine), "the CPU count"
    quota = _cgroup_cpu_quota()
    if quota is not None and quota < allowed:
        allowed, how = quota, "cgroup cpu.max"
    share = min(max(allowed / machine, 1e-6), 1.0)
    return share, f"auto, from {how}: {allowed:g} of {machine} CPUs this process may use"


def _cgroup_cpu_quota() -> float | None:
    """Return the smallest cgroup v2 CPU quota, in CPUs, over this process's cgroup and its parents."""
    try:
        with open(PROC_SELF_CGROUP) as f:
            own = next((line.split("::", 1)[1].strip() for line in f if line.startswith("0::")), "/")
    except OSError:
        own = "/"
    parts = [p for p in own.split("/") if p and p != ".."]
    quotas = []
    for depth in range(len(parts) + 1):
        try:
            with open(os.path.join(CGROUP_ROOT, *parts[:depth], "cpu.max")) as f:
                limit, period = f.read().split()[:2]  # e.g. "200000 100000" (2 CPUs) or "max 100000"
            if limit != "max" and float(limit) > 0 and float(period) > 0:
                quotas.append(float(limit) / float(period))
        except (OSError, ValueError):
            continue
    return min(quotas, default=None)
