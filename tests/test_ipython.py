"""The extension in a real InteractiveShell: hooks, records, magics, unload, failures."""

import os
import threading
import time

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import greenjupyter
from greenjupyter import Measurement, runtime
from greenjupyter.ipython import extension



def run(shell, source):
    return shell.run_cell(source, store_history=True)


def sampler_threads():
    return [t for t in threading.enumerate() if t.name == "greenjupyter-sampler"]


def test_one_record_per_cell_with_outcome_and_preview(shell):
    first = run(shell, "x = 1").execution_count
    run(shell, "\n\nimport time; time.sleep(0.05)  # wait")
    run(shell, "1/0")
    run(shell, "raise KeyboardInterrupt")
    records = greenjupyter.cells()
    assert [r.execution_count for r in records] == [first, first + 1, first + 2, first + 3]
    assert [r.success for r in records] == [True, True, False, False]
    assert [r.error for r in records] == [None, None, "ZeroDivisionError", "KeyboardInterrupt"]
    assert records[1].source_preview == "import time; time.sleep(0.05)  # wait"
    assert 0.05 <= records[1].measurement.duration_s < 0.5
    assert all(r.measurement.estimated for r in records)  # no hardware in this test


def test_loading_twice_does_not_count_twice(shell):
    greenjupyter.load_ipython_extension(shell)
    run(shell, "%reload_ext greenjupyter")
    run(shell, "y = 2")
    assert len(greenjupyter.cells()) == 1
    assert shell.events.callbacks["post_run_cell"].count(extension.current_recorder().post_run_cell) == 1
    assert len(sampler_threads()) == 1


def test_unload_removes_hooks_magics_and_the_thread():
    shell = InteractiveShell.instance()
    run(shell, "%load_ext greenjupyter")
    recorder = extension.current_recorder()
    assert len(sampler_threads()) == 1
    run(shell, "%unload_ext greenjupyter")
    assert recorder.pre_run_cell not in shell.events.callbacks["pre_run_cell"]
    assert recorder.post_run_cell not in shell.events.callbacks["post_run_cell"]
    assert shell.find_line_magic("carbon") is None and shell.find_cell_magic("carbon") is None
    assert sampler_threads() == []
    assert greenjupyter.cells() == ()


def test_cell_magic_shows_result_and_keeps_the_value(shell):
    with capture_output() as captured:
        result = run(shell, "%%carbon -o m\nimport time\ntime.sleep(0.1)\n6 * 7")
    assert result.result == 42  # the last expression is still the cell's output
    m = shell.user_ns["m"]
    assert isinstance(m, Measurement) and 0.1 <= m.duration_s < 0.5
    (shown,) = captured.outputs
    assert "text/html" in shown.data and "text/plain" in shown.data
    assert "estimated" in shown.data["text/plain"]
    assert shown.data["text/html"].startswith('<div class="greenjupyter-measurement"')
    # The cell's record (badge, sidebar, history) is that very figure, not a window of its own.
    assert greenjupyter.cells()[-1].measurement is m


def test_a_carbon_cell_shows_stores_and_records_one_figure(shell):
    with capture_output() as captured:
        run(shell, "%%carbon -o m\nimport time\ntime.sleep(0.05)")
    m, record = shell.user_ns["m"], greenjupyter.cells()[-1]
    assert (m.energy_j, m.duration_s, m.co2e_g) == (record.measurement.energy_j, record.measurement.duration_s,
                                                    record.measurement.co2e_g)
    assert captured.outputs[0].data["text/plain"] == str(record.measurement)
    (stored,) = [c for c in extension.current_recorder().store.cells() if c.record.execution_count == record.execution_count]
    assert (stored.record.measurement.energy_j, stored.record.measurement.duration_s) == (m.energy_j, m.duration_s)


def test_a_carbon_cell_with_a_region_keeps_the_session_grid_in_its_record(shell):
    other = "DE" if runtime.current_grid().region == "FR" else "FR"
    with capture_output() as captured:
        run(shell, f"%%carbon --region {other} -o m\nimport time\ntime.sleep(0.05)")
    m, record = shell.user_ns["m"], greenjupyter.cells()[-1].measurement
    assert (m.energy_j, m.duration_s, m.components) == (record.energy_j, record.duration_s, record.components)
    assert m.region == other != record.region and other in captured.outputs[0].data["text/plain"]
    assert record.region == runtime.current_grid().region  # totals stay on one grid


