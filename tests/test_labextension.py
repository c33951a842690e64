"""The JupyterLab extension: packaging, the TypeScript unit tests (jest), and browser tests.

Browser tests start a real ``jupyter lab`` on 127.0.0.1 with a real kernel and drive Debian's
Chromium through Playwright (no browser download; the shared parts are in tests/browser.py).
Screenshots go to test-artifacts/.
"""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import greenjupyter
from tests.browser import browser_fixture  # noqa: F401  (the `browser` fixture)
from tests.browser import (ARTIFACTS, BIN, ROOT, cell_badges, console_errors, jupyter_server, new_page,
                           panel_redraw, run_cell, sent_requests, shot, wait_cell, write_notebook)


def jlpm() -> list:
    found = shutil.which("jlpm", path=str(BIN)) or shutil.which("jlpm")
    assert found, "jlpm not found: install jupyterlab (the test extra) into this environment"
    return [found]


def test_the_labextension_version_is_the_package_version():
    package = json.loads((ROOT / "package.json").read_text())
    assert package["version"] == greenjupyter.__version__


def test_pip_install_ships_the_prebuilt_extension_enabled():
    out = subprocess.run([str(BIN / "jupyter"), "labextension", "list"], capture_output=True, text=True, timeout=60)
    line = next((line for line in (out.stdout + out.stderr).splitlines() if "greenjupyter" in line), "")
    assert "enabled" in line and "OK" in line, out.stdout + out.stderr
    assert (Path(sys.prefix) / "share/jupyter/labextensions/greenjupyter/package.json").exists()


def test_typescript_unit_tests_pass():
    """jest: formatting and the stream model (labextension/test/)."""
    if not (ROOT / "node_modules").exists():
        subprocess.run(jlpm() + ["install"], cwd=ROOT, check=True, timeout=900)
    run = subprocess.run(jlpm() + ["jest", "--ci"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr


# ---------------------------------------------------------------- browser tests

def test_apply_and_redraw_with_an_hour_of_history_is_fast(browser):
    """p95 of (apply one update + redraw the canvas) with 14,400 samples (an hour at 4/s) in the model,
    and the picture drawn update by update equal to one drawn whole (bench/panel_redraw.py)."""
    # The target is about the code's cost; on a machine kept busy by other processes one run's
    # tail can be the scheduler's, so a run over it is measured again, up to three runs in all.
    for _ in range(3):
        result = panel_redraw.measure(browser, ROOT / "lib")
        if result["window60min"]["p95"] <= 4 and result["window10min"]["p95"] <= 4:
            break
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "bench-apply-redraw.json").write_text(json.dumps(result, indent=1))
    print("apply one update + redraw, an hour of samples:", json.dumps(result))
    assert result["window60min"]["samples"] >= 14000
    # Target p95 <= 4 ms; this 2-core VM measures ~0.5-0.7 ms.
    assert result["window60min"]["p95"] <= 4 and result["window10min"]["p95"] <= 4, result
    # Strokes traced in pieces round a few edge pixels differently (0-4 seen); one column left
    # out or shifted wrongly changes well over a hundred.
    for window, diff in result["differences"].items():
        assert diff["off"] <= 24, (window, diff)


@pytest.fixture(scope="module")
def lab(tmp_path_factory, browser):
    """A real JupyterLab on a free port: its root dir, URL and token; the extension as pip installed it."""
    base = tmp_path_factory.mktemp("lab")
    with jupyter_server(base, "lab") as server:
        yield {**server, "workspaces": base / "workspaces"}


@pytest.fixture
def page(browser, lab):
    with new_page(browser) as page:
        yield page


def open_notebook(page, lab, name, states=("not-loaded", "live")):
    page.goto(f"{lab['url']}/lab/tree/{name}?reset&token={lab['token']}")
    return wait_ready(page, states)


def wait_ready(page, states=("not-loaded", "live")):
    """Wait for the notebook, open the greenjupyter sidebar, wait until it knows the kernel."""
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=30000)
    panel = page.locator("#greenjupyter-panel")
    if not panel.is_visible():
        page.locator('.jp-SideBar [data-id="greenjupyter-panel"]').click()
    panel.wait_for(state="visible", timeout=10000)
    wanted = ", ".join(f'[data-state="{state}"]' for state in states)
    page.wait_for_selector(f"#greenjupyter-panel:is({wanted})", timeout=30000)
    return panel


