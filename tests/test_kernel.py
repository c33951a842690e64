"""A real ipykernel runs a notebook through nbclient with the extension loaded: one record per cell."""

import json
import math
import os
import sys
import time

import nbclient
import nbformat
import pytest

from greenjupyter import journal
from greenjupyter.store import Store
from tests.kernels import kernel_environment, kernel_manager

CELLS = [
    ("load", "%load_ext greenjupyter"),
    ("sleep", "import time\ntime.sleep(0.2)"),
    ("cpu", "total = 0\nfor i in range(300_000):\n    total += i * i\ntotal"),
    ("raise", "1 / 0"),
    ("carbon", "%%carbon -o m\nsum(range(100_000))"),
    ("empty", "# nothing but a comment"),
    (
        "report",
        "import json, sys, greenjupyter\n"
        "print(json.dumps({\n"
        "    'executable': sys.executable,\n"
        "    'm': type(m).__name__,\n"
        "    'records': [(r.execution_count, r.cell_id, r.success, r.error,\n"
        "                 r.measurement.duration_s, r.measurement.energy_j)\n"
        "                for r in greenjupyter.cells()],\n"
        "}))",
    ),
]


def make_notebook(cells=CELLS):
    nb = nbformat.v4.new_notebook()
    for name, source in cells:
        cell = nbformat.v4.new_code_cell(source)
        if name == "raise":
            cell.metadata["tags"] = ["raises-exception"]
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def run(tmp_path, send_cell_ids, cells=CELLS, env=None):
    nb = make_notebook(cells)
    client = nbclient.NotebookClient(
        nb,
        km=kernel_manager(tmp_path, asynchronous=True),
        timeout=60,
        startup_timeout=60,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    if send_cell_ids:
        # JupyterLab and Notebook 7 put the cell's id in the execute_request metadata
        # ("cellId"); ipykernel hands it to run_cell as info.cell_id. nbclient does not.
        def tag_request(cell, cell_index):
            client.kc.session.metadata["cellId"] = cell.id

        client.on_cell_execute = tag_request
    client.execute(env={**kernel_environment(tmp_path), **(env or {})})
    report = [o for o in nb.cells[-1].outputs if o.output_type == "stream" and o.name == "stdout"]
    assert report, nb.cells[-1].outputs
    return nb, json.loads("".join(o.text for o in report))


@pytest.mark.parametrize("send_cell_ids", [True, False], ids=["lab-cell-ids", "nbclient"])
def test_one_record_per_executed_cell(tmp_path, send_cell_ids):
    nb, report = run(tmp_path, send_cell_ids)
    assert os.path.realpath(report["executable"]) == os.path.realpath(sys.executable)
    assert report["m"] == "Measurement"

    measured = nb.cells[1:-1]  # the load cell has no record; the report cell is still running
    records = report["records"]
    assert len(records) == len(measured)

    counts = [r[0] for r in records]
    assert counts == [cell.execution_count for cell in measured]
    assert counts == list(range(counts[0], counts[0] + len(measured)))
    assert counts[0] == nb.cells[0].execution_count + 1

    for cell, (_, cell_id, _, _, _, _) in zip(measured, records):
        assert cell.id
        if send_cell_ids:
            assert cell_id == cell.id
        else:
            assert cell_id is None

    names = [name for name, _ in CELLS[1:-1]]
    by_name = dict(zip(names, records))
    assert nb.cells[1 + names.index("raise")].outputs[0].ename == "ZeroDivisionError"
    for name, (_, _, success, error, duration, energy) in by_name.items():
        if name == "raise":
            assert (success, error) == (False, "ZeroDivisionError")
        else:
            assert (success, error) == (True, None), name
        assert math.isfinite(duration) and duration >= 0, name
        assert math.isfinite(energy) and energy >= 0, name

    duration = by_name["sleep"][4]
    assert 0.2 <= duration < 0.5


POOL_CELLS = [
    ("load", "%load_ext greenjupyter"),
    (
        "pool",
        "import multiprocessing, os, time, greenjupyter\n"
        "def task(i):\n"
        "    with greenjupyter.measure() as m:\n"
        "        time.sleep(0.02)\n"
        "    return os.getpid(), m.energy_j, m.duration_s, len(greenjupyter.cells())\n"
        "with multiprocessing.get_context('fork').Pool(4, maxtasksperchild=2) as pool:\n"
        "    results = pool.map(task, range(16))",
    ),
    ("sleep", "time.sleep(0.05)"),
    (
        "report",
        "import json\n"
        "print(json.dumps({'kernel': os.getpid(), 'results': results,\n"
        "                  'records': [r.execution_count for r in greenjupyter.cells()]}))",
    ),
]


def test_a_fork_pool_measures_in_its_workers_and_writes_no_history(tmp_path):
    # The sampler at 10 ms makes it likely that a fork catches the meter's lock held.
    nb, report = run(tmp_path, False, POOL_CELLS, {"GREENJUPYTER_SAMPLE_INTERVAL_S": "0.01"})
    results = report["results"]
    assert len(results) == 16 and report["kernel"] not in {pid for pid, *_ in results}
    for _, energy, duration, cells in results:
        # 20 ms of sleep; a loaded 2-core machine may add delay to a worker, never remove any.
        assert energy > 0 and 0.02 <= duration < 1.0
        assert cells == 0  # a worker keeps the records it inherited (none yet), adds none
    own = [cell.execution_count for cell in nb.cells[1:]]
    assert report["records"] == own[:-1]  # the report cell is still running
    # The kernel was stopped right after its last cell, which may still be in its journal only.
    # Its journal is locked until the kernel's process is gone, which on a busy machine may take a moment.
    store = Store(str(tmp_path / "history.sqlite"))
    try:
        deadline = time.monotonic() + 10
        while True:
            journal.recover(journal.directory_for(store.path), store, lambda m: m)
            rows = [c.record.execution_count for c in store.cells()]
            if rows == own or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        store.close()
    assert rows == own  # the kernel's own cells, each once; nothing from a worker
