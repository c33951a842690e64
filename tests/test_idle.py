"""Energy between cells: each gap measured (or estimated) as a cell is, the totals' line, the
sidebar's figures, the history and the one hint for a GPU that drew power through a long gap.

Truth comes from the fakes' schedules (tests/fakes/schedule.py); each gap's edges are the very
readings the extension used, caught by wrapping ``Gaps.close`` (the gap is still measured by the
real meter). Every energy is checked against the uncertainty the meter states for it.
"""

import dataclasses
import re
import threading
import time

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import greenjupyter
from greenjupyter import format as fmt
from greenjupyter import idle, runtime
from greenjupyter.ipython import extension
from greenjupyter.ipython.stream import Stream
from greenjupyter.totals import Totals
from tests.fakes.powercap import FakePowercap, FakeZone
from tests.fakes.schedule import Schedule

# Power that changes on its own clock, so that cells and gaps each meet several levels.
ZONES = [
    FakeZone("intel-rapl:0", "package-0", Schedule.square(10.0, 90.0, 0.2)),
    FakeZone("intel-rapl:0:0", "dram", 6.0),
    FakeZone("intel-rapl:1", "package-1", Schedule([(0.35, 40.0), (0.15, 5.0)])),
    FakeZone("intel-rapl:1:0", "dram", Schedule.square(2.0, 8.0, 0.3)),
]
LINE = re.compile(r"cells: (.+?), between cells: (.+?) \((.+?)% of the session\) in (.+?)(?: · (.*))?$", re.M)
UNITS_J = {"mJ": 1e-3, "J": 1.0, "Wh": 3600.0, "kWh": 3.6e6}


def run(shell, source):
    return shell.run_cell(source, store_history=True)


def shown(shell, line) -> str:
    """Return the text a magic displayed."""
    with capture_output() as captured:
        run(shell, line)
    return captured.outputs[0].data["text/plain"]


def joules(text: str) -> float:
    number, unit = text.split()
    return float(number) * UNITS_J[unit]


