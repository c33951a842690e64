"""Figures that stay true when power changes, counters reset and models meet coarse clocks.

Truth comes from the fakes' schedules, integrated exactly (tests/fakes/schedule.py). Every
check is |error| <= the uncertainty the meter states, or a bound on what a reading may be;
never an exact uncertainty, which depends on how the machine scheduled us.
"""

import os
import random
import subprocess
import sys
import threading
import time

import pytest

from greenjupyter import notices
from greenjupyter.meter import Meter
from greenjupyter.sampler import Sampler
from greenjupyter.sources.base import PowerIntegral, Source
from greenjupyter.sources.estimate import EstimateSource
from greenjupyter.sources.nvml import open_nvml
from greenjupyter.sources.rapl import FALLBACK_MAX_POWER_W, open_rapl
from tests.fakes import pynvml as fake_pynvml
from tests.fakes.powercap import FakePowercap, FakeZone
from tests.fakes.schedule import Schedule

# Square waves change every HALF_PERIOD_S; the sampler polls every 50 ms. The trapezoid's
# stated bound assumes power moves one way between two polls, which holds unless the sampler
# stalls for a whole half period (a second) on a busy machine.
HALF_PERIOD_S = 1.0


def windows(meter, total_s, shortest_s=0.005, longest_s=0.6, seed=9):
    """Return back-to-back windows of random lengths, as (start, stop, Measurement)."""
    rng = random.Random(seed)
    out = []
    end = time.perf_counter() + total_s
    while time.perf_counter() < end:
        start = meter.begin()
        time.sleep(rng.uniform(shortest_s, longest_s))
        stop = meter.snapshot()
        out.append((start, stop, meter.measurement(start, stop)))
    return out


# -- polled power ---------------------------------------------------------------------------


@pytest.fixture
def power_only_gpu(monkeypatch, tmp_path):
    """A pre-Volta GPU (power only, no energy counter) stepping between 300 W and 0 W."""
    gpu = fake_pynvml.FakeGpu("Tesla P100-PCIE-16GB", Schedule.square(0.0, 300.0, HALF_PERIOD_S), counter=False)
    module = fake_pynvml.make([gpu])
    monkeypatch.setitem(sys.modules, "pynvml", module)
    marker = tmp_path / "nvidiactl"
    marker.write_text("")
    from greenjupyter.sources import nvml

    monkeypatch.setattr(nvml, "DRIVER_MARKERS", (str(marker),))
    meter = Meter([open_nvml()], sample_interval_s=0.05)
    meter.start()
    yield meter, gpu
    meter.close()


def test_polled_power_that_steps_is_never_negative_and_within_its_stated_uncertainty(power_only_gpu):
    meter, gpu = power_only_gpu
    seen = windows(meter, 5.0)
    assert len(seen) >= 10
    steps_inside = 0
    for start, stop, m in seen:
        joules = m.components["gpu:0"]
        truth = gpu.joules_between(start.t, stop.t)
        assert joules >= 0
        assert abs(joules - truth) <= m.uncertainty_j, (joules, truth, m.uncertainty_j, m.duration_s)
        steps_inside += gpu.schedule.power(start.t - gpu.t0) != gpu.schedule.power(stop.t - gpu.t0)
    assert steps_inside >= 2  # the windows did straddle changes of power
    # The bound is not just the sensor's +/-5 W: it grew where power moved inside a window.
    straddling = [m for start, stop, m in seen if gpu.schedule.power(start.t - gpu.t0) != gpu.schedule.power(stop.t - gpu.t0)]
    assert any(m.uncertainty_j > 5.0 * m.duration_s + 1.0 for m in straddling)


def test_nested_windows_over_a_step_never_read_less_than_zero(power_only_gpu):
    meter, gpu = power_only_gpu
    # Many short windows, each inside a longer one, while power drops from 300 W to 0 W.
    outer = meter.begin()
    inner = [windows(meter, 0.3, 0.001, 0.02, seed=s) for s in range(8)]
    whole = meter.end(outer)
    assert whole.components["gpu:0"] >= 0
    for group in inner:
        for _, _, m in group:
            assert m.components["gpu:0"] >= 0


def test_power_integral_is_exact_for_a_ramp_and_never_falls():
    rng = random.Random(4)
    integral = PowerIntegral()
    answers = []
    t = 0.0
    for _ in range(5000):
        t += rng.uniform(0.0, 0.01)
        late = t - rng.uniform(0.0, 0.02) if rng.random() < 0.3 else t  # a racing thread's older time
        answers.append(integral.poll(rng.choice([0.0, 300.0, rng.uniform(0, 300)]), late))
        if rng.random() < 0.01:
            integral.restart()  # a failed read: no energy across the gap, and still never backwards
    for (j0, v0), (j1, v1) in zip(answers, answers[1:]):
        assert j1 >= j0 and v1 >= v0
    ramp = PowerIntegral()
    for k in range(11):  # 0 W to 100 W over 10 s: 500 J, exact for trapezoids; no variation bound needed
        joules, varied = ramp.poll(10.0 * k, float(k))
    assert joules == pytest.approx(500.0) and varied == pytest.approx(50.0)