def test_the_carbon_magic_called_inside_another_cell_leaves_that_cell_its_window(shell):
    run(shell, "import time\nget_ipython().run_cell_magic('carbon', '-q -o m', 'time.sleep(0.05)')\ntime.sleep(0.05)")
    inner, outer = shell.user_ns["m"], greenjupyter.cells()[-1].measurement
    assert outer.duration_s >= inner.duration_s + 0.05


def test_cell_magic_quiet_and_ipython_syntax(shell):
    with capture_output() as captured:
        run(shell, "%%carbon -q -o m\nvalue = %time 1 + 1\n")
    assert captured.outputs == []
    assert shell.user_ns["value"] == 2
    assert isinstance(shell.user_ns["m"], Measurement)


def test_cell_magic_measures_and_reraises_a_failing_cell(shell):
    with capture_output() as captured:
        result = run(shell, "%%carbon -o m\nimport time\ntime.sleep(0.05)\nraise ValueError('boom')")
    assert isinstance(result.error_in_exec, ValueError)
    assert shell.user_ns["m"].duration_s >= 0.05
    assert len(captured.outputs) == 1
    assert greenjupyter.cells()[-1].error == "ValueError"


@pytest.mark.parametrize(
    "line, message",
    [
        ("bogus", "unknown action 'bogus'; accepted: totals, sources, cells"),
        ("cells -n 0", "-n 0 must be a positive number of cells"),
        ("cells -n many", "invalid int value: 'many'"),
        ("--frobnicate", "unrecognized arguments: --frobnicate"),
        # A quote without its pair was a raw ValueError from shlex.
        ("'", "cannot read the arguments \"'\": No closing quotation; quote a value with spaces in a matching pair"),
        ('report "html', "cannot read the arguments 'report \"html': No closing quotation"),
        ("config region=FR\\", "cannot read the arguments .*: No escaped character"),
        # Options that the line magic ignored before.
        ("--region FR", "--region applies only to the cell magic \\(%%carbon --region ... on a cell's first line\\), not to %carbon totals"),
        ("cells -q", "-q applies only to the cell magic"),
        ("report -o m", "-o applies only to the cell magic .*, not to %carbon report"),
        ("sources --stop", "--stop applies only to %carbon budget, not to %carbon sources"),
        ("cells --format html", "--format applies only to %carbon report, not to %carbon cells"),
        ("report -n 3", "-n applies only to %carbon cells, not to %carbon report"),
        ("budget --stop", "--stop needs an amount: %carbon budget 50g --stop"),
        ("budget clear --stop", "--stop goes with an amount, not with clear"),
        ("report --format pdf", "unknown summary format 'pdf'; accepted: markdown, latex, html, text"),
    ],
)
def test_bad_arguments_are_usage_errors(shell, line, message):
    with pytest.raises(UsageError, match=message):
        shell.run_line_magic("carbon", line)


def test_a_quote_without_its_pair_in_a_cell_is_a_usage_error_and_the_next_cell_is_measured(shell, capsys):
    result = run(shell, "%%carbon '\nx = 1")
    assert isinstance(result.error_in_exec, UsageError) and "No closing quotation" in str(result.error_in_exec)
    assert "Traceback" not in capsys.readouterr().err
    assert run(shell, "y = 2").success and greenjupyter.cells()[-1].source_preview == "y = 2"


