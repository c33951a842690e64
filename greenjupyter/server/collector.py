"""greenjupyter's metrics for the Jupyter server's /metrics: a prometheus_client Collector.

Each scrape calls ``collect``. It reads only what is new since the last read: the history's
new rows (a few milliseconds' worth at most, on the server's own thread; a longer backlog, such
as a whole history when the server starts, is read on a background thread) and the running
kernels' power files. What it found is kept for ``cache_s``, so scrapes close together cost
nothing. A history that cannot be read gives zeros (or, once read, its last sums) and one log
line per problem, never a failed scrape.

Labels stay few: component and source. No notebook, cell or user: per-cell detail stays in the
history database, and JupyterHub's scrape target already says whose server it is.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from urllib.parse import quote

from .. import live_status
from .history_sums import BUCKETS_J, HistorySums, Snapshot

CACHE_S = 5.0
BATCH_ROWS = 500  # rows per read (a few ms on a 2-core VM): a scrape overruns its budget by one at most
SCRAPE_BUDGET_S = 0.02  # a scrape reads batches for this long at most, then leaves the rest to a background thread
LOCK_WAIT_S = 0.02  # a scrape waits this long at most for a database locked by a writer (WAL rarely is)


class GreenJupyterCollector:
    """Energy, CO2e and cells from the history database at ``db_path``; power from the kernels' live files."""

    def __init__(self, db_path: str, log: logging.Logger | None = None, cache_s: float = CACHE_S):
        self.db_path = db_path
        self.live_directory = live_status.directory_for(db_path)
        self.log = log or logging.getLogger("greenjupyter")
        self.cache_s = cache_s
        self._sums = HistorySums()
        self._published: Snapshot | None = None  # what scrapes show: None until the history was first read whole
        self._families: list = []
        self._collected_at = -float("inf")
        self._lock = threading.Lock()  # one reader of the history at a time: a scrape or the catch-up
        self._state_lock = threading.Lock()  # the cached families, between concurrent scrapes
        self._catching_up = False
        self._closed = False
        self._problem = None  # the last problem logged, so that each is logged once

    # --- prometheus_client's Collector protocol --------------------------------------------

    def describe(self):
        """Return the families without samples: registering reads nothing."""
        return _families(None, {}, 0)

    def collect(self):
        with self._state_lock:
            now = time.monotonic()
            if now - self._collected_at >= self.cache_s:
                try:
                    self._refresh()
                    power, kernels = live_status.read_power(self.live_directory)
                    self._families = _families(self._published, power, kernels)
                except Exception as error:  # never a failed scrape: the last figures stay
                    self._say(f"could not update greenjupyter's metrics ({error!r})")
                self._collected_at = now
            return list(self._families)

    # --- reading the history ---------------------------------------------------------------

    def start_catch_up(self) -> None:
        """Read the whole history on a background thread (from the extension's load, and when far behind)."""
        if self._catching_up or self._closed:
            return
        self._catching_up = True
        threading.Thread(target=self._catch_up, name="greenjupyter-metrics", daemon=True).start()

    def close(self) -> None:
        self._closed = True

    def _catch_up(self) -> None:
        try:
            with self._lock:
                self._read(deadline=None, lock_wait_s=2.0)
        except Exception as error:  # a thread's exception would only reach stderr
            self._say(f"could not read the history database {self.db_path} ({error!r})")
        finally:
            self._catching_up = False

    def _refresh(self) -> None:
        if self._lock.acquire(blocking=False):  # else the catch-up is reading: show what it has so far
            try:
                self._read(deadline=time.monotonic() + SCRAPE_BUDGET_S, lock_wait_s=LOCK_WAIT_S)
            finally:
                self._lock.release()
        if self._sums.behind:
            self.start_catch_up()

    def _read(self, deadline: float | None, lock_wait_s: float) -> None:
        """Add new rows until caught up or past ``deadline``; publish the sums once caught up."""
        try:
            st = os.stat(self.db_path)
        except FileNotFoundError:
            self._sums.start_over()
            self._sums.behind = False
            self._published = Snapshot()
            self._say(f"no history database at {self.db_path} yet; greenjupyter's counters are zero until a "
                      "kernel with greenjupyter loaded writes one", logging.INFO)
            return
        except OSError as error:
            self._say(f"cannot read the history database {self.db_path} ({error.strerror or error})")
            self._publish_zero_if_never_read()
            return
        try:
            db = _connect(self.db_path, lock_wait_s)
        except sqlite3.Error as error:
            self._say(f"cannot open the history database {self.db_path} ({error})")
            self._publish_zero_if_never_read()
            return
        try:
            if self._sums.changed(db, (st.st_dev, st.st_ino)):
                self._published = None  # a new history, like a first one, is shown only once read whole
            while not self._closed:
                self._sums.read(db, BATCH_ROWS)
                if not self._sums.behind or (deadline is not None and time.monotonic() > deadline):
                    break
            self._problem = None
        except sqlite3.Error as error:
            if any(word in str(error) for word in ("locked", "busy")):
                return  # a writer holds it: the next scrape reads on, these figures stay
            self._say(f"cannot read the history database {self.db_path} ({error}); is it a greenjupyter history?")
            self._publish_zero_if_never_read()
            return
        finally:
            db.close()
        if not self._sums.behind or self._published is not None:
            # A first read is shown only whole: a counter that climbed through the history scrape by
            # scrape would look, to rate(), like all of it had just been used. Once shown, new rows are
            # shown as they come, even when a burst of them takes more than one scrape.
            self._published = self._sums.sums

    def _publish_zero_if_never_read(self) -> None:
        self._sums.behind = False
        if self._published is None:
            self._published = Snapshot()

    def _say(self, problem: str, level: int = logging.WARNING) -> None:
        if problem != self._problem:
            self._problem = problem
            self.log.log(level, "greenjupyter: %s", problem)


