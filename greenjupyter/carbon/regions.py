"""Grid carbon intensity of a place: a country, a US state or Canadian province, a cloud region.

The tables in ``data/`` (sources, years and licences in ``data/README.md``) are read on the
first lookup, never at import, so ``%load_ext greenjupyter`` stays fast; later lookups are a
dict access. The helpers below find the region offline: from the time zone or from the
environment variables cloud platforms set. Nothing here spawns a process or uses the network.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache

from ..errors import ConfigError

DATA_DIR = os.path.join(os.path.dirname(__file__), "data")
# subnational_odbl.csv is under another licence (ODbL) and may be left out of a build.
SUBNATIONAL_FILES = ("subnational.csv", "subnational_odbl.csv")
PROVIDER_LABELS = {"gcp": "Google Cloud", "aws": "AWS", "azure": "Azure"}
# Only variables that the platforms themselves set, checked in this order.
CLOUD_ENV_VARS = (
    ("aws", ("AWS_REGION", "AWS_DEFAULT_REGION")),
    ("gcp", ("GOOGLE_CLOUD_REGION", "CLOUD_ML_REGION", "FUNCTION_REGION")),
    ("azure", ("REGION_NAME",)),  # App Service and Functions set it to e.g. "West Europe"
)
ZONEINFO_DIRS = ("/usr/share/zoneinfo",)


@dataclass(frozen=True)
class GridIntensity:
    region: str  # canonical code: "FR", "US-CA", "CA-QC", "gcp:us-central1", "aws:eu-west-3", "WORLD"
    name: str  # "France", "California, United States", "Google Cloud us-central1 (Iowa)"
    g_per_kwh: float
    basis: str  # "lifecycle" or "direct"
    year: int
    source: str  # short citation, e.g. "Ember 2024 via CO2.js"
    pue: float | None = None  # the provider's PUE for a cloud region, else None
    country: str | None = None  # ISO alpha-2 of the grid's country (for units, live zones); None for WORLD


class UnknownRegion(ConfigError):
    """A region that no table knows (or an empty one)."""


_index: dict[str, GridIntensity] | None = None  # lower-case name or code -> intensity


def lookup(text: str) -> GridIntensity:
    """Return the grid intensity for a country, state, province or cloud region (any case)."""
    key = " ".join(str(text).split()).lower()
    index = _load()
    if key in index:
        return index[key]
    raise UnknownRegion(_unknown_message(text, key, index))


def _unknown_message(text: str, key: str, index: dict[str, GridIntensity]) -> str:
    examples = (
        "a country (FR, France), a US state (US-CA, California), a Canadian province (CA-QC) "
        "or a cloud region (gcp:us-central1, aws:eu-west-3, azure:westeurope)"
    )
    if not key:
        return f"no region given; give {examples}"
    import difflib  # only on this error path

    labels = []
    for match in difflib.get_close_matches(key, index, n=8, cutoff=0.7):
        label = _label(index[match])
        if label not in labels:
            labels.append(label)
    if not labels:
        return f"unknown region {text!r}; give {examples}"
    labels = labels[:3]
    choices = labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " or " + labels[-1]
    return f"unknown region {text!r}; did you mean {choices}?"


def _label(grid: GridIntensity) -> str:
    return grid.region if ":" in grid.region else f"{grid.name} ({grid.region})"


def _load() -> dict[str, GridIntensity]:
    global _index
    if _index is None:
        _index = _build_index()
    return _index


def _read(name: str) -> list[dict[str, str]]:
    import csv  # kept out of import time

    with open(os.path.join(DATA_DIR, name), newline="", encoding="utf-8") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def _add(index: dict, grid: GridIntensity, *names: str) -> None:
    # The first table to claim a name keeps it: "Georgia" is the country, the state is US-GA.
    for name in names:
        if name:
            index.setdefault(name.lower(), grid)


def _build_index() -> dict[str, GridIntensity]:
    index: dict[str, GridIntensity] = {}
    country_names = {}
    for row in _read("countries.csv"):
        grid = _grid(row["alpha2"], row["name"], row)
        country_names[row["alpha2"]] = row["name"]
        _add(index, grid, row["alpha2"], row["alpha3"], row["name"], *row["other_names"].split(";"))
    for name in SUBNATIONAL_FILES:
        if not os.path.exists(os.path.join(DATA_DIR, name)):
            continue
        for row in _read(name):
            country = country_names[row["code"].split("-")[0]]
            _add(index, _grid(row["code"], f"{row['name']}, {country}", row), row["code"], row["name"])
    for row in _read("cloud_regions.csv"):
        provider, region = row["code"].split(":", 1)
        _add(index, _cloud_grid(row, provider, region, index), row["code"], region)
    return index


def _grid(code: str, name: str, row: dict[str, str], pue: float | None = None, country: str | None = None) -> GridIntensity:
    if country is None and code != "WORLD" and ":" not in code:
        country = code.split("-")[0]
    return GridIntensity(
        code, name, float(row["g_per_kwh"]), row["basis"], int(row["year"]), row["source"], pue, country
    )


def _cloud_grid(row: dict[str, str], provider: str, region: str, index: dict) -> GridIntensity:
    label = f"{PROVIDER_LABELS[provider]} {region}" + (f" ({row['location']})" if row["location"] else "")
    pue = float(row["pue"])
    country = row["grid"].split("-")[0] or None
    if row["g_per_kwh"]:  # the provider publishes the region's own figure (Google)
        return _grid(row["code"], label, row, pue, country)
    # Otherwise the grid of the region's location; a state left out of a build falls back to its country.
    grid = index.get(row["grid"].lower()) or index[row["grid"].split("-")[0].lower()]
    name = f"{label} → {grid.name} grid"
    return GridIntensity(row["code"], name, grid.g_per_kwh, grid.basis, grid.year, grid.source, pue, grid.country)


def country_from_timezone(tz: str, zoneinfo_dirs: tuple[str, ...] | None = None) -> str | None:
    """Return the ISO alpha-2 country of an IANA zone ("Europe/Paris" -> "FR"), or None.

    Read offline from the zone.tab shipped with tz data (the ``tzdata`` package, else the
    system's). Zones that belong to no country ("UTC", "Etc/GMT+2") give None.
    """
    if not tz:
        return None
    dirs = tuple(zoneinfo_dirs) if zoneinfo_dirs is not None else _default_zoneinfo_dirs()
    countries, links = _zone_table(dirs)
    name = tz.strip()
    # The zone's own row first: Europe/Amsterdam is now a link to Brussels but is listed as NL.
    return countries.get(name) or countries.get(links.get(name, ""))


def _default_zoneinfo_dirs() -> tuple[str, ...]:
    import importlib.util  # find_spec locates the tzdata package without importing it

    spec = importlib.util.find_spec("tzdata")
    packaged = [os.path.join(d, "zoneinfo") for d in (spec.submodule_search_locations or [])] if spec else []
    return (*packaged, *ZONEINFO_DIRS)


@cache
def _zone_table(dirs: tuple[str, ...]) -> tuple[dict[str, str], dict[str, str]]:
    """(zone -> country, old zone name -> current one) from the first directory that has a table."""
    for d in dirs:
        countries: dict[str, str] = {}
        # zone.tab gives one country per zone and lists zones that zone1970.tab merges away
        # (Europe/Amsterdam); zone1970.tab (first country of a shared zone) fills any gap.
        for name in ("zone.tab", "zone1970.tab"):
            for fields in _tab_rows(os.path.join(d, name)):
                countries.setdefault(fields[2], fields[0].split(",")[0])
        if countries:
            return countries, _zone_links(os.path.join(d, "tzdata.zi"))
    return {}, {}


def _tab_rows(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                fields = line.rstrip("\n").split("\t")
                if not line.startswith("#") and len(fields) >= 3:
                    yield fields
    except OSError:
        return


def _zone_links(path: str) -> dict[str, str]:
    # tzdata.zi lists backward-compatible names as "L Current/Zone Old/Name" (US/Eastern, Asia/Calcutta).
    links = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith("L "):
                    _, target, alias = line.split()[:3]
                    links[alias] = target
    except OSError:
        pass
    return links


def local_timezone(
    environ=os.environ, timezone_file: str = "/etc/timezone", localtime: str = "/etc/localtime"
) -> str | None:
    """Return this machine's IANA zone ("Europe/Paris"), read offline, or None.

    In order: the TZ variable, /etc/timezone (Debian), the target of the /etc/localtime link.
    """
    return _zone_from_tz(environ.get("TZ", "")) or _first_line(timezone_file) or _zone_from_path(_readlink(localtime))


def _zone_from_tz(value: str) -> str | None:
    value = value.strip().lstrip(":")  # POSIX allows ":Europe/Paris"
    if value.startswith("/"):
        return _zone_from_path(value)
    return value or None


def _zone_from_path(path: str | None) -> str | None:
    # ".../zoneinfo/Europe/Paris" -> "Europe/Paris"; also ".../zoneinfo/posix/Europe/Paris"
    if not path or "zoneinfo/" not in path:
        return None
    zone = path.split("zoneinfo/", 1)[1]
    for prefix in ("posix/", "right/"):
        zone = zone.removeprefix(prefix)
    return zone or None


def _first_line(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().strip() or None
    except OSError:
        return None


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def cloud_region_from_environment(environ=os.environ) -> str | None:
    """Return the canonical cloud region ("aws:eu-west-3") named by the platform's variables, or None.

    Only regions the tables know are returned. AWS_REGION and AWS_DEFAULT_REGION are also set
    by hand for the AWS CLI, so the answer is the region the environment names, which may not
    be where this machine runs.
    """
    for provider, names in CLOUD_ENV_VARS:
        for name in names:
            value = "".join(environ.get(name, "").split()).lower()  # "West Europe" -> "westeurope"
            if value and f"{provider}:{value}" in _load():
                return f"{provider}:{value}"
    return None