def test_power_integral_from_two_threads_gives_each_thread_a_rising_curve():
    integral = PowerIntegral()
    results = {0: [], 1: []}

    def poll(which):
        for k in range(20000):
            results[which].append(integral.poll(300.0 if (k // 50) % 2 else 0.0)[0])

    threads = [threading.Thread(target=poll, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for values in results.values():
        assert all(b >= a for a, b in zip(values, values[1:]))


def test_memory_estimate_is_never_negative_while_memory_is_taken_and_freed():
    meter = Meter([EstimateSource(cpu=False, memory=True)], sample_interval_s=0.01)
    meter.start()
    try:
        seen = []
        for _ in range(15):
            start = meter.begin()
            block = bytearray(150_000_000)  # resident once touched
            block[::4096] = b"x" * len(block[::4096])
            time.sleep(0.02)
            del block
            seen.append(meter.end(start))
            seen.append(meter.end(meter.begin()))  # a window right after the drop
    finally:
        meter.close()
    assert all(m.components["dram:process"] >= 0 for m in seen)


# -- counters that reset --------------------------------------------------------------------

RESET_ZONES = [
    # A package near the top of its range, as after a day of work: a reset to zero reads as
    # a wrap of about 5,000 J unless told apart (the 262,143 J range of real packages).
    FakeZone("intel-rapl:0", "package-0", 26.0, start_uj=257_141_000_000, max_power_uw=125_000_000),
    FakeZone("intel-rapl:0:0", "dram", 4.0, start_uj=100_000_000),
]


@pytest.fixture
def resetting_rapl(tmp_path):
    fake = FakePowercap(tmp_path, RESET_ZONES, period_s=0.0005)
    with fake:
        meter = Meter([open_rapl(str(tmp_path))], sample_interval_s=0.05)
        meter.start()
        yield meter, fake
        meter.close()


def test_a_counter_reset_inside_a_window_fails_that_component_and_the_next_window_is_exact(resetting_rapl):
    meter, fake = resetting_rapl
    start = meter.begin()
    time.sleep(0.4)
    fake.reset()
    time.sleep(0.4)
    m = meter.end(start)
    assert m.failed_components == ("cpu:package-0", "dram:0")
    assert m.energy_j == 0.0 and not m.components
    time.sleep(0.1)  # the sampler has seen the new values
    after = meter.begin()
    time.sleep(0.5)
    stop = meter.snapshot()
    m = meter.measurement(after, stop)
    assert m.failed_components == ()
    assert m.energy_j == pytest.approx(fake.truth(after.t, stop.t), rel=0.01)
    assert meter.sources[0].resets == [1, 1]
    assert "reset 1 time" in meter.sources[0].describe()[0]


def test_a_reset_seen_first_by_an_edge_fails_the_window(tmp_path):
    # A sampler that reads rarely: the stop edge is the first read after the reset.
    fake = FakePowercap(tmp_path, RESET_ZONES, period_s=0.0005)
    with fake:
        meter = Meter([open_rapl(str(tmp_path))], sample_interval_s=30.0)
        meter.start()
        try:
            time.sleep(0.05)  # the sampler's first read is done
            start = meter.begin()
            time.sleep(0.2)
            fake.reset()
            time.sleep(0.2)
            m = meter.end(start)
        finally:
            meter.close()
    assert set(m.failed_components) == {"cpu:package-0", "dram:0"}


def test_a_reset_counter_never_yields_a_figure_above_the_plausibility_bound(resetting_rapl):
    meter, fake = resetting_rapl
    bound_w = {"cpu:package-0": 2 * 125.0, "dram:0": FALLBACK_MAX_POWER_W}  # constraint given, and not
    assert meter.sources[0].max_power_w == (bound_w["cpu:package-0"], bound_w["dram:0"])
    seen = []
    for _ in range(6):
        seen += windows(meter, 0.35, 0.002, 0.15, seed=len(seen))
        fake.reset()
    seen += windows(meter, 0.3, 0.002, 0.15)
    failed = 0
    for _, _, m in seen:
        failed += bool(m.failed_components)
        for name, joules in m.components.items():
            assert 0 <= joules <= bound_w[name] * (m.duration_s + 0.01)
            assert joules <= 30.0 * m.duration_s + 0.05  # and close to the truth: 26 W, 4 W
    assert 1 <= failed <= len(seen) - 3


def test_a_gpu_counter_reset_fails_that_gpu_only(monkeypatch, tmp_path):
    gpus = [fake_pynvml.FakeGpu("NVIDIA H100 80GB HBM3", 300.0), fake_pynvml.FakeGpu("NVIDIA H100 80GB HBM3", 200.0)]
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml.make(gpus))
    marker = tmp_path / "nvidiactl"
    marker.write_text("")
    from greenjupyter.sources import nvml

    monkeypatch.setattr(nvml, "DRIVER_MARKERS", (str(marker),))
    meter = Meter([open_nvml()], sample_interval_s=0.05)
    meter.start()
    try:
        start = meter.begin()
        time.sleep(0.2)
        gpus[0].reset_counter()  # the driver was reloaded: the counter starts again from zero
        time.sleep(0.2)
        stop = meter.snapshot()
        m = meter.measurement(start, stop)
        gpu1 = gpus[1].joules_between(start.t, stop.t)
        time.sleep(0.1)
        after = meter.begin()
        time.sleep(0.3)
        stop = meter.snapshot()
        later = meter.measurement(after, stop)
    finally:
        meter.close()
    assert m.failed_components == ("gpu:0",)
    assert abs(m.components["gpu:1"] - gpu1) <= m.uncertainty_j
    assert later.failed_components == ()
    assert abs(later.components["gpu:0"] - gpus[0].joules_between(after.t, stop.t)) <= later.uncertainty_j


# -- counters under power that changes --------------------------------------------------------


def test_rapl_under_a_square_wave_is_within_its_uncertainty_and_1_percent_from_100ms(tmp_path):
    zones = [
        FakeZone("intel-rapl:0", "package-0", Schedule.square(40.0, 80.0, 0.3)),
        FakeZone("intel-rapl:0:0", "dram", Schedule.square(5.0, 10.0, 0.2)),
    ]
    fake = FakePowercap(tmp_path, zones, period_s=0.0005)
    with fake:
        meter = Meter([open_rapl(str(tmp_path))], sample_interval_s=0.05)
        meter.start()
        try:
            seen = windows(meter, 4.0, 0.005, 0.4)
        finally:
            meter.close()
    timely = [(start, stop, m) for start, stop, m in seen if not fake.stalled(start.t, stop.t)]
    assert len(timely) >= len(seen) * 0.5  # windows where the fake's writer ran late say nothing of the meter
    for start, stop, m in timely:
        truth = fake.truth(start.t, stop.t)
        assert abs(m.energy_j - truth) <= m.uncertainty_j, (m.energy_j, truth, m.uncertainty_j)
        if m.duration_s >= 0.1:
            assert m.energy_j == pytest.approx(truth, rel=0.01)


# -- models -----------------------------------------------------------------------------------


def test_cpu_estimate_never_exceeds_the_model_for_the_cpus_this_process_may_use():
    source = EstimateSource(cpu=True, memory=False)
    meter = Meter([source], sample_interval_s=0.05)
    meter.start()
    try:
        # A child burns CPU and exits; its CPU time lands in whichever window reaps it, a
        # window of well under a millisecond here, in 10 ms ticks.
        child = subprocess.Popen([sys.executable, "-c", "import time\nt=time.process_time()\nwhile time.process_time()-t<0.3: pass"])
        deadline = time.monotonic() + 30
        while open(f"/proc/{child.pid}/stat").read().split()[2] != "Z":  # exited, not yet reaped
            assert time.monotonic() < deadline, "the CPU-burning child never finished"
            time.sleep(0.01)
        start = meter.begin()
        child.wait()
        m = meter.end(start)
        time.sleep(0.12)
    finally:
        meter.close()
    model_max_w = source.cpu_watts[0] * len(os.sched_getaffinity(0))
    assert source.max_power_w == (model_max_w,)
    assert m.components["cpu:process"] <= model_max_w * m.duration_s * (1 + 1e-9)
    assert m.avg_power_w <= model_max_w * (1 + 1e-9)
    assert all(s.total_w <= model_max_w * (1 + 1e-9) for s in meter.sampler.samples)


def test_peak_power_comes_from_sampler_intervals_not_from_a_few_milliseconds(tmp_path):
    fake = FakePowercap(tmp_path, [FakeZone("intel-rapl:0", "package-0", 50.0)], period_s=0.0005)
    with fake:
        meter = Meter([open_rapl(str(tmp_path))], sample_interval_s=0.05)
        meter.start()
        try:
            time.sleep(0.2)
            edges = [(meter.begin(), meter.snapshot()) for _ in range(50)]  # windows of microseconds
            time.sleep(0.1)  # the sampler has covered them, as it has when a cell's record is made
            short = [meter.measurement(start, stop) for start, stop in edges]
        finally:
            meter.close()
    # A window of a few microseconds sees one counter update or none: its own average is
    # 0 W or hundreds of watts. The peak is the sampler's, about 50 W.
    for m in short:
        assert m.peak_power_w == pytest.approx(50.0, rel=0.1)


# -- the sampler ------------------------------------------------------------------------------


class _Clock:
    """A read() for the sampler at a controllable time: constant watts per component."""

    def __init__(self, watts=(10.0, 2.0)):
        self.t, self.watts = 0.0, watts

    def read(self):
        return self.t, [w * self.t for w in self.watts], ("cpu:package-0", "dram:0")


def test_the_ring_holds_history_s_whatever_the_interval():
    for interval in (0.01, 0.25, 2.0):
        clock = _Clock()
        sampler = Sampler(clock.read, interval, history_s=60.0, capacity=200)
        for _ in range(int(150 / interval)):  # 150 s of ticks
            clock.t += interval
            sampler.tick()
        samples = list(sampler.samples)
        span = samples[-1].t1 - samples[0].t0
        assert 60.0 - 2 * max(interval, 0.3) <= span <= 60.0 + 2 * max(interval, 0.3), interval
        assert len(samples) <= 200
        energy = sum(s.total_w * (s.t1 - s.t0) for s in samples)
        assert energy == pytest.approx(12.0 * span, rel=1e-6)  # merging keeps every joule (watts kept as float32)


def test_changing_the_interval_at_run_time_keeps_the_same_history(monkeypatch):
    clock = _Clock()
    sampler = Sampler(clock.read, 0.25, history_s=30.0)
    for interval, seconds in ((0.25, 40), (0.01, 40)):
        sampler.interval_s = interval
        for _ in range(int(seconds / interval)):
            clock.t += interval
            sampler.tick()
    samples = list(sampler.samples)
    assert samples[-1].t1 - samples[0].t0 == pytest.approx(30.0, abs=0.3)


def test_an_hour_at_4_hz_of_six_components_fits_in_under_1_mb():
    clock = _Clock(watts=(60.0, 45.0, 9.0, 6.0, 300.0, 150.0))

    def read():
        t, values, _ = clock.read()
        return t, values, ("cpu:package-0", "cpu:package-1", "dram:0", "dram:1", "gpu:0", "gpu:1")

    sampler = Sampler(read, 0.25, history_s=3600.0)
    for _ in range(14_401):
        clock.t += 0.25
        sampler.tick()
    ring = sampler.samples
    assert len(ring) == 14_400 and ring.nbytes() < 1_000_000
    assert ring[-1].watts == pytest.approx((60.0, 45.0, 9.0, 6.0, 300.0, 150.0)) and ring[-1].total_w == pytest.approx(570.0)
    assert ring[0].t1 == pytest.approx(ring[-1].t1 - 3599.75)
    assert [s.t1 for s in ring.since(ring[-1].t1 - 1.0)] == pytest.approx([ring[-1].t1 - 0.25 * k for k in (4, 3, 2, 1, 0)])


def test_one_failing_listener_does_not_skip_the_others(capsys):
    clock = _Clock()
    sampler = Sampler(clock.read, 0.25)
    got = []

    def broken(sample):
        raise RuntimeError("boom")

    sampler.listeners += [broken, got.append]
    for _ in range(4):
        clock.t += 0.25
        sampler.tick()
    assert len(got) == 3
    err = capsys.readouterr().err
    assert err.count("broken") == 1 and "could not read the sources" not in err
    notices.forget()


class _SlowSampledSource(Source):
    """A source whose sampler reads take 300 ms (a slow driver call); edge reads are quick."""

    kind = "slow"
    components = ("gpu:0",)
    update_period_s = (0.0,)
    power_error_w = (0.0,)

    def __init__(self):
        self.sampler_reads = 0

    def read(self, edge=False):
        if not edge:
            self.sampler_reads += 1
            time.sleep(0.3)
        return [time.perf_counter()]


def test_window_edges_never_wait_for_the_samplers_reads():
    source = _SlowSampledSource()
    meter = Meter([source], sample_interval_s=0.01)
    meter.start()
    try:
        while source.sampler_reads < 2:
            time.sleep(0.01)
        slowest = 0.0
        for _ in range(200):
            t = time.perf_counter()
            meter.end(meter.begin())
            slowest = max(slowest, time.perf_counter() - t)
    finally:
        meter.close()
    # Waiting on the sampler would cost up to 300 ms; on a busy 2-core machine a few ms of
    # scheduling delay are possible, far from that.
    assert slowest < 0.1
