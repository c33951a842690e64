"""The cell journal: what a cell writes, what survives a kill, a torn write, a full disk."""

import errno
import fcntl
import math
import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from IPython.core.interactiveshell import InteractiveShell

import greenjupyter
from greenjupyter import fastpath, journal, runtime
from greenjupyter.measurement import CellRecord
from greenjupyter.meter import Reading
from greenjupyter.store import Store, StoredCell

HEADER = {
    "version": 1, "session": "s1", "kernel_id": "k1", "notebook": "nb.ipynb", "hardware": "test",
    "components": ["cpu:package-0", "dram:0", "gpu:0"], "period_s": [0.001, 0.001, 0.0],
    "power_error_w": [0.0, 0.0, 5.0], "estimated": [False, False, False], "caps_w": [math.inf] * 3,
}


def reading(t, values, variation=None):
    return Reading(t, 1_700_000_000.0 + t, values, 0, tuple(HEADER["components"]), 1e-6, variation)


def entry(seq, joules=(10.0, 2.0, 30.0), preview="x = 1", error=None):
    start = reading(100.0 + seq, [0.0, 0.0, 0.0], [0.0, 0.0, 0.0])
    stop = reading(100.5 + seq, list(joules), [0.0, 0.0, 1.5])
    return fastpath.frame(journal.ENTRY_MAGIC, journal.entry_parts(
        seq, seq + 1, error is None, start, stop, {2} if seq == 3 else (), (), f"id{seq}", preview, error))


def write_journal(path, entries, header=HEADER):
    with open(path, "wb") as f:
        f.write(journal.header_bytes(header) + b"".join(entries))


def test_entries_read_back_as_written(tmp_path):
    path = tmp_path / "a.cells"
    long_preview = "é" * 2000  # cut at fastpath.MAX_TEXT bytes, still valid text
    nan_reading = entry(4, joules=(float("nan"), 1.0, 2.0))
    write_journal(path, [entry(0), entry(1, preview=long_preview, error="ZeroDivisionError"), entry(3), nan_reading])
    header, entries = journal.read(str(path))
    assert header == HEADER
    assert [e.seq for e in entries] == [0, 1, 3, 4]
    first = entries[0]
    assert (first.execution_count, first.success, first.cell_id, first.preview, first.error) == (1, True, "id0", "x = 1", None)
    assert first.stop.values == [10.0, 2.0, 30.0] and first.stop.variation == [0.0, 0.0, 1.5]
    assert entries[1].error == "ZeroDivisionError" and not entries[1].success
    assert len(entries[1].preview.encode()) <= fastpath.MAX_TEXT and entries[1].preview.startswith("éé")
    assert entries[2].failed == frozenset({2})
    m = journal.measurement_of(entries[0], header)
    assert m.energy_j == pytest.approx(42.0) and m.duration_s == pytest.approx(0.5)
    # polled GPU: the variation between polls plus the sensor's 5 W over the window
    assert m.uncertainty_j >= 1.5 + 5.0 * 0.5
    assert journal.measurement_of(entries[2], header).failed_components == ("gpu:0",)
    assert journal.measurement_of(entries[3], header).failed_components == ("cpu:package-0",)


