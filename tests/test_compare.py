"""Energy beside quality: greenjupyter.log() and tag() on real cells, %carbon compare's table against the
history database, the scatter's data and the Pareto front."""

import json
import sqlite3
import sys
from collections import deque

import numpy as np
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import greenjupyter
from greenjupyter import format as fmt
from greenjupyter.compare import Comparison, compare, lower_is_better, pareto_front
from greenjupyter.errors import ConfigError
from greenjupyter.ipython import extension
from greenjupyter.measurement import CellRecord
from greenjupyter.store import Store, StoredCell
from tests.test_settings_and_format import sample_measurement

NOTEBOOK = "train.ipynb"


def run(shell, source):
    return shell.run_cell(source, store_history=True)


@pytest.fixture
def rapl_shell(powercap, monkeypatch):
    """A real IPython shell with greenjupyter loaded on the fake RAPL tree, as the notebook train.ipynb."""
    monkeypatch.setenv("JPY_SESSION_NAME", NOTEBOOK)
    shell = InteractiveShell.instance()
    run(shell, "%load_ext greenjupyter")
    run(shell, "import greenjupyter, time")
    yield shell
    run(shell, "%unload_ext greenjupyter")
    for name in ("c", "after"):
        shell.user_ns.pop(name, None)


def train(shell):
    """Two tagged runs and an untagged cell; 'full' logs accuracy twice (the last value counts)."""
    run(shell, "greenjupyter.tag('full')\ntime.sleep(0.15)\ngreenjupyter.log(accuracy=0.90)")
    run(shell, "time.sleep(0.15)\ngreenjupyter.log(accuracy=0.95)\ngreenjupyter.log(loss=0.20)")
    run(shell, "greenjupyter.tag('70pct')\ntime.sleep(0.05)\ngreenjupyter.log(accuracy=0.94, loss=0.25)")
    run(shell, "greenjupyter.tag(None)\ntime.sleep(0.05)")


def sums_from_the_database(path, notebook=NOTEBOOK):
    """Return {tag: (cells, energy, co2e, duration, {metric: last value})} read with SQL from the history file."""
    db = sqlite3.connect(path)
    try:
        totals = db.execute(
            "SELECT tag, COUNT(*), SUM(energy_j), SUM(co2e_g), SUM(duration_s) FROM cells "
            "WHERE tag IS NOT NULL AND notebook IS ? GROUP BY tag", (notebook,)).fetchall()
        logged = db.execute("SELECT tag, metrics FROM cells WHERE tag IS NOT NULL AND notebook IS ? "
                            "ORDER BY started_at, id", (notebook,)).fetchall()
    finally:
        db.close()
    metrics = {}
    for tag, text in logged:
        metrics.setdefault(tag, {}).update(json.loads(text))
    return {tag: (cells, energy, co2e, duration, metrics[tag]) for tag, cells, energy, co2e, duration in totals}


# --- log() and tag() on real cells ----------------------------------------------------------


def test_metrics_and_tags_reach_the_records_and_the_history(rapl_shell, tmp_path):
    train(rapl_shell)
    records = greenjupyter.cells()[-4:]
    assert [r.tag for r in records] == ["full", "full", "70pct", None]
    assert [dict(r.metrics) for r in records] == [{"accuracy": 0.90}, {"accuracy": 0.95, "loss": 0.20},
                                                  {"accuracy": 0.94, "loss": 0.25}, {}]
    stored = [c.record for c in extension.current_recorder().store.cells()][-4:]
    assert [(r.tag, dict(r.metrics)) for r in stored] == [(r.tag, dict(r.metrics)) for r in records]


def test_a_tag_holds_from_its_cell_on_and_the_last_one_in_a_cell_wins(rapl_shell):
    run(rapl_shell, "x = 1")
    run(rapl_shell, "greenjupyter.tag('a')\ngreenjupyter.tag('  b  ')")
    run(rapl_shell, "y = 2")
    run(rapl_shell, "%reload_ext greenjupyter")
    run(rapl_shell, "z = 3")  # a new load starts untagged
    tags = {c.record.source_preview: c.record.tag for c in extension.current_recorder().store.cells()}
    assert tags["x = 1"] is None and tags["greenjupyter.tag('a')"] == "b" and tags["y = 2"] == "b"
    assert tags["z = 3"] is None


