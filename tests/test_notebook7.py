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
    deadline = time.monotonic() + 30
    while [cell["execution_count"] for cell in json.loads((root / "nb7.ipynb").read_text())["cells"]][:4] != [1, 2, 3, 4]:
        assert time.monotonic() < deadline, "the notebook was not saved"
        time.sleep(0.2)
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
