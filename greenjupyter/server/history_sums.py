"""Running sums over the history database, read a bounded batch of new rows at a time.

The sums only grow: each read adds the rows whose id is above the last one read. A history
that was replaced, emptied, or whose first or last counted row was deleted (old rows pruned, the
newest undone) starts the sums over (Prometheus sees a counter reset, which it allows); each
check is a lookup in the table's b-tree, so rows deleted from the middle go unnoticed. The sums are worked out inside SQLite (``json_each``), which releases
the interpreter while it reads, so a background catch-up does not hold up the server.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field

# Upper bounds of the per-cell energy histogram, in joules: 1 J to 1 MJ in steps of 10 and 3.
BUCKETS_J = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1e3, 3e3, 1e4, 3e4, 1e5, 3e5, 1e6)
MAX_SERIES = 64  # (component, source) pairs kept apart; any more are added to component "other"
MAX_NAME = 64
MAX_CELL_J = 1e12  # a component's energy in one cell above this (278 MWh) is not a reading: left out
MAX_CELL_G = 1e9  # grams CO2e in one cell, likewise

_VALID = f"BETWEEN 0 AND {MAX_CELL_J!r}"
CELL_SUMS = (
    f"SELECT count(*), total(CASE WHEN co2e_g BETWEEN 0 AND {MAX_CELL_G!r} THEN co2e_g END), "
    f"count(CASE WHEN energy_j {_VALID} THEN 1 END), total(CASE WHEN energy_j {_VALID} THEN energy_j END), "
    + ", ".join(f"count(CASE WHEN energy_j BETWEEN 0 AND {b!r} THEN 1 END)" for b in BUCKETS_J)
    + " FROM cells WHERE id > ? AND id <= ?"
)
# Grouped by the list of estimated components too (it changes rarely), so each row's membership
# test is left to the few groups; a components value that is not JSON counts for nothing.
COMPONENT_SUMS = (
    f"SELECT j.key, c.estimated_components, total(CASE WHEN j.type IN ('integer', 'real') AND j.value {_VALID} "
    "THEN j.value END) FROM cells c, json_each(CASE WHEN json_valid(c.components) THEN c.components ELSE '{}' END) j "
    "WHERE c.id > ? AND c.id <= ? GROUP BY 1, 2"
)


@dataclass(frozen=True)
class Snapshot:
    """The sums at one moment, for one scrape."""

    cells: int = 0
    co2e_g: float = 0.0
    energy_j: dict = field(default_factory=dict)  # (component, "counter" | "estimate") -> joules
    bucket_counts: tuple = (0,) * len(BUCKETS_J)  # cumulative, as Prometheus wants them
    observed: int = 0  # cells with a usable energy_j: the histogram's count
    observed_j: float = 0.0


class HistorySums:
    """Sums of every row of one history database, caught up by ``read``."""

    def __init__(self):
        self.start_over()

    def start_over(self) -> None:
        self.identity = None  # (st_dev, st_ino) of the file read
        self.first_id = None  # the smallest id when rows were first read: a smaller or larger one means deletions
        self.last_id = 0
        self.behind = True
        self.sums = Snapshot()
        self.energy_j: dict = {}

    def changed(self, db: sqlite3.Connection, identity) -> bool:
        """Return True (and start over) if the file was replaced or rows already counted are gone."""
        if self.identity is None or self.last_id == 0:
            if identity != self.identity:
                self.start_over()
                self.identity = identity
            return False
        first, last = _first_and_last(db)
        gone = (identity != self.identity or first != self.first_id or last is None or last < self.last_id
                or db.execute("SELECT 1 FROM cells WHERE id = ?", (self.last_id,)).fetchone() is None)
        if gone:
            self.start_over()
            self.identity = identity
        return gone

    def read(self, db: sqlite3.Connection, rows: int) -> None:
        """Add the next rows (at most ``rows`` ids) to the sums, in one read transaction; set ``behind``."""
        db.execute("BEGIN")
        try:
            first, last = _first_and_last(db)
            if last is None or last <= self.last_id:
                self.behind = False
                return
            upper = min(last, self.last_id + rows)
            count, co2e, observed, observed_j, *buckets = db.execute(CELL_SUMS, (self.last_id, upper)).fetchone()
            parts = db.execute(COMPONENT_SUMS, (self.last_id, upper)).fetchall()
        finally:
            db.execute("COMMIT")
        for name, estimated, joules in parts:
            key = self._series(name, _is_estimated(name, estimated))
            self.energy_j[key] = self.energy_j.get(key, 0.0) + joules
        s = self.sums
        self.sums = Snapshot(
            s.cells + count, s.co2e_g + co2e, dict(self.energy_j),
            tuple(a + b for a, b in zip(s.bucket_counts, buckets)), s.observed + observed, s.observed_j + observed_j,
        )
        if self.first_id is None:
            self.first_id = first
        self.last_id = upper
        self.behind = upper < last

    def _series(self, name, estimated: bool) -> tuple[str, str]:
        source = "estimate" if estimated else "counter"
        key = (name, source)
        if key in self.energy_j:
            return key
        if not (isinstance(name, str) and 0 < len(name) <= MAX_NAME and name.isprintable() and name != "other"):
            return ("other", source)
        return key if len(self.energy_j) < MAX_SERIES else ("other", source)


def _first_and_last(db: sqlite3.Connection) -> tuple:
    # Two statements: SQLite answers each min() or max() alone from the table's b-tree, without a scan.
    first = db.execute("SELECT min(id) FROM cells").fetchone()[0]
    return first, db.execute("SELECT max(id) FROM cells").fetchone()[0]


def _is_estimated(name: str, estimated_json) -> bool:
    if not estimated_json or estimated_json == "[]":
        return False
    try:
        return name in json.loads(estimated_json)
    except (ValueError, TypeError):
        return False