BUSY_2S = "import time\nt = time.time()\nwhile time.time() - t < 2:\n    pass"
XSS = "<img src=x onerror=alert(1)>"
RECORDS = ("import greenjupyter, json\n"
           "print(json.dumps({r.execution_count: r.measurement.energy_j for r in greenjupyter.cells()}))")


def test_panel_follows_a_notebook_live_with_cells_badges_and_safe_text(page, lab):
    write_notebook(lab["root"], "live.ipynb", ["%load_ext greenjupyter", BUSY_2S, XSS, RECORDS])
    panel = open_notebook(page, lab, "live.ipynb")
    assert "%load_ext greenjupyter" in panel.locator(".gj-state").inner_text()  # the empty state says what to do
    shot(panel, "panel-empty.png")

    run_cell(page, 0)
    page.wait_for_selector('#greenjupyter-panel[data-state="live"]', timeout=10000)
    page.wait_for_timeout(600)
    idle_watts = panel.locator(".gj-now-value").inner_text()

    # The live watts while a 2-second busy cell runs: at least twice a second, and they move.
    run_cell(page, 1, wait=False)
    seen, deadline = [], time.monotonic() + 2.0
    while time.monotonic() < deadline:
        seen.append((panel.locator(".gj-busy").inner_text(), panel.locator(".gj-now-value").inner_text()))
        page.wait_for_timeout(100)
    wait_cell(page, 1)
    running = [watts for state, watts in seen if state == "cell running"]
    assert len(running) >= 8, seen
    assert len(set(running) | {idle_watts}) >= 2, seen  # the figure changed while it ran
    assert panel.locator(".gj-badge.gj-estimated").count() == 2  # cpu:process, dram:process, labelled
    shot(panel, "panel-live.png")

    run_cell(page, 2)  # a SyntaxError whose source is HTML: measured, and shown as text
    run_cell(page, 3)
    page.wait_for_function("() => document.querySelectorAll('#greenjupyter-panel .gj-cell-row').length >= 3",
                           timeout=10000)
    kernel = json.loads(page.locator(".jp-Notebook .jp-Cell").nth(3).locator(".jp-OutputArea-output").inner_text())
    table = {}
    for row in panel.locator(".gj-cell-row").all():
        table[row.locator(".gj-count").inner_text().strip("▲ []")] = float(
            row.locator(".gj-energy").get_attribute("data-joules"))
    for count, energy in kernel.items():
        assert table[count] == pytest.approx(energy, rel=1e-12), (table, kernel)

    # The kernel's strings stay text: no element made of them, no script run.
    assert XSS in panel.locator(".gj-cells").inner_text()
    assert panel.locator(".gj-cells img").count() == 0 and page.locator("img[src='x']").count() == 0
    assert page.dialogs == []

    # Totals: energy, CO2e, equivalents, grid; the costliest cell stands out; badges under cells.
    totals = panel.locator(".gj-totals").inner_text()
    assert "France (FR)" in totals and "g/kWh" in totals and "CO2e" in totals
    assert "of a smartphone charge" in totals  # the kernel's equivalents, as %carbon words them
    costliest = panel.locator(".gj-costliest .gj-count").inner_text()
    assert costliest.strip("▲ []") == max(table, key=table.get)
    assert page.locator(".jp-Cell .gj-cell-badge").count() >= 3
    assert "⚡" in page.locator(".jp-Notebook .jp-Cell").nth(1).locator(".gj-cell-badge").inner_text()

    # Sorting by energy puts the costliest first; a click on a row goes to its cell.
    panel.locator("button.gj-sort", has_text="Energy").click()
    page.wait_for_timeout(100)
    first = panel.locator(".gj-cell-row").first
    assert "gj-costliest" in first.get_attribute("class")
    panel.locator(".gj-cell-row", has_text="onerror").click()
    page.wait_for_timeout(200)
    assert page.locator(".jp-Notebook .jp-Cell.jp-mod-active").get_attribute("data-windowed-list-index") == "2" or \
        XSS in page.locator(".jp-Notebook .jp-Cell.jp-mod-active .jp-InputArea").inner_text()
    shot(panel, "panel-cells.png")
    page.screenshot(path=str(ARTIFACTS / "lab-live.png"))
    assert console_errors(page) == []