def test_bad_metric_values_are_named_left_out_and_the_cell_runs_on(rapl_shell, capsys):
    rapl_shell.user_ns["np"] = np
    result = run(rapl_shell, "greenjupyter.log(accuracy='high', f1=True, loss=float('nan'), auc=float('-inf'), "
                             "z=1+2j, batch=np.array([1, 2]), flag=np.bool_(True), good=0.5, n=np.float32(0.25), "
                             "t=np.array(0.75), k=3)\nafter = 1")
    assert result.success and rapl_shell.user_ns["after"] == 1
    assert dict(greenjupyter.cells()[-1].metrics) == {"good": 0.5, "n": 0.25, "t": 0.75, "k": 3.0}
    err = capsys.readouterr().err
    for shown, why in (("accuracy='high'", "not a real number"), ("f1=True", "a bool"), ("loss=nan", "not finite"),
                       ("auc=-inf", "not finite"), ("z=(1+2j)", "not a real number"),
                       ("batch=array([1, 2])", "an array or tensor with more than one element"),
                       (f"flag={np.bool_(True)!r}", "a bool")):
        assert f"greenjupyter: log({shown}) is not recorded: {why}; accepted: a finite real number" in err, shown
    assert "good" not in err


def test_log_and_tag_outside_a_measured_cell_say_what_to_do(capsys):
    greenjupyter.log(accuracy=0.9)
    greenjupyter.tag("run-1")
    err = capsys.readouterr().err
    assert "log() attaches metrics to the running cell, but greenjupyter is not loaded: run %load_ext greenjupyter" in err
    assert "tag() names the cells' run, but greenjupyter is not loaded: run %load_ext greenjupyter" in err


def test_log_between_cells_and_bad_tags_are_refused_with_a_message(rapl_shell, capsys):
    greenjupyter.log(accuracy=0.9)  # called here, no cell is running
    for bad in (7, "", "   "):
        greenjupyter.tag(bad)
    err = capsys.readouterr().err
    assert "log() was called while no cell was running; those metrics were not recorded" in err
    for bad in ("7", "''", "'   '"):
        assert f"tag({bad}) is refused; accepted: a name (a non-empty str), or None" in err


def test_log_in_a_forked_child_records_nothing_and_says_so(rapl_shell, tmp_path):
    err = tmp_path / "child.err"
    run(rapl_shell, "import os, sys\npid = os.fork()\nif pid == 0:\n"
                    f"    sys.stderr = open({str(err)!r}, 'w')\n    greenjupyter.log(accuracy=0.5)\n"
                    "    sys.stderr.close()\n    os._exit(0)\nos.waitpid(pid, 0)")
    assert "log() in a child process records nothing" in err.read_text()
    assert dict(greenjupyter.cells()[-1].metrics) == {}  # the parent's cell is untouched


def test_a_cell_without_log_carries_nothing_more_through_the_hooks(rapl_shell):
    recorder = extension.current_recorder()
    queued = []

    class Spy(deque):
        def append(self, entry):
            queued.append(entry)
            super().append(entry)

    recorder._closed = Spy(recorder._closed)
    run(rapl_shell, "x = 1")
    run(rapl_shell, "greenjupyter.log(accuracy=0.5)")
    plain, logged = queued
    assert plain[-1] is None  # nothing made, nothing merged: the slot stays None
    assert logged[-1] == {"metrics": {"accuracy": 0.5}}
    assert len(plain) == len(logged)  # the same entry either way: one slot, None or what log() gave


# --- %carbon compare ------------------------------------------------------------------------


def test_compare_table_equals_the_sums_in_the_history_database(rapl_shell, tmp_path):
    train(rapl_shell)
    with capture_output() as captured:
        run(rapl_shell, "c = %carbon compare")
    comparison = rapl_shell.user_ns["c"]
    expected = sums_from_the_database(str(tmp_path / "history.sqlite"))
    assert [r.tag for r in comparison.runs] == sorted(expected, key=lambda tag: expected[tag][1])  # lowest energy first
    for run_ in comparison.runs:
        cells, energy, co2e, duration, metrics = expected[run_.tag]
        assert run_.cells == cells and dict(run_.metrics) == metrics
        assert run_.energy_j == pytest.approx(energy, rel=1e-12)
        assert run_.co2e_g == pytest.approx(co2e, rel=1e-12)
        assert run_.duration_s == pytest.approx(duration, rel=1e-12)
        assert energy > 0 and not run_.estimated  # RAPL counters: measured
    assert expected["full"][:1] == (2,) and expected["full"][4] == {"accuracy": 0.95, "loss": 0.20}
    assert comparison.metric == "accuracy" and not comparison.lower_better  # the first logged, higher is better
    table, figure = captured.outputs
    text = table.data["text/plain"]
    assert text.startswith(f"greenjupyter compare: 2 tagged runs in notebook {NOTEBOOK}, lowest energy first")
    for run_ in comparison.runs:
        row = next(line for line in text.splitlines() if f" {run_.tag} " in line)
        for shown in (fmt.energy(run_.energy_j), fmt.co2e(run_.co2e_g), fmt.duration(run_.duration_s),
                      f"{run_.metrics['accuracy']:.4g}", f"{run_.metrics['loss']:.4g}"):
            assert f" {shown}" in row, (shown, row)
        assert row.lstrip().startswith("*") == (run_ in comparison.front)
    assert "<table>" in table.data["text/html"] and "image/png" in figure.data


