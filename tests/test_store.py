"""The history database: round trips, every way it can fail, several writers, and a kernel killed mid-session."""

import multiprocessing
import os
import shutil
import sqlite3
import tempfile
import time
from datetime import datetime, timedelta, timezone

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import greenjupyter
from greenjupyter import runtime
from greenjupyter.measurement import CellRecord, Measurement
from greenjupyter.store import ANY, MIGRATIONS, Store, StoredCell
from tests.kernels import history_after_recovery, kernel_environment, run_then_kill


def stored(n=1, notebook="analysis.ipynb", session="s1", started=None, co2e=0.5):
    m = Measurement(
        started_at=started or datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc) + timedelta(seconds=n),
        duration_s=1.5 * n,
        energy_j=100.0 * n,
        components={"cpu:package-0": 80.0 * n, "dram:0": 20.0 * n},
        estimated=False,
        avg_power_w=66.7,
        peak_power_w=90.0,
        uncertainty_j=0.1,
        failed_components=("gpu:0",),
        co2e_g=co2e,
        intensity_g_per_kwh=56.0,
        region="FR",
        pue=1.1,
    )
    record = CellRecord(m, n, f"cell-{n}", notebook, n != 2, "ValueError" if n == 2 else None, f"x = {n}")
    return StoredCell(record, session, "kernel-abc", "EPYC; rapl (cpu:package-0, dram:0)")


def test_a_row_comes_back_as_it_went_in(tmp_path):
    store = Store(str(tmp_path / "h.sqlite"))
    cell = stored(2)
    store.add(cell)
    (back,) = store.cells()
    assert back == cell
    assert store._background.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert store._cell_db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_what_the_user_attached_and_the_time_between_cells_come_back(tmp_path):
    store = Store(str(tmp_path / "h.sqlite"))
    record = stored(3).record.__class__(
        stored(3).record.measurement, 3, metrics={"accuracy": 0.93, "loss": 0.21}, tag="resnet18-70pct",
        units=1000.0, unit_name="predictions", idle_before_j=12.5, idle_before_s=60.0,
    )
    store.add(StoredCell(record, "s1"))
    (back,) = store.cells()
    assert back.record == record


def test_a_history_of_an_older_schema_is_read_as_is_and_upgraded_when_written(tmp_path):
    path = str(tmp_path / "h.sqlite")
    db = sqlite3.connect(path)
    for step in MIGRATIONS[:3]:  # the schema an older greenjupyter wrote, with one of its rows
        for statement in filter(str.strip, step.split(";")):
            db.execute(statement)
    db.execute("PRAGMA user_version = 3")
    cell = stored(1)
    columns = "schema_version, session, notebook, execution_count, success, started_at, duration_s, energy_j, " \
              "components, estimated, estimated_components, failed_components"
    db.execute(f"INSERT INTO cells ({columns}) VALUES (3, 's0', 'old.ipynb', 7, 1, ?, 2.0, 50.0, ?, 0, '[]', '[]')",
               (cell.record.measurement.started_at.isoformat(), '{"cpu:package-0": 50.0}'))
    db.commit()
    db.close()
    (old,) = Store(path, read_only=True).cells()
    assert (old.record.execution_count, old.record.metrics, old.record.tag, old.record.idle_before_j) == (7, {}, None, None)
    store = Store(path)  # a writer upgrades it
    assert store._background.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) == 4
    store.add(cell)
    assert [c.record.execution_count for c in store.cells()] == [7, 1]
    assert store.cells()[0].record.metrics == {}


def test_filters_by_notebook_time_and_session(tmp_path):
    store = Store(str(tmp_path / "h.sqlite"))
    old = datetime.now(timezone.utc) - timedelta(days=10)
    store.add(stored(1, started=old))
    store.add(stored(2, notebook=None, session="s2", started=old))
    store.add(stored(3, started=datetime.now(timezone.utc)))
    assert [c.record.execution_count for c in store.cells(notebook="analysis.ipynb")] == [1, 3]
    assert [c.record.execution_count for c in store.cells(notebook=None)] == [2]
    assert [c.record.execution_count for c in store.cells(session="s2")] == [2]
    assert [c.record.execution_count for c in store.cells(since=datetime.now(timezone.utc) - timedelta(days=1))] == [3]
    assert len(store.cells(notebook=ANY)) == 3