def test_history_after_reload_restart_and_a_second_notebook(page, lab):
    write_notebook(lab["root"], "again.ipynb", ["%load_ext greenjupyter", "import time\ntime.sleep(0.5)",
                                                "x = sum(range(10**6))"])
    write_notebook(lab["root"], "other.ipynb", ["%load_ext greenjupyter", "1 + 1", BUSY_2S])
    panel = open_notebook(page, lab, "again.ipynb")
    for index in range(3):
        run_cell(page, index)
    page.wait_for_function("() => document.querySelectorAll('#greenjupyter-panel .gj-cell-row').length >= 2",
                           timeout=10000)
    before = sorted(panel.locator(".gj-count").all_inner_texts())
    assert [badge and badge[0] for _, badge in cell_badges(page)] == [None, "cell-1", "cell-2"]

    # A reload finds the history again (the kernel's snapshot: the last minute and recent cells).
    started = time.monotonic()
    page.reload()
    panel = wait_ready(page)
    page.wait_for_function("() => document.querySelectorAll('#greenjupyter-panel .gj-cell-row').length >= 2",
                           timeout=15000)
    assert sorted(panel.locator(".gj-count").all_inner_texts()) == before
    assert sent_requests(page, "request_snapshot") >= 1  # the reloaded panel asked the idle kernel once
    assert "France" in panel.locator(".gj-totals").inner_text()
    assert panel.locator(".gj-now-value").inner_text() != "–"
    # The page shows the notebook as last saved (not since its cells ran): a badge only on a cell
    # that shows the run it measured.
    assert all(badge is None or badge[1] == shown for shown, badge in cell_badges(page)), cell_badges(page)
    print(f"history back {time.monotonic() - started:.1f} s after the reload started")
    shot(panel, "panel-after-reload.png")

    # A second notebook on a second kernel: the panel follows it, and says what to do there.
    page.locator(".jp-DirListing-item", has_text="other.ipynb").dblclick()
    page.wait_for_selector('#greenjupyter-panel[data-state="not-loaded"]', timeout=20000)
    assert "other.ipynb" in panel.locator(".gj-title").inner_text()
    shot(panel, "panel-second-notebook.png")
    run_cell(page, 2, wait=False)  # busy before greenjupyter is loaded there: the panel says it waits
    page.wait_for_selector('#greenjupyter-panel[data-state="busy-waiting"]', timeout=5000)
    assert "busy" in panel.locator(".gj-state").inner_text()
    wait_cell(page, 2)
    page.wait_for_selector('#greenjupyter-panel[data-state="not-loaded"]', timeout=5000)
    for index in range(2):
        run_cell(page, index)
    page.wait_for_function("() => document.querySelectorAll('#greenjupyter-panel .gj-cell-row').length === 1",
                           timeout=10000)
    assert panel.locator(".gj-count").all_inner_texts() == ["[3]"]  # its own cell only

    # Both kernels measured at once; the panel shows the active one: the other's busy cell stays there.
    run_cell(page, 2, wait=False)
    page.wait_for_selector('#greenjupyter-panel .gj-busy:text("cell running")', timeout=5000)
    page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text="again.ipynb").click()
    page.wait_for_selector('#greenjupyter-panel[data-state="live"]', timeout=10000)
    assert "again.ipynb" in panel.locator(".gj-title").inner_text()
    assert sorted(panel.locator(".gj-count").all_inner_texts()) == before
    assert panel.locator(".gj-busy").inner_text() == "idle"
    page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text="other.ipynb").click()
    page.wait_for_function("() => document.querySelectorAll('#greenjupyter-panel .gj-cell-row').length === 2",
                           timeout=10000)  # its 2-second cell, finished while the panel showed the other
    assert "other.ipynb" in panel.locator(".gj-title").inner_text()
    page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text="again.ipynb").click()
    page.wait_for_selector('#greenjupyter-panel[data-state="live"]', timeout=10000)

    # A kernel restart: the panel says so in plain words.
    page.locator(".lm-MenuBar-item", has_text="Kernel").click()
    page.locator(".lm-Menu-item", has_text="Restart Kernel…").first.click()
    page.locator(".jp-Dialog .jp-mod-accept").click()
    page.wait_for_selector('#greenjupyter-panel[data-state="restarted"]', timeout=20000)
    assert "restarted" in panel.locator(".gj-state").inner_text()
    shot(panel, "panel-restarted.png")

    # After the restart, loading again starts a clean session: only the new cell, and no errors.
    run_cell(page, 0)
    page.wait_for_selector('#greenjupyter-panel[data-state="live"]', timeout=10000)
    run_cell(page, 2)
    page.wait_for_function("() => document.querySelectorAll('#greenjupyter-panel .gj-cell-row').length === 1",
                           timeout=10000)
    assert [text.strip("▲ ") for text in panel.locator(".gj-count").all_inner_texts()] == ["[2]"]
    assert console_errors(page) == []


