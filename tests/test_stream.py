"""The live stream: a real kernel publishes versioned messages on IOPub while a cell is busy."""

import json
import queue
import time

import pytest

from greenjupyter.carbon.equivalents import equivalents, units_for
from greenjupyter.ipython.stream import DISPLAY_ID, MIME, VERSION
from tests.kernels import kernel_environment, kernel_manager


@pytest.fixture
def kernel(tmp_path):
    manager = kernel_manager(tmp_path)
    manager.start_kernel(env=kernel_environment(tmp_path), cwd=str(tmp_path))
    client = manager.client()
    client.start_channels()
    client.wait_for_ready(timeout=60)
    yield client
    client.stop_channels()
    manager.shutdown_kernel(now=True)


def execute(client, code, timeout=30):
    """Run ``code``; return (stdout, every IOPub message seen until the kernel went idle after it)."""
    msg_id = client.execute(code)
    seen, stdout = [], ""
    deadline = time.monotonic() + timeout
    while True:
        try:
            msg = client.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no idle after {code!r}")
        seen.append((time.monotonic(), msg))
        if msg["msg_type"] == "stream" and msg["parent_header"].get("msg_id") == msg_id:
            stdout += msg["content"]["text"]
        if (msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle"
                and msg["parent_header"].get("msg_id") == msg_id):
            return stdout, seen


def drain(client, seconds):
    """Return the IOPub messages that arrive within ``seconds`` (the sampler keeps sending)."""
    seen, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            seen.append((time.monotonic(), client.get_iopub_msg(timeout=max(0.01, deadline - time.monotonic()))))
        except queue.Empty:
            pass
    return seen


def ours(seen):
    """Return (arrival time, message) for every greenjupyter stream message, checking its envelope."""
    found = []
    for arrived, msg in seen:
        data = msg["content"].get("data", {})
        if MIME in data:
            assert msg["msg_type"] == "update_display_data"  # never a visible output
            assert msg["content"]["transient"] == {"display_id": DISPLAY_ID}
            found.append((arrived, data[MIME]))
    return found


def test_the_sidebar_gets_live_power_while_a_cell_runs_and_the_cell_after(kernel):
    # A US grid (miles) and a large embodied share (~300 g for a 2 s cell), so that the totals have
    # equivalents to show and the units they are in matter.
    _, loading = execute(kernel, "%load_ext greenjupyter\n%carbon config region=US embodied_kg=20000000")
    time.sleep(0.6)  # the first sampler tick sends a snapshot
    _, busy = execute(kernel, "import time\ntime.sleep(2)")
    after = drain(kernel, 0.6)  # the cell's record is finished on the next sampler tick
    stdout, asking = execute(kernel, "import greenjupyter, json\nr = greenjupyter.cells()[-1]\n"
                                "from greenjupyter.ipython.extension import current_recorder\n"
                                "t = current_recorder().totals\ncurrent_recorder().stream.request_snapshot()\n"
                                "print(json.dumps([r.execution_count, r.measurement.energy_j, t.cells, t.energy_j]))")
    count, energy, total_cells, total_energy = json.loads(stdout)
    later = drain(kernel, 0.6)  # the snapshot asked for, on the next tick (or before the cell's reply)

    messages = [m for _, m in ours(loading + busy + after)]
    assert all(m["v"] == VERSION for m in messages)
    assert len({m["session"] for m in messages}) == 1
    seqs = [m["seq"] for m in messages]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gap: nothing lost on the way

    snapshot = next(m for m in messages if m["kind"] == "snapshot")
    assert snapshot["components"] == ["cpu:process", "dram:process"]
    assert snapshot["estimated"] == ["cpu:process", "dram:process"]
    assert snapshot["grid"]["g_per_kwh"] > 0 and snapshot["totals"]["cells"] >= 0

    # While the 2 s cell ran: updates at the sampler's pace (4 Hz), at least twice a second.
    during = [(t, m) for t, m in ours(busy) if m["kind"] == "update" and m["busy"]]
    assert len(during) >= 4
    gaps = [b[0] - a[0] for a, b in zip(during, during[1:])]
    assert max(gaps) < 0.5
    samples = [s for _, m in during for s in m["samples"]]
    assert all(s[0] < s[1] and s[2] >= 0 and len(s[3]) == 2 for s in samples)
    assert [s[1] for s in samples] == sorted(s[1] for s in samples)

    # The finished cell reaches the sidebar with the kernel's own figures.
    cells = [c for _, m in ours(busy + after) for c in m.get("cells", [])]
    assert [c["execution_count"] for c in cells] == [count]
    assert cells[0]["energy_j"] == energy and cells[0]["duration_s"] >= 2.0

    # ...with the kernel's totals after it, so the sidebar never adds them up itself.
    (with_cell,) = [m for _, m in ours(busy + after) if m.get("cells")]
    assert with_cell["totals"]["cells"] == total_cells == 1
    assert with_cell["totals"]["energy_j"] == total_energy
    assert not any("totals" in m for _, m in ours(busy + after) if m["kind"] == "update" and not m.get("cells"))

    # Totals carry the kernel's equivalents: those of greenjupyter.carbon.equivalents, as %carbon shows them.
    snapshots = [m["totals"] for _, m in ours(asking + later) if m["kind"] == "snapshot"]
    assert snapshots
    for totals in snapshots + [with_cell["totals"]]:
        expected = equivalents(totals["co2e_g"], units_for("US"), 2)
        assert totals["equivalents"] == [{"key": e.key, "text": e.text} for e in expected]
    assert snapshots[-1]["co2e_g"] > 100  # the embodied share: equivalents worth showing
    assert [e["key"] for e in snapshots[-1]["equivalents"]] == ["smartphone_charge", "mile_driven"]

    # A few KB/s at most.
    sent = sum(len(json.dumps(m)) for _, m in ours(busy))
    assert sent / 2.0 < 3000


def test_terminal_ipython_publishes_nothing():
    from IPython.core.interactiveshell import InteractiveShell

    from greenjupyter.ipython import extension
    from greenjupyter.ipython.stream import publisher

    shell = InteractiveShell.instance()
    assert publisher(shell) is None
    shell.run_cell("%load_ext greenjupyter")
    try:
        assert extension.current_recorder().stream is None
    finally:
        shell.run_cell("%unload_ext greenjupyter")


def test_a_reloaded_page_can_ask_for_a_snapshot_on_the_next_tick():
    from IPython.core.interactiveshell import InteractiveShell

    from greenjupyter.ipython import extension
    from greenjupyter.ipython.stream import Stream

    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext greenjupyter")
    try:
        sent = []
        stream = Stream(sent.append, extension.current_recorder(), idle_every_s=0.0)
        sampler = extension.current_recorder().meter.sampler
        tick = sampler.samples[-1] if sampler.samples else sampler.tick() or sampler.tick()
        for _ in range(3):
            stream.on_sample(tick)
        stream.request_snapshot()
        stream.on_sample(tick)
        assert [m["kind"] for m in sent] == ["snapshot", "update", "update", "snapshot"]
        assert [m["seq"] for m in sent] == [1, 2, 3, 4]
    finally:
        shell.run_cell("%unload_ext greenjupyter")
