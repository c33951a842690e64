"""Measured windows against truth: a fake RAPL tree advancing in real time at known watts."""

import time

import pytest

from greenjupyter.meter import Meter
from greenjupyter.sources.rapl import open_rapl
from tests.fakes.powercap import SERVER, FakePowercap, FakeZone


# The fake counters tick every 0.5 ms: real RAPL's ~1 ms quantisation alone bounds a 100 ms
# window's error at 1%, and a fake written by a scheduled process adds its own lateness on a
# busy machine; half a period leaves room for that and still catches any real meter error.
PERIOD_S = 0.0005


@pytest.fixture
def meter(tmp_path):
    fake = FakePowercap(tmp_path, SERVER, period_s=PERIOD_S)
    with fake:
        meter = Meter([open_rapl(str(tmp_path))], sample_interval_s=0.25)
        meter.start()
        meter.fake = fake
        yield meter
        meter.close()


def measure_sleep(meter, seconds):
    window = meter.begin()
    time.sleep(seconds)
    return meter.end(window)


def timely_windows(meter, seconds, wanted, tries):
    """Yield ``wanted`` windows of ``seconds``, leaving out those whose edge read the fake's counters
    while its writer ran late (its counters, not the meter, were off); fail after ``tries`` windows."""
    checked = 0
    for _ in range(tries):
        window = meter.begin()
        time.sleep(seconds)
        m = meter.end(window)
        if meter.fake.stalled(window.t, window.t + m.duration_s):
            continue
        yield m
        checked += 1
        if checked == wanted:
            return
    pytest.fail(f"only {checked} of {tries} windows had the fake's counters on time")


@pytest.mark.parametrize("seconds", [0.1, 0.25, 1.0])
def test_windows_of_100ms_and_longer_are_within_1_percent(meter, seconds):
    watts = meter.fake.total_watts()  # 120 W over two packages and two DRAM zones
    for m in timely_windows(meter, seconds, wanted=5, tries=15):
        truth = watts * m.duration_s
        assert m.energy_j == pytest.approx(truth, rel=0.01)
        assert set(m.components) == {"cpu:package-0", "dram:0", "cpu:package-1", "dram:1"}
        assert m.components["cpu:package-0"] == pytest.approx(60.0 * m.duration_s, rel=0.01)
        assert not m.estimated and m.failed_components == ()


def test_10ms_windows_are_within_their_stated_uncertainty(meter):
    watts = meter.fake.total_watts()
    for m in timely_windows(meter, 0.01, wanted=20, tries=60):
        assert abs(m.energy_j - watts * m.duration_s) <= m.uncertainty_j
        # Never less than one RAPL update period (1 ms) at the power the window showed, whatever
        # else (the reads' own duration on a busy machine) it adds. (A 10 ms window's own average
        # is quantised by the counter's steps: the true 120 W may read a few % lower.)
        assert m.uncertainty_j >= m.avg_power_w * 0.001 * (1 - 1e-9)


def test_nested_windows_each_get_their_own_energy(meter):
    watts = meter.fake.total_watts()
    outer = meter.begin()
    time.sleep(0.1)
    inner = measure_sleep(meter, 0.2)
    time.sleep(0.1)
    whole = meter.end(outer)
    assert inner.energy_j == pytest.approx(watts * inner.duration_s, rel=0.01)
    assert whole.energy_j == pytest.approx(watts * whole.duration_s, rel=0.01)
    assert whole.duration_s > inner.duration_s + 0.19


def test_a_10_second_window_across_many_wraps_is_within_1_percent(tmp_path):
    # 60 W against a 60 J range: the counter wraps every second, ten times in the window;
    # the sampler (every 0.25 s) reads it four times per wrap, which keeps it exact.
    fake = FakePowercap(
        tmp_path, [FakeZone("intel-rapl:0", "package-0", 60.0, max_range_uj=60_000_000, start_uj=59_000_000)],
        period_s=PERIOD_S,
    )
    with fake:
        meter = Meter([open_rapl(str(tmp_path))], sample_interval_s=0.25)
        meter.start()
        try:
            m = measure_sleep(meter, 10.0)
        finally:
            meter.close()
    assert m.energy_j == pytest.approx(60.0 * m.duration_s, rel=0.01)
    assert m.energy_j > 9 * 60  # several full ranges, not one


def test_peak_and_average_power_come_from_the_sampler(meter):
    watts = meter.fake.total_watts()
    m = measure_sleep(meter, 1.0)
    assert m.avg_power_w == pytest.approx(watts, rel=0.01)
    assert m.peak_power_w == pytest.approx(watts, rel=0.05)  # 250 ms sample averages
    assert len(meter.sampler.samples) >= 3
