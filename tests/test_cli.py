"""The greenjupyter command: real kernels on this interpreter run the notebooks; the rest in-process."""

import csv
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import nbformat
import pytest

from greenjupyter import cli, report
from greenjupyter.errors import GreenJupyterError
from greenjupyter.export import CODECARBON_COLUMNS
from greenjupyter.measurement import CellRecord, Measurement
from greenjupyter.store import Store, StoredCell
from tests.kernels import KERNEL, kernel_environment, kernel_manager, run_then_kill

BUSY = "# <b>busy</b> & loop\ntotal = 0\nfor i in range(600_000):\n    total += i\ntotal"


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A kernelspec for this interpreter on JUPYTER_PATH, and the test kernel environment, here and for children."""
    kernel_manager(tmp_path)  # writes tmp_path/kernels/greenjupyter-test/kernel.json
    environment = {**kernel_environment(tmp_path), "JUPYTER_PATH": str(tmp_path)}
    for name in ("GREENJUPYTER_POWERCAP_ROOT", "GREENJUPYTER_DB_PATH", "JUPYTER_PATH"):
        monkeypatch.setenv(name, environment[name])
    return environment


def write_notebook(path, cells, kernel=KERNEL):
    nb = nbformat.v4.new_notebook()
    if kernel:
        nb.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
    for source in cells:
        if source.startswith("# markdown "):
            nb.cells.append(nbformat.v4.new_markdown_cell(source[len("# markdown "):]))
        else:
            nb.cells.append(nbformat.v4.new_code_cell(source))
    nbformat.validate(nb)
    nbformat.write(nb, str(path))
    return str(path)


def stored(tmp_path):
    store = Store(str(tmp_path / "history.sqlite"))
    try:
        return store.cells()
    finally:
        store.close()


def table_rows(stdout):
    """Return (execution count, line) for each row of measure's per-cell table, checking its footnote."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["#", "duration"])
    rows = []
    for line in lines[start + 1:]:
        if line == cli.RUN_TABLE_NOTE:
            break
        rows.append((int(line.split()[0]), line))
    else:
        raise AssertionError(f"no footnote saying what # is:\n{stdout}")
    return rows