def test_the_scatter_shows_each_run_and_marks_exactly_the_pareto_front(rapl_shell):
    train(rapl_shell)
    run(rapl_shell, "c = %carbon compare")
    comparison = rapl_shell.user_ns["c"]
    fig = comparison.figure()
    ax = fig.axes[0]
    assert ax.get_xlabel() == "energy (J)" and ax.get_ylabel() == "accuracy (higher is better)"
    points = {tuple(p) for p in gid(ax.collections, "runs").get_offsets()}
    assert points == {(r.energy_j, r.metrics["accuracy"]) for r in comparison.runs}
    ringed = {tuple(p) for p in gid(ax.collections, "pareto").get_offsets()}
    undominated = {(r.energy_j, r.metrics["accuracy"]) for r in comparison.runs
                   if not any(o.energy_j <= r.energy_j and o.metrics["accuracy"] >= r.metrics["accuracy"] and o != r
                              for o in comparison.runs)}
    assert ringed == undominated and ringed
    assert sorted(t.get_text() for t in ax.texts) == ["70pct", "full"]


def gid(artists, name):
    (found,) = [a for a in artists if a.get_gid() == name]
    return found


def records(*runs):
    """CellRecords of constructed runs: (tag, energy J, {metric: value})."""
    return [CellRecord(sample_measurement(energy_j=joules, co2e_g=joules / 1000), i, tag=tag, metrics=metrics)
            for i, (tag, joules, metrics) in enumerate(runs)]


def test_pareto_front_on_a_constructed_set_with_ties_and_dominated_points():
    points = [(1, 0.80), (2, 0.90), (2, 0.90), (3, 0.85), (3, 0.95), (4, 0.95), (0.5, 0.70), (2, 0.89)]
    # (3, .85) is beaten by (2, .90); (4, .95) by (3, .95) at less energy; (2, .89) by (2, .90) at the same.
    assert pareto_front(points) == [0, 1, 2, 4, 6]
    losses = [(1, 0.5), (2, 0.4), (2, 0.4), (3, 0.45), (0.5, 0.9), (4, 0.4)]
    assert pareto_front(losses, lower_better=True) == [0, 1, 2, 4]
    assert pareto_front([]) == [] and pareto_front([(5, 1.0)]) == [0]


def test_the_figure_of_constructed_runs_has_their_exact_data_and_a_step_line_through_the_front():
    c = compare(records(("a", 1000.0, {"accuracy": 0.80}), ("b", 2000.0, {"accuracy": 0.90}),
                        ("b2", 2000.0, {"accuracy": 0.90}), ("c", 3000.0, {"accuracy": 0.85}),
                        ("d", 4000.0, {"accuracy": 0.95}), ("e", 5000.0, {"loss": 0.1})))
    assert [r.tag for r in c.front] == ["a", "b", "b2", "d"]
    ax = c.figure().axes[0]
    assert ax.get_xlabel() == "energy (Wh)"  # 5 kJ: the unit follows the largest run that is drawn (4 kJ)
    assert gid(ax.collections, "runs").get_offsets().tolist() == [[1000 / 3600, 0.80], [2000 / 3600, 0.90],
                                                                 [2000 / 3600, 0.90], [3000 / 3600, 0.85],
                                                                 [4000 / 3600, 0.95]]
    step = gid(ax.lines, "pareto-front")
    assert list(step.get_xdata()) == [1000 / 3600, 2000 / 3600, 2000 / 3600, 4000 / 3600]
    assert list(step.get_ydata()) == [0.80, 0.90, 0.90, 0.95] and step.get_drawstyle() == "steps-post"
    assert sorted(t.get_text() for t in ax.texts) == ["a", "b", "b2", "c", "d"]  # e logged no accuracy


@pytest.mark.parametrize("metric, lower", [
    ("loss", True), ("val_loss", True), ("test-error", True), ("RMSE", True), ("mae", True), ("perplexity", True),
    ("accuracy", False), ("f1", False), ("auc", False), ("throughput", False),
])
def test_lower_is_better_follows_the_metric_name(metric, lower):
    assert lower_is_better(metric) is lower


