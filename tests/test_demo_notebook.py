"""demo/demo.ipynb runs top to bottom in a real kernel (no RAPL, a history of its own) and shows what it
says it shows: the what-if table, the tagged runs compared with their scatter, the SCI line and the
energy between cells."""

import base64
import re
from pathlib import Path

import nbclient
import nbformat
import pytest
from jupyter_core.utils import run_sync

from greenjupyter import cli
from greenjupyter import format as fmt
from greenjupyter.store import Store
from tests.kernels import kernel_environment, kernel_manager

DEMO = Path(__file__).resolve().parent.parent / "demo" / "demo.ipynb"
TAGS = ("digits-50pct", "digits-70pct", "digits-100pct")
UNITS = {"µJ": 1e-6, "mJ": 1e-3, "J": 1.0, "Wh": 3600.0, "kWh": 3.6e6}


def joules(text: str) -> float:
    """Return the joules of a figure as greenjupyter.format.energy writes it ('423 mJ', '1.5 J')."""
    number, unit = text.split()
    return float(number) * UNITS[unit]


def text_of(cell) -> str:
    """Return everything a cell showed as text: streams, and each output's text/plain."""
    return "\n".join(o.get("text") or o.get("data", {}).get("text/plain", "") for o in cell.outputs)


def cell_starting(nb, first_line: str):
    return next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith(first_line))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo, run once for this module: (the executed notebook, the cells stored in its history, its path)."""
    tmp_path = tmp_path_factory.mktemp("demo")
    nb = nbformat.read(DEMO, as_version=4)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code"), \
        "demo/demo.ipynb is kept without outputs"
    km = kernel_manager(tmp_path, asynchronous=True)
    km.shutdown_wait_time = 60  # it exits by itself, writing its last rows, however busy the machine
    client = nbclient.NotebookClient(
        nb, km=km, timeout=180, startup_timeout=120,
        resources={"metadata": {"path": str(tmp_path)}},  # the kernel runs there: nothing is written beside the demo
    )
    try:
        # A fixed grid, so that FR, us-central1 and aws:eu-north-1 are rows of their own wherever this runs.
        client.execute(env={**kernel_environment(tmp_path), "GREENJUPYTER_REGION": "DE"})
    finally:  # nbclient leaves a kernel it was given running
        if client.kc is not None:
            client.kc.stop_channels()
        if km.has_kernel:
            run_sync(km.shutdown_kernel)()
    db = str(tmp_path / "history.sqlite")
    store = Store(db, read_only=True)
    try:
        stored = store.cells()
    finally:
        store.close()
    return nb, stored, db


def test_every_cell_runs_without_an_error_or_a_warning(demo):
    nb, stored, _ = demo
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.execution_count is not None, cell.source
            kinds = [(o.output_type, o.get("name")) for o in cell.outputs]
            assert ("error", None) not in kinds and ("stream", "stderr") not in kinds, (cell.source, cell.outputs)
    assert len(stored) == sum(c.cell_type == "code" for c in nb.cells) - 1  # every cell after the load


def test_whatif_shows_the_named_regions_beside_the_grid_in_force(demo):
    nb, _, _ = demo
    plain = cell_starting(nb, "%carbon whatif --regions")
    rows = {line.split()[0]: line for line in text_of(plain).splitlines()[2:] if line.startswith("  ") and line.split()}
    assert "your grid" in rows["DE"]
    for region in ("FR", "gcp:us-central1", "aws:eu-north-1"):
        assert rows[region].rstrip().endswith("named"), rows.get(region)
    assert "France" in rows["FR"]
    html = next(o.data["text/html"] for o in plain.outputs if "text/html" in o.get("data", {}))
    assert "<td>FR</td>" in html and "<td>gcp:us-central1</td>" in html
    # Without --regions: the grid in force and the usual rows, none named.
    default = text_of(next(c for c in nb.cells if c.cell_type == "code" and c.source.strip() == "%carbon whatif"))
    assert "your grid" in default and "low-carbon grid" in default and "named" not in default


def test_compare_shows_the_three_runs_with_the_accuracy_each_logged_and_a_scatter(demo):
    nb, stored, _ = demo
    logged = {}
    for tag in TAGS:
        cell = cell_starting(nb, f'greenjupyter.tag("{tag}")')
        accuracy = float(cell.outputs[-1].data["text/plain"])
        assert 0.8 < accuracy <= 1.0, (tag, accuracy)  # digits by chance: 0.1
        logged[tag] = accuracy
    # Each run is one stored cell, with the accuracy that cell returned, unchanged.
    by_tag = {c.record.tag: c.record for c in stored if c.record.tag is not None}
    assert set(by_tag) == set(TAGS)
    assert {tag: r.metrics["accuracy"] for tag, r in by_tag.items()} == logged
    assert sum(c.record.tag is not None for c in stored) == 3  # tag(None) ended the last run

    compare = cell_starting(nb, "greenjupyter.tag(None)")
    table = text_of(compare)
    assert "3 tagged runs" in table and "* on the Pareto front of energy against accuracy (higher is better)" in table
    for tag in TAGS:
        row = next(line for line in table.splitlines() if f" {tag} " in line)
        assert row.split()[-1] == f"{logged[tag]:.4g}"
        assert fmt.energy(by_tag[tag].measurement.energy_j) in row  # the run's energy is its cell's
    pngs = [o.data["image/png"] for o in compare.outputs if "image/png" in o.get("data", {})]
    assert len(pngs) == 1 and base64.b64decode(pngs[0]).startswith(b"\x89PNG\r\n\x1a\n")


def test_the_sci_cell_gives_carbon_per_prediction(demo):
    nb, _, _ = demo
    shown = text_of(cell_starting(nb, "%%carbon --per"))
    assert re.search(r"SCI \S+ gCO2e per prediction \(E .* / R 1797 predictions", shown), shown


def test_totals_show_the_energy_between_cells_and_the_cli_history_the_same(demo, capsys):
    nb, stored, db = demo
    totals = text_of(next(c for c in reversed(nb.cells) if c.cell_type == "code" and c.source.strip() == "%carbon"))
    found = re.search(r"cells: (\S+ \S+), between cells: (\S+ \S+) \((\S+)% of the session\) in ", totals)
    assert found, totals
    cells_j, between_j, share = joules(found[1]), joules(found[2]), float(found[3])
    assert between_j > 0 and cells_j > 0
    # Each figure is shown to three significant digits (up to 0.5% off), so 2% covers their rounding.
    assert share == pytest.approx(100 * between_j / (cells_j + between_j), rel=0.02)
    # %carbon showed the gap before its own cell live; that cell's row keeps the same gap, so the
    # stored gaps of the session add up to the figure shown, and greenjupyter history says so too.
    assert sum(c.record.idle_before_j for c in stored) == pytest.approx(between_j, rel=0.02)
    assert cli.main(["--db", db, "history"]) == 0
    header, row = capsys.readouterr().out.splitlines()[1:]
    at = header.index("between cells")
    assert joules(row[at:at + len("between cells")]) == pytest.approx(between_j, rel=0.02), (header, row)