def test_measure_a_notebook_then_read_the_history(tmp_path, env, capsys):
    notebook = write_notebook(tmp_path / "R&D.ipynb", [
        "import time\ntime.sleep(0.2)",
        BUSY,
        "# markdown A heading, not code",
        "print('hello')",
    ])
    report_path, output = tmp_path / "out.html", tmp_path / "executed.ipynb"
    done = subprocess.run(
        [sys.executable, "-m", "greenjupyter", "measure", notebook, "--region", "FR",
         "--report", str(report_path), "--output", str(output)],
        check=False, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr

    rows = table_rows(done.stdout)
    # One numbering: the execution count, in the table, the progress lines and the report (markdown cells not counted).
    assert [count for count, _ in rows] == [1, 2, 3]
    assert "time.sleep" not in rows[0][1] and "import time" in rows[0][1]
    assert "total: 3 cells" in done.stdout
    assert "FR 44.18 g/kWh" in done.stdout and "grid: France (FR)" in done.stdout
    assert "[1/3] In [1] ... " in done.stderr and "[3/3] In [3] ... " in done.stderr

    page = report_path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "3 cells of the notebook" in page and "<td>Energy</td>" in page
    assert "CO<sub>2</sub>e" in page and "France (FR)" in page
    assert "R&amp;D.ipynb" in page and "&lt;b&gt;busy&lt;/b&gt; &amp; loop" in page
    assert "<b>busy" not in page
    assert 'src="data:image/png;base64,' in page
    assert "The costliest cell (In [2])" in page  # the busy loop, by the same execution count

    executed = nbformat.read(str(output), as_version=4)
    assert len(executed.cells) == 4
    assert [c.get("execution_count") for c in executed.cells] == [1, 2, None, 3]
    assert executed.cells[3].outputs[0].text == "hello\n"
    assert executed.cells[1].outputs[0].data["text/plain"] == str(sum(range(600_000)))

    cells = stored(tmp_path)
    assert [c.record.execution_count for c in cells] == [1, 2, 3]
    assert {c.record.notebook for c in cells} == {os.path.abspath(notebook)}
    assert {c.record.measurement.region for c in cells} == {"FR"}

    # The history, in-process, over the same database.
    capsys.readouterr()
    assert cli.main(["history", "--since", "1h"]) == 0
    out = capsys.readouterr().out
    assert "1 session in the last 1h" in out
    assert cells[0].session[:cli.SESSION_SHOWN] in out and os.path.abspath(notebook) in out

    assert cli.main(["history", "--cells", "--notebook", notebook]) == 0
    assert capsys.readouterr().out.count(cells[0].session[:cli.SESSION_SHOWN]) == 3

    exported = tmp_path / "x.csv"
    assert cli.main(["export", str(exported), "--since", "1h"]) == 0
    with open(exported, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        assert tuple(header[:len(CODECARBON_COLUMNS)]) == CODECARBON_COLUMNS
        assert len(list(reader)) == 3

    assert cli.main(["report", "--session", cells[0].session[:6], "--format", "text"]) == 0
    out = capsys.readouterr().out
    assert "3 cells of the notebook" in out and "France (FR)" in out


def test_a_failing_cell_exits_1_and_keeps_what_ran_before(tmp_path, env, capsys):
    notebook = write_notebook(tmp_path / "fails.ipynb", ["x = 1", "# markdown text", "1 / 0", "print('never')"], kernel=None)
    output = tmp_path / "partial.ipynb"
    assert cli.main(["measure", notebook, "--kernel", KERNEL, "--output", str(output)]) == 1
    out, err = capsys.readouterr()
    assert "error: In [2] raised ZeroDivisionError: division by zero" in err
    assert "Traceback" not in err
    rows = table_rows(out)
    assert [count for count, _ in rows] == [1, 2]
    assert "[ZeroDivisionError]" in rows[1][1]
    assert "total: 2 cells" in out and "1 raised" in out
    cells = stored(tmp_path)
    assert [(c.record.execution_count, c.record.success) for c in cells] == [(1, True), (2, False)]
    executed = nbformat.read(str(output), as_version=4)
    assert executed.cells[2].outputs[0].ename == "ZeroDivisionError" and not executed.cells[3].get("outputs")


def test_allow_errors_runs_on_and_exits_0(tmp_path, env, capsys):
    notebook = write_notebook(tmp_path / "fails.ipynb", ["x = 1", "1 / 0", "print('after')"])
    assert cli.main(["measure", notebook, "--allow-errors"]) == 0
    out, err = capsys.readouterr()
    assert [count for count, _ in table_rows(out)] == [1, 2, 3]
    assert [c.record.execution_count for c in stored(tmp_path)] == [1, 2, 3]  # the history row keeps it too
    assert "allowed by --allow-errors" in err and "In [2] (ZeroDivisionError)" in err
    assert [c.record.success for c in stored(tmp_path)] == [True, False, True]


def test_a_kernel_that_dies_exits_3_with_a_plain_message(tmp_path, env, capsys):
    notebook = write_notebook(tmp_path / "dies.ipynb", ["x = 1", "import os; os._exit(1)", "x"])
    assert cli.main(["measure", notebook]) == 3
    out, err = capsys.readouterr()
    assert "error: the kernel died while running In [2]" in err
    assert "[2/3] In [2] ... kernel died" in err
    assert "Traceback" not in err and "DeadKernelError" not in err
    assert [count for count, _ in table_rows(out)] == [1]
    assert [c.record.execution_count for c in stored(tmp_path)] == [1]


def test_a_cell_past_the_timeout_is_stopped(tmp_path, env, capsys):
    notebook = write_notebook(tmp_path / "slow.ipynb", ["x = 1", "import time\ntime.sleep(60)", "x"])
    assert cli.main(["measure", notebook, "--timeout", "1"]) == 1
    out, err = capsys.readouterr()
    assert "In [2] ran past --timeout 1 s and was stopped" in err
    assert "[2/3] In [2] ... timed out" in err
    assert table_rows(out)[0][0] == 1


@pytest.mark.parametrize("argv, message", [
    (["measure", "{tmp}/missing.ipynb"], "no such notebook: {tmp}/missing.ipynb"),
    (["measure", "{tmp}/garbage.txt"], "{tmp}/garbage.txt is not a Jupyter notebook (Notebook does not appear to be JSON"),
    (["measure", "{tmp}/other.ipynb"], "{tmp}/other.ipynb is not a Jupyter notebook ("),
    (["measure", "{tmp}"], "is a directory; accepted: a Jupyter notebook file"),
    (["measure", "{tmp}/ok.ipynb", "--kernel", "no-such-kernel"], "no such kernel: 'no-such-kernel' (from --kernel); installed kernels: "),
    (["measure", "{tmp}/ok.ipynb", "--region", "Frnace"], "--region: unknown region 'Frnace'; did you mean France (FR)?"),
    (["measure", "{tmp}/ok.ipynb", "--pue", "9"], "--pue: pue='9' is refused (out of range; accepted: a number from 1 to 3"),
    (["measure", "{tmp}/ok.ipynb", "--pue", "nan"], "--pue: pue='nan' is refused (not a finite number; accepted: a number from 1 to 3"),
    (["measure", "{tmp}/ok.ipynb", "--pue=-inf"], "--pue: pue='-inf' is refused (not a finite number; accepted: a number from 1 to 3"),
    (["measure", "{tmp}/ok.ipynb", "--pue", "1e999"], "--pue: pue='1e999' is refused (not a finite number; accepted"),
    (["measure", "{tmp}/ok.ipynb", "--timeout", "nan"], "argument --timeout: 'nan' is not accepted; accepted: a whole number"),
    (["measure", "{tmp}/ok.ipynb", "--timeout", "1e999"], "argument --timeout: '1e999' is not accepted; accepted: a whole number"),
    (["history", "--since", "nan d"], "--since: since='nan d' is not understood; accepted:"),
    (["history", "--since", "99999999999999d"], "--since: since='99999999999999d' reaches back more than 2,000 years; accepted:"),
    (["measure", "{tmp}/ok.ipynb", "--report", "{tmp}/r.pdf"], "extension '.pdf' is not known; accepted: .html"),
    (["measure", "{tmp}/ok.ipynb", "--output", "{tmp}/no/dir/x.ipynb"], "no such directory {tmp}/no/dir"),
    (["measure", "{tmp}/ok.ipynb", "--timeout", "soon"], "argument --timeout: 'soon' is not accepted"),
    (["history", "--since", "7x"], "--since: since='7x' is not understood; accepted:"),
    (["--db", "{tmp}/none.sqlite", "history"], "no history database at {tmp}/none.sqlite"),
    (["history", "--db", "{tmp}/garbage.txt"], "{tmp}/garbage.txt is not a greenjupyter history database"),
    (["export", "{tmp}/x.xlsx"], "cannot export to '{tmp}/x.xlsx': extension '.xlsx' is not known; accepted: .csv"),
    (["report", "--format", "pdf"], "invalid choice: 'pdf' (choose from 'markdown', 'latex', 'html', 'text')"),
    (["nonsense"], "invalid choice: 'nonsense'"),
])
def test_usage_errors_exit_2_naming_the_value(tmp_path, capsys, argv, message):
    (tmp_path / "garbage.txt").write_text("not { a notebook")
    (tmp_path / "other.ipynb").write_text(json.dumps({"just": "json"}))
    write_notebook(tmp_path / "ok.ipynb", ["1"])
    Store(str(tmp_path / "history.sqlite")).close()
    assert cli.main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message.format(tmp=tmp_path) in err
    assert "Traceback" not in err


def test_a_poisoned_environment_value_is_said_once_and_the_command_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GREENJUPYTER_PUE", "nan")
    Store(str(tmp_path / "h.sqlite")).close()
    assert cli.main(["report", "--db", str(tmp_path / "h.sqlite"), "--format", "text"]) == 0
    err = capsys.readouterr().err
    assert err.count("environment GREENJUPYTER_PUE: pue='nan' is refused (not a finite number") == 1


def test_history_off_is_refused_and_empty_history_is_said(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GREENJUPYTER_DB_PATH", "off")
    assert cli.main(["history"]) == 2
    assert "history is off (db_path is 'off', from environment GREENJUPYTER_DB_PATH)" in capsys.readouterr().err
    Store(str(tmp_path / "h.sqlite")).close()
    assert cli.main(["history", "--db", str(tmp_path / "h.sqlite"), "--since", "1d"]) == 0
    assert "greenjupyter history: no sessions in the last 1d" in capsys.readouterr().out


def test_sources(capsys):
    assert cli.main(["sources"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("greenjupyter sources\n") and "cpu:process" in out


def test_help_exits_0(capsys):
    assert cli.main(["--help"]) == 0
    assert "measure" in capsys.readouterr().out
    assert cli.main([]) == 2


def seed(tmp_path, sessions=("aaaa1111", "aaaa2222", "bbbb3333")):
    path = str(tmp_path / "history.sqlite")
    store = Store(path)
    start = datetime.now(timezone.utc) - timedelta(minutes=10)
    for n, session in enumerate(sessions):
        for count in (1, 2):
            m = Measurement(start + timedelta(seconds=10 * n + count), 0.5, 2.0 * count, {"cpu:process": 2.0 * count},
                            True, 4.0, 4.0, estimated_components=("cpu:process",), co2e_g=0.0001 * count,
                            intensity_g_per_kwh=44.18, region="FR", pue=1.0)
            record = CellRecord(m, count, None, "/work/<x>.ipynb", True, None, f"cell {count} <i>")
            store.add(StoredCell(record, session, "kernel", "cpu"))
    store.close()
    return path


def test_report_session_prefixes_and_the_figure_or_its_absence(tmp_path, monkeypatch, capsys):
    seed(tmp_path)
    assert cli.main(["report", "--session", "aaaa"]) == 2
    assert "--session aaaa matches 2 sessions (aaaa1111, aaaa2222); give more characters" in capsys.readouterr().err

    page = tmp_path / "r.html"
    assert cli.main(["report", "--session", "bbbb", "--output", str(page)]) == 0
    text = page.read_text(encoding="utf-8")
    assert "2 cells of the notebook “/work/&lt;x&gt;.ipynb”" in text and "data:image/png;base64," in text

    def no_matplotlib(**options):
        raise GreenJupyterError(report.MATPLOTLIB_HINT)

    monkeypatch.setattr(report, "_new_figure", no_matplotlib)
    assert cli.main(["report", "--output", str(page)]) == 0
    text = page.read_text(encoding="utf-8")
    assert "6 cells" in text and "No figure: figures need matplotlib: pip install matplotlib" in text
    assert "data:image/png" not in text

    assert cli.main(["report", "--format", "latex", "--notebook", "/work/<x>.ipynb"]) == 0
    assert r"\paragraph{Compute and emissions}" in capsys.readouterr().out
    assert cli.main(["report", "--notebook", "/elsewhere.ipynb"]) == 0
    assert "No cells were measured." in capsys.readouterr().out


def add_kernelspec(tmp_path, name, argv, env=None):
    spec = tmp_path / "kernels" / name
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": name, "language": "python",
                                                  **({"env": env} if env else {})}))


def test_a_kernel_that_cannot_start_exits_3_with_its_last_words(tmp_path, env, capsys):
    add_kernelspec(tmp_path, "crash", [sys.executable, "-c", "import sys; sys.exit('no kernel today')"])
    notebook = write_notebook(tmp_path / "nb.ipynb", ["1"], kernel="crash")
    assert cli.main(["measure", notebook]) == 3
    err = capsys.readouterr().err
    assert "error: kernel 'crash' could not start (" in err and "no kernel today" in err
    assert "Traceback" not in err


def test_a_kernel_without_greenjupyter_is_refused(tmp_path, env, capsys):
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "greenjupyter.py").write_text("raise ImportError('not installed here')\n")
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    add_kernelspec(tmp_path, "elsewhere", argv, env={"PYTHONPATH": str(shadow)})
    notebook = write_notebook(tmp_path / "nb.ipynb", ["1"])
    assert cli.main(["measure", notebook, "--kernel", "elsewhere"]) == 2
    err = capsys.readouterr().err
    assert "could not load greenjupyter in kernel 'elsewhere' (ImportError: not installed here)" in err
    assert "choose one with --kernel NAME" in err and "Traceback" not in err


# --- signals, stale outputs, notebooks that load greenjupyter, lenient format, %pdb -----------


def measure_process(env, *argv):
    """Start `greenjupyter measure` as its own process, its output kept in pipes."""
    return subprocess.Popen([sys.executable, "-m", "greenjupyter", "measure", *argv], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(path, process, within=120):
    """Wait until ``path`` exists (the kernel got there); fail with the command's output if it ended first."""
    deadline = time.monotonic() + within
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            out, err = process.communicate()
            pytest.fail(f"{path.name} never appeared (rc {process.returncode}):\n{out}\n{err}")
        time.sleep(0.05)


def running(pid, within=20) -> bool:
    """Return whether process ``pid`` still runs after up to ``within`` s (a zombie has ended)."""
    deadline = time.monotonic() + within
    while True:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return False
        if state in ("Z", "X") or time.monotonic() > deadline:
            return state not in ("Z", "X")
        time.sleep(0.1)


@pytest.mark.parametrize("signum, code, name", [(signal.SIGINT, 130, "SIGINT"), (signal.SIGTERM, 143, "SIGTERM")])
def test_a_signal_during_a_cell_shuts_the_kernel_down_and_keeps_what_ran(tmp_path, env, signum, code, name):
    notebook = write_notebook(tmp_path / "long.ipynb", [
        "import os\nopen('kernel.pid', 'w').write(str(os.getpid()))",
        "import time\nopen('started', 'w').close()\ntime.sleep(120)",
        "print('never')",
    ])
    db, output = tmp_path / "kept.sqlite", tmp_path / "out.ipynb"
    process = measure_process(env, notebook, "--db", str(db), "--output", str(output))
    wait_for(tmp_path / "started", process)
    kernel = int((tmp_path / "kernel.pid").read_text())
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)  # the long cell would take 120 s

    assert process.returncode == code, err
    assert "Traceback" not in err and "Error" not in err.replace("error:", "")
    assert f"error: {name} received during In [2]; the kernel was shut down" in err
    assert "[2/3] In [2] ... interrupted" in err
    assert not running(kernel), f"kernel {kernel} still runs"
    # The cell that ran is kept; the one stopped is kept too, as a cell that raised KeyboardInterrupt.
    rows = {c.record.execution_count: c.record for c in Store(str(db)).cells()}
    assert rows[1].success and not rows[2].success and rows[2].error == "KeyboardInterrupt"
    assert [count for count, _ in table_rows(out)] == [1, 2]
    executed = nbformat.read(str(output), as_version=4)
    assert [c.execution_count for c in executed.cells] == [1, 2, None]


# The pid file appears whole (written beside it, then renamed), so a reader never sees it empty.
SLOW_START = ("import os, sys, time; open(sys.argv[1] + '.tmp', 'w').write(str(os.getpid())); "
              "os.rename(sys.argv[1] + '.tmp', sys.argv[1]); time.sleep(120); "
              "os.execv(sys.executable, [sys.executable, '-m', 'ipykernel_launcher', '-f', sys.argv[2]])")


@pytest.mark.parametrize("signum, code, name", [(signal.SIGINT, 130, "SIGINT"), (signal.SIGTERM, 143, "SIGTERM")])
def test_a_signal_during_start_up_stops_the_kernel(tmp_path, env, signum, code, name):
    marker = tmp_path / "kernel.pid"
    add_kernelspec(tmp_path, "slow", [sys.executable, "-c", SLOW_START, str(marker), "{connection_file}"])
    notebook = write_notebook(tmp_path / "nb.ipynb", ["1"], kernel="slow")
    process = measure_process(env, notebook, "--db", str(tmp_path / "kept.sqlite"))
    wait_for(marker, process)
    kernel = int(marker.read_text())
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)

    assert process.returncode == code, err
    assert "Traceback" not in err and "CancelledError" not in err
    assert f"error: {name} received while the kernel was starting; the kernel was shut down" in err
    assert not running(kernel), f"kernel {kernel} still runs"


