"""%carbon budget, report and export in a real shell."""

import csv
import json
import time

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import greenjupyter
from greenjupyter.ipython.budget import parse_amount


@pytest.fixture
def shell():
    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext greenjupyter")
    shell.run_cell("import time")
    yield shell
    shell.run_cell("%unload_ext greenjupyter")
    shell.user_ns.pop("ran", None)


def run(shell, source):
    return shell.run_cell(source, store_history=True)


def burn(cpu_seconds):
    """A one-line cell that uses this much CPU time, however fast the machine."""
    return f"t = time.process_time()\nwhile time.process_time() - t < {cpu_seconds}: pass"


@pytest.mark.parametrize(
    "text, expected",
    [("50g", ("co2e_g", 50.0)), ("0.5 kg", ("co2e_g", 500.0)), ("250mg", ("co2e_g", 0.25)),
     ("2Wh", ("energy_j", 7200.0)), ("1.5kWh", ("energy_j", 5.4e6)), ("300 J", ("energy_j", 300.0))],
)
def test_budget_amounts(text, expected):
    assert parse_amount(text) == pytest.approx(expected)


def test_budget_notice_once_with_the_costliest_cells(shell, capsys):
    # The CPU estimate (3.84 W per busy vCPU here): ~0.19 J for the first cell, ~0.58 J for the second.
    run(shell, "%carbon budget 0.45J")
    run(shell, burn(0.05))
    costliest = run(shell, burn(0.15)).execution_count
    run(shell, "x = 1")
    err = capsys.readouterr().err
    assert err.count("passed its budget of 450 mJ") == 1
    assert "Costliest cells:" in err
    assert err.split("Costliest cells:")[1].splitlines()[1].startswith(f"  [{costliest}] ")
    with capture_output() as captured:
        run(shell, "%carbon budget")
    assert "(passed)" in captured.outputs[0].data["text/plain"]


def test_budget_stop_interrupts_cells_until_cleared(shell):
    run(shell, "%carbon budget --stop 0.05J")
    run(shell, burn(0.05))
    stopped = run(shell, "ran = True")
    assert isinstance(stopped.error_in_exec, greenjupyter.GreenJupyterError)
    assert "budget of 50 mJ passed; %carbon budget clear to run cells again" in str(stopped.error_in_exec)
    assert "ran" not in shell.user_ns
    run(shell, "%carbon budget clear")
    assert run(shell, "ran = True").success and shell.user_ns["ran"] is True


def test_bad_budget_is_a_usage_error(shell):
    with pytest.raises(UsageError, match="budget 'lots' is not understood; accepted: an amount of CO2e"):
        shell.run_line_magic("carbon", "budget lots")


@pytest.mark.parametrize("text", ["nan g", "NaN kg", "inf Wh", "1e999 J", "9" * 400 + "g", "1e306 t", "0g", "-5 Wh"])
def test_budgets_that_are_not_finite_or_not_above_zero_are_refused_and_the_old_one_kept(shell, text):
    # 1e306 t is 1e312 g: finite as typed, infinite once in grams.
    run(shell, "%carbon budget 50g")
    with pytest.raises(UsageError, match=r"^budget '.*' is refused \(not (a finite number|above 0); accepted: an amount of CO2e"):
        shell.run_line_magic("carbon", f"budget {text}")
    with capture_output() as captured:
        run(shell, "%carbon budget")
    assert "of 50 g CO2e used (within)" in captured.outputs[0].data["text/plain"]


def test_export_and_report(shell, tmp_path):
    run(shell, "%carbon config region=FR")
    run(shell, "sum(range(100000))")
    run(shell, "1/0")
    csv_path, json_path = tmp_path / "emissions.csv", tmp_path / "cells.json"
    run(shell, f"%carbon export {csv_path}")
    run(shell, f"%carbon export {json_path}")
    rows = list(csv.DictReader(csv_path.open()))
    outcome = {r["source_preview"]: r["success"] for r in rows}
    assert (outcome["sum(range(100000))"], outcome["1/0"]) == ("True", "False")
    assert list(rows[0])[:5] == ["timestamp", "project_name", "experiment_id", "duration", "emissions"]
    assert len(json.loads(json_path.read_text())["cells"]) == len(rows) + 1  # the CSV export cell itself
    with pytest.raises(UsageError, match="extension '.xlsx' is not known"):
        shell.run_line_magic("carbon", f"export {tmp_path / 'x.xlsx'}")
    with capture_output() as captured:
        run(shell, "%carbon report --format html")
    (output,) = captured.outputs  # one page: the energy and power figures are in it
    page = output.data["text/html"]
    assert "France" in page and page.count('src="data:image/png;base64,') == 2


def test_monitor_widget_follows_the_sampler(shell):
    from greenjupyter.ipython import extension

    with capture_output() as captured:
        run(shell, "%carbon monitor")
    assert "application/vnd.jupyter.widget-view+json" in captured.outputs[0].data
    monitor = extension.current_recorder().monitor
    sampler = extension.current_recorder().meter.sampler
    before = len(monitor.watts)
    deadline = time.monotonic() + 3
    while len(monitor.watts) < before + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(monitor.watts) >= before + 2  # fed by the sampler's ticks
    assert monitor.now.value.startswith("⚡ ") and "W now (idle)" in monitor.now.value
    assert "cpu:process" in monitor.parts.value and monitor.session.value.startswith("session: ")
    run(shell, "%unload_ext greenjupyter")
    assert monitor.on_sample not in sampler.listeners
    run(shell, "%load_ext greenjupyter")