def wait_for(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


@pytest.fixture
def loaded(tmp_path, monkeypatch):
    """Return a function that loads the extension in a real shell (after the test set the scene)."""
    shells = []

    def load():
        shell = InteractiveShell.instance()
        run(shell, "%load_ext greenjupyter")
        shells.append(shell)
        return shell, extension.current_recorder()

    yield load
    for shell in shells:
        run(shell, "%unload_ext greenjupyter")


@pytest.fixture
def rapl(tmp_path, monkeypatch):
    # The counters tick every 0.5 ms against RAPL's stated 1 ms: the half period left over is room for
    # a fake writer scheduled late on a busy machine (real counters are never late), as in test_accuracy.
    fake = FakePowercap(tmp_path / "powercap", ZONES, period_s=0.0005)
    monkeypatch.setenv("GREENJUPYTER_POWERCAP_ROOT", str(fake.root))
    with fake:
        yield fake


def spy_gaps(recorder, monkeypatch) -> list:
    """Return a list that gets (previous cell's stop, this cell's start, stop, gap Measurement) per cell."""
    seen, real = [], recorder.gaps.close

    def close(start, stop):
        previous = recorder.gaps.last
        gap = real(start, stop)
        seen.append((previous, start, stop, gap))
        return gap

    monkeypatch.setattr(recorder.gaps, "close", close)
    return seen


def cells_with_gaps(shell, sleeps=((0.15, 0.35), (0.05, 0.5), (0.2, 0.3), (0.1, 0.6))):
    """Run cells of given lengths with pauses between them, outside any cell."""
    for inside, between in sleeps:
        time.sleep(between)
        run(shell, f"import time; time.sleep({inside})")


def test_each_gap_between_cells_is_measured_within_its_stated_uncertainty(rapl, loaded, monkeypatch):
    shell, recorder = loaded()
    load = recorder.gaps.last
    seen = spy_gaps(recorder, monkeypatch)
    cells_with_gaps(shell)
    records = greenjupyter.cells()
    assert len(records) == len(seen) == 4
    for record, (previous, start, stop, gap) in zip(records, seen):
        truth = rapl.truth(previous.t, start.t)
        assert not gap.estimated and sorted(gap.components) == ["cpu:package-0", "cpu:package-1", "dram:0", "dram:1"]
        assert abs(gap.energy_j - truth) <= gap.uncertainty_j, (gap.energy_j, truth, gap.uncertainty_j)
        assert (record.idle_before_j, record.idle_before_s) == (gap.energy_j, gap.duration_s)
        assert gap.duration_s == start.t - previous.t >= 0.3  # the pause, and the shell's own work around it
    assert seen[0][0] is load  # the first gap starts at the load
    # Cells and gaps tile the session's span: together they are one window from the load to the last cell's end.
    whole = recorder.meter.measurement(load, seen[-1][2])
    cells_j = sum(r.measurement.energy_j for r in records)
    gaps_j = sum(r.idle_before_j for r in records)
    assert cells_j + gaps_j == pytest.approx(whole.energy_j, rel=1e-9)
    assert abs(cells_j + gaps_j - rapl.truth(load.t, seen[-1][2].t)) <= whole.uncertainty_j
    totals = recorder.totals
    assert (totals.idle_j, totals.idle_s) == (pytest.approx(gaps_j), pytest.approx(sum(g.duration_s for *_, g in seen)))


def test_where_no_counter_exists_the_gap_is_estimated_and_labelled_so(loaded, monkeypatch):
    shell, recorder = loaded()  # no powercap tree: the kernel process's CPU time and memory, modelled
    seen = spy_gaps(recorder, monkeypatch)
    run(shell, "x = 1")
    time.sleep(0.3)
    run(shell, "y = 2")  # a quiet gap
    spin = threading.Thread(target=_burn_cpu, args=(0.4,))  # work left running between cells is energy too
    spin.start()
    spin.join()
    run(shell, "z = 3")
    greenjupyter.cells()  # every cell finished
    quiet, busy = seen[1][3], seen[2][3]
    assert quiet.estimated and quiet.estimated_components == ("cpu:process", "dram:process")
    watts_per_cpu = next(s for s in recorder.meter.sources if s.kind == "estimate").cpu_watts[0]
    assert busy.components["cpu:process"] >= 0.4 * watts_per_cpu * 0.999
    assert busy.components["cpu:process"] > quiet.components["cpu:process"]
    (line,) = LINE.findall(shown(shell, "%carbon"))
    assert line[4] == "estimated"


def _burn_cpu(seconds: float) -> None:
    began = time.thread_time()
    while time.thread_time() - began < seconds:
        pass


def test_carbon_shows_cells_and_between_cells_with_the_share_including_the_time_since_the_last_cell(loaded):
    shell, recorder = loaded()
    for _ in range(3):
        run(shell, "import time; time.sleep(0.05)")
        time.sleep(0.2)
    cells_text, idle_text, share, span, kind = LINE.findall(shown(shell, "%carbon"))[0]
    records = greenjupyter.cells()
    earlier, carbon_cell = records[:-1], records[-1]  # %carbon's own cell ended after it printed
    cells_j = sum(r.measurement.energy_j for r in earlier)
    # Until the %carbon cell began: that is the gap its own record keeps.
    idle_j = sum(r.idle_before_j for r in records)
    idle_s = sum(r.idle_before_s for r in records)
    assert carbon_cell.idle_before_s >= 0.2
    assert joules(cells_text) == pytest.approx(cells_j, rel=5e-3)  # shown to 3 significant figures
    assert joules(idle_text) == pytest.approx(idle_j, rel=5e-3)
    assert float(share) == pytest.approx(idle_j / (cells_j + idle_j) * 100, rel=5e-3)
    assert span == fmt.duration(idle_s)
    assert kind == "estimated"


def test_the_line_reads_as_the_totals_say():
    totals = Totals(cells=3, energy_j=1800.0, idle_j=5400.0, idle_s=3723.0, components={"gpu:0": 1800.0})
    assert fmt.between_cells(totals) == "cells: 0.5 Wh, between cells: 1.5 Wh (75% of the session) in 1 h 2 min"
    totals.estimated_components = {"gpu:0"}
    assert fmt.between_cells(totals).endswith(" · estimated")
    totals.components["cpu:package-0"] = 1.0
    assert fmt.between_cells(totals).endswith(" · partly estimated")
    assert fmt.between_cells(Totals(idle_s=2.0)) == "cells: 0 mJ, between cells: 0 mJ in 2 s"


def test_a_cell_pays_nothing_for_the_time_between_cells(loaded, monkeypatch):
    shell, recorder = loaded()
    run(shell, "a = 1")
    time.sleep(0.2)
    main, calls = threading.get_ident(), []
    for owner, name in ((recorder.meter, "measurement"), (recorder.gaps, "close"), (recorder.gaps, "pending")):
        real = getattr(owner, name)

        def counted(*args, _real=real, _name=name):
            if threading.get_ident() == main:
                calls.append(_name)
            return _real(*args)

        monkeypatch.setattr(owner, name, counted)
    run(shell, "b = 2")
    assert calls == []  # the gap is measured later, on the sampler's thread, from the two edges the cell read anyway
    assert greenjupyter.cells()[-1].idle_before_s >= 0.2


def test_the_sidebar_gets_the_energy_between_cells_up_to_when_it_was_sent(loaded):
    shell, recorder = loaded()
    run(shell, "a = 1")
    sent = []
    stream = Stream(sent.append, recorder)
    before_first = time.perf_counter()
    stream.snapshot()
    after_first = time.perf_counter()
    time.sleep(0.3)
    before_second = time.perf_counter()
    stream.snapshot()
    after_second = time.perf_counter()
    first, second = (message["totals"] for message in sent)
    grew = second["idle_s"] - first["idle_s"]
    assert before_second - after_first <= grew <= after_second - before_first
    assert second["idle_j"] >= first["idle_j"] >= 0
    now = recorder.meter.snapshot()  # shown live without the sampler's peak and bound: the same energy
    live, full = recorder.gaps.pending(now), recorder.meter.measurement(recorder.gaps.last, now)
    assert (live.energy_j, live.duration_s, live.components) == (full.energy_j, full.duration_s, full.components)
    run(shell, "b = 2")  # the gap is closed: the next totals keep it, and go on from this cell's end
    stream.on_cell(greenjupyter.cells()[-1])
    stream.update()
    assert sent[-1]["totals"]["idle_j"] >= second["idle_j"]
    assert sent[-1]["totals"]["idle_s"] >= sum(r.idle_before_s for r in greenjupyter.cells())


def test_history_keeps_each_cells_gap_and_sums_them_per_session(loaded):
    shell, recorder = loaded()
    for _ in range(2):
        time.sleep(0.2)
        run(shell, "pass")
    records = greenjupyter.cells()
    rows = recorder.store.cells(notebook=recorder.notebook)
    assert [(s.record.idle_before_j, s.record.idle_before_s) for s in rows] == [
        (r.idle_before_j, r.idle_before_s) for r in records]
    header, session = shown(shell, "%carbon history").splitlines()[1:3]
    assert "between cells" in header
    assert f"  {fmt.energy(sum(r.idle_before_j for r in records)):>13}  " in session


def test_the_report_says_what_was_drawn_between_cells_and_how_it_was_known(loaded):
    from greenjupyter import report

    shell, _ = loaded()
    for _ in range(2):
        time.sleep(0.2)
        run(shell, "pass")
    records = greenjupyter.cells()
    cells_j = sum(r.measurement.energy_j for r in records)
    idle_j, idle_s = sum(r.idle_before_j for r in records), sum(r.idle_before_s for r in records)
    text = " ".join(report.summary(records, format="text").split())  # the text form wraps its lines
    assert (f"Between the cells, while none ran, a further {idle_j / 3.6e6:.4g} kWh ({idle_j:.4g} J) was drawn over "
            f"{fmt.duration(idle_s)} ({idle_j / (cells_j + idle_j) * 100:.3g}% of the energy of the cells and the time "
            "between them), estimated by the same model as the cells; the time after the last cell is not counted.") in text
    older = [dataclasses.replace(r, idle_before_j=None, idle_before_s=None) for r in records]  # rows from before
    assert "Between the cells" not in report.summary(older, format="text")


# -- the hint ---------------------------------------------------------------------------------


def test_a_gpu_held_through_a_long_gap_gets_one_hint_with_what_it_cost(gpus, loaded, monkeypatch, capsys):
    monkeypatch.setenv("GREENJUPYTER_IDLE_HINT_AFTER_S", "0.5")
    monkeypatch.setenv("GREENJUPYTER_IDLE_HINT_GPU_W", "200")  # the H100 at 300 W is above, the P100 at 150 W not
    shell, recorder = loaded()
    wait_for(lambda: "gpu:1" in recorder.meter.components)
    seen = spy_gaps(recorder, monkeypatch)
    for pause in (0.1, 0.7, 0.7):
        time.sleep(pause)
        run(shell, "pass")
    greenjupyter.cells()  # every cell finished
    said = [line for line in capsys.readouterr().err.splitlines() if "while no cell ran" in line]
    assert len(said) == 1, said  # once per kernel, though two gaps qualified
    previous, start, _, gap = next(entry for entry in seen if entry[3].duration_s >= 0.5)
    h100 = gpus.gpus[0]
    assert abs(gap.components["gpu:0"] - h100.joules_between(previous.t, start.t)) <= gap.uncertainty_j
    grams = runtime.with_carbon(gap.replace(energy_j=gap.components["gpu:0"], components={"gpu:0": gap.components["gpu:0"]},
                                            estimated=False, estimated_components=())).co2e_g
    watts = fmt.power(gap.components["gpu:0"] / gap.duration_s)  # 300 W, read from a counter that steps every 20 ms
    assert said[0].startswith(f"greenjupyter: gpu:0 (NVIDIA H100 80GB HBM3) drew {watts} on average for "
                              f"{fmt.duration(gap.duration_s)} while no cell ran before cell [")
    assert f": {gap.components['gpu:0'] / 3600:.3g} Wh, {fmt.co2e(grams)} CO2e. " in said[0]
    assert "gpu:1" not in said[0] and "shutting the kernel down" in said[0]


def test_no_hint_for_short_gaps_cool_gpus_or_when_turned_off(gpus, loaded, monkeypatch, capsys):
    monkeypatch.setenv("GREENJUPYTER_IDLE_HINT_AFTER_S", "0.5")
    monkeypatch.setenv("GREENJUPYTER_IDLE_HINT_GPU_W", "400")  # both GPUs draw less
    shell, recorder = loaded()
    wait_for(lambda: "gpu:1" in recorder.meter.components)
    time.sleep(0.7)
    run(shell, "pass")
    run(shell, "%carbon config idle_hint_gpu_w=100 idle_hint_after_s=0")  # hot enough now, but turned off
    time.sleep(0.7)
    run(shell, "pass")
    greenjupyter.cells()
    assert "while no cell ran" not in capsys.readouterr().err
    assert not recorder.gaps.hinted


def test_the_gpus_found_after_the_load_count_in_the_first_gap(gpus, loaded, monkeypatch):
    found_gpus = runtime.detect_gpus

    def slow_detection():  # as loading NVML is (~80 ms): the load's reading comes before the GPUs
        time.sleep(0.3)
        return found_gpus()

    monkeypatch.setattr(runtime, "detect_gpus", slow_detection)
    shell, recorder = loaded()
    load = recorder.gaps.last
    wait_for(lambda: recorder.gaps._found is not None)  # the sampler's first tick after finding the GPUs
    seen = spy_gaps(recorder, monkeypatch)
    time.sleep(0.2)
    run(shell, "pass")
    greenjupyter.cells()
    _, start, _, gap = seen[0]
    found = recorder.gaps._found
    assert len(load.values) < len(found.values) and gap.duration_s == start.t - load.t
    for index, gpu in enumerate(gpus.gpus):  # counted from when they were found, within the stated bound
        assert abs(gap.components[f"gpu:{index}"] - gpu.joules_between(found.t, start.t)) <= gap.uncertainty_j


def test_hint_settings_are_checked(loaded):
    shell, _ = loaded()
    with pytest.raises(UsageError, match=r"idle_hint_after_s='-1' is refused \(out of range; accepted: a number from 0 to 604,800\)"):
        shell.run_line_magic("carbon", "config idle_hint_after_s=-1")
    assert runtime.get_settings().idle_hint_after_s == 900.0
    assert runtime.get_settings().idle_hint_gpu_w == 30.0


def test_sessions_keep_their_idle_sums_only_where_rows_have_them():
    from datetime import datetime, timezone

    from greenjupyter.measurement import CellRecord, Measurement
    from greenjupyter.store import StoredCell

    m = Measurement(datetime.now(timezone.utc), 1.0, 2.0, {"cpu:process": 2.0}, True, 2.0, 2.0)
    cells = [StoredCell(CellRecord(m, 1, idle_before_j=3.0, idle_before_s=4.0), "new"),
             StoredCell(CellRecord(m, 2, idle_before_j=1.0, idle_before_s=2.0), "new"),
             StoredCell(CellRecord(m, 1), "old")]
    groups = idle.add_to_sessions([{"session": "new"}, {"session": "old"}], cells)
    assert groups == [{"session": "new", "idle_j": 4.0, "idle_s": 6.0}, {"session": "old"}]