STALE = {  # what an author's run from long ago left in the file
    "outputs": [nbformat.v4.new_output("stream", name="stdout", text="100 loops, best of 3: 2 ms per loop\n")],
    "metadata": {"execution": {"iopub.execute_input": "2019-01-01T00:00:00Z"}},
}


@pytest.mark.parametrize("stop, argv, code", [("1 / 0", [], 1), ("import time\ntime.sleep(60)", ["--timeout", "1"], 1)])
def test_cells_that_did_not_run_lose_their_old_outputs(tmp_path, env, stop, argv, code):
    path = tmp_path / "old.ipynb"
    write_notebook(path, ["x = 1", stop, "%timeit sum(range(10))", "# markdown notes", "x"])
    nb = nbformat.read(str(path), as_version=4)
    for count, cell in zip((1, 2, 4, None, 5), nb.cells):
        if cell.cell_type == "code":
            cell.execution_count = count + 10
            cell.outputs = list(STALE["outputs"])
            cell.metadata.update(STALE["metadata"])
    nbformat.write(nb, str(path))
    output = tmp_path / "out.ipynb"
    assert cli.main(["measure", str(path), "--output", str(output), *argv]) == code

    executed = nbformat.read(str(output), as_version=4)
    assert [c.get("execution_count") for c in executed.cells] == [1, 2, None, None, None]
    assert "loops" not in json.dumps([c.get("outputs") for c in executed.cells])
    assert not executed.cells[2].outputs and not executed.cells[4].outputs
    assert "2019" not in json.dumps([c.metadata for c in executed.cells])


