"""Hostile text and arguments: escapes from notebooks never reach a terminal, bad arguments are
UsageErrors or clean messages, and a seeded fuzz of %carbon and %%carbon in a real IPython shell."""

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


def test_both_exports_neutralise_formulas_from_real_cells(tmp_path, monkeypatch, capsys):
    import csv

    monkeypatch.chdir(tmp_path)
    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext greenjupyter", store_history=True)
    try:
        for source in ("+1+1", "-2+3", "@SUM(1+1)", "=cmd|' /C calc'!A0"):  # the last two do not even compile
            shell.run_cell(source, store_history=True)
        shell.run_line_magic("carbon", "export magic.csv")
    finally:
        shell.run_line_magic("unload_ext", "greenjupyter")
    assert cli.main(["--db", str(tmp_path / "history.sqlite"), "export", str(tmp_path / "cli.csv")]) == 0
    for name in ("magic.csv", "cli.csv"):
        with open(tmp_path / name, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        assert [r["source_preview"] for r in rows] == ["'+1+1", "'-2+3", "'@SUM(1+1)", "'=cmd|' /C calc'!A0"], name
        assert [r["error"] for r in rows] == ["", "", "SyntaxError", "SyntaxError"]


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


# --- a seeded fuzz of %carbon and %%carbon ----------------------------------------------------

SEED = 20251111
CALLS = 1000
OPTIONS = ["-q", "-o", "--output", "-n", "--last", "--region", "--format", "--stop", "--quiet", "-", "--", "-x", "--nope",
           "--regions", "--notebook", "--since", "--hours", "--metric", "--per", "--all", "--lower-is-better",
           "--higher-is-better", "--lower", "--regions=", "--per="]
WORDS = [
    "", "x", "m", "result", "__builtins__", "_", "In", "Out", "get_ipython", "print", "class", "ｐｒｉｎｔ",
    "FR", "US-CA", "us-central1", "aws:eu-west-3", "Frnace", "XX", "50g", "2Wh", "0g", "-1g", "1e309g", "nan g",
    "clear", "markdown", "latex", "html", "text", "pdf", "0", "-1", "20", "9" * 40, "1e999", "nan", "inf", "-inf",
    "cells.csv", "cells.json", "cells.xlsx", ".csv", "a b.csv", "region=FR", "pue=1.1", "pue=nan", "pue=9",
    "units=imperial", "units=", "=", "==", "region=", "intensity_g_per_kwh=1e308", "embodied_kg=-1",
    "resource_share=0", "lifetime_years=inf", "nosuch=1", "sample_interval_s=0.5", "cells_kept=10",
    "'", '"', "\\", "'unbalanced", 'un"balanced', "'quoted words'", '"a \\" b"', "\\'", "é", "漢字", "🌍",
    "\u202eevil", "\x1b]0;pwned\x07", "\x1b[2J", "\x00", "\t", "\x7f", "-o=x", "--region=", "--format=",
    "-n=3", "-n3", "-qo", "x" * 1500,
    "FR,us-central1,aws:eu-north-1", "FR,,Frnace", ",", "gcp:", "aws:eu-north-1,\x1b[2J", "7d", "30m", "0s", "2w",
    "4", "48", "48.01", "0.001", "1e-300", "accuracy", "loss", "Accuracy", "1797 predictions", "1e3 rows",
    "'1797 predictions'", "0 rows", "-5 rows", "1000", "predictions", "x.ipynb", "/no/such.ipynb",
]
# Calls that should work, mixed in so that every action is also reached past its checks.
VALID = ["", "totals", "sources", "cells", "cells -n 3", "-n 1 cells", "config", "config pue=1.2 region=FR",
         "history", "report --format text", "export cells.csv", "export 'my cells.json'",
         "budget", "budget 50g", "budget clear", "-q", "-o m", "-q -o result", "--region US-CA", "-q --region FR",
         "whatif", "whatif --regions FR,us-central1,aws:eu-north-1", "whatif --since 7d", "whatif --notebook x.ipynb",
         "forecast", "forecast --hours 4", "compare", "compare --metric accuracy", "compare --all --metric loss",
         "compare --higher-is-better", "--per 1000 predictions", "-q --per '1e3 rows'", "--per 1797 --region FR"]
ALPHABET = "ab09 -_=.:'\"\\`$%@!?*#|<>(),;~^&" + "é漢🌍\u202e\u200b\x1b\x07\x00\x7f\t"
# Nothing a fuzzed call does may reach outside tmp_path: no path separators or expansions in an
# export, and none of the settings that name places or turn on the network.
PLACES = ("db_path", "powercap_root", "live_intensity")


def fuzz_line(rng):
    kind = rng.random()
    if kind < 0.2:
        return rng.choice(VALID)
    if kind < 0.5:  # an action with random words and options
        parts = [rng.choice(ACTIONS_AND_JUNK)] + [rng.choice(WORDS + OPTIONS) for _ in range(rng.randint(0, 4))]
        if rng.random() < 0.2:  # options before the action, words before options
            rng.shuffle(parts)
        return " ".join(parts)
    if kind < 0.65:  # options with and without values
        return " ".join(rng.choice(OPTIONS) + rng.choice(["", " ", "="]) + rng.choice(WORDS) for _ in range(rng.randint(1, 4)))
    if kind < 0.9:  # random characters
        return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 40)))
    return rng.choice(["report --format ", "cells -n ", "budget ", "config pue=", "export ", "whatif --regions ",
                       "whatif --since ", "forecast --hours ", "compare --metric ", "--per "]) + rng.choice(
        ["9" * rng.randint(20, 400), "-" + "9" * 30, "nan", "1e308", "0x10", "1_000", "+inf", "".join(rng.choice(ALPHABET) for _ in range(1500))]
    )


