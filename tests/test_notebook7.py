"""Notebook 7 (`jupyter notebook`): the same prebuilt extension, its sidebar under View → Right Sidebar,
badges on the cells that ran, and after a page reload each badge on the run its cell shows.

A real Notebook 7 server on 127.0.0.1 with a real kernel, driven through Debian's Chromium
(tests/browser.py). Screenshots go to test-artifacts/.
"""

import json
import time

import pytest

from tests.browser import browser_fixture  # noqa: F401  (the `browser` fixture)
from tests.browser import (ARTIFACTS, CELLS, LAB_NOISE, cell_badges, console_errors, jupyter_server, new_page,
                           run_cell, shot, wait_cell, write_notebook)

# Notebook 7.6's shortcut settings throw this at every page load, greenjupyter disabled or not.
NOTEBOOK_NOISE = LAB_NOISE + ("Cannot read properties of undefined (reading 'schema')",)


@pytest.fixture(scope="module")
def notebook7(tmp_path_factory, browser):
    with jupyter_server(tmp_path_factory.mktemp("notebook7"), "notebook") as server:
        yield server


@pytest.fixture
def page(browser, notebook7):
    with new_page(browser) as page:
        yield page


def open_sidebar(page):
    """View → Right Sidebar → greenjupyter, as a user finds it; wait until the panel knows the kernel."""
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60000)
    panel = page.locator("#greenjupyter-panel")
    if not panel.is_visible():  # Notebook 7 (7.6) does not reopen it after a reload; should it, no click
        page.locator(".lm-MenuBar-item", has_text="View").click()
        page.locator(".lm-Menu-item", has_text="Right Sidebar").hover()
        item = page.locator(".lm-Menu-item", has_text="greenjupyter")
        item.wait_for(state="visible", timeout=10000)
        assert "Energy and CO2e" in item.inner_text()
        item.click()
    panel.wait_for(state="visible", timeout=10000)
    page.wait_for_selector('#greenjupyter-panel:is([data-state="not-loaded"], [data-state="live"])', timeout=30000)
    return panel


def wait_prompt(page, index, count, timeout=30000):
    prompt = page.locator(CELLS).nth(index).locator(".jp-InputPrompt")
    page.wait_for_function("([el, text]) => el.textContent.includes(text)", arg=[prompt.element_handle(), f"[{count}]"],
                           timeout=timeout)