def test_a_locked_database_never_makes_the_cell_wait_and_loses_nothing(tmp_path):
    path = str(tmp_path / "h.sqlite")
    store = Store(path)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another kernel holds the write lock
    started = time.perf_counter()
    store.add(stored(1))
    assert time.perf_counter() - started < 0.05
    assert store.cells() == [] and len(store._waiting) == 1
    other.execute("COMMIT")
    store.retry()
    assert [c.record.execution_count for c in store.cells()] == [1] and not store.failed


def test_a_lock_held_for_long_is_told_once_and_nothing_is_lost(tmp_path, monkeypatch, capsys):
    from greenjupyter import store as store_module

    monkeypatch.setattr(store_module, "LOCK_PATIENCE_S", 0.0)
    path = str(tmp_path / "h.sqlite")
    store = Store(path)
    store._background.execute("PRAGMA busy_timeout = 50")  # the test's patience, not 2 s
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    store.add(stored(1))
    store.add(stored(2))
    store.retry()
    store.retry()
    err = capsys.readouterr().err
    assert err.count("has been locked by another process") == 1 and "2 cells wait in memory" in err
    other.execute("COMMIT")
    store.retry()
    assert [c.record.execution_count for c in store.cells()] == [1, 2]


def test_checkpoints_happen_off_the_cell_path_and_keep_the_wal_small(tmp_path):
    store = Store(str(tmp_path / "h.sqlite"))
    for _ in range(1500):  # ~4.5 KB of WAL each: past the checkpoint size
        store.add(stored(1))
    wal = tmp_path / "h.sqlite-wal"
    assert wal.stat().st_size > 4_000_000  # the cell path never checkpointed
    store.retry()  # the sampler thread's turn
    store.add(stored(2))  # the next write starts the WAL over, and it is cut back to the limit
    assert wal.stat().st_size <= 4_000_000
    assert len(store.cells()) == 1501


def test_a_full_database_warns_once_and_the_session_goes_on(tmp_path, capsys):
    store = Store(str(tmp_path / "h.sqlite"))
    pages = store._cell_db.execute("PRAGMA page_count").fetchone()[0]
    store._cell_db.execute(f"PRAGMA max_page_count = {pages}")  # as if the disk were full
    for n in range(1, 40):
        store.add(stored(1, co2e=float(n)))
    assert "database or disk is full" in store.failed
    assert capsys.readouterr().err.count("cannot be written") == 1


def _open_or_notice(path, capsys):
    runtime.shutdown()
    os.environ["GREENJUPYTER_DB_PATH"] = str(path)
    assert runtime.get_store() is None
    return capsys.readouterr().err


def test_a_corrupt_database_is_reported_and_cells_stay_in_memory(tmp_path, capsys):
    path = tmp_path / "h.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    assert "file is not a database" in _open_or_notice(path, capsys)
    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext greenjupyter")
    try:
        result = shell.run_cell("y = 1")
        assert result.success and len(greenjupyter.cells()) == 1
    finally:
        shell.run_cell("%unload_ext greenjupyter")


def test_a_newer_schema_is_refused_not_damaged(tmp_path, capsys):
    path = tmp_path / "h.sqlite"
    sqlite3.connect(path).execute("PRAGMA user_version = 99").connection.close()
    assert "newer than this greenjupyter" in _open_or_notice(path, capsys)
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 99


def test_an_unusable_path_is_reported(tmp_path, capsys):
    (tmp_path / "dir.sqlite").mkdir()
    assert "cannot be used" in _open_or_notice(tmp_path / "dir.sqlite", capsys)


