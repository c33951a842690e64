"""greenjupyter.measure() in plain Python: blocks, decorated functions, recursion and threads."""

import threading
import time

import pytest

import greenjupyter
from greenjupyter import Measurement


def test_a_block_stands_for_its_measurement():
    with greenjupyter.measure() as m:
        time.sleep(0.05)
    assert isinstance(m.result, Measurement)
    assert m.energy_j == m.result.energy_j > 0
    assert 0.05 <= m.duration_s < 0.5


def test_reading_a_running_block_says_why():
    with greenjupyter.measure() as m:
        with pytest.raises(AttributeError, match="'energy_j': the measurement is not finished yet"):
            m.energy_j


def test_a_decorated_function_keeps_its_last_measurement():
    @greenjupyter.measure()
    def nap(seconds):
        """Sleep."""
        time.sleep(seconds)
        return seconds

    assert nap.measurement is None
    assert nap(0.05) == 0.05
    first = nap.measurement
    assert isinstance(first, Measurement) and 0.05 <= first.duration_s < 0.5
    nap(0.01)
    assert nap.measurement is not first and nap.measurement.duration_s < first.duration_s
    assert nap.__name__ == "nap" and nap.__doc__ == "Sleep."


def test_a_call_that_raises_is_measured_and_the_error_comes_through():
    @greenjupyter.measure()
    def broken():
        time.sleep(0.02)
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        broken()
    assert broken.measurement.duration_s >= 0.02


def test_recursive_calls_nest():
    inner = {}

    @greenjupyter.measure()
    def countdown(n):
        time.sleep(0.01)
        if n:
            countdown(n - 1)
            inner[n - 1] = countdown.measurement  # the call that just returned

    countdown(3)
    inner[3] = countdown.measurement
    # Each call's window holds its own 10 ms sleep and every deeper call's.
    for n in range(4):
        assert inner[n].duration_s >= 0.01 * (n + 1), n
    assert [inner[n].duration_s for n in range(4)] == sorted(inner[n].duration_s for n in range(4))


def test_one_decorated_function_in_eight_threads_keeps_each_call_apart():
    meter = greenjupyter.measure()

    @meter
    def nap(seconds):
        time.sleep(seconds)

    errors, seen = [], {}

    def worker(index):
        try:
            for call in range(20):
                seconds = 0.002 * ((index + call) % 5 + 1)  # 2-10 ms, so neighbours differ
                nap(seconds)
                seen[index, call] = (seconds, meter.result)  # this thread's own last call
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors and len(seen) == 160
    assert len({id(m) for _, m in seen.values()}) == 160  # no call got another call's result
    for seconds, m in seen.values():
        # A window holds its call's sleep, never less; above it only what a busy 2-core machine
        # adds: waking up late and the edge reads (bounded generously at 250 ms), never the
        # 10 ms and more that another thread's window would add or take away repeatedly.
        assert seconds <= m.duration_s < seconds + 0.25, (seconds, m.duration_s)
    late = sorted(m.duration_s - seconds for seconds, m in seen.values())
    assert late[len(late) // 2] < 0.05  # the median call wakes up close to its own sleep
    assert isinstance(nap.measurement, Measurement)