ACTIONS_AND_JUNK = ["totals", "sources", "cells", "config", "history", "report", "export", "budget", "monitor", "", "bogus", "CELLS", "cell",
                    "whatif", "forecast", "compare", "what-if", "help"]


def guarded(line):
    for name in PLACES:
        line = line.replace(name, "pue")
    if "export" in line:  # a file name stays a plain name in tmp_path
        for c in "/\\$.{}~":
            line = line.replace(c, "_")
        line = line.replace("_csv", ".csv").replace("_json", ".json")
    return line.replace("\n", " ").replace("\r", " ")  # a magic's line ends there


@pytest.fixture
def fuzz_shell(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GREENJUPYTER_CELLS_KEPT", "50")  # keeps report figures small, so the fuzz stays fast
    shell = InteractiveShell.instance()
    # IPython's own history is the user's file: keep the fuzz in memory, and out of that file after.
    history = shell.history_manager
    monkeypatch.setattr(history, "db_cache_size", 10**9)
    # Report figures are built but not drawn to PNG: drawing is tested elsewhere and took most of the time.
    monkeypatch.setattr(shell.display_formatter.formatters["image/png"], "enabled", False)
    shell.run_cell("%load_ext greenjupyter", store_history=True)
    yield shell
    shell.run_line_magic("unload_ext", "greenjupyter")
    with history.db_input_cache_lock:
        history.db_input_cache.clear()
    with history.db_output_cache_lock:
        history.db_output_cache.clear()


def test_fuzzed_magic_arguments_give_usage_errors_or_clean_messages_and_cells_stay_measured(fuzz_shell, tmp_path):
    shell, rng, started, cpu = fuzz_shell, random.Random(SEED), time.perf_counter(), time.process_time()
    outcomes = {"ok": 0, "usage": 0}
    before = {p for p in tmp_path.parent.iterdir()}
    # Two tagged runs with metrics, so that compare gets past its checks to the table and the scatter.
    for tag, accuracy in (("run-a", 0.9), ("run-b", 0.95)):
        shell.run_cell(f"import greenjupyter; greenjupyter.tag({tag!r}); greenjupyter.log(accuracy={accuracy}, loss=0.1)")
    shell.run_cell("greenjupyter.tag(None)")
    for i in range(CALLS):
        line = guarded(fuzz_line(rng))
        source = f"%carbon {line}" if i % 2 == 0 else f"%%carbon {line}\nfuzz_cell = {i}"
        with capture_output() as captured:
            result = shell.run_cell(source, store_history=True)
        error = result.error_before_exec or result.error_in_exec
        said = captured.stdout + captured.stderr
        shown = repr(source)[:300]
        assert error is None or type(error) is UsageError, f"{shown}: {error!r}\n{said[-2000:]}"
        assert "Traceback" not in said and "could not" not in said, f"{shown}:\n{said[-2000:]}"
        outcomes["ok" if error is None else "usage"] += 1
        recorder = extension.current_recorder()
        if recorder.budget.stop:  # a fuzzed budget --stop would (rightly) stop the next cell
            recorder.budget.clear()
        probe = shell.run_cell(f"fuzz_probe = {i}", store_history=True)
        assert probe.success, shown
        last = greenjupyter.cells()[-1]
        assert (last.source_preview, last.execution_count, last.success) == (f"fuzz_probe = {i}", probe.execution_count, True), shown
    elapsed = time.perf_counter() - started
    print(f"{CALLS} fuzzed calls in {elapsed:.1f} s ({time.process_time() - cpu:.1f} s of CPU): {outcomes}")
    assert outcomes["ok"] > 100 and outcomes["usage"] > 300  # both kinds were reached
    assert {p for p in tmp_path.parent.iterdir()} == before  # nothing written beside tmp_path
    assert all(p.parent == tmp_path for p in tmp_path.glob("*.*") if p.suffix in (".csv", ".json"))


def test_compare_of_metrics_too_large_to_plot_shows_the_table_and_says_why_there_is_no_scatter(shell):
    # Finite, so log() keeps them; drawn, they overflowed matplotlib's axis margins into a traceback.
    for tag, loss in (("huge", 1e308), ("negative", -1e308), ("usual", 0.2)):
        shell.run_cell(f"import greenjupyter; greenjupyter.tag({tag!r}); greenjupyter.log(loss={loss})")
    with capture_output() as captured:
        result = shell.run_cell("%carbon compare --metric loss")
    assert result.success
    said = captured.stdout + captured.stderr
    assert "Traceback" not in said and "Error" not in said, said[-2000:]
    assert "greenjupyter: no figure (loss values beyond ±1e+300 cannot be plotted; the table shows them)" in said
    (table,) = captured.outputs
    for tag, shown in (("huge", "1e+308"), ("negative", "-1e+308"), ("usual", "0.2")):
        row = next(line for line in table.data["text/plain"].splitlines() if f" {tag} " in line)
        assert row.split()[-1] == shown, row