def test_a_read_only_database_is_reported():
    from tests.test_rapl import _as_another_user

    folder = tempfile.mkdtemp(prefix="history-")  # readable by "nobody", unlike pytest's tmp_path
    try:
        os.chmod(folder, 0o755)
        path = os.path.join(folder, "h.sqlite")
        Store(path).close()
        for name in os.listdir(folder):
            os.chmod(os.path.join(folder, name), 0o444)
        outcome = _as_another_user(lambda: _try_store(path))
    finally:
        shutil.rmtree(folder)
    assert isinstance(outcome, sqlite3.Error) and "readonly" in str(outcome), outcome


def _try_store(path):
    try:
        store = Store(path)
        store.add(stored(1))
        return RuntimeError(store.failed or "wrote to a read-only database")
    except sqlite3.Error as error:
        return error


def _writer(path, worker, rows):
    store = Store(path)
    for n in range(rows):
        store.add(stored(n + 1, session=f"worker-{worker}"))
    while store._waiting:
        store.retry()
    store.close()


def test_several_processes_writing_at_once_lose_nothing(tmp_path):
    path = str(tmp_path / "h.sqlite")
    Store(path).close()
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_writer, args=(path, w, 200)) for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    cells = Store(path).cells()
    assert len(cells) == 800
    assert {c.session for c in cells} == {f"worker-{w}" for w in range(4)}


def test_history_api_and_magic(tmp_path):
    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext greenjupyter")
    try:
        shell.run_cell("a = 1", store_history=True)
        shell.run_cell("1/0", store_history=True)
        past = greenjupyter.history(since="1h")
        assert [c.record.success for c in past] == [True, False]
        assert past[0].record.measurement.co2e_g is not None and past[0].kernel_id is None
        with capture_output() as captured:
            shell.run_cell("%carbon history")
        text = captured.outputs[0].data["text/plain"]
        assert "greenjupyter history for cells run outside a notebook" in text
        assert text.splitlines()[2].split()[2] == "2"  # one session, two cells (the magic's own not yet)
    finally:
        shell.run_cell("%unload_ext greenjupyter")
    with pytest.raises(greenjupyter.ConfigError, match="since='yesterday' is not understood"):
        greenjupyter.history(since="yesterday")


def test_a_kernel_killed_with_sigkill_keeps_every_cell_it_ran(tmp_path, monkeypatch):
    env = kernel_environment(tmp_path)
    # The sampler ticks once at load and then not for a minute: the cells' rows can only come
    # from what each cell itself wrote, the journal.
    env["GREENJUPYTER_SAMPLE_INTERVAL_S"] = "60"
    run_then_kill(tmp_path, env, [f"x = {n}" for n in range(5)])
    db_path = env["GREENJUPYTER_DB_PATH"]
    assert [c.record.source_preview for c in Store(db_path).cells()] == []
    pending = tmp_path / "history.sqlite.pending"
    assert [p.stat().st_mode & 0o777 for p in pending.iterdir()] == [0o600] and pending.stat().st_mode & 0o777 == 0o700
    # The next kernel on the same database recovers them, with their CO2e worked out then.
    cells = history_after_recovery(monkeypatch, db_path)
    assert [c.record.source_preview for c in cells] == [f"x = {n}" for n in range(5)]
    assert [c.record.execution_count for c in cells] == [2, 3, 4, 5, 6]
    assert len({c.kernel_id for c in cells}) == 1 and cells[0].kernel_id
    assert all(c.record.measurement.co2e_g > 0 and c.record.measurement.energy_j > 0 for c in cells)
    assert list(pending.iterdir()) == []  # recovered files are deleted; this kernel's own closed cleanly


def test_history_as_a_dataframe(tmp_path, monkeypatch):
    store = Store(str(tmp_path / "h.sqlite"))
    for n in (1, 2, 3):
        store.add(stored(n))
    monkeypatch.setattr(runtime, "get_store", lambda: store)
    frame = greenjupyter.history().to_dataframe()
    assert list(frame["execution_count"]) == [1, 2, 3]
    assert list(frame["energy_j"]) == [100.0, 200.0, 300.0]
    assert list(frame["energy_j[cpu:package-0]"]) == [80.0, 160.0, 240.0]
    assert list(frame["success"]) == [True, False, True]