def test_a_notebook_that_loads_greenjupyter_itself_gets_no_extra_output(tmp_path, env, capsys):
    notebook = write_notebook(tmp_path / "own.ipynb", ["%load_ext greenjupyter", "1 + 1"])
    output = tmp_path / "out.ipynb"
    assert cli.main(["measure", notebook, "--region", "FR", "--output", str(output)]) == 0
    executed = nbformat.read(str(output), as_version=4)
    assert executed.cells[0].outputs == []
    assert executed.cells[1].outputs[0].data["text/plain"] == "2"
    cells = stored(tmp_path)
    assert [c.record.execution_count for c in cells] == [1, 2]
    assert {c.record.measurement.region for c in cells} == {"FR"}  # --region stays in force
    assert len({c.session for c in cells}) == 1


def test_a_small_schema_error_is_warned_about_and_the_notebook_runs(tmp_path, env, capsys):
    # A cell id in format 4.0 (ids came in 4.5): nbformat refuses it, nbclient and nbconvert run it.
    path = tmp_path / "ids.ipynb"
    path.write_text(json.dumps({
        "nbformat": 4, "nbformat_minor": 0, "metadata": {"kernelspec": {"name": KERNEL, "display_name": KERNEL}},
        "cells": [{"cell_type": "code", "id": "abc", "metadata": {}, "execution_count": None, "outputs": [],
                   "source": "print('ran')"}],
    }))
    output = tmp_path / "out.ipynb"
    assert cli.main(["measure", str(path), "--output", str(output)]) == 0
    out, err = capsys.readouterr()
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1, err
    assert f"warning: {path} does not follow the notebook format 4.0 (" in warnings[0]
    assert "'id' was unexpected" in warnings[0] and "running it anyway" in warnings[0]
    assert "total: 1 cell" in out
    assert nbformat.read(str(output), as_version=4).cells[0].outputs[0].text == "ran\n"


