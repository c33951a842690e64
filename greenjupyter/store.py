"""History that survives kernels: one SQLite row per measured cell, written when the cell ends.

WAL mode with ``synchronous=NORMAL``: a committed row is in the WAL file before the cell's
reply leaves the kernel, so a kernel killed with SIGKILL keeps every row it wrote. The cell
path never waits on another writer (busy timeout 0); a row that meets a lock is queued and
written by the sampler thread, which may wait. A database that cannot be written at all
(read-only, full, corrupt, unopenable) gives one warning and the session goes on in memory.

The files are the user's alone: a new database, its ``-wal`` and ``-shm`` (SQLite gives them
the database's mode) are 0600, and new directories 0700; an existing file or directory keeps
its mode. If the file is deleted or replaced under a running kernel, the sampler thread sees
it (``retry``), says so once, and goes on in a new database at the same path.

``Store(path, read_only=True)`` reads a history without changing a byte of it (the CLI).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone

from .errors import GreenJupyterError
from .measurement import CellRecord, Measurement
from .notices import notice

try:
    import fcntl
except ImportError:  # Windows: no folder lock; kernels there rarely share a history
    fcntl = None

SCHEMA_VERSION = 4
# Each entry upgrades the schema from its index to index + 1; never edit one that has shipped.
MIGRATIONS = (
    """
    CREATE TABLE cells (
        id INTEGER PRIMARY KEY,
        schema_version INTEGER NOT NULL,
        session TEXT NOT NULL,
        kernel_id TEXT,
        notebook TEXT,
        execution_count INTEGER,
        cell_id TEXT,
        success INTEGER NOT NULL,
        error TEXT,
        source_preview TEXT,
        started_at TEXT NOT NULL,
        duration_s REAL NOT NULL,
        energy_j REAL NOT NULL,
        components TEXT NOT NULL,
        estimated INTEGER NOT NULL,
        estimated_components TEXT NOT NULL,
        failed_components TEXT NOT NULL,
        avg_power_w REAL,
        peak_power_w REAL,
        uncertainty_j REAL,
        co2e_g REAL,
        intensity_g_per_kwh REAL,
        region TEXT,
        pue REAL,
        hardware TEXT
    )
    """,  # no index: each one costs every cell another page write, and a scan of years of cells is quick
    # 2: components whose whole-device figure other processes shared (a JSON list, as the other lists)
    "ALTER TABLE cells ADD COLUMN shared_components TEXT NOT NULL DEFAULT '[]'",
    # 3: the cell's number in its session's journal, so a recovered journal adds no row twice
    "ALTER TABLE cells ADD COLUMN entry INTEGER",
    # 4: what the user attached to the cell (metrics as a JSON object, a run tag, functional units for SCI),
    # and the energy and time between the previous cell's end and this cell's start
    "ALTER TABLE cells ADD COLUMN metrics TEXT NOT NULL DEFAULT '{}';"
    "ALTER TABLE cells ADD COLUMN tag TEXT;"
    "ALTER TABLE cells ADD COLUMN units REAL;"
    "ALTER TABLE cells ADD COLUMN unit_name TEXT;"
    "ALTER TABLE cells ADD COLUMN idle_before_j REAL;"
    "ALTER TABLE cells ADD COLUMN idle_before_s REAL",
)
COLUMNS = (
    "schema_version, session, kernel_id, notebook, execution_count, cell_id, success, error, source_preview, "
    "started_at, duration_s, energy_j, components, estimated, estimated_components, failed_components, "
    "avg_power_w, peak_power_w, uncertainty_j, co2e_g, intensity_g_per_kwh, region, pue, hardware, shared_components, entry, "
    "metrics, tag, units, unit_name, idle_before_j, idle_before_s"
)
LATER_COLUMNS = {  # added by migrations 2 to 4, with their defaults
    "shared_components": "'[]'", "entry": "NULL", "metrics": "'{}'", "tag": "NULL", "units": "NULL",
    "unit_name": "NULL", "idle_before_j": "NULL", "idle_before_s": "NULL",
}
INSERT = f"INSERT INTO cells ({COLUMNS}) VALUES ({', '.join('?' * len(COLUMNS.split(', ')))})"
BUSY_ERRORS = ("locked", "busy")
ANY = object()  # no filter on that column
LOCK_PATIENCE_S = 10.0  # how long rows may wait for a lock before the user is told
WAL_CHECKPOINT_BYTES = 4_000_000  # about what SQLite's own 1,000-page autocheckpoint would allow


def default_path() -> str:
    """Return greenjupyter.sqlite in the user's Jupyter data directory."""
    try:
        from jupyter_core.paths import jupyter_data_dir

        base = jupyter_data_dir()
    except ImportError:  # jupyter_core comes with every kernel; plain Python may lack it
        base = os.path.join(os.path.expanduser("~"), ".local", "share", "jupyter")
    return os.path.join(base, "greenjupyter", "history.sqlite")


