"""Cell records to files: CSV that reads like CodeCarbon's emissions.csv, and JSON with every field.

CSV: one row per cell. Where CodeCarbon's emissions.csv has a column with the same meaning,
ours has its name, its unit and its place in CodeCarbon's order (``CODECARBON_COLUMNS``), so
tools that read that file read ours; greenjupyter's own columns follow (``OWN_COLUMNS``).
CodeCarbon's units: duration in s, emissions in kg CO2e, emissions_rate in kg/s, energies in
kWh, powers in W (here the cell's average). Our ``emissions`` is the cell's CO2e as recorded,
so it includes the embodied share when one is configured. ``timestamp`` is when the cell
ended, as CodeCarbon stamps a run when it stops, in ISO 8601 UTC. A text that a spreadsheet
would run as a formula (a cell's first line ``=1+1``) is written with a ``'`` before it.

JSON: ``{"schema": 2, "generator": "greenjupyter X", "cells": [...]}``, one object per cell
with every CellRecord field and its Measurement's under ``"measurement"``, texts exactly as
they are; ``read_json`` turns it back into CellRecords.
"""

from __future__ import annotations

import csv
import json
import math
import os
from contextlib import contextmanager
from dataclasses import fields
from datetime import datetime, timedelta, timezone
from functools import cache

from .errors import ConfigError
from .measurement import JOULES_PER_KWH, CellRecord, Measurement

SCHEMA = 2  # 2 added the measurement's shared_components
READABLE_SCHEMAS = (1, 2)
# CodeCarbon 3.3.2's emissions.csv columns that we fill, in its order (EmissionsData's fields).
CODECARBON_COLUMNS = (
    "timestamp",
    "project_name",
    "experiment_id",
    "duration",
    "emissions",
    "emissions_rate",
    "cpu_power",
    "gpu_power",
    "ram_power",
    "cpu_energy",
    "gpu_energy",
    "ram_energy",
    "energy_consumed",
    "country_name",
    "country_iso_code",
    "region",
    "cloud_provider",
    "cloud_region",
    "on_cloud",
    "pue",
)
OWN_COLUMNS = (
    "execution_count",
    "cell_id",
    "notebook",
    "success",
    "error",
    "started_at",
    "estimated",
    "estimated_components",
    "failed_components",
    "shared_components",
    "uncertainty_j",
    "peak_power_w",
    "intensity_g_per_kwh",
    "grid_region",
    "source_preview",
    "components_j",
)
COLUMNS = CODECARBON_COLUMNS + OWN_COLUMNS
# Component name prefix -> CodeCarbon's hardware group.
GROUPS = {"cpu": "cpu", "gpu": "gpu", "dram": "ram"}
# A text cell starting with one of these is a formula to Excel, LibreOffice or Google Sheets.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# Required float fields: a None in JSON stands for a NaN written as null (JSON has no NaN).
FLOAT_FIELDS = ("duration_s", "energy_j", "avg_power_w", "peak_power_w", "uncertainty_j")


def export(records, path) -> None:
    """Write ``records`` to ``path`` as CSV or JSON, chosen by the extension."""
    writers = {".csv": to_csv, ".json": to_json}
    extension = os.path.splitext(os.fspath(path))[1].lower()
    if extension not in writers:
        shown = f"extension {extension!r}" if extension else "no extension"
        raise ConfigError(f"cannot export to {os.fspath(path)!r}: {shown} is not known; accepted: .csv, .json")
    writers[extension](records, path)


def to_csv(records, path_or_file) -> None:
    """Write one CSV row per cell record to a path or an open text file."""
    with _opened(path_or_file) as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(csv_row(r) for r in records)


def to_json(records, path_or_file) -> None:
    """Write every field of every record as JSON to a path or an open text file."""
    from . import __version__

    document = {"schema": SCHEMA, "generator": f"greenjupyter {__version__}", "cells": [record_dict(r) for r in records]}
    with _opened(path_or_file) as f:
        json.dump(document, f, indent=1, ensure_ascii=False, allow_nan=False)
        f.write("\n")


def read_json(path_or_file) -> list[CellRecord]:
    """Return the CellRecords of a file written by ``to_json``."""
    if hasattr(path_or_file, "read"):
        document = json.load(path_or_file)
    else:
        with open(path_or_file, encoding="utf-8") as f:
            document = json.load(f)
    if document.get("schema") not in READABLE_SCHEMAS:
        raise ConfigError(
            f"JSON schema {document.get('schema')!r} is not known; this greenjupyter reads schemas "
            f"{', '.join(map(str, READABLE_SCHEMAS))}"
        )
    return [_record_from_dict(cell) for cell in document["cells"]]


def csv_row(record: CellRecord) -> dict:
    """Return one record as a dict keyed by ``COLUMNS`` (None for an unknown value), every text
    made inert for spreadsheets (``spreadsheet_safe``); numbers stay numbers."""
    return {name: spreadsheet_safe(value) for name, value in _csv_values(record).items()}