def test_a_loss_is_judged_lower_is_better_unless_told(rapl_shell):
    train(rapl_shell)
    run(rapl_shell, "c = %carbon compare --metric loss")
    assert rapl_shell.user_ns["c"].lower_better and "loss (lower is better)" in rapl_shell.user_ns["c"].text
    run(rapl_shell, "c = %carbon compare --metric loss --higher-is-better")
    assert not rapl_shell.user_ns["c"].lower_better
    run(rapl_shell, "c = %carbon compare --lower-is-better")
    assert rapl_shell.user_ns["c"].metric == "accuracy" and rapl_shell.user_ns["c"].lower_better


@pytest.mark.parametrize("line, message", [
    ("compare --metric f1", "metric 'f1' was not logged by these runs; accepted: accuracy, loss"),
    ("compare --lower-is-better --higher-is-better", "--lower-is-better and --higher-is-better cannot go together"),
    ("compare --all --notebook other.ipynb", "--all and --notebook cannot go together"),
    ("cells --metric accuracy", "--metric applies only to %carbon compare"),
    ("report --all", "--all applies only to %carbon compare"),
    ("compare extra", "takes nothing more"),
])
def test_bad_compare_arguments_are_usage_errors(rapl_shell, line, message):
    train(rapl_shell)
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
        rapl_shell.run_line_magic("carbon", line)


def test_other_notebooks_are_compared_with_all_or_by_name(rapl_shell, tmp_path):
    train(rapl_shell)
    other = Store(str(tmp_path / "history.sqlite"))
    try:
        other.add(StoredCell(CellRecord(sample_measurement(energy_j=5.0, co2e_g=0.001), 1, notebook="other.ipynb",
                                        tag="other-run", metrics={"accuracy": 0.99}), "another-session"))
    finally:
        other.close()
    for line, tags in (("", {"full", "70pct"}), ("--all", {"full", "70pct", "other-run"}),
                       ("--notebook other.ipynb", {"other-run"})):
        run(rapl_shell, f"c = %carbon compare {line}")
        assert {r.tag for r in rapl_shell.user_ns["c"].runs} == tags, line
    run(rapl_shell, "c = %carbon compare --all")
    assert rapl_shell.user_ns["c"].runs[0].tag == "other-run"  # 5 J: the lowest energy
    with capture_output() as captured:
        run(rapl_shell, "%carbon compare --notebook nowhere.ipynb")
    assert captured.outputs[0].data["text/plain"].startswith(
        "greenjupyter compare: no tagged runs in notebook nowhere.ipynb; name them with greenjupyter.tag('name')")


def test_runs_without_metrics_get_a_table_and_no_figure(rapl_shell):
    run(rapl_shell, "greenjupyter.tag('plain')\nx = 1")
    with capture_output() as captured:
        run(rapl_shell, "%carbon compare")
    (table,) = captured.outputs
    assert " plain " in table.data["text/plain"] and "Pareto" not in table.data["text/plain"]


def test_without_matplotlib_the_table_comes_with_one_line(rapl_shell, monkeypatch):
    train(rapl_shell)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)  # import fails as if not installed
    with capture_output() as captured:
        run(rapl_shell, "%carbon compare")
    (table,) = captured.outputs
    assert "full" in table.data["text/plain"]
    assert captured.stdout.strip() == ("greenjupyter: no figure (figures need matplotlib: pip install matplotlib "
                                       "(or pip install 'greenjupyter[report]'))")


def test_text_from_users_is_escaped_in_the_table_and_the_page():
    c = compare(records(("<b>x</b>\x1b[2J", 10.0, {"acc<": 0.5})))
    assert "<b>" not in c.html and "&lt;b&gt;x&lt;/b&gt;" in c.html and "acc&lt;" in c.html
    assert "\x1b" not in c.text and "\\x1b[2J" in c.text
    assert isinstance(c, Comparison) and c._repr_mimebundle_()["text/plain"] == c.text


def test_the_figure_is_saved_as_an_image(tmp_path):
    c = compare(records(("a", 10.0, {"accuracy": 0.5}), ("b", 20.0, {"accuracy": 0.6})))
    c.figure().savefig(tmp_path / "runs.png")
    assert (tmp_path / "runs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_refuses_a_metric_nobody_logged():
    with pytest.raises(ConfigError, match="none was logged: greenjupyter.log"):
        compare(records(("a", 10.0, {})), metric="accuracy")
