"""greenjupyter in terminal IPython: a real ``ipython`` process fed lines on its stdin."""

import os
import re
import subprocess
import sys

import pytest

from greenjupyter.ipython.magics import HELP


def ipython(tmp_path, lines, **env) -> dict:
    """Run ``lines`` in a real terminal IPython; return {input line: the output that followed it}."""
    environment = {**os.environ, "IPYTHONDIR": str(tmp_path / "ipython"), "TERM": "dumb", **env}
    done = subprocess.run(
        [sys.executable, "-m", "IPython", "--no-banner", "--colors=NoColor", "--no-confirm-exit", "--quick"],
        input="\n".join(lines) + "\n", capture_output=True, text=True, env=environment, timeout=180,
    )
    assert done.returncode == 0, done.stderr
    chunks = re.split(r"In \[\d+\]: ", done.stdout)[1:]  # the output of line i follows prompt i + 1
    assert len(chunks) == len(lines) + 1, done.stdout
    return dict(zip(lines, chunks[:len(lines)]))


@pytest.fixture
def shown(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    lines = [
        "%load_ext greenjupyter",
        "x = sum(range(300_000))",
        "%carbon report",
        "r = %carbon report --format latex",
        "print(type(r).__name__, r.text[:21], r.markdown[:24], r.latex[:28], r.html[:8], sep='|')",
        "r",
        "%carbon help",
        "%carbon config",
    ]
    return ipython(tmp_path, lines, GREENJUPYTER_DB_PATH=str(tmp_path / "link" / "history.sqlite"),
                   GREENJUPYTER_POWERCAP_ROOT=str(tmp_path / "no-powercap")), real


def test_the_report_is_text_in_a_terminal_and_kept_in_every_form(shown):
    out, _ = shown
    report = out["%carbon report"]
    assert "IPython.core.display" not in "".join(out.values())
    assert report.count("Compute and emissions") == 1 and " ran for " in report  # shown once, no Out[n]
    assert "Out[" not in report and "## " not in report  # the text, not the markdown
    assert "need a frontend that shows images" in report and "<Figure" not in report
    assert out["r = %carbon report --format latex"].count("Compute and emissions") == 1
    assert "\\paragraph" not in out["r = %carbon report --format latex"]
    kinds = out["print(type(r).__name__, r.text[:21], r.markdown[:24], r.latex[:28], r.html[:8], sep='|')"]
    assert kinds.strip() == "Report|Compute and emissions|## Compute and emissions|\\paragraph{Compute and emiss|<section"
    assert "Compute and emissions" in out["r"]  # a later cell shows it again, as text


def test_help_lists_every_form_with_one_line_each(shown):
    out, _ = shown
    lines = out["%carbon help"].strip().splitlines()
    assert lines[0] == "greenjupyter magics" and len(lines) == len(HELP) + 1
    for action in ("sources", "cells", "config", "history", "report", "export", "budget", "monitor", "help"):
        assert any(line.strip().startswith(f"%carbon {action}") for line in lines), action


def test_config_shows_the_values_in_force_and_where_they_came_from(shown):
    out, real = shown
    rows = {line.split()[0]: line for line in out["%carbon config"].splitlines()[1:] if line.startswith("  ") and
            not line.startswith("   ")}
    assert "''" not in rows["region"] and "automatic: " in rows["region"]
    assert re.match(r"\s+pue\s+\d(\.\d+)?\s+automatic: ", rows["pue"]), rows["pue"]
    assert "None" not in rows["intensity_g_per_kwh"] and "automatic: " in rows["intensity_g_per_kwh"]
    assert repr(str(real / "history.sqlite")) in rows["db_path"]  # the real path, past the link
    assert "environment GREENJUPYTER_DB_PATH" in rows["db_path"]
    assert "off" in rows["live_intensity"] and "''" not in rows["live_intensity"]


def test_nbclient_and_papermill_runs_name_their_notebook_with_jpy_session_name(tmp_path, monkeypatch):
    # papermill and nbclient start the kernel with this process's environment: JPY_SESSION_NAME set
    # there (as Jupyter Server and greenjupyter measure set it) is the notebook the cells are stored under.
    import nbformat
    from nbclient import NotebookClient

    from tests.kernels import KERNEL, kernel_environment, kernel_manager

    kernel_manager(tmp_path)  # the kernelspec for this interpreter, under tmp_path/kernels
    env = {**kernel_environment(tmp_path), "JUPYTER_PATH": str(tmp_path), "JPY_SESSION_NAME": "analysis.ipynb"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("%load_ext greenjupyter"), nbformat.v4.new_code_cell("x = sum(range(10_000))")]
    NotebookClient(nb, kernel_name=KERNEL, timeout=120).execute()
    done = subprocess.run([sys.executable, "-m", "greenjupyter", "history", "--notebook", "analysis.ipynb"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "1 session of analysis.ipynb" in done.stdout and done.stdout.rstrip().endswith("analysis.ipynb")
