"""What the browser tests share: Debian's Chromium driven by Playwright (no browser download), a real
Jupyter server (JupyterLab or Notebook 7) on a free port with its own kernels, settings and a real
kernel, notebooks written to disk, and pages that keep what they logged and sent.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import panel_redraw  # noqa: E402  (bench/ is not a package; it launches the same Chromium)

ARTIFACTS = ROOT / "test-artifacts"
BIN = Path(sys.executable).parent
CHROMIUM, CHROMIUM_ARGS = panel_redraw.CHROMIUM, panel_redraw.CHROMIUM_ARGS

KERNELS = {
    "python3": {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python 3", "language": "python"},
    # A kernel for another language (bash_kernel, from the test extra): the panel must say so.
    "bash": {"argv": [sys.executable, "-m", "bash_kernel", "-f", "{connection_file}"],
             "display_name": "Bash", "language": "bash"},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module", name="browser")
def browser_fixture():
    """Debian's Chromium (a module imports this to have the `browser` fixture)."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM}: scripts/test.sh installs Debian's (apt-get install chromium) as root; "
                    "it could not here")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@contextmanager
def jupyter_server(base: Path, app: str, args=()):
    """A real `jupyter <app>` (lab, notebook) on a free port under `base`: its root dir, URL, token and
    user settings dir (read at each page load).

    Its own kernels (KERNELS), config, runtime and IPython dirs; greenjupyter estimates (no powercap),
    on the French grid, without a history file. The extension is the one pip installed.
    """
    root, data = base / "notebooks", base / "data"
    root.mkdir()
    for name, spec in KERNELS.items():
        kernel = data / "kernels" / name
        kernel.mkdir(parents=True)
        kernel.joinpath("kernel.json").write_text(json.dumps(spec))
    # No news or update checks: no network beyond localhost.
    settings = base / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    settings.joinpath("notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENJUPYTER_")}
    env.update({
        "JUPYTER_DATA_DIR": str(data), "JUPYTER_CONFIG_DIR": str(base / "config"),
        "JUPYTER_RUNTIME_DIR": str(base / "runtime"), "IPYTHONDIR": str(base / "ipython"),
        "JUPYTERLAB_SETTINGS_DIR": str(base / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(base / "workspaces"),
        "GREENJUPYTER_POWERCAP_ROOT": str(base / "no-powercap"), "GREENJUPYTER_REGION": "FR",
        # A share of the machine's making, so that a few seconds of cells reach a visible equivalent.
        "GREENJUPYTER_EMBODIED_KG": "2500",
        "GREENJUPYTER_DB_PATH": "off",
    })
    port, token = free_port(), "greenjupyter-test"
    log_path = base / "server.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [str(BIN / "jupyter"), app, "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--allow-root",
             "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
             *args],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 90  # 10+ s on a busy 2-core machine
            while True:
                try:
                    urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise AssertionError(f"jupyter {app} did not start:\n" + log_path.read_text())
                    time.sleep(0.3)
            yield {"root": root, "url": url, "token": token, "settings": base / "settings"}
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def write_notebook(root: Path, name: str, sources: list, kernel: str = "python3") -> None:
    """A notebook of code cells whose ids are cell-0, cell-1, ... in order."""
    cells = [{"cell_type": "code", "id": f"cell-{i}", "metadata": {}, "execution_count": None, "outputs": [],
              "source": source} for i, source in enumerate(sources)]
    spec = KERNELS[kernel]
    notebook = {"cells": cells, "metadata": {"kernelspec": {"name": kernel, "display_name": spec["display_name"],
                                                            "language": spec["language"]}},
                "nbformat": 4, "nbformat_minor": 5}
    (root / name).write_text(json.dumps(notebook))


@contextmanager
def new_page(browser):
    """A page in its own context; `page.dialogs`, `page.console` and `page.sent` keep what happened."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.dialogs = []

    def on_dialog(dialog):
        if dialog.type == "beforeunload":  # "leave with unsaved changes?" on reload: yes
            dialog.accept()
        else:  # alert() and the like: none expected
            page.dialogs.append(dialog.message)
            dialog.dismiss()

    page.on("dialog", on_dialog)
    page.console = []
    page.on("console", lambda message: page.console.append((message.type, message.text)))
    page.on("pageerror", lambda error: page.console.append(("pageerror", str(error))))
    page.sent = []  # what the page sent to kernels (websocket frames, text or binary)
    page.on("websocket", lambda socket: socket.on("framesent", lambda frame: page.sent.append(frame)))
    try:
        yield page
    finally:
        context.close()


# JupyterLab's own debugger asks a restarting kernel for its state and logs this when the restart wins.
LAB_NOISE = ("Could not restore the debugger state",)


def console_errors(page, noise=LAB_NOISE) -> list:
    """Errors the page logged or threw, but for the frontend's own known ones: ours must cause none."""
    return [entry for entry in page.console
            if entry[0] in ("error", "pageerror") and not entry[1].startswith(noise)]


def sent_requests(page, text: str) -> int:
    """How many frames the page sent to a kernel that contain `text`."""
    needle = text.encode()
    return sum(needle in (frame.encode() if isinstance(frame, str) else frame) for frame in page.sent)


CELLS = ".jp-Notebook:visible .jp-Cell"  # of the notebook in front


def run_cell(page, index, wait=True):
    cell = page.locator(CELLS).nth(index)
    cell.locator(".jp-InputPrompt").click()
    page.keyboard.press("Escape")
    page.keyboard.press("Control+Enter")
    if wait:
        wait_cell(page, index)


def wait_cell(page, index, timeout=30000):
    prompt = page.locator(CELLS).nth(index).locator(".jp-InputPrompt")
    page.wait_for_function("el => /\\[\\d+\\]/.test(el.textContent)", arg=prompt.element_handle(), timeout=timeout)


def cell_badges(page) -> list:
    """Per cell of the notebook in front: (the count its prompt shows or None, the badge's cell id and
    execution count, or None where the cell has no badge)."""
    return page.locator(CELLS).evaluate_all("""cells => cells.map(cell => {
        const shown = /\\[(\\d+)\\]/.exec(cell.querySelector('.jp-InputPrompt')?.textContent ?? '');
        const badge = cell.querySelector('.gj-cell-badge');
        return [shown ? Number(shown[1]) : null,
                badge ? [badge.dataset.cellId, Number(badge.dataset.executionCount)] : null];
    })""")


def shot(locator, name):
    ARTIFACTS.mkdir(exist_ok=True)
    locator.screenshot(path=str(ARTIFACTS / name))