@pytest.mark.parametrize("cell, reason", [
    ({"cell_type": "code", "metadata": {}, "outputs": []}, "cell 1 has no source"),
    ({"cell_type": "code", "source": 7, "metadata": {}, "outputs": []}, "cell 1 has no source"),
    ({"cell_type": "movie", "source": "x", "metadata": {}}, "cell 1 is of unknown type 'movie'"),
    ("print(1)", ""),  # nbformat itself cannot read it
])
def test_a_notebook_whose_cells_cannot_run_exits_2(tmp_path, env, capsys, cell, reason):
    path = tmp_path / "broken.ipynb"
    path.write_text(json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [cell]}))
    assert cli.main(["measure", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path} is not a Jupyter notebook ({reason}" in err and "Traceback" not in err


def test_a_cell_that_fails_under_pdb_on_keeps_its_number(tmp_path, env, capsys):
    # With %pdb on and no stdin, the debugger raises inside IPython's traceback display, and IPython
    # hands post_run_cell a result without an execution count: the row is placed by its time.
    notebook = write_notebook(tmp_path / "pdb.ipynb", ["%pdb on", "1 / 0", "3"])
    assert cli.main(["measure", notebook, "--allow-errors"]) == 0
    out = capsys.readouterr().out
    assert [count for count, _ in table_rows(out)] == [1, 2, 3]


def fingerprint(path):
    """The bytes and modification time of a file, to show that reading it changed neither."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest(), os.stat(path).st_mtime_ns


READS = [["history"], ["history", "--cells"], ["report", "--format", "markdown"], ["export", "{tmp}/out.json"]]


@pytest.mark.parametrize("command", READS)
def test_read_commands_change_no_byte_of_a_history_nor_of_a_read_only_copy(tmp_path, capsys, command):
    history = seed(tmp_path)
    copy = tmp_path / "copy.sqlite"
    shutil.copyfile(history, copy)
    os.chmod(copy, 0o444)
    for path, mode in ((history, 0o600), (str(copy), 0o444)):
        before = fingerprint(path)
        assert cli.main(["--db", path] + [a.format(tmp=tmp_path) for a in command]) == 0
        assert fingerprint(path) == before and os.stat(path).st_mode & 0o777 == mode
        shown = capsys.readouterr()
        assert "6 cells" in shown.out + shown.err or "3 sessions" in shown.out


@pytest.mark.parametrize("command", READS)
def test_a_file_of_another_application_is_refused_untouched(tmp_path, capsys, command):
    other = tmp_path / "app.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    db.execute("INSERT INTO notes (text) VALUES ('mine')")
    db.commit()
    db.close()
    before = fingerprint(other)
    assert cli.main(["--db", str(other)] + [a.format(tmp=tmp_path) for a in command]) == 2
    err = capsys.readouterr().err
    assert f"error: {other} is not a greenjupyter history database (it has no cells table)" in err
    assert fingerprint(other) == before and sorted(os.listdir(tmp_path)) == ["app.db"]
    db = sqlite3.connect(other)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert db.execute("PRAGMA user_version").fetchone()[0] == 0
    db.close()


def test_a_newer_history_is_refused_and_an_older_one_is_read_as_it_is(tmp_path, capsys):
    from greenjupyter.store import MIGRATIONS

    newer = seed(tmp_path)
    db = sqlite3.connect(newer)
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.commit()
    db.close()
    assert cli.main(["--db", newer, "history"]) == 2
    assert f"{newer} has schema {len(MIGRATIONS) + 1}, newer than this greenjupyter reads" in capsys.readouterr().err

    older = tmp_path / "v1.sqlite"  # written by the first schema: no shared_components, no entry
    db = sqlite3.connect(older)
    db.execute(MIGRATIONS[0])
    db.execute("PRAGMA user_version = 1")
    db.execute("INSERT INTO cells (schema_version, session, success, source_preview, started_at, duration_s, "
               "energy_j, components, estimated, estimated_components, failed_components, avg_power_w, peak_power_w) "
               "VALUES (1, 'old', 1, 'x = 1', '2026-01-02T03:04:05+00:00', 1.0, 5.0, '{\"cpu:process\": 5.0}', 1, "
               "'[\"cpu:process\"]', '[]', 5.0, 5.0)")
    db.commit()
    db.close()
    before = fingerprint(older)
    assert cli.main(["--db", str(older), "history", "--cells"]) == 0
    assert "x = 1" in capsys.readouterr().out
    assert fingerprint(older) == before
    db = sqlite3.connect(older)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1  # not migrated by a read
    db.close()


def test_history_right_after_a_killed_kernel_shows_its_journal_and_writes_nothing(tmp_path, env, capsys):
    kernel_env = {**env, "GREENJUPYTER_SAMPLE_INTERVAL_S": "60"}  # no tick after load: the rows stay in the journal
    run_then_kill(tmp_path, kernel_env, [f"killed = {n}" for n in range(3)])
    db_path = env["GREENJUPYTER_DB_PATH"]
    pending = db_path + ".pending"
    journals = {name: fingerprint(os.path.join(pending, name)) for name in os.listdir(pending)}
    before = fingerprint(db_path)
    assert cli.main(["history", "--cells"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[-3:] for line in out.splitlines()[2:]] == [["killed", "=", str(n)] for n in range(3)]
    assert "greenjupyter history: 3 cells" in out
    assert cli.main(["history"]) == 0
    assert "1 session" in capsys.readouterr().out
    assert fingerprint(db_path) == before
    assert {name: fingerprint(os.path.join(pending, name)) for name in os.listdir(pending)} == journals


def test_history_sums_the_energy_between_cells_per_session_and_says_n_a_for_older_rows(tmp_path, capsys):
    path = seed(tmp_path, sessions=("aaaa1111",))  # rows written before the gaps were kept
    store = Store(path)
    start = datetime.now(timezone.utc) - timedelta(minutes=5)
    for count, gap_j in ((1, 0.25), (2, 0.5)):
        m = Measurement(start + timedelta(seconds=count), 0.5, 2.0, {"cpu:process": 2.0}, True, 4.0, 4.0,
                        estimated_components=("cpu:process",))
        record = CellRecord(m, count, idle_before_j=gap_j, idle_before_s=30.0)
        store.add(StoredCell(record, "cccc3333", "kernel", "cpu"))
    store.close()
    assert cli.main(["--db", path, "history"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()[1:]
    at = header.index("between cells")
    between = {row.split()[2]: row[at:at + len("between cells")].strip() for row in rows}
    assert between == {"cccc3333": "750 mJ", "aaaa1111": "n/a"}