def wait_saved(path, saved, timeout_s=30):
    """Wait until `saved(the execution counts in the file)`; the server may be writing it meanwhile."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if saved([cell["execution_count"] for cell in json.loads(path.read_text())["cells"]]):
                return
        except ValueError:  # read halfway through a write
            pass
        assert time.monotonic() < deadline, f"{path.name} was not saved"
        time.sleep(0.2)


def wait_badges(page, count, timeout=15000):
    from playwright.sync_api import expect

    expect(page.locator(f"{CELLS} .gj-cell-badge")).to_have_count(count, timeout=timeout)


BUSY_2S = "import time\nt = time.time()\nwhile time.time() - t < 2:\n    pass"
RECORDS = ("import greenjupyter, json\n"
           "print(json.dumps([[r.cell_id, r.execution_count] for r in greenjupyter.cells()]))")
SOURCES = ["%load_ext greenjupyter", BUSY_2S, "print('saved')", "x = sum(range(10**6))", "never = 1",
           "print('not saved')", RECORDS]


def test_sidebar_badges_and_a_reload_in_notebook_7(page, notebook7):
    root = notebook7["root"]
    write_notebook(root, "nb7.ipynb", SOURCES)
    page.goto(f"{notebook7['url']}/notebooks/nb7.ipynb?token={notebook7['token']}")
    panel = open_sidebar(page)
    assert "%load_ext greenjupyter" in panel.locator(".gj-state").inner_text()

    # Live: the panel follows the busy cell, then totals; a badge on each measured cell. Counts are
    # the kernel's: one per cell run (the panel's snapshot requests are silent and count nothing).
    run_cell(page, 0)
    page.wait_for_selector('#greenjupyter-panel[data-state="live"]', timeout=15000)
    run_cell(page, 1, wait=False)
    page.wait_for_selector('#greenjupyter-panel .gj-busy:text("cell running")', timeout=10000)
    assert panel.locator(".gj-now-value").inner_text() != "–"
    wait_cell(page, 1)
    run_cell(page, 2)
    run_cell(page, 3)
    wait_badges(page, 3)
    totals = panel.locator(".gj-totals").inner_text()
    assert "France (FR)" in totals and "CO2e" in totals
    assert "⚡" in page.locator(CELLS).nth(1).locator(".gj-cell-badge").inner_text()
    assert cell_badges(page) == [[1, None], [2, ["cell-1", 2]], [3, ["cell-2", 3]], [4, ["cell-3", 4]],
                                 [None, None], [None, None], [None, None]]
    page.screenshot(path=str(ARTIFACTS / "notebook7-live.png"))

    # Saved with these four runs; then a cell runs that is never saved, and cell 2 runs again unsaved.
    page.keyboard.press("Escape")
    page.keyboard.press("Control+s")
    wait_saved(root / "nb7.ipynb", lambda counts: counts[:4] == [1, 2, 3, 4])
    run_cell(page, 5)
    wait_prompt(page, 5, 5)
    run_cell(page, 2, wait=False)
    wait_prompt(page, 2, 6)
    run_cell(page, 6)
    wait_prompt(page, 6, 7)
    kernel = json.loads(page.locator(CELLS).nth(6).locator(".jp-OutputArea-output").inner_text())
    assert kernel == [["cell-1", 2], ["cell-2", 3], ["cell-3", 4], ["cell-5", 5], ["cell-2", 6]]
    wait_badges(page, 5)  # the newest run of cell 2, and cell 5; cell 6 once its record arrives
    assert cell_badges(page)[2] == [6, ["cell-2", 6]]

    # Reloaded, the page shows the notebook as saved. The kernel still has every record (the
    # snapshot brings them back), but a badge belongs to the run its cell shows: cell 2 shows run 3,
    # not 6; cells 5 and 6 show no run (never saved) and cell 4 never ran: no badge there.
    page.reload()
    panel = open_sidebar(page)
    page.wait_for_function("() => document.querySelectorAll('#greenjupyter-panel .gj-cell-row').length >= 6",
                           timeout=30000)
    page.locator(f"{CELLS} .gj-cell-badge").nth(2).wait_for(timeout=15000)  # three or more
    assert cell_badges(page) == [[1, None], [2, ["cell-1", 2]], [3, ["cell-2", 3]], [4, ["cell-3", 4]],
                                 [None, None], [None, None], [None, None]]
    shot(panel, "notebook7-panel-after-reload.png")
    page.screenshot(path=str(ARTIFACTS / "notebook7-after-reload.png"))

    # A cell run after the reload gets its badge; clearing the outputs takes every badge away.
    run_cell(page, 5)
    wait_prompt(page, 5, 8)
    wait_badges(page, 4)
    assert cell_badges(page)[5] == [8, ["cell-5", 8]]
    page.locator(".lm-MenuBar-item", has_text="Edit").click()
    page.locator(".lm-Menu-item", has_text="Clear Outputs of All Cells").click()
    wait_badges(page, 0)
    assert page.dialogs == []
    assert console_errors(page, NOTEBOOK_NOISE) == []


def test_cells_rendered_late_get_their_badges(page, notebook7):
    """With windowing "full" a notebook renders only the cells near the view: after a reload, the
    last cells of a long notebook are not rendered when their records arrive, and get their badges
    when they are scrolled to."""
    root = notebook7["root"]
    settings = notebook7["settings"] / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True, exist_ok=True)
    windowing = settings / "tracker.jupyterlab-settings"
    windowing.write_text(json.dumps({"windowingMode": "full"}))
    try:
        cells = 150  # about 25 fit in the view; the kernel's snapshot brings the last 50 records
        write_notebook(root, "long.ipynb", ["%load_ext greenjupyter"] + [f"x = {i}" for i in range(1, cells)])
        page.goto(f"{notebook7['url']}/notebooks/long.ipynb?token={notebook7['token']}")
        panel = open_sidebar(page)
        page.locator(".lm-MenuBar-item", has_text="Run").click()
        page.locator(".lm-Menu-item", has_text="Run All Cells").first.click()
        last_record = panel.locator(".gj-count", has_text=f"[{cells}]")
        last_record.wait_for(timeout=120000)
        page.keyboard.press("Escape")
        page.keyboard.press("Control+s")
        wait_saved(root / "long.ipynb", all)

        page.reload()
        open_sidebar(page)
        last_record.wait_for(timeout=30000)
        last = page.locator(CELLS).nth(cells - 1)
        assert last.locator(".gj-cell-badge").count() == 0  # not rendered yet, so no badge yet
        page.locator(CELLS).first.locator(".jp-InputPrompt").click()
        page.keyboard.press("Escape")
        for _ in range(cells):  # down to the last cell, which scrolls it into view
            page.keyboard.press("j")
        wait_prompt(page, cells - 1, cells)
        last.locator(".gj-cell-badge").wait_for(timeout=15000)
        assert cell_badges(page)[-1] == [cells, [f"cell-{cells - 1}", cells]]
        assert console_errors(page, NOTEBOOK_NOISE) == []
    finally:
        windowing.unlink()