def test_quoted_words_lose_their_quotes(shell, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run(shell, "x = 1")
    shell.run_line_magic("carbon", 'export "my cells.csv"')
    shell.run_line_magic("carbon", "budget '50 g' --stop")
    assert (tmp_path / "my cells.csv").exists()
    assert extension.current_recorder().budget.limit == 50.0
    shell.run_line_magic("carbon", "budget clear")


@pytest.mark.parametrize("name", ["__builtins__", "_", "_ih", "In", "Out", "get_ipython", "exit", "quit",
                                  "print", "len", "open", "ｐｒｉｎｔ", "class", "None"])
def test_the_cell_magic_refuses_a_name_that_would_break_the_shell(shell, name):
    with pytest.raises(UsageError, match=f"-o {name!r}|-o .* is not a valid variable name"):
        shell.run_cell_magic("carbon", f"-o {name}", "pass")
    # Every later cell still runs.
    assert run(shell, "z = sum([1, 2])").success and shell.user_ns["z"] == 3
    assert run(shell, "print(len('ok'))").success


def test_the_cell_magic_refuses_options_of_line_actions(shell):
    for line, message in [("--stop", "--stop applies only to %carbon budget, not to %%carbon"),
                          ("--format html", "--format applies only to %carbon report, not to %%carbon"),
                          ("-n 3", "-n applies only to %carbon cells, not to %%carbon")]:
        with pytest.raises(UsageError, match=message):
            shell.run_cell_magic("carbon", line, "pass")


def test_the_cell_magic_keeps_a_result_under_a_normalised_name(shell):
    shell.run_cell_magic("carbon", "-q -o ｍｅａｓｕｒｅｄ", "pass")  # Python reads this name as "measured"
    assert isinstance(shell.user_ns["measured"], Measurement)
    run(shell, "del measured")


def test_bad_cell_magic_arguments(shell):
    with pytest.raises(UsageError, match="-o '1x' is not a valid variable name"):
        shell.run_cell_magic("carbon", "-o 1x", "pass")
    with pytest.raises(UsageError, match="%%carbon takes options only, not 'cells'"):
        shell.run_cell_magic("carbon", "cells", "pass")


def test_magic_documents_itself(shell):
    doc = shell.find_line_magic("carbon").__doc__
    assert "%carbon sources" in doc and "-o NAME" in doc and "--quiet" in doc


def test_totals_cells_and_sources(shell):
    run(shell, "import time; time.sleep(0.02)")
    run(shell, "1/0")
    with capture_output() as captured:
        run(shell, "%carbon")
        run(shell, "%carbon cells -n 2")
        run(shell, "%carbon sources")
    totals, cells, sources = (o.data["text/plain"] for o in captured.outputs)
    assert totals.startswith("greenjupyter session: 2 cells in ")
    assert "cpu:process" in totals and "estimated" in totals and "1 of the cells raised an error" in totals
    assert cells.splitlines()[0].split()[:3] == ["#", "duration", "energy"]
    assert len(cells.splitlines()) == 3 and "[ZeroDivisionError]" in cells
    assert "missing   rapl: no powercap tree at /nonexistent-powercap" in sources
    assert "estimated cpu:process" in sources


def test_cells_history_and_budget_show_a_cells_control_characters_escaped(shell, capsys):
    run(shell, "%carbon budget 0.05J")
    run(shell, 'title = "\x1b]0;pwned\x07"; clear = "\x1b[2J"; sum(range(3 * 10**6))')  # ~0.2 J
    greenjupyter.cells()  # records are finished (and the budget checked) when asked, or on the sampler's tick
    with capture_output() as captured:
        run(shell, "%carbon cells")
        run(shell, "%carbon history")
    cells, history = (o.data["text/plain"] for o in captured.outputs)
    assert "\x1b" not in cells + history and "\x07" not in cells
    assert 'title = "\\x1b]0;pwned\\x07"; clear = "\\x1b[2J"; sum' in cells
    said = capsys.readouterr().err  # the budget's costliest cells
    assert "passed its budget" in said and "\x1b" not in said and "\\x1b]0;pwned" in said
    run(shell, "%carbon budget clear")


def test_measured_cells_with_hardware(powercap, gpus):
    shell = InteractiveShell.instance()
    run(shell, "%load_ext greenjupyter")
    try:
        run(shell, "import time; time.sleep(0.3)")
        (record,) = greenjupyter.cells()
        m = record.measurement
        assert sorted(m.components) == ["cpu:package-0", "cpu:package-1", "dram:0", "dram:1", "gpu:0", "gpu:1"]
        assert not m.estimated
        rapl = sum(m.components[c] for c in ("cpu:package-0", "cpu:package-1", "dram:0", "dram:1"))
        assert rapl == pytest.approx(powercap.total_watts() * m.duration_s, rel=0.01)
        assert m.components["gpu:1"] == pytest.approx(150 * m.duration_s, rel=0.05)
        with capture_output() as captured:
            run(shell, "%carbon sources")
        text = captured.outputs[0].data["text/plain"]
        assert "measured  gpu:0: NVIDIA H100 80GB HBM3, NVML total-energy counter" in text
        assert "measured  cpu:package-0: RAPL counter" in text
        assert "psys" not in text
    finally:
        run(shell, "%unload_ext greenjupyter")


@pytest.mark.parametrize(
    "part, message",
    [
        ("edge", "could not finish measuring a cell (RuntimeError('disk on fire'))"),
        ("measurement", "could not record a cell (RuntimeError('disk on fire'))"),
    ],
)
def test_a_failure_inside_the_extension_never_breaks_the_cell(shell, monkeypatch, capsys, part, message):
    meter = extension.current_recorder().meter
    real, calls = getattr(meter, part), []

    def broken(*args):
        calls.append(args)
        if part == "edge" and len(calls) % 2:
            return real(*args)  # the cell's start reads fine, its end fails
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(meter, part, broken)
    first = run(shell, "a = 1")
    second = run(shell, "b = 2")
    assert first.success and second.success and shell.user_ns["b"] == 2
    assert greenjupyter.cells() == ()
    assert capsys.readouterr().err.count(message) == 1
    monkeypatch.undo()
    run(shell, "c = 3")
    assert len(greenjupyter.cells()) == 1  # measuring resumes


def test_without_history_records_are_finished_by_the_sampler_off_the_cell_path(monkeypatch):
    monkeypatch.setenv("GREENJUPYTER_DB_PATH", "off")
    shell = InteractiveShell.instance()
    run(shell, "%load_ext greenjupyter")
    recorder = extension.current_recorder()
    assert recorder.store is None
    run(shell, "d = 4")
    assert len(recorder._closed) == 1  # the cell's path only queued the reading
    deadline = time.monotonic() + 2
    while recorder._closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not recorder._closed and len(recorder._records) == 1
    run(shell, "%unload_ext greenjupyter")


def test_a_load_that_fails_leaves_no_thread_and_says_so(monkeypatch, capsys):
    from greenjupyter import runtime

    def broken(settings=None):
        raise OSError("read-only file system")

    monkeypatch.setattr(runtime, "get_meter", broken)
    shell = InteractiveShell.instance()
    result = run(shell, "%load_ext greenjupyter")
    assert result.success
    assert "could not load (OSError('read-only file system')); cells run unmeasured" in capsys.readouterr().err
    assert extension.current_recorder() is None and sampler_threads() == []
    run(shell, "%unload_ext greenjupyter")


def test_a_gpu_lost_mid_cell_is_reported_once_and_the_cell_runs_on(gpus, capsys):
    shell = InteractiveShell.instance()
    run(shell, "%load_ext greenjupyter")
    try:
        run(shell, "import time; time.sleep(0.05)")
        gpus.gpus[0].fail(gpus.NVML_ERROR_GPU_IS_LOST)
        first = run(shell, "time.sleep(0.05); 'still runs'")
        run(shell, "time.sleep(0.05)")
        assert first.result == "still runs"
        records = greenjupyter.cells()
        assert [r.measurement.failed_components for r in records] == [(), ("gpu:0",), ("gpu:0",)]
        assert all("gpu:1" in r.measurement.components for r in records)
        assert capsys.readouterr().err.count("gpu:0 could not be read during cell") == 1
        with capture_output() as captured:
            run(shell, "%carbon sources")
        assert "last error: GPU is lost" in captured.outputs[0].data["text/plain"]
    finally:
        run(shell, "%unload_ext greenjupyter")


def test_loading_imports_nothing_heavy_and_starts_no_process(tmp_path):
    """%load_ext in a terminal IPython: no kernel machinery, NVML, matplotlib or network modules."""
    import subprocess
    import sys

    probe = (
        "import sys, subprocess\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "shell = InteractiveShell.instance()\n"
        "before = set(sys.modules)\n"
        "spawned = []\n"
        "real = subprocess.Popen.__init__\n"
        "subprocess.Popen.__init__ = lambda self, *a, **k: (spawned.append(a), real(self, *a, **k))[1]\n"
        "shell.run_line_magic('load_ext', 'greenjupyter')\n"
        "new = set(sys.modules) - before\n"
        "heavy = sorted(m for m in new if m.split('.')[0] in ('ipykernel', 'jupyter_client', 'zmq', 'pynvml', "
        "'matplotlib', 'pandas', 'urllib', 'http', 'ipywidgets', 'nbclient'))\n"
        "print(heavy, spawned)\n"
    )
    env = {**os.environ, "GREENJUPYTER_DB_PATH": str(tmp_path / "h.sqlite")}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60)
    assert done.stdout.strip() == "[] []", done.stdout + done.stderr
