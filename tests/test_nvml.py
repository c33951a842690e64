"""NVIDIA GPUs through a pynvml stand-in: counter and power-only GPUs, errors mid-window."""

import sys
import time

import pytest

from greenjupyter.errors import SourceUnavailable
from greenjupyter.meter import Meter
from greenjupyter.sources import detect_gpus
from greenjupyter.sources import nvml as nvml_source
from greenjupyter.sources.nvml import COUNTER_PERIOD_S, POWER_ERROR_W, open_nvml
from tests.fakes import pynvml as fake


@pytest.fixture
def meter(gpus):
    meter = Meter([open_nvml()], sample_interval_s=0.05)
    meter.start()
    yield meter
    meter.close()


def test_each_gpu_uses_its_counter_or_integrates_power(gpus):
    source = open_nvml()
    assert source.components == ("gpu:0", "gpu:1")
    assert source.has_counter == [True, False]
    assert source.update_period_s == (COUNTER_PERIOD_S, 0.0)
    assert source.power_error_w == (0.0, POWER_ERROR_W)
    assert "total-energy counter" in source.describe()[0]
    assert "power polled and integrated" in source.describe()[1]
    source.close()
    assert gpus.state["shutdowns"] == 1


def test_gpu_energy_matches_truth_within_stated_uncertainty(meter, gpus):
    window = meter.begin()
    time.sleep(0.5)
    m = meter.end(window)
    for index, gpu in enumerate(gpus.gpus):
        assert m.components[f"gpu:{index}"] == pytest.approx(gpu.watts * m.duration_s, abs=gpu.watts * 0.02 + 0.1)
    # counter GPU: one 100 ms period at 300 W (or at a recent sample's higher power: a
    # 50 ms sample of a counter that ticks every 20 ms can read up to 3 ticks in 2.5);
    # power-only GPU: 5 W over the window.
    floor = 300 * COUNTER_PERIOD_S + POWER_ERROR_W * m.duration_s
    assert floor * 0.99 <= m.uncertainty_j <= floor + 300 * 0.5 * COUNTER_PERIOD_S
    assert abs(m.energy_j - 450 * m.duration_s) <= m.uncertainty_j


def test_gpu_lost_mid_window_fails_that_component_only(meter, gpus):
    window = meter.begin()
    time.sleep(0.1)
    gpus.gpus[0].fail(fake.NVML_ERROR_GPU_IS_LOST)
    time.sleep(0.1)
    m = meter.end(window)
    assert m.failed_components == ("gpu:0",)
    assert "gpu:0" not in m.components
    assert m.components["gpu:1"] == pytest.approx(150 * m.duration_s, rel=0.05)
    assert meter.sources[0].last_error[0] == "GPU is lost"
    time.sleep(0.2)  # the sampler keeps meeting the lost GPU: one spell of failure, logged once
    assert meter._events == [("failed", 0)]


def test_a_gpu_that_errors_briefly_only_fails_the_windows_that_saw_it(meter, gpus):
    gpus.gpus[1].fail(fake.NVML_ERROR_UNKNOWN)
    time.sleep(0.12)  # the sampler meets the error
    gpus.gpus[1].recover()
    time.sleep(0.12)
    window = meter.begin()
    time.sleep(0.2)
    healthy = meter.end(window)
    assert healthy.failed_components == ()
    # Integration restarted after the gap: no energy from the broken stretch leaks in.
    assert healthy.components["gpu:1"] == pytest.approx(150 * healthy.duration_s, rel=0.05)


def test_error_in_between_two_reads_is_noticed(meter, gpus):
    meter.sampler.stop()  # only the window edges read now
    window = meter.begin()
    gpus.gpus[0].fail()
    meter.read()  # someone (the sampler) reads while it is broken
    gpus.gpus[0].recover()
    assert meter.end(window).failed_components == ("gpu:0",)


def test_no_driver_means_no_import(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # importing would raise ImportError
    found = detect_gpus()
    assert found.sources == []
    assert "no NVIDIA driver" in found.unavailable[0].reason


def test_driver_without_nvidia_ml_py_says_how_to_install(tmp_path, monkeypatch):
    marker = tmp_path / "nvidiactl"
    marker.write_text("")
    monkeypatch.setattr(nvml_source, "DRIVER_MARKERS", (str(marker),))
    monkeypatch.setitem(sys.modules, "pynvml", None)
    with pytest.raises(SourceUnavailable) as caught:
        open_nvml()
    assert caught.value.hint == "pip install nvidia-ml-py"


def test_nvml_init_failure_is_reported(tmp_path, monkeypatch):
    marker = tmp_path / "nvidiactl"
    marker.write_text("")
    monkeypatch.setattr(nvml_source, "DRIVER_MARKERS", (str(marker),))
    monkeypatch.setitem(sys.modules, "pynvml", fake.make([], init_error=fake.NVML_ERROR_DRIVER_NOT_LOADED))
    found = detect_gpus()
    assert found.unavailable[0].reason == "NVML could not start: Driver Not Loaded"


def test_no_gpus_is_reported_and_nvml_shut_down(tmp_path, monkeypatch):
    marker = tmp_path / "nvidiactl"
    marker.write_text("")
    monkeypatch.setattr(nvml_source, "DRIVER_MARKERS", (str(marker),))
    module = fake.make([])
    monkeypatch.setitem(sys.modules, "pynvml", module)
    assert detect_gpus().unavailable[0].reason == "NVML found no GPUs"
    assert module.state["shutdowns"] == 1


def test_detect_finds_rapl_and_gpus_together(powercap, gpus):
    from greenjupyter.sources import detect

    found = detect(str(powercap.root))
    assert [c for s in found.sources for c in s.components] == [
        "cpu:package-0", "dram:0", "cpu:package-1", "dram:1", "gpu:0", "gpu:1",
    ]
    assert found.unavailable == []
    for source in found.sources:
        source.close()