def _connect(path: str, lock_wait_s: float) -> sqlite3.Connection:
    """Open ``path`` read-only (``mode=ro``: nothing is written to it), waiting at most ``lock_wait_s`` for locks."""
    uri = f"file:{quote(os.path.abspath(path))}?mode=ro"
    return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=lock_wait_s)


def _families(sums: Snapshot | None, power: dict, kernels: int) -> list:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
    from prometheus_client.utils import floatToGoString

    energy = CounterMetricFamily(
        "greenjupyter_energy_joules", "Energy of the cells measured by greenjupyter, by component; source is "
        "counter (hardware energy counters) or estimate (a model)", labels=["component", "source"])
    co2e = CounterMetricFamily("greenjupyter_co2e_grams", "CO2e of the measured cells, in grams")
    cells = CounterMetricFamily("greenjupyter_cells", "Cells measured by greenjupyter")
    per_cell = HistogramMetricFamily("greenjupyter_cell_energy_joules", "Energy of one measured cell")
    watts = GaugeMetricFamily(
        "greenjupyter_power_watts", "Power now over the running kernels: a device once, modelled shares summed",
        labels=["component"])
    live = GaugeMetricFamily("greenjupyter_live_kernels", "Running kernels whose power is in greenjupyter_power_watts")
    if sums is not None:
        for (component, source), joules in sorted(sums.energy_j.items()):
            energy.add_metric([component, source], joules)
        co2e.add_metric([], sums.co2e_g)
        cells.add_metric([], sums.cells)
        buckets = [(floatToGoString(b), n) for b, n in zip(BUCKETS_J, sums.bucket_counts)] + [("+Inf", sums.observed)]
        per_cell.add_metric([], buckets, sums.observed_j)
    for component, w in sorted(power.items()):
        watts.add_metric([component], w)
    live.add_metric([], kernels)
    return [energy, co2e, cells, per_cell, watts, live]
