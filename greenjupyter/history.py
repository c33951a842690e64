"""Past cells from the history database: ``greenjupyter.history()``."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from .errors import ConfigError, GreenJupyterError
from .format import short_repr

_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# How far back ``since`` may reach: well within the calendar (year 1), far beyond any history.
MAX_SPAN = timedelta(days=2000 * 365)
ACCEPTED = "a datetime, or a span from 0 to 2,000 years back: a timedelta or e.g. 30m, 12h, 7d, 2w"


class History(list):
    """StoredCells, oldest first; ``to_dataframe()`` when pandas is installed."""

    def to_dataframe(self):
        try:
            import pandas
        except ImportError:
            raise GreenJupyterError("to_dataframe() needs pandas: pip install pandas") from None
        rows = []
        for stored in self:
            r, m = stored.record, stored.record.measurement
            rows.append({
                "started_at": m.started_at, "notebook": r.notebook, "session": stored.session,
                "execution_count": r.execution_count, "source_preview": r.source_preview, "success": r.success,
                "error": r.error, "duration_s": m.duration_s, "energy_j": m.energy_j, "co2e_g": m.co2e_g,
                "estimated": m.estimated, "region": m.region, "intensity_g_per_kwh": m.intensity_g_per_kwh,
                "pue": m.pue, **{f"energy_j[{name}]": joules for name, joules in m.components.items()},
            })
        return pandas.DataFrame(rows)


def parse_since(since) -> datetime | None:
    """Return a UTC datetime from a datetime, a timedelta (that long ago) or text like '7d', '12h', '30m'.

    A span must be from 0 to ``MAX_SPAN`` (2,000 years): anything else raises ConfigError, a ValueError.
    """
    if since is None or isinstance(since, datetime):
        return since
    if isinstance(since, timedelta):
        span = since
    else:
        match = _SPAN.match(str(since))
        if not match:
            raise ConfigError(f"since={short_repr(since)} is not understood; accepted: {ACCEPTED}")
        try:
            span = timedelta(seconds=float(match.group(1)) * _SECONDS[match.group(2)])
        except OverflowError:  # longer than timedelta's 999,999,999 days
            span = timedelta.max
    if span < timedelta(0):
        raise ConfigError(f"since={short_repr(since)} is a span into the future; accepted: {ACCEPTED}")
    if span > MAX_SPAN:
        raise ConfigError(f"since={short_repr(since)} reaches back more than 2,000 years; accepted: {ACCEPTED}")
    return datetime.now(timezone.utc) - span


def history(notebook: str | None = None, since=None) -> History:
    """Return past cells from the history database, oldest first: every notebook's, or ``notebook``'s."""
    from . import runtime
    from .store import ANY

    store = runtime.get_store()
    if store is None:
        raise GreenJupyterError("no history database in use (db_path is 'off', or it could not be opened)")
    return History(store.cells(notebook=ANY if notebook is None else notebook, since=parse_since(since)))


def sessions(cells) -> list[dict]:
    """Group StoredCells by kernel session: newest first, with start, cells, duration, energy, CO2e."""
    groups: dict[str, dict] = {}
    for stored in cells:
        m = stored.record.measurement
        group = groups.setdefault(stored.session, {
            "session": stored.session, "notebook": stored.record.notebook, "started_at": m.started_at,
            "cells": 0, "duration_s": 0.0, "energy_j": 0.0, "co2e_g": 0.0, "estimated": False,
        })
        group["cells"] += 1
        group["duration_s"] += m.duration_s
        group["energy_j"] += m.energy_j
        group["co2e_g"] += m.co2e_g or 0.0
        group["estimated"] |= m.estimated
    return sorted(groups.values(), key=lambda g: g["started_at"], reverse=True)
