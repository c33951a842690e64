"""The history's files: owner-only when new, modes kept when not, and a database deleted or
replaced under a running shell."""

import hashlib
import os
import shutil
import sqlite3
import time

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import greenjupyter
from greenjupyter.store import Store
from tests.test_store import stored


def mode(path) -> int:
    return os.stat(path).st_mode & 0o777


@pytest.fixture
def open_umask():
    """The usual umask (0022), under which files are world-readable unless made otherwise."""
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture
def shell(monkeypatch):
    monkeypatch.setenv("GREENJUPYTER_SAMPLE_INTERVAL_S", "0.05")
    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext greenjupyter")
    yield shell
    shell.run_cell("%unload_ext greenjupyter")


def wait_for(condition, what: str, timeout_s: float = 30.0):
    """Poll ``condition`` (a busy machine may take a while); return its first true value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def previews(path) -> list:
    """The previews in a history file, read as a separate process would; [] while it cannot be read."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return [row[0] for row in db.execute("SELECT source_preview FROM cells ORDER BY id")]
        finally:
            db.close()
    except sqlite3.Error:
        return []


def test_a_new_history_its_wal_and_its_folders_are_owner_only(tmp_path, monkeypatch, open_umask):
    path = tmp_path / "data" / "greenjupyter" / "history.sqlite"
    monkeypatch.setenv("GREENJUPYTER_DB_PATH", str(path))
    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext greenjupyter")
    try:
        shell.run_cell("secret_token = 'sk-live-123'")
        assert [c.record.source_preview for c in greenjupyter.history()] == ["secret_token = 'sk-live-123'"]
        files = [path, f"{path}-wal", f"{path}-shm"]
        assert [mode(f) for f in files] == [0o600] * 3  # -wal and -shm are SQLite's, made with the database's mode
        assert mode(path.parent) == mode(path.parent.parent) == 0o700
        pending = f"{path}.pending"
        assert mode(pending) == 0o700 and all(mode(os.path.join(pending, n)) == 0o600 for n in os.listdir(pending))
    finally:
        shell.run_cell("%unload_ext greenjupyter")


@pytest.mark.parametrize("chosen", [0o640, 0o644])
def test_an_existing_file_and_folder_keep_their_modes(tmp_path, open_umask, chosen):
    folder = tmp_path / "shared"
    folder.mkdir(mode=0o755)
    path = folder / "history.sqlite"
    sqlite3.connect(path).close()  # an empty database someone made
    os.chmod(path, chosen)
    store = Store(str(path))
    store.add(stored(1))
    assert [mode(f) for f in (path, f"{path}-wal", f"{path}-shm")] == [chosen] * 3
    assert mode(folder) == 0o755
    store.close()
    assert mode(path) == chosen


def test_new_files_are_owner_only_whatever_the_umask_and_two_stores_share_one(tmp_path, open_umask):
    path = str(tmp_path / "h.sqlite")
    first, second = Store(path), Store(path)  # the second finds the file the first made
    first.add(stored(1))
    second.add(stored(2))
    assert len(first.cells()) == 2 and mode(path) == 0o600
    first.close()
    second.close()


def test_a_database_deleted_under_a_running_shell_is_said_once_and_later_cells_go_to_a_new_one(
        tmp_path, shell, capsys):
    path = tmp_path / "history.sqlite"
    shell.run_cell("before = 1")
    wait_for(lambda: previews(path) == ["before = 1"], "the first row")
    os.unlink(path)  # as `rm history.sqlite` does: its -wal and -shm stay behind
    for n in range(3):
        shell.run_cell(f"after = {n}")
    wanted = [f"after = {n}" for n in range(3)]
    assert wait_for(lambda: previews(path) == wanted, "the rows written after the deletion, in a new file")
    shell.run_cell("last = 1")
    wait_for(lambda: previews(path) == wanted + ["last = 1"], "the next row")
    err = capsys.readouterr().err
    assert err.count(f"history database {path} was deleted or replaced while this kernel ran") == 1
    assert mode(path) == 0o600
    with capture_output() as captured:
        shell.run_cell("%carbon history")
    assert "4" in captured.outputs[0].data["text/plain"].splitlines()[2].split()  # the new file's four cells


def test_a_folder_deleted_with_the_database_is_made_again(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "nested"
    monkeypatch.setenv("GREENJUPYTER_DB_PATH", str(folder / "h.sqlite"))
    monkeypatch.setenv("GREENJUPYTER_SAMPLE_INTERVAL_S", "0.05")
    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext greenjupyter")
    try:
        shell.run_cell("x = 1")
        wait_for(lambda: previews(folder / "h.sqlite") == ["x = 1"], "the first row")
        shutil.rmtree(folder)
        shell.run_cell("y = 2")
        wait_for(lambda: previews(folder / "h.sqlite") == ["y = 2"], "the row after the deletion")
    finally:
        shell.run_cell("%unload_ext greenjupyter")
    assert capsys.readouterr().err.count("was deleted or replaced") == 1
    assert mode(folder) == 0o700


def test_a_database_replaced_by_garbage_is_said_once_and_the_session_goes_on_in_memory(tmp_path, shell, capsys):
    path = tmp_path / "history.sqlite"
    shell.run_cell("before = 1")
    wait_for(lambda: previews(path) == ["before = 1"], "the first row")
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"not a database at all " * 200)
    os.replace(garbage, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    shell.run_cell("after = 1")
    said = []
    wait_for(lambda: said.append(capsys.readouterr().err) or "cannot be used" in "".join(said), "the notice")
    result = shell.run_cell("%carbon history")
    shell.run_cell("after = 2")
    err = "".join(said) + capsys.readouterr().err
    assert err.count("was replaced while this kernel ran, by a file that cannot be used (file is not a database)") == 1
    assert f"UsageError: history database {path} cannot be read" in err and "Traceback" not in err
    assert not result.success and "DatabaseError" not in err
    assert [r.source_preview for r in greenjupyter.cells()][-2:] == ["%carbon history", "after = 2"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest  # not a byte written into it
