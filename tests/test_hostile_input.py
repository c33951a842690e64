"""Hostile text and arguments: escapes from notebooks never reach a terminal, bad arguments are
UsageErrors or clean messages, and a seeded fuzz of %carbon and %%carbon in a real IPython shell."""

import csv
import os
import random
import time

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import greenjupyter
from greenjupyter import cli
from greenjupyter.ipython import extension
from greenjupyter.measurement import CellRecord
from greenjupyter.store import Store, StoredCell
from tests.test_settings_and_format import sample_measurement

# An OSC that retitles the terminal, a CSI that clears it, and a newline that breaks a table.
TITLE = "\x1b]0;pwned\x07"
CLEAR = "\x1b[2J"


def write_history(path, *records):
    store = Store(str(path))
    try:
        for record in records:
            store.add(StoredCell(record, "session-1", "kernel", "cpu"))
    finally:
        store.close()


@pytest.mark.parametrize("argv", [["history"], ["history", "--cells"], ["report"], ["report", "--format", "markdown"]])
def test_the_command_line_prints_no_control_character_from_a_notebook(tmp_path, capsys, argv):
    db = tmp_path / "h.sqlite"
    notebook = f"evil\n{TITLE}.ipynb"
    write_history(
        db,
        CellRecord(sample_measurement(), 1, notebook=notebook, source_preview=f"print('{TITLE}{CLEAR}')"),
        CellRecord(sample_measurement(), 2, notebook=notebook, success=False, error=f"E{CLEAR}", source_preview="1/0"),
    )
    assert cli.main(["--db", str(db), *argv]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "pwned" in out  # shown, escaped
    if argv == ["history"]:
        assert "evil\\n\\x1b]0;pwned\\x07.ipynb" in out
    if argv == ["history", "--cells"]:
        assert "print('\\x1b]0;pwned\\x07\\x1b[2J')" in out and "[E\\x1b[2J]" in out
    if argv[0] == "history":
        # One line per row: the notebook's newline no longer breaks the table.
        assert len(out.splitlines()) == (3 if argv == ["history"] else 4)  # title, header, rows
