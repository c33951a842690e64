"""Estimates: CPU time x watts per busy CPU, resident memory x W/GB, and how the watts are chosen."""

import os
import time

import pytest

from greenjupyter.meter import Meter
from greenjupyter.sources.cpu_model import CpuInfo, lookup_tdp, normalise, read_cpu_info
from greenjupyter.sources.estimate import EstimateSource, load_models

MODELS = load_models()


@pytest.mark.parametrize(
    "model, expected",
    [
        ("Intel(R) Core(TM) i7-1165G7 @ 2.80GHz", ("intel core i7-1165g7", 28.0)),
        ("AMD EPYC 7763 64-Core Processor", ("amd epyc 7763", 280.0)),
        ("Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz", ("intel xeon platinum 8375c", 300.0)),
        ("AMD Ryzen 9 7950X 16-Core Processor", ("amd ryzen 9 7950x", 170.0)),
        ("AMD EPYC", None),
        ("Intel(R) Xeon(R) CPU @ 2.20GHz", None),
    ],
)
def test_tdp_lookup(model, expected):
    assert lookup_tdp(model) == expected


def test_normalise_drops_marks_and_clock():
    assert normalise("Intel(R) Core(TM) i9-13900K CPU @ 3.00GHz") == "intel core i9-13900k"


def test_cpuinfo_reads_model_threads_and_hypervisor(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: AMD EPYC 7763 64-Core Processor\nsiblings\t: 128\n"
        "flags\t\t: fpu vme hypervisor sse\n\nprocessor\t: 1\nmodel name\t: other\n"
    )
    assert read_cpu_info(str(cpuinfo)) == CpuInfo("AMD EPYC 7763 64-Core Processor", 128, True)


def test_bare_metal_known_cpu_uses_tdp_per_thread():
    source = EstimateSource(cpu_info=CpuInfo("AMD EPYC 7763 64-Core Processor", 128, False))
    watts, how = source.cpu_watts
    assert watts == pytest.approx(280 / 128)
    assert "TDP 280 W of amd epyc 7763 / 128 threads" in how


@pytest.mark.parametrize(
    "info",
    [CpuInfo("AMD EPYC 7763 64-Core Processor", 2, True), CpuInfo("Mystery CPU 9000", 8, False)],
)
def test_virtual_or_unknown_cpu_uses_the_per_vcpu_figure(info):
    watts, how = EstimateSource(cpu_info=info).cpu_watts
    assert watts == MODELS["cpu_w_per_busy_vcpu"]["value"] == 3.84
    assert "Cloud Carbon Footprint" in how


def test_cpu_estimate_follows_the_process_cpu_time():
    info = CpuInfo("AMD EPYC 7763 64-Core Processor", 128, False)
    meter = Meter([EstimateSource(cpu_info=info)])
    outer0 = time.process_time()
    window = meter.begin()
    inner0 = time.process_time()
    while time.process_time() - inner0 < 0.3:
        pass
    inner = time.process_time() - inner0
    m = meter.end(window)
    outer = time.process_time() - outer0
    assert m.estimated and m.estimated_components == ("cpu:process", "dram:process")
    # The process's CPU time read at the window's edges lies between these two readings.
    assert inner * 280 / 128 <= m.components["cpu:process"] <= outer * 280 / 128


def test_children_cpu_time_counts():
    meter = Meter([EstimateSource(memory=False, cpu_info=CpuInfo("x", 1, True))])
    window = meter.begin()
    before = os.times()
    pid = os.fork()
    if pid == 0:
        while time.process_time() < 0.3:  # the child's own CPU time, whatever else runs
            pass
        os._exit(0)
    os.waitpid(pid, 0)
    after = os.times()
    m = meter.end(window)
    child = after.children_user + after.children_system - before.children_user - before.children_system
    assert child >= 0.25
    assert m.components["cpu:process"] >= child * 3.84 * 0.99


def test_memory_estimate_is_resident_size_times_watts_per_gb():
    source = EstimateSource(cpu=False)
    meter = Meter([source])
    window = meter.begin()
    time.sleep(0.3)
    m = meter.end(window)
    rss = source._rss_bytes()
    assert m.components["dram:process"] == pytest.approx(rss / 1e9 * 0.3725 * m.duration_s, rel=0.05)
