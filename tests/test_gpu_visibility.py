"""Only the kernel's own GPUs are charged (CUDA_VISIBLE_DEVICES), and GPUs shared with other processes say so."""

import json
import os
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest

from greenjupyter import export, format as fmt
from greenjupyter.measurement import CellRecord, Measurement
from greenjupyter.meter import Meter
from greenjupyter.sources import detect_gpus
from greenjupyter.sources import nvml as nvml_source
from greenjupyter.sources.cuda_visible import visible_gpus
from greenjupyter.sources.nvml import open_nvml
from greenjupyter.store import MIGRATIONS, SCHEMA_VERSION, Store, StoredCell
from greenjupyter.totals import Totals
from tests.fakes import pynvml as fake

A = "GPU-8a3f1c2e-5b7d-4e1a-9c3b-0d2e4f6a8b1c"
B = "GPU-8a3fd9b1-2c4e-4f6a-8b1c-3d5e7f9a1b2c"
SLICE = "MIG-4c2e6a8b-1d3f-5e7a-9b1c-2d4e6f8a0b1c"


@pytest.mark.parametrize("spec, chosen, all_used", [
    (None, [0, 1], True),  # unset: every GPU
    ("1", [1], True),
    ("1,0", [1, 0], True),  # CUDA's order is the list's
    (" 1 ", [1], True),
    ("1gpu", [1], True),  # read like strtoul: leading digits
    ("0,7,1", [0], False),  # 7 is no GPU here: it and all after it are ignored
    ("0,-1,1", [0], False),
    ("-1", [], False),
    ("0,0", [], False),  # a GPU named twice: CUDA shows none
    (A, [0], True),
    (B + "," + A, [1, 0], True),
    ("GPU-8a3fd", [1], True),  # a unique prefix
    ("GPU-8a3f", [], False),  # a prefix of both: ambiguous, so the list ends there
    ("GPU-8a3fd,GPU-8a3fd9b1", [], False),  # the same GPU twice
    ("GPU-8a3fd,1", [1], False),  # one form per list: the index ends it
    ("0," + A, [0], False),
    (A[4:], [], False),  # a UUID without "GPU-" is read as an index: "8a3f…" is 8, not a GPU here
    ("GPU-ffff", [], False),
])
def test_cuda_visible_devices_rules(spec, chosen, all_used):
    found, dropped = visible_gpus(spec, [A, B], {})
    assert [index for index, _ in found] == chosen
    assert (dropped == "") == all_used


def test_mig_slices_resolve_to_their_gpu():
    parents = {SLICE: 1}
    assert visible_gpus(SLICE, [A, B], parents) == ([(1, SLICE)], "")
    assert visible_gpus("MIG-4c2e", [A, B], parents) == ([(1, SLICE)], "")
    old_form = f"MIG-{B}/1/0"  # before driver R470: MIG-<GPU UUID>/<GPU instance>/<compute instance>
    assert visible_gpus(old_form, [A, B], parents) == ([(1, old_form)], "")
    assert visible_gpus("MIG-0000", [A, B], parents)[0] == []


@pytest.fixture
def two(gpus):
    """The conftest's two GPUs: [0] an H100 at 300 W with the energy counter, [1] a P100 at 150 W, power only."""
    return gpus.gpus


def _one_window(source, seconds=0.5) -> Measurement:
    meter = Meter([source], sample_interval_s=0.05)
    meter.start()
    try:
        window = meter.begin()
        time.sleep(seconds)
        return meter.end(window)
    finally:
        meter.close()


@pytest.mark.parametrize("which, spec", [
    (1, lambda g: "1"),
    (1, lambda g: g[1].uuid),
    (1, lambda g: g[1].uuid[:13]),  # "GPU-" and 9 hex digits
    (0, lambda g: g[0].uuid[:8]),
    (0, lambda g: "0"),
])
def test_only_the_visible_gpu_is_charged(two, monkeypatch, which, spec):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", spec(two))
    source = open_nvml()
    assert source.components == ("gpu:0",)  # the CUDA ordinal the user sees, whatever NVML calls it
    assert source.gpus[0].nvml_index == which and source.gpus[0].uuid == two[which].uuid
    assert f"NVML index {which}, {two[which].uuid}" in source.describe()[0]
    m = _one_window(source)
    truth = two[which].watts * m.duration_s  # 300 W or 150 W: the other GPU, or both, would be far off
    assert list(m.components) == ["gpu:0"]
    assert abs(m.components["gpu:0"] - truth) <= m.uncertainty_j < abs(two[1 - which].watts * m.duration_s - truth)


def test_uuids_as_bytes_from_older_nvidia_ml_py(gpus, monkeypatch):
    gpus.strings_as_bytes = True  # nvidia-ml-py 11 returned bytes
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", gpus.gpus[1].uuid)
    source = open_nvml()
    assert source.gpus[0].uuid == gpus.gpus[1].uuid and source.names == ["Tesla P100-PCIE-16GB"]
    source.close()


