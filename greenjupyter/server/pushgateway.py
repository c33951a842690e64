"""Push one ``greenjupyter measure`` run's totals to a Prometheus Pushgateway (``--pushgateway URL``).

For batch runs (CI, scheduled notebooks), which no Prometheus scrapes. The run's figures are
gauges of *that run* (``greenjupyter_run_*``), grouped under ``job="greenjupyter"``: each push
replaces the previous one, and the Pushgateway keeps the last one until it is deleted (it never
forgets a series by itself). A push that fails is said in one line; the run's exit code is
unchanged and its cells are in the history database as always.
"""

from __future__ import annotations

import http.client
import sys
import time
from urllib.parse import urlsplit

from ..errors import ConfigError
from ..format import printable

JOB = "greenjupyter"
TIMEOUT_S = 10.0


def checked_url(url: str) -> str:
    """Return ``url`` if it can name a Pushgateway (http or https, a host); raise ConfigError otherwise."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(f"--pushgateway {url!r} is refused; accepted: an http:// or https:// URL of a "
                          "Pushgateway, such as http://pushgateway:9091")
    try:
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError:
        raise ConfigError(f"--pushgateway {url!r} is refused: its port is not a number; accepted: an http:// or "
                          "https:// URL such as http://pushgateway:9091") from None
    return url.strip().rstrip("/")


def push_run(url: str, records, exit_code: int) -> bool:
    """Push the totals of ``records`` (this run's CellRecords) and its exit code; return True when pushed."""
    from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

    registry = CollectorRegistry()
    energy = Gauge("greenjupyter_run_energy_joules", "Energy of the run's measured cells, by component; source is "
                   "counter or estimate", ["component", "source"], registry=registry)
    for (component, source), joules in sorted(_energy_by_series(records).items()):
        energy.labels(component, source).set(joules)
    values = {
        "greenjupyter_run_co2e_grams": ("CO2e of the run's measured cells, in grams",
                                        sum(r.measurement.co2e_g or 0.0 for r in records)),
        "greenjupyter_run_cells": ("Cells the run measured", len(records)),
        "greenjupyter_run_duration_seconds": ("Time the run's measured cells took",
                                              sum(r.measurement.duration_s for r in records)),
        "greenjupyter_run_exit_code": ("Exit code of greenjupyter measure (0 ok, 1 a cell raised, 3 the kernel "
                                       "died, ...)", exit_code),
        "greenjupyter_run_finished_timestamp_seconds": ("When the run finished, Unix time", time.time()),
    }
    for name, (help_text, value) in values.items():
        Gauge(name, help_text, registry=registry).set(value)
    try:
        push_to_gateway(url, job=JOB, registry=registry, timeout=TIMEOUT_S)
    except (OSError, http.client.HTTPException, ValueError) as error:
        print(f"greenjupyter: could not push to the Pushgateway at {url} ({_reason(error)}); the run's cells are in "
              f"the history database, and the exit code is the run's", file=sys.stderr)
        return False
    print(f"greenjupyter: pushed the run's totals to the Pushgateway at {url} (job={JOB})", file=sys.stderr)
    return True


def _energy_by_series(records) -> dict:
    energy: dict = {}
    for record in records:
        m = record.measurement
        for name, joules in m.components.items():
            key = (name, "estimate" if name in m.estimated_components else "counter")
            energy[key] = energy.get(key, 0.0) + joules
    return energy


def _reason(error: Exception) -> str:
    import urllib.error

    if isinstance(error, urllib.error.HTTPError):
        where = error.headers.get("Location") if 300 <= error.code < 400 else None
        return f"HTTP {error.code}" + (f", a redirect to {printable(where)}, which is not followed" if where else "")
    if isinstance(error, urllib.error.URLError):
        return printable(str(error.reason))
    return printable(str(error)) or type(error).__name__
