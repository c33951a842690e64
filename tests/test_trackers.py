"""Experiment trackers: the real MLflow (a local file store) and W&B (offline) get each cell's figures."""

import glob
import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from IPython.core.error import UsageError

import greenjupyter
from greenjupyter import runtime, trackers
from greenjupyter.ipython import extension

WORK = "x = sum(i * i for i in range(200_000))"  # a cell that draws something (~20 ms)


def run(shell, source):
    result = shell.run_cell(source, store_history=True)
    assert result.success, result.error_in_exec or result.error_before_exec
    return result.execution_count


def records_by_count():
    return {r.execution_count: r for r in greenjupyter.cells()}


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    """A local MLflow file store; MLflow 3 asks for MLFLOW_ALLOW_FILE_STORE (skinny has no SQL store)."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file:{tmp_path / 'mlruns'}")
    mlflow = pytest.importorskip("mlflow")
    yield mlflow.MlflowClient(tracking_uri=f"file:{tmp_path / 'mlruns'}")
    while mlflow.active_run() is not None:  # a failed test must not leave its run to the next
        try:
            mlflow.end_run()
        except mlflow.MlflowException:  # a run deleted by the test; it is off the stack all the same
            pass


def history(client, run_id, key):
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def run_dir(client, run_id):
    """Return the folder a file store keeps the run in (its artifacts folder's parent)."""
    return os.path.dirname(client.get_run(run_id).info.artifact_uri.removeprefix("file://"))


def test_an_mlflow_run_gets_each_cell_at_its_execution_count_and_the_session_totals(powercap, shell, mlflow_store):
    before = run(shell, "import mlflow")  # imported, no run yet: nothing to log to
    first = run(shell, "run = mlflow.start_run()")
    run(shell, WORK)
    run(shell, "import time; time.sleep(0.05)")
    last = run(shell, WORK)
    after = run(shell, "mlflow.end_run()")  # the run is over as this cell ends
    extension.current_recorder().trackers.flush()

    records, run_id = records_by_count(), shell.user_ns["run"].info.run_id
    logged = range(first, last + 1)
    assert before in records and after in records  # measured, only not logged
    m = {n: records[n].measurement for n in logged}
    # Not all zero (the fake RAPL draws 120 W; a cell of a millisecond may see no counter update).
    assert sum(x.energy_j for x in m.values()) > 1.0 and sum(x.co2e_g for x in m.values()) > 0
    # Steps are execution counts; the values are the records', as greenjupyter keeps them.
    assert history(mlflow_store, run_id, "greenjupyter_energy_j") == [(n, m[n].energy_j) for n in logged]
    assert history(mlflow_store, run_id, "greenjupyter_co2e_g") == [(n, m[n].co2e_g) for n in logged]
    assert history(mlflow_store, run_id, "greenjupyter_duration_s") == [(n, m[n].duration_s) for n in logged]
    assert m[first + 2].duration_s >= 0.05
    # The running totals: each run's latest value is the sum over this session's cells in it.
    latest = mlflow_store.get_run(run_id).data.metrics
    assert latest["greenjupyter_session_energy_j"] == pytest.approx(sum(x.energy_j for x in m.values()), rel=1e-12)
    assert latest["greenjupyter_session_co2e_g"] == pytest.approx(sum(x.co2e_g for x in m.values()), rel=1e-12)
    assert latest["greenjupyter_session_cells"] == len(logged)
    # A metric's timestamp is when its cell ended.
    (point,) = [p for p in mlflow_store.get_metric_history(run_id, "greenjupyter_energy_j") if p.step == last]
    ended = m[last].started_at.timestamp() + m[last].duration_s
    assert abs(point.timestamp / 1000 - ended) <= 0.001


def test_a_second_run_starts_its_own_totals(powercap, shell, mlflow_store):
    run(shell, "import mlflow\nfirst = mlflow.start_run()")
    run(shell, WORK)
    run(shell, "mlflow.end_run()\nsecond = mlflow.start_run()")
    only = run(shell, WORK)
    run(shell, "mlflow.end_run()")
    extension.current_recorder().trackers.flush()
    ids = [shell.user_ns[name].info.run_id for name in ("first", "second")]
    assert [mlflow_store.get_run(i).data.metrics["greenjupyter_session_cells"] for i in ids] == [2, 2]
    energy = records_by_count()[only].measurement.energy_j
    assert history(mlflow_store, ids[1], "greenjupyter_energy_j")[-1] == (only, energy)


@pytest.mark.parametrize("setting", ["off", "wandb"])
def test_mlflow_gets_nothing_unless_the_setting_lets_it(powercap, shell, mlflow_store, setting):
    run(shell, f"%carbon config trackers={setting}")
    run(shell, "import mlflow\nrun = mlflow.start_run()")
    counts = [run(shell, WORK) for _ in range(2)]
    run(shell, "mlflow.end_run()")
    extension.current_recorder().trackers.flush()
    assert set(counts) <= set(records_by_count())
    assert mlflow_store.get_run(shell.user_ns["run"].info.run_id).data.metrics == {}
    assert extension.current_recorder().trackers._thread is None  # no sending thread was ever needed


def test_a_bad_trackers_value_is_refused_with_what_is_accepted(shell):
    with pytest.raises(UsageError) as refused:
        shell.run_line_magic("carbon", "config trackers=neptune,mlflow")
    assert str(refused.value) == ("trackers='neptune,mlflow' is refused (not a known tracker; accepted: "
                                  "'auto', 'off', or a comma list of 'mlflow', 'wandb')")
    assert runtime.get_settings().trackers == "auto"
    shell.run_line_magic("carbon", "config trackers=WandB,MLflow")
    assert runtime.get_settings().trackers == "wandb,mlflow"


def test_a_run_deleted_under_us_gets_one_notice_and_the_cells_carry_on(powercap, shell, mlflow_store, capsys):
    run(shell, "import mlflow\nrun = mlflow.start_run()")
    kept = run(shell, WORK)
    recorder = extension.current_recorder()
    recorder.trackers.flush()
    run_id = shell.user_ns["run"].info.run_id
    assert history(mlflow_store, run_id, "greenjupyter_energy_j")[-1][0] == kept
    shutil.rmtree(run_dir(mlflow_store, run_id))

    counts = [run(shell, f"y{i} = {i}") for i in range(3)]
    recorder.trackers.flush()
    err = capsys.readouterr().err
    assert err.count("greenjupyter: could not log cell") == 1, err
    assert f"to MLflow run {run_id}" in err and "nothing more goes to that run" in err
    assert [shell.user_ns[f"y{i}"] for i in range(3)] == [0, 1, 2]
    assert set(counts) <= set(records_by_count())
    stored = {c.record.execution_count for c in recorder.store.cells()}
    assert set(counts) | {kept} <= stored  # greenjupyter's own history has every cell


def test_a_tracker_that_hangs_holds_up_neither_cells_nor_unload(powercap, shell, mlflow_store, monkeypatch, capsys):
    """A store whose metric file blocks every writer (a FIFO no one reads): the sending thread waits, nothing else."""
    monkeypatch.setattr(trackers, "CLOSE_WAIT_S", 0.5)
    run(shell, "import mlflow\nrun = mlflow.start_run()")
    run(shell, "pass")
    extension.current_recorder().trackers.flush()
    run_id = shell.user_ns["run"].info.run_id
    fifo = os.path.join(run_dir(mlflow_store, run_id), "metrics", "greenjupyter_energy_j")
    os.remove(fifo)
    os.mkfifo(fifo)
    sender = []
    try:
        started = time.perf_counter()
        counts = [run(shell, f"z{i} = {i}") for i in range(3)]
        sender = [t for t in threading.enumerate() if t.name == "greenjupyter-trackers"]
        # Cells take milliseconds; a second each is room for a busy machine, far below a blocked write's forever.
        assert time.perf_counter() - started < 3.0
        assert set(counts) <= set(records_by_count())
        started = time.perf_counter()
        shell.run_line_magic("unload_ext", "greenjupyter")
        assert time.perf_counter() - started < 0.5 + 5.0
        assert "did not answer within 0.5 s" in capsys.readouterr().err
        shell.run_line_magic("load_ext", "greenjupyter")  # the fixture unloads it again
    finally:
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # lets the blocked writer finish
        for thread in sender:
            thread.join(30)
        os.close(reader)
    assert not any(t.is_alive() for t in sender)


def test_neither_tracker_is_imported_and_no_thread_started_when_the_notebook_uses_none(tmp_path):
    script = textwrap.dedent("""
        import sys, threading
        from IPython.core.interactiveshell import InteractiveShell
        shell = InteractiveShell.instance()
        for source in ["%load_ext greenjupyter", "x = 1", "%carbon", "%carbon config trackers=mlflow", "y = 2"]:
            assert shell.run_cell(source, store_history=True).success, source
        shell.run_line_magic("unload_ext", "greenjupyter")
        print(sorted({"mlflow", "wandb"} & set(sys.modules)), "greenjupyter.trackers" in sys.modules,
              sorted(t.name for t in threading.enumerate() if "tracker" in t.name))
    """)
    env = dict(os.environ, GREENJUPYTER_DB_PATH=str(tmp_path / "history.sqlite"))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[-2] == "[] True []"


# W&B, offline: the run's rows are read back from its .wandb file (LevelDB's log format: 32 KiB
# blocks of chunks, each with a 7-byte header; the payloads are W&B's Record protobufs). W&B 0.31
# has no reader of its own for offline runs.

def wandb_rows(run_dir):
    from wandb.proto import wandb_internal_pb2

    (path,) = glob.glob(os.path.join(run_dir, "run-*.wandb"))
    with open(path, "rb") as file:
        data = file.read()
    assert data[:4] == b":W&B"
    rows, pending, at, block = [], b"", 7, 32768
    while at + 7 <= len(data):
        if block - at % block < 7:  # a block's last bytes are padding
            at += block - at % block
            continue
        _checksum, length, kind = struct.unpack_from("<IHB", data, at)
        assert at + 7 + length <= len(data), "the run's log ends inside a record"
        chunk, at = data[at + 7:at + 7 + length], at + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk  # FULL or FIRST start a record
        if kind in (1, 4):  # FULL or LAST end it
            record = wandb_internal_pb2.Record.FromString(pending)
            if record.WhichOneof("record_type") == "history":
                rows.append({i.key or ".".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
    return rows


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    for name in ("DIR", "CONFIG_DIR", "CACHE_DIR", "DATA_DIR"):
        (tmp_path / name).mkdir()
        monkeypatch.setenv(f"WANDB_{name}", str(tmp_path / name))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    wandb = pytest.importorskip("wandb")
    yield wandb
    if wandb.run is not None:
        wandb.run.finish()
    wandb.teardown()  # stops W&B's service process


def test_a_wandb_run_gets_each_cell_even_when_the_next_cell_finishes_it(powercap, shell, wandb_offline):
    wandb = wandb_offline
    first = run(shell, "import wandb\nrun = wandb.init(project='greenjupyter-test', "
                       "settings=wandb.Settings(console='off', x_disable_stats=True))")
    run(shell, WORK)
    own = run(shell, "run.log({'loss': 0.5})")  # the notebook's own rows keep their values
    last = run(shell, WORK)
    run(shell, "run.finish()")  # at once, as Run All does: the last cell's row must be in before
    wandb.teardown()  # W&B's process writes the log's last records as it exits
    rows = wandb_rows(os.path.dirname(shell.user_ns["run"].dir))

    records = records_by_count()
    ours = [row for row in rows if trackers.STEP in row]
    logged = range(first, last + 1)
    assert [row[trackers.STEP] for row in ours] == list(logged)
    for row in ours:
        m = records[row[trackers.STEP]].measurement
        assert (row["greenjupyter_energy_j"], row["greenjupyter_co2e_g"], row["greenjupyter_duration_s"]) == (
            m.energy_j, m.co2e_g, m.duration_s)
    total = sum(records[n].measurement.energy_j for n in logged)
    assert total > 1.0  # not all zero: the fake RAPL draws 120 W
    assert ours[-1]["greenjupyter_session_energy_j"] == pytest.approx(total, rel=1e-12)
    assert ours[-1]["greenjupyter_session_cells"] == len(logged)
    assert [row["loss"] for row in rows if "loss" in row] == [0.5]
    assert own in logged