def test_entries_after_an_invalid_one_are_dropped_and_said(two, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,7,1")
    source = open_nvml()
    assert source.components == ("gpu:0",) and source.gpus[0].nvml_index == 0
    dropped, order = source.describe()[1:]
    assert dropped.startswith("gpu: CUDA_VISIBLE_DEVICES='0,7,1': '7' is not a GPU index here")
    assert dropped.endswith("so CUDA ignores it and every entry after it")
    # Indices with two GPU models: CUDA numbers them fastest first unless told otherwise.
    assert "CUDA_DEVICE_ORDER=PCI_BUS_ID" in order
    source.close()
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    source = open_nvml()
    assert len(source.describe()) == 2
    source.close()


@pytest.mark.parametrize("spec, reason", [
    ("", "CUDA_VISIBLE_DEVICES is set and empty, so CUDA shows this kernel no GPU"),
    ("-1", "CUDA_VISIBLE_DEVICES='-1' shows this kernel no GPU: '-1' is not a GPU index"),
    ("1,1", "CUDA_VISIBLE_DEVICES='1,1' shows this kernel no GPU: '1' names a GPU already listed"),
    ("GPU-none", "CUDA_VISIBLE_DEVICES='GPU-none' shows this kernel no GPU: 'GPU-none' matches no device here"),
])
def test_no_visible_gpu_is_reported_with_the_reason(gpus, monkeypatch, spec, reason):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", spec)
    found = detect_gpus()
    assert found.sources == []
    assert found.unavailable[0].reason.startswith(reason)
    assert gpus.state["initialised"] is False  # NVML shut down again, or never started


def test_a_mig_slice_charges_its_whole_gpu_and_says_so(tmp_path, monkeypatch):
    devices = [fake.FakeGpu("NVIDIA H100 80GB HBM3", 300.0), fake.FakeGpu("NVIDIA A100-SXM4-80GB", 200.0, mig_slices=2)]
    module = fake.make(devices)
    monkeypatch.setitem(sys.modules, "pynvml", module)
    marker = tmp_path / "nvidiactl"
    marker.write_text("")
    monkeypatch.setattr(nvml_source, "DRIVER_MARKERS", (str(marker),))
    mine = devices[1].mig[1]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", mine.uuid)
    source = open_nvml()
    assert source.components == ("gpu:0",) and source.gpus[0].nvml_index == 1 and source.gpus[0].mig == (mine.uuid,)
    line = source.describe()[0]
    assert f"MIG slice {mine.uuid}" in line and "the figure is the whole GPU's (2 slices)" in line
    # The other slice is another tenant's: the GPU's counter holds its energy, so the figure is shared.
    assert source.sharing() == (1,)
    devices[1].mig[0].processes = [os.getppid(), 4_000_001]
    assert source.sharing() == (2,)
    m = _one_window(source)
    assert abs(m.components["gpu:0"] - 200.0 * m.duration_s) <= m.uncertainty_j  # the whole A100


def test_sharing_counts_other_processes_not_ours(gpus):
    source = open_nvml()
    h100, p100 = gpus.gpus
    assert source.sharing() == (0, 0)
    h100.processes = [os.getpid()]
    assert source.sharing() == (0, 0)
    assert "no other process seen on it so far" in source.describe()[0]
    # A grandchild of this process is this kernel's work too.
    child = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys; p = subprocess.Popen(['sleep', '30']); print(p.pid, flush=True); p.wait()"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        grandchild = int(child.stdout.readline())
        h100.processes = [os.getpid(), child.pid, grandchild]
        assert source.sharing() == (0, 0)
        h100.processes = [os.getpid(), grandchild, os.getppid()]  # our parent is someone else
        p100.graphics_processes = [os.getppid()]
        assert source.sharing() == (1, 1)
    finally:
        child.kill()
        child.wait()
    lines = source.describe()
    assert "shared: up to 1 other processes seen on it so far" in lines[0] and "whole device" in lines[0]
    assert "not in NVML's list" not in lines[0]
    source.close()


def test_a_window_on_a_shared_gpu_says_so_in_the_record_and_sources(gpus):
    from greenjupyter.format import measurement_text, sources_text
    from greenjupyter.sources import Detection

    source = open_nvml()
    meter = Meter([source], sample_interval_s=0.02)
    meter.start()
    try:
        window = meter.begin()
        time.sleep(0.15)
        assert meter.end(window).shared_components == ()
        window = meter.begin()
        gpus.gpus[1].processes = [os.getppid()]  # another job starts on the P100 during the window
        time.sleep(0.15)
        gpus.gpus[1].processes = []
        m = meter.end(window)
    finally:
        meter.close()
    assert m.shared_components == ("gpu:1",)
    assert "gpu:1: whole device, shared with other processes" in measurement_text(m)
    assert "gpu:1: Tesla P100-PCIE-16GB" in sources_text(Detection([source]))
    assert "shared: up to 1 other processes seen on it so far" in sources_text(Detection([source]))


def test_host_pids_in_a_container_are_all_counted_and_said(gpus):
    source = open_nvml()
    gpus.gpus[0].processes = [4_000_001, 4_000_002]  # pids this namespace does not have
    assert source.sharing() == (2, 0)
    assert "this process is not in NVML's list" in source.describe()[0]
    source.close()


def test_a_gpu_whose_processes_cannot_be_listed_reads_zero_with_one_notice(gpus, capsys):
    source = open_nvml()
    gpus.gpus[1].processes = [os.getppid()]
    gpus.gpus[0].fail(fake.NVML_ERROR_NO_PERMISSION)
    assert source.sharing() == (0, 1)
    assert source.sharing() == (0, 1)
    said = capsys.readouterr().err
    assert said.count("cannot list the processes on gpu:0 (Insufficient Permissions)") == 1
    assert "its processes cannot be listed (Insufficient Permissions)" in source.describe()[0]
    gpus.gpus[0].recover()
    source.close()
    assert source.sharing() == (0, 0)  # after close: nothing asked of NVML, nothing said
    assert capsys.readouterr().err == ""


def test_an_older_driver_without_v3_process_functions_falls_back_to_v2(gpus):
    gpus.old_driver = True
    source = open_nvml()
    gpus.gpus[0].processes = [os.getppid()]
    assert source.sharing() == (1, 0)
    source.close()


def test_sharing_is_cheap_enough_for_every_tick(gpus):
    source = open_nvml()
    gpus.gpus[0].processes = [os.getpid(), os.getppid(), 4_000_001]
    source.sharing()
    started = time.perf_counter()
    for _ in range(200):
        source.sharing()
    per_call = (time.perf_counter() - started) / 200
    assert per_call < 0.002  # ~20 µs here; a busy 2-core machine stays far below a 50 ms tick
    source.close()


def _measurement(**changes) -> Measurement:
    base = dict(
        started_at=datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc), duration_s=2.0, energy_j=700.0,
        components={"cpu:package-0": 100.0, "gpu:0": 600.0}, estimated=False, avg_power_w=350.0,
        peak_power_w=360.0, uncertainty_j=30.0, shared_components=("gpu:0",),
    )
    return Measurement(**{**base, **changes})