def test_a_notebook_on_another_language_kernel_is_named_plainly(page, lab):
    """A bash kernel: the panel says greenjupyter measures Python kernels, and sends that kernel nothing."""
    write_notebook(lab["root"], "shell.ipynb", ["echo measured-by-bash"], kernel="bash")
    panel = open_notebook(page, lab, "shell.ipynb", states=("not-python",))
    assert "bash" in panel.locator(".gj-state").inner_text() and "Python" in panel.locator(".gj-state").inner_text()
    run_cell(page, 0)
    output = page.locator(".jp-Notebook .jp-Cell").nth(0).locator(".jp-OutputArea-output").inner_text()
    assert output.strip() == "measured-by-bash"
    assert sent_requests(page, "echo measured-by-bash") == 1  # the frames are seen...
    assert sent_requests(page, "request_snapshot") == 0  # ...and no Python was sent to bash
    shot(panel, "panel-not-python.png")
    assert console_errors(page) == []


def test_the_demo_opens_its_notebook_with_the_sidebar_beside_it(page, lab):
    """demo/lab-workspace.json, as scripts/demo.sh and binder/postBuild import it: no click needed."""
    (lab["root"] / "demo").mkdir(exist_ok=True)
    shutil.copy(ROOT / "demo" / "demo.ipynb", lab["root"] / "demo" / "demo.ipynb")
    subprocess.run([str(BIN / "jupyter"), "lab", "workspaces", "import",
                    f"--LabWorkspaceImportApp.workspaces_dir={lab['workspaces']}", str(ROOT / "demo" / "lab-workspace.json")],
                   check=True, capture_output=True, timeout=60)
    page.goto(f"{lab['url']}/lab/tree/demo/demo.ipynb?token={lab['token']}")  # the saved layout, no reset
    page.wait_for_selector('#greenjupyter-panel[data-state="not-loaded"]', state="visible", timeout=30000)
    assert "demo.ipynb" in page.locator("#greenjupyter-panel .gj-title").inner_text()
    page.screenshot(path=str(ARTIFACTS / "demo-opened.png"))
    # The whole demo runs, measured, without an error (README's screenshot: docs/jupyterlab-sidebar.png).
    page.locator(".lm-MenuBar-item", has_text="Run").click()
    page.locator(".lm-Menu-item", has_text="Run All Cells").first.click()
    page.wait_for_function("""() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
                                    .every(p => /\\[\\d+\\]/.test(p.textContent))""", timeout=120000)
    assert page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").count() == 0
    assert page.locator(".jp-Cell .jp-RenderedText[data-mime-type='application/vnd.jupyter.error']").count() == 0
    page.wait_for_selector('#greenjupyter-panel[data-state="live"]', timeout=10000)
    page.wait_for_timeout(1000)
    page.screenshot(path=str(ARTIFACTS / "demo-run.png"))
    assert console_errors(page) == []