@pytest.mark.parametrize("damage", ["torn", "garbage", "flipped"])
def test_a_torn_or_damaged_tail_keeps_every_whole_entry_before_it(tmp_path, damage):
    path = tmp_path / "a.cells"
    whole = journal.header_bytes(HEADER) + entry(0) + entry(1)
    last = entry(2)
    if damage == "torn":  # the process died in the middle of a write
        data = whole + last[: len(last) // 2]
    elif damage == "garbage":
        data = whole + os.urandom(300)
    else:  # one bit of the last entry's payload changed: its CRC no longer matches
        data = whole + last[:20] + bytes([last[20] ^ 1]) + last[21:]
    path.write_bytes(data)
    header, entries = journal.read(str(path))
    assert header == HEADER and [e.seq for e in entries] == [0, 1]


def hold_lock(path, ready, release):
    fd = os.open(path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    ready.set()
    release.wait(30)


def test_a_live_kernels_journal_is_left_alone_and_a_dead_ones_recovered_once(tmp_path):
    directory = tmp_path / "h.sqlite.pending"
    directory.mkdir()
    alive, dead = directory / "s1-1.cells", directory / "s1-2.cells"
    write_journal(alive, [entry(0), entry(1)])
    write_journal(dead, [entry(2), entry(3), entry(4)])
    store = Store(str(tmp_path / "h.sqlite"))
    # Cell 3 already made it into the database before the kernel died.
    m = journal.measurement_of(journal.read(str(dead))[1][1], HEADER)
    store.add(StoredCell(CellRecord(m, 4), "s1", "k1", "test", entry=3))
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=hold_lock, args=(str(alive), ready, release))
    holder.start()
    try:
        assert ready.wait(10)
        assert journal.recover(str(directory), store, lambda m: m.replace(co2e_g=1.0)) == 2
        assert [p.name for p in directory.iterdir()] == [alive.name]  # the live one stays, untouched
        rows = store.cells(session="s1")
        assert sorted(c.entry for c in rows) == [2, 3, 4]
        assert {c.record.measurement.co2e_g for c in rows if c.entry != 3} == {1.0}
        assert rows[0].record.notebook == "nb.ipynb" and rows[0].kernel_id == "k1"
    finally:
        release.set()
        holder.join(10)
    assert journal.recover(str(directory), store, lambda m: m) == 2  # its writer is gone now
    assert sorted(c.entry for c in store.cells(session="s1")) == [0, 1, 2, 3, 4]
    assert journal.recover(str(directory), store, lambda m: m) == 0 and list(directory.iterdir()) == []
    store.close()


@pytest.fixture
def shell():
    shell = InteractiveShell.instance()
    yield shell
    shell.run_cell("%unload_ext greenjupyter")


def test_the_cells_own_path_writes_the_journal_and_never_the_database(shell, tmp_path, monkeypatch):
    monkeypatch.setenv("GREENJUPYTER_SAMPLE_INTERVAL_S", "0.05")
    shell.run_cell("%load_ext greenjupyter")
    store = runtime.get_store()
    threads = []
    add_many = store.add_many
    monkeypatch.setattr(store, "add_many", lambda cells: (threads.extend([threading.get_ident()] * len(cells)),
                                                          add_many(cells)))
    pending = tmp_path / "history.sqlite.pending"
    for n in range(30):
        shell.run_cell(f"x = {n}", store_history=True)
    assert any(p.stat().st_size > 0 for p in pending.iterdir())
    deadline = time.monotonic() + 10
    while len(threads) < 30 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(threads) >= 30 and threading.get_ident() not in threads  # rows come from the sampler's thread
    # Once the rows are in, the sampler makes a fresh file ready (a file with no entry yet); the next cell
    # moves to it, and the sampler deletes the old one.
    deadline = time.monotonic() + 10
    while not any(not journal.read(str(p))[1] for p in pending.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    shell.run_cell("x = 30", store_history=True)
    deadline = time.monotonic() + 10
    while sum(len(journal.read(str(p))[1]) for p in pending.iterdir()) > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    files = list(pending.iterdir())
    assert len(files) <= 2  # the file being written and the next one made ready
    assert sum(len(journal.read(str(p))[1]) for p in files) <= 1
    shell.run_cell("%unload_ext greenjupyter")
    assert list(pending.iterdir()) == []
    previews = [c.record.source_preview for c in Store(str(tmp_path / "history.sqlite")).cells()]
    assert previews[-31:] == [f"x = {n}" for n in range(31)]


def test_a_journal_that_cannot_be_made_gives_one_notice_and_cells_still_reach_the_database(shell, tmp_path, capsys):
    (tmp_path / "history.sqlite.pending").write_text("a file where the journal's folder would go")
    shell.run_cell("%load_ext greenjupyter")
    for n in range(3):
        shell.run_cell(f"y = {n}", store_history=True)
    rows = greenjupyter.history()
    assert [c.record.source_preview for c in rows] == ["y = 0", "y = 1", "y = 2"]
    err = capsys.readouterr().err
    assert err.count("cell journal in") == 1 and "cannot be written" in err


FULL_DISK = textwrap.dedent("""
    import os, resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, as on a full disk
    from IPython.core.interactiveshell import InteractiveShell
    import greenjupyter.journal
    greenjupyter.journal.MAPPED_BYTES = 8192  # a journal file fills within this test
    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext greenjupyter")
    shell.run_cell("x = 0")
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))  # from now on no file may grow
    for n in range(1, 101):  # the space the journal file took before goes on; then no new file can be made
        result = shell.run_cell(f"x = {n}")
        assert result.success, result
    import greenjupyter
    print("cells in memory:", len(greenjupyter.cells()), "x =", shell.user_ns["x"], flush=True)
    os._exit(0)
""")


def test_a_full_disk_gives_one_notice_and_the_session_goes_on_in_memory(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENJUPYTER_")}
    env.update(GREENJUPYTER_DB_PATH=str(tmp_path / "history.sqlite"), GREENJUPYTER_POWERCAP_ROOT="/nonexistent",
               GREENJUPYTER_SAMPLE_INTERVAL_S="0.05")
    done = subprocess.run([sys.executable, "-c", FULL_DISK], env=env, capture_output=True, text=True, timeout=120,
                          cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "cells in memory: 101 x = 100" in done.stdout
    assert done.stderr.count("cell journal in") == 1 and "File too large" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_forked_child_outliving_its_killed_kernel_does_not_hold_the_journal(tmp_path):
    from tests.kernels import kernel_environment, run_then_kill

    env = kernel_environment(tmp_path)
    env["GREENJUPYTER_SAMPLE_INTERVAL_S"] = "60"  # rows only from the journal
    fork = "import os, time\npid = os.fork()\nif pid == 0:\n    time.sleep(60)\n    os._exit(0)\nprint(pid)"
    orphan = int(run_then_kill(tmp_path, env, ["x = 1", fork, "y = 2"])[1].strip())
    try:
        os.kill(orphan, 0)  # the child still lives
        store = Store(env["GREENJUPYTER_DB_PATH"])
        added = journal.recover(journal.directory_for(store.path), store, lambda m: m)
        assert added == 3 and [c.record.source_preview for c in store.cells()] == ["x = 1", "import os, time", "y = 2"]
        store.close()
    finally:
        os.kill(orphan, 9)


def test_a_cell_on_rapl_counters_is_journaled_as_captured_and_read_back_as_the_meter_would(tmp_path):
    """The cell path writes its two edges as read (counter texts, and the state they are read against);
    reading the journal gives the same figures the meter gives, wraps and vanished zones included."""
    from greenjupyter.meter import Meter, window_measurement
    from greenjupyter.sources.rapl import open_rapl
    from tests.fakes.powercap import SERVER, FakePowercap

    powercap = FakePowercap(tmp_path / "powercap", SERVER)  # counters set by hand
    zone = powercap.zone("intel-rapl:0")
    powercap.write("intel-rapl:0", zone.max_range_uj - 500)  # wraps within the window
    meter = Meter([open_rapl(str(powercap.root))], sample_interval_s=60)
    layout, source = meter.layout, meter.sources[0]
    start = meter.edge()
    powercap.write("intel-rapl:0", 1500)  # 2000 µJ after the wrap
    powercap.write("intel-rapl:0:0", 7_000_000)  # 7 J
    vanished = os.open(powercap.root / "intel-rapl:1", os.O_RDONLY)  # package-1's device is gone: reads fail...
    kept, source.fds = source.fds, source.fds[:2] + (vanished,) + source.fds[3:]
    stop = meter.edge()
    source.fds = kept
    os.close(vanished)
    header = {**HEADER, "components": list(layout.components), "period_s": list(layout.period_s),
              "power_error_w": list(layout.power_error_w), "estimated": list(layout.estimated),
              "caps_w": [math.inf] * 4, **journal.header_sources(layout)}
    data = fastpath.frame(journal.EDGES_MAGIC, journal.edges_parts(
        7, 3, True, start, stop, set(), set(), "cell-7", "\n\n  x = 1  \ny = 2", None, meter.wall_offset))
    assert data[:4] == journal.EDGES_MAGIC
    write_journal(tmp_path / "j.cells", [data], header)
    _, (back,) = journal.read(str(tmp_path / "j.cells"))
    assert (back.seq, back.execution_count, back.cell_id, back.preview) == (7, 3, "cell-7", "  x = 1")
    info = meter.component_info()
    expected = window_measurement(meter.reading(start), meter.reading(stop), info)
    got = journal.measurement_of(back, header)
    assert got.components == pytest.approx(expected.components, rel=1e-12)
    assert got.components["cpu:package-0"] == pytest.approx(2000e-6, rel=1e-9)
    assert got.components["dram:0"] == pytest.approx(7.0, rel=1e-9)
    assert got.failed_components == expected.failed_components == ("cpu:package-1",)  # ...in neither reading
    assert got.duration_s == pytest.approx(expected.duration_s, rel=1e-12)
    assert abs(got.started_at.timestamp() - expected.started_at.timestamp()) < 1e-3
    meter.close()


def test_a_torn_edges_entry_keeps_the_entries_before_it(tmp_path):
    from greenjupyter.meter import Meter
    from greenjupyter.sources.rapl import open_rapl
    from tests.fakes.powercap import SERVER, FakePowercap

    powercap = FakePowercap(tmp_path / "powercap", SERVER)

    meter = Meter([open_rapl(str(powercap.root))], sample_interval_s=60)
    header = {**HEADER, "components": list(meter.components), **journal.header_sources(meter.layout)}
    entries = [fastpath.frame(journal.EDGES_MAGIC, journal.edges_parts(n, n, True, meter.edge(), meter.edge(), (), (),
                                                                       None, f"x = {n}", None, 0.0))
               for n in range(3)]
    write_journal(tmp_path / "j.cells", entries, header)
    with open(tmp_path / "j.cells", "r+b") as f:
        f.truncate(os.path.getsize(tmp_path / "j.cells") - 5)
    assert [e.preview for e in journal.read(str(tmp_path / "j.cells"))[1]] == ["x = 0", "x = 1"]
    meter.close()


def test_a_kernel_on_rapl_killed_after_its_fifth_cell_is_recovered_with_the_counters_figures(tmp_path, monkeypatch):
    """SIGKILL right after the fifth reply, with a sampler that never ticks: the rows come from the
    edges the cells journaled, and match the counters' truth within each cell's stated uncertainty."""
    from tests.fakes.powercap import SERVER, FakePowercap
    from tests.kernels import history_after_recovery, kernel_environment, run_then_kill

    env = kernel_environment(tmp_path)
    env["GREENJUPYTER_SAMPLE_INTERVAL_S"] = "60"
    with FakePowercap(tmp_path / "powercap", SERVER) as fake:
        env["GREENJUPYTER_POWERCAP_ROOT"] = str(fake.root)
        run_then_kill(tmp_path, env, ["import time, greenjupyter"] + [
            f"time.sleep(0.2); greenjupyter.tag('run-{n // 2}'); greenjupyter.log(accuracy=0.{n}, step={n})"
            for n in range(4)])
    pending = tmp_path / "history.sqlite.pending"
    data = b"".join(p.read_bytes() for p in pending.iterdir())
    assert data.count(journal.EDGES_MAGIC) == 5 and journal.ENTRY_MAGIC not in data
    cells = history_after_recovery(monkeypatch, env["GREENJUPYTER_DB_PATH"])
    assert [c.record.execution_count for c in cells] == [2, 3, 4, 5, 6]
    # What the user attached, and the run's tag, came through the kill too.
    assert [c.record.tag for c in cells] == [None, "run-0", "run-0", "run-1", "run-1"]
    assert [c.record.metrics for c in cells] == [{}] + [{"accuracy": n / 10, "step": n} for n in range(4)]
    watts = fake.total_watts()
    # The time between two journaled cells is worked out too (the first cell's previous one is not in it).
    assert cells[0].record.idle_before_s is None
    for cell in cells[1:]:
        gap = cell.record.idle_before_s
        assert 0 < gap < 30
        assert cell.record.idle_before_j == pytest.approx(watts * gap, abs=watts * 0.003)
    for cell in cells[1:]:
        m = cell.record.measurement
        assert sorted(m.components) == ["cpu:package-0", "cpu:package-1", "dram:0", "dram:1"] and not m.estimated
        assert m.duration_s >= 0.2
        # The fake's counters step once a millisecond, as RAPL's do: each edge is within one step.
        assert abs(m.energy_j - watts * m.duration_s) <= m.uncertainty_j + watts * 0.002


@pytest.mark.parametrize("mapped", [True, False], ids=["mapped", "written"])
def test_entries_are_stored_in_a_mapped_file_or_written_where_it_cannot_be_mapped(tmp_path, monkeypatch, mapped):
    if not mapped:  # as on macOS or a network file system without fallocate
        monkeypatch.setattr(os, "posix_fallocate", lambda *a: (_ for _ in ()).throw(OSError(errno.EOPNOTSUPP, "no")))
    monkeypatch.setattr(journal, "MAPPED_BYTES", 4096)  # so that the test fills one
    writer = journal.JournalWriter(str(tmp_path / "pending"), "s1", lambda: HEADER)
    entries = [entry(n) for n in range(40)]  # about 5 KB: more than a mapped file holds
    for data in entries:  # as the cell path gives them: magic and parts
        magic, length = journal.FRAME.unpack_from(data)
        assert writer.append(magic, (data[8 : 8 + length],))
    files = sorted((tmp_path / "pending").iterdir())
    sizes = [f.stat().st_size for f in files]
    if mapped:  # full files are left for the next one, made at once when the sampler has none ready
        assert len(sizes) >= 2 and set(sizes) == {4096} and len(writer.retired) == len(files) - 1
    else:
        assert sizes == [len(journal.header_bytes(HEADER)) + sum(map(len, entries))] and not writer.retired
    assert [e.seq for f in files for e in journal.read(str(f))[1]] == list(range(40))  # none lost at a switch
    assert writer.failed is None
    if mapped:  # an entry no file could hold: one notice, and the journal stops
        assert not writer.append(journal.EDGES_MAGIC, (b"x" * 5000,))
        assert "larger than a journal file (4096 bytes)" in writer.failed
    writer.close(delete=True)
    assert list((tmp_path / "pending").iterdir()) == []
