"""Hostile text and arguments: escapes from notebooks never reach a terminal, bad arguments are
UsageErrors or clean messages, and a seeded fuzz of %carbon and %%carbon in a real IPython shell."""

import csv
import os
import random
import time
from datetime import timedelta

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


# --- spans for --since and greenjupyter.history(since=...) -----------------------------------

SPANS_REFUSED = [
    ("99999999999w", "reaches back more than 2,000 years"),  # an OverflowError before
    ("104300w", "reaches back more than 2,000 years"),  # just past the limit
    ("1" + "0" * 400 + "d", "reaches back more than 2,000 years"),  # float() reads it as infinity
    ("-5d", "is not understood"),
    ("nan d", "is not understood"),
    ("1e3d", "is not understood"),
    ("7 days", "is not understood"),
    ("", "is not understood"),
    ("\x1b[2J7d", "is not understood"),
]


@pytest.mark.parametrize("since, reason", SPANS_REFUSED)
def test_a_bad_since_exits_2_naming_it_and_the_accepted_range(tmp_path, capsys, since, reason):
    write_history(tmp_path / "h.sqlite", CellRecord(sample_measurement(), 1))
    assert cli.main(["--db", str(tmp_path / "h.sqlite"), "history", f"--since={since}"]) == 2
    err = capsys.readouterr().err
    assert f"--since: since={since!r}"[:40] in err and reason in err
    assert "accepted: a datetime, or a span from 0 to 2,000 years back" in err
    assert "Traceback" not in err and "\x1b" not in err and len(err) < 400  # a long value is cut short


@pytest.mark.parametrize("since, reason", SPANS_REFUSED + [
    (timedelta(days=999_999_999), "reaches back more than 2,000 years"),  # an OverflowError before
    (timedelta(days=-1), "is a span into the future"),  # silently matched nothing before
    (7, "is not understood"),
])
def test_the_history_api_refuses_a_bad_since_with_a_value_error_naming_the_range(since, reason):
    with pytest.raises(ValueError, match="accepted: a datetime, or a span from 0 to 2,000 years back") as caught:
        greenjupyter.history(since=since)
    assert isinstance(caught.value, greenjupyter.ConfigError) and reason in str(caught.value)


def test_spans_up_to_2000_years_are_accepted(tmp_path, capsys):
    for since in ("0s", "1.5w", "104000w", timedelta(0), timedelta(days=730_000)):
        assert greenjupyter.history(since=since) == []
    write_history(tmp_path / "h.sqlite", CellRecord(sample_measurement(), 1))  # 2026-01-01
    assert cli.main(["--db", str(tmp_path / "h.sqlite"), "history", "--cells", "--since", "104000w"]) == 0
    assert "1 cell in the last 104000w" in capsys.readouterr().out