def test_a_shared_component_is_said_in_the_cell_text_and_totals():
    m = _measurement()
    assert "gpu:0: whole device, shared with other processes" in fmt.measurement_text(m)
    assert "shared" not in fmt.measurement_text(_measurement(shared_components=()))
    totals = Totals.of([CellRecord(m, 1), CellRecord(_measurement(shared_components=()), 2)])
    assert totals.shared_components == {"gpu:0"}
    assert "whole device, shared with other processes in some cells: gpu:0" in fmt.totals_text(totals)


def test_shared_components_are_exported_and_read_back(tmp_path):
    record = CellRecord(_measurement(), 3, notebook="a.ipynb")
    export.export([record], tmp_path / "cells.json")
    document = json.loads((tmp_path / "cells.json").read_text())
    assert document["cells"][0]["measurement"]["shared_components"] == ["gpu:0"]
    assert export.read_json(tmp_path / "cells.json")[0].measurement.shared_components == ("gpu:0",)
    assert export.csv_row(record)["shared_components"] == '["gpu:0"]'
    # A file from before the field still reads, with nothing shared.
    document["schema"] = 1
    del document["cells"][0]["measurement"]["shared_components"]
    (tmp_path / "old.json").write_text(json.dumps(document))
    assert export.read_json(tmp_path / "old.json")[0].measurement.shared_components == ()


def test_shared_components_are_stored_and_a_version_1_database_is_migrated(tmp_path):
    path = str(tmp_path / "history.sqlite")
    old = sqlite3.connect(path)
    old.execute(MIGRATIONS[0])
    old.execute("PRAGMA user_version = 1")
    old.execute(
        "INSERT INTO cells (schema_version, session, success, started_at, duration_s, energy_j, components, estimated,"
        " estimated_components, failed_components) VALUES (1, 'old', 1, '2024-01-01T00:00:00+00:00', 1.5, 42.0,"
        " '{\"gpu:0\": 42.0}', 0, '[]', '[]')"
    )
    old.commit()
    old.close()
    store = Store(path)
    try:
        assert store._background.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) == SCHEMA_VERSION
        store.add(StoredCell(CellRecord(_measurement(), 1), "new"))
        cells = store.cells()
        assert [c.session for c in cells] == ["old", "new"]
        assert cells[0].record.measurement.shared_components == ()
        assert cells[0].record.measurement.energy_j == 42.0
        assert cells[1].record.measurement.shared_components == ("gpu:0",)
    finally:
        store.close()