def spreadsheet_safe(value):
    """Return text that a spreadsheet would run as a formula (it starts with = + - @, a tab or a
    carriage return) with a ``'`` before it, as OWASP advises; anything else as it is."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _csv_values(record: CellRecord) -> dict:
    m = record.measurement
    energy = {"cpu": 0.0, "gpu": 0.0, "ram": 0.0}
    for name, joules in m.components.items():
        group = GROUPS.get(name.split(":")[0])
        if group:
            energy[group] += joules
    kg = None if m.co2e_g is None else m.co2e_g / 1000
    return {
        "timestamp": _iso(m.started_at + timedelta(seconds=m.duration_s)),
        "project_name": record.notebook,
        "experiment_id": record.cell_id,
        "duration": m.duration_s,
        "emissions": kg,
        "emissions_rate": None if kg is None else (kg / m.duration_s if m.duration_s > 0 else 0.0),
        "energy_consumed": m.energy_j / JOULES_PER_KWH,
        "pue": m.pue,
        **{f"{group}_power": _per_second(j, m.duration_s) for group, j in energy.items()},
        **{f"{group}_energy": j / JOULES_PER_KWH for group, j in energy.items()},
        **_place(m.region),
        "execution_count": record.execution_count,
        "cell_id": record.cell_id,
        "notebook": record.notebook,
        "success": record.success,
        "error": record.error,
        "started_at": _iso(m.started_at),
        "estimated": m.estimated,
        "estimated_components": json.dumps(list(m.estimated_components)),
        "failed_components": json.dumps(list(m.failed_components)),
        "shared_components": json.dumps(list(m.shared_components)),
        "uncertainty_j": m.uncertainty_j,
        "peak_power_w": m.peak_power_w,
        "intensity_g_per_kwh": m.intensity_g_per_kwh,
        "grid_region": m.region,
        "source_preview": record.source_preview,
        "components_j": json.dumps(dict(m.components)),
    }


def record_dict(record: CellRecord) -> dict:
    """Return every field of ``record`` and its Measurement as JSON-ready values."""
    out = {f.name: getattr(record, f.name) for f in fields(CellRecord) if f.name != "measurement"}
    m = {f.name: _plain(getattr(record.measurement, f.name)) for f in fields(Measurement)}
    return {**out, "measurement": m}


def _record_from_dict(cell: dict) -> CellRecord:
    m = dict(cell["measurement"])
    m["started_at"] = datetime.fromisoformat(m["started_at"])
    m["estimated_components"] = tuple(m["estimated_components"])
    m["failed_components"] = tuple(m["failed_components"])
    m["shared_components"] = tuple(m.get("shared_components", ()))  # absent in schema 1 files
    m = {k: (math.nan if v is None and k in FLOAT_FIELDS else v) for k, v in m.items()}
    return CellRecord(**{k: v for k, v in cell.items() if k != "measurement"}, measurement=Measurement(**m))


def _plain(value):
    """Return ``value`` as JSON knows it: ISO 8601 UTC datetimes, lists, dicts, null for NaN."""
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _iso(moment: datetime) -> str:
    # Measurements are UTC; a naive datetime is taken to be UTC rather than local time.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat()


def _per_second(joules: float, seconds: float) -> float:
    return joules / seconds if seconds > 0 else 0.0


def _place(region: str | None) -> dict:
    """Return CodeCarbon's location columns for a greenjupyter region code ("FR", "US-CA", "gcp:us-central1")."""
    place = dict.fromkeys(("country_name", "country_iso_code", "region", "cloud_provider", "cloud_region", "on_cloud"))
    if not region:
        return place
    from .carbon.regions import UnknownRegion, lookup

    try:
        grid = lookup(region)
    except UnknownRegion:
        return place
    provider, cloud, rest = grid.region.partition(":")
    place["on_cloud"] = "Y" if cloud else "N"
    if cloud:
        place["cloud_provider"], place["cloud_region"] = provider, rest
    elif "-" in grid.region:  # a state or province: CodeCarbon writes its name in lower case
        place["region"] = grid.name.split(",")[0].lower()
    if grid.country:
        place["country_iso_code"], place["country_name"] = _countries().get(grid.country, (None, None))
    return place


@cache
def _countries() -> dict[str, tuple[str, str]]:
    """Return ISO alpha-2 -> (alpha-3, name); CodeCarbon's country_iso_code is alpha-3."""
    from .carbon.regions import _read

    return {row["alpha2"]: (row["alpha3"] or None, row["name"]) for row in _read("countries.csv")}


@contextmanager
def _opened(path_or_file):
    """Yield an open file as is (left open), or open a path for writing text (closed after)."""
    if hasattr(path_or_file, "write"):
        yield path_or_file
        return
    # newline="" lets the csv module write its own line endings, as it asks.
    with open(path_or_file, "w", newline="", encoding="utf-8") as f:
        yield f