@dataclass(frozen=True)
class StoredCell:
    """A cell record as the store keeps it, with where and on what it ran."""

    record: CellRecord
    session: str
    kernel_id: str | None = None
    hardware: str | None = None  # one line: what measured it
    entry: int | None = None  # its number in the session's journal


class NotAHistory(GreenJupyterError):
    """A file that is not a greenjupyter history database, or is one from a newer greenjupyter."""


class Store:
    """Append cell rows to one SQLite file; read them back. Thread-safe.

    Two connections: the cell path's, which never waits (busy timeout 0), and a background
    one (queued rows, checkpoints, reads), which may wait for other writers. A read-only
    store has the background one only, opened with ``mode=ro``, and never migrates.
    """

    def __init__(self, path: str, read_only: bool = False):
        self.path = path
        self.read_only = read_only
        self._waiting: deque = deque()  # rows that met a lock, for the sampler thread to write
        self._waiting_since = None  # monotonic time the oldest waiting row met the lock
        self.failed = None  # why the store gave up, once it has
        self.pid = os.getpid()  # SQLite connections must not be used, nor closed, in a forked child
        self.before_read = None  # called before each read: the kernel writes the cells it still holds
        self._identity = None  # (st_dev, st_ino) of the file the connections have open
        self._sidecars = []  # (path, identity) of its -wal and -shm
        self._select = f"SELECT {COLUMNS} FROM cells"
        self._background_lock = threading.Lock()
        self._cell_lock = threading.Lock()
        if read_only:
            self._cell_db = None
            self._background = _connect_read_only(path)
            try:
                self._select = _history_select(self._background, path)
            except Exception:
                self._background.close()
                raise
        else:
            self._open()

    def _open(self) -> None:
        _create_owner_only(self.path)
        background = self._connect(busy_ms=2000)  # set-up may wait for another kernel's migration
        try:
            background.execute("PRAGMA journal_mode = WAL")
            self._migrate(background)
            cell_db = self._connect(busy_ms=0)
            cell_db.execute("PRAGMA cache_size = -256")  # appends need a few pages, not SQLite's 2 MB
        except Exception:
            background.close()
            raise
        self._background, self._cell_db = background, cell_db
        self._identity = _identity(self.path)
        self._sidecars = [(name, _identity(name)) for name in (self.path + "-wal", self.path + "-shm")]

    def _connect(self, busy_ms: int) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=0)
        db.execute(f"PRAGMA busy_timeout = {busy_ms}")
        db.execute("PRAGMA synchronous = NORMAL")
        # A checkpoint fsyncs the database (milliseconds): never on the cell path; retry() runs them.
        db.execute("PRAGMA wal_autocheckpoint = 0")
        db.execute(f"PRAGMA journal_size_limit = {WAL_CHECKPOINT_BYTES}")  # the WAL shrinks back after one
        return db

    def _migrate(self, db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise sqlite3.DatabaseError(
                    f"{self.path} has schema {version}, newer than this greenjupyter ({len(MIGRATIONS)})"
                )
            for step in MIGRATIONS[version:]:
                for statement in filter(str.strip, step.split(";")):
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
            db.execute("COMMIT")
        except Exception:
            db.execute("ROLLBACK")
            raise

    def _moved(self) -> bool:
        """True when the path no longer leads to the file the connections have open (one stat)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return True
        except OSError:  # cannot tell (a folder we may no longer search): carry on as before
            return False
        return (st.st_dev, st.st_ino) != self._identity

    def _reopen(self) -> None:
        """Go on in a new database at the path, the old file having been deleted or replaced."""
        with self._cell_lock, self._background_lock:
            # SQLite neither checkpoints into a moved file nor deletes its -wal and -shm on close: a
            # -wal of ours left at the path would be read as part of whatever file is there now.
            for name, identity in self._sidecars:
                if identity is not None and _identity(name) == identity:
                    remove_file(name)
            self._cell_db.close()
            self._background.close()
            self._identity = None
            try:
                self._open()
            except (OSError, sqlite3.Error) as error:
                self.failed = str(error)
                notice(
                    "store",
                    f"history database {self.path} was replaced while this kernel ran, by a file that cannot be "
                    f"used ({error}); this session's cells stay in memory only (set db_path to another file to "
                    "keep them)",
                )
                return
        notice(
            "store-moved",
            f"history database {self.path} was deleted or replaced while this kernel ran; this session's cells "
            "from now on go to a new database there (those written before are not in it)",
        )

    def add(self, cell: StoredCell) -> None:
        """Write one row now; on a lock, queue it for ``retry()``; on any other failure, give up once."""
        self.add_many([cell])

    def add_many(self, cells) -> None:
        """Write rows now, in one transaction, never waiting for another writer: on a lock, queue
        them for ``retry()``; on any other failure, give up once."""
        if self.failed or self.pid != os.getpid() or not cells:
            return
        rows = [_row(cell) for cell in cells]
        if self._moved():  # the file was deleted or replaced: retry() opens the new one, then writes them
            self._queue(rows)
            return
        try:
            with self._cell_lock:
                _insert(self._cell_db, rows, "BEGIN")
        except sqlite3.OperationalError as error:
            if any(word in str(error) for word in BUSY_ERRORS):
                self._queue(rows)
            else:
                self._give_up(error)
        except sqlite3.DatabaseError as error:
            self._give_up(error)

    def retry(self) -> None:
        """Write queued rows, waiting up to 2 s for other writers, then checkpoint (off the cell path)."""
        if self.failed or self.read_only or self.pid != os.getpid():
            return
        if self._moved():
            self._reopen()
            if self.failed:
                return
        try:
            with self._background_lock:
                while self._waiting:
                    self._background.execute(INSERT, self._waiting[0])
                    self._waiting.popleft()
                self._waiting_since = None
                if _wal_bytes(self.path) > WAL_CHECKPOINT_BYTES:
                    self._background.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.OperationalError as error:
            if not any(word in str(error) for word in BUSY_ERRORS):
                self._give_up(error)
            elif self._waiting_since is not None and time.monotonic() - self._waiting_since > LOCK_PATIENCE_S:
                notice(
                    "store-locked",
                    f"history database {self.path} has been locked by another process for over "
                    f"{LOCK_PATIENCE_S:g} s; {len(self._waiting)} cells wait in memory and are written when it frees",
                )
        except sqlite3.DatabaseError as error:
            self._give_up(error)

    def _queue(self, rows) -> None:
        if not self._waiting:
            self._waiting_since = time.monotonic()
        self._waiting.extend(rows)

    @property
    def all_written(self) -> bool:
        """True when every row given to ``add`` is in the database."""
        return self.failed is None and not self._waiting

    def entries(self, session: str) -> set[int]:
        """Return the journal numbers of the rows of ``session`` already in the database."""
        with self._background_lock:
            rows = self._background.execute(
                "SELECT entry FROM cells WHERE session = ? AND entry IS NOT NULL", (session,)
            ).fetchall()
        return {row[0] for row in rows}

    def add_all(self, cells) -> None:
        """Write rows in one transaction, waiting for other writers (off the cell path); raise on failure."""
        if not cells or self.pid != os.getpid():
            return
        with self._background_lock:
            _insert(self._background, [_row(cell) for cell in cells], "BEGIN IMMEDIATE")

    def _give_up(self, error: Exception) -> None:
        self.failed = str(error)
        notice(
            "store",
            f"history database {self.path} cannot be written ({error}); this session's cells stay in memory "
            "only (set db_path to another file to keep them)",
        )

    def cells(self, notebook=ANY, since: datetime | None = None, session=ANY):
        """Return StoredCells, oldest first: all of them, or for one notebook (None: cells run outside
        any notebook), one session, since a time. Pass ``ANY`` for no filter on a column."""
        clauses, args = [], []
        for column, value in (("notebook", notebook), ("session", session)):
            if value is ANY:
                continue
            clauses.append(f"{column} IS ?")  # IS matches NULL too (cells run outside a notebook)
            args.append(value)
        if since is not None:
            clauses.append("started_at >= ?")
            args.append(_iso(since))
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        if self.before_read is not None:
            self.before_read()
        with self._background_lock:
            try:
                if self._closed:
                    raise sqlite3.DatabaseError(self.failed)
                rows = self._background.execute(f"{self._select}{where} ORDER BY started_at, id", args).fetchall()
            except sqlite3.DatabaseError as error:
                raise GreenJupyterError(
                    f"history database {self.path} cannot be read ({error}); this session's cells are in "
                    "memory: %carbon cells, or greenjupyter.cells()"
                ) from None
        return [_cell(row) for row in rows]

    @property
    def _closed(self) -> bool:
        """True once a replaced file could not be opened: the connections are closed for good."""
        return self.failed is not None and self._identity is None and not self.read_only

    def close(self) -> None:
        if self.pid != os.getpid():
            return
        self.retry()
        with self._cell_lock, self._background_lock:
            if self._cell_db is not None:
                self._cell_db.close()
            self._background.close()


def _insert(db: sqlite3.Connection, rows, begin: str) -> None:
    """Insert ``rows`` in one transaction (a single row needs none); roll back and raise on failure."""
    if len(rows) == 1:
        db.execute(INSERT, rows[0])
        return
    db.execute(begin)
    try:
        db.executemany(INSERT, rows)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _identity(path: str):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def remove_file(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def make_folders(directory: str) -> None:
    """Make ``directory`` and each missing folder above it owner-only (0700); modes of those that exist are kept."""
    missing = []
    while not os.path.isdir(directory):
        missing.append(directory)
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:  # another kernel made it first
            pass


def _create_owner_only(path: str) -> None:
    """Create the database file 0600 (and its missing folders 0700) unless it exists; modes of what exists are kept.

    A ``-wal`` or ``-shm`` found without its database belonged to one that was deleted: they
    go, so that SQLite never replays an old WAL into the new file. A lock on the folder keeps
    two kernels doing this at once from removing each other's new files.
    """
    make_folders(os.path.dirname(os.path.abspath(path)))
    try:
        lock = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY) if fcntl else None
    except OSError:
        lock = None  # a folder we may not read: SQLite says what is wrong, if anything
    try:
        if lock is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            return
        for suffix in ("-wal", "-shm"):
            remove_file(path + suffix)
    finally:
        if lock is not None:
            os.close(lock)  # and with it the lock


def _connect_read_only(path: str) -> sqlite3.Connection:
    """Open ``path`` with ``mode=ro``: SQLite writes nothing to it (it may add an empty -wal and -shm beside a
    WAL database, to read a live writer's rows). In a folder it may not write, the file is read as immutable:
    no WAL can be in use there."""
    from urllib.parse import quote

    uri = f"file:{quote(os.path.abspath(path))}?mode=ro"
    db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    try:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return db
    except sqlite3.OperationalError as error:
        db.close()
        folder = os.path.dirname(os.path.abspath(path))
        if "unable to open" in str(error) and os.path.isfile(path) and not os.access(folder, os.W_OK):
            return sqlite3.connect(uri + "&immutable=1", uri=True, isolation_level=None, check_same_thread=False)
        raise
    except BaseException:
        db.close()
        raise


def _history_select(db: sqlite3.Connection, path: str) -> str:
    """Return the SELECT of every column for this history's schema; raise NotAHistory for any other file."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    present = {row[1] for row in db.execute("PRAGMA table_info(cells)")}
    wanted = COLUMNS.split(", ")
    missing = [c for c in wanted if c not in present and c not in LATER_COLUMNS]
    reason = None
    if not present:
        reason = "it has no cells table"
    elif missing:
        reason = f"its cells table has no {', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''} column"
    elif version < 1:
        reason = f"its user_version is {version}"
    if reason:
        raise NotAHistory(f"{path} is not a greenjupyter history database ({reason}); accepted: a history file "
                          "written by greenjupyter")
    if version > len(MIGRATIONS):
        raise NotAHistory(f"{path} has schema {version}, newer than this greenjupyter reads ({len(MIGRATIONS)}); "
                          "upgrade greenjupyter to read it")
    return "SELECT " + ", ".join(c if c in present else f"{LATER_COLUMNS[c]} AS {c}" for c in wanted) + " FROM cells"


def _wal_bytes(path: str) -> int:
    try:
        return os.path.getsize(path + "-wal")
    except OSError:
        return 0


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment.astimezone(timezone.utc).isoformat()


def _row(cell: StoredCell) -> tuple:
    r, m = cell.record, cell.record.measurement
    return (
        SCHEMA_VERSION, cell.session, cell.kernel_id, r.notebook, r.execution_count, r.cell_id, int(r.success),
        r.error, r.source_preview, _iso(m.started_at), m.duration_s, m.energy_j, json.dumps(dict(m.components)),
        int(m.estimated), _json_list(m.estimated_components), _json_list(m.failed_components), m.avg_power_w,
        m.peak_power_w, m.uncertainty_j, m.co2e_g, m.intensity_g_per_kwh, m.region, m.pue, cell.hardware,
        _json_list(m.shared_components), cell.entry, json.dumps(dict(r.metrics)) if r.metrics else "{}", r.tag,
        r.units, r.unit_name, r.idle_before_j, r.idle_before_s,
    )


def _json_list(names) -> str:
    return json.dumps(list(names)) if names else "[]"  # most cells have none: skip the encoder


def _cell(row) -> StoredCell:
    (_, session, kernel_id, notebook, count, cell_id, success, error, preview, started, duration, energy, parts,
     estimated, estimated_parts, failed_parts, avg_w, peak_w, uncertainty, co2e, intensity, region, pue,
     hardware, shared_parts, entry, metrics, tag, units, unit_name, idle_j, idle_s) = row
    measurement = Measurement(
        started_at=datetime.fromisoformat(started),
        duration_s=duration,
        energy_j=energy,
        components=json.loads(parts),
        estimated=bool(estimated),
        avg_power_w=avg_w,
        peak_power_w=peak_w,
        uncertainty_j=uncertainty,
        estimated_components=tuple(json.loads(estimated_parts)),
        failed_components=tuple(json.loads(failed_parts)),
        shared_components=tuple(json.loads(shared_parts)),
        co2e_g=co2e,
        intensity_g_per_kwh=intensity,
        region=region,
        pue=pue,
    )
    record = CellRecord(measurement, count, cell_id, notebook, bool(success), error, preview or "",
                        json.loads(metrics) if metrics != "{}" else {}, tag, units, unit_name, idle_j, idle_s)
    return StoredCell(record, session, kernel_id, hardware, entry)
