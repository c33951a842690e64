"""A Linux powercap tree under a temp dir, faithful to the kernel's files.

Each zone has ``name``, ``energy_uj``, ``max_energy_range_uj`` and, when given, a
``constraint_0_max_power_uw``. With ``start()`` a separate process (like the hardware, it does
not share our GIL) advances every counter in real time at the zone's wattage (a number or a
Schedule: power that changes), once per ``period_s`` (RAPL updates about every millisecond),
wrapping at ``max_energy_range_uj``. ``reset()`` makes it restart every counter from zero, as
suspend/resume or a driver reload does. Without it, tests set counter values by hand with ``write()``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script, it still finds tests.fakes
from tests.fakes.schedule import Schedule  # noqa: E402

# Two Intel sockets with DRAM subzones, as a two-socket server shows them.
SERVER = [
    ("intel-rapl:0", "package-0", 60.0),
    ("intel-rapl:0:0", "dram", 9.0),
    ("intel-rapl:1", "package-1", 45.0),
    ("intel-rapl:1:0", "dram", 6.0),
]
REAL_RANGE_UJ = 262143328850  # a common real max_energy_range_uj


@dataclass
class FakeZone:
    entry: str
    name: str
    watts: float | Schedule
    max_range_uj: int = REAL_RANGE_UJ
    start_uj: int = 0
    max_power_uw: int | None = None  # written as constraint_0_max_power_uw when given

    @property
    def schedule(self) -> Schedule:
        return self.watts if isinstance(self.watts, Schedule) else Schedule.constant(self.watts)


class FakePowercap:
    def __init__(self, root: Path, zones, period_s: float = 0.001):
        self.root = Path(root)
        self.zones = [z if isinstance(z, FakeZone) else FakeZone(*z) for z in zones]
        self.period_s = period_s
        self._writer = None
        self.t0 = None  # the writer's start, on the monotonic clock perf_counter shares
        self.resets: list[float] = []  # when reset() was asked, same clock
        # Where the writer logs its stalls: spells when it ran late and its counters were stale,
        # which real counters never are (the VM did not run it). Beside the tree, not in it.
        self.stalls_path = self.root.parent / f"{self.root.name}.stalls"
        for zone in self.zones:
            path = self.root / zone.entry
            path.mkdir(parents=True, exist_ok=True)
            (path / "name").write_text(zone.name + "\n")
            (path / "max_energy_range_uj").write_text(f"{zone.max_range_uj}\n")
            if zone.max_power_uw is not None:
                (path / "constraint_0_max_power_uw").write_text(f"{zone.max_power_uw}\n")
            self.write(zone.entry, zone.start_uj)
        # The control-type directory real trees have beside the zones; it must be ignored.
        (self.root / "intel-rapl").mkdir(exist_ok=True)

    def write(self, entry: str, microjoules: int) -> None:
        zone = self.zone(entry)
        width = len(str(zone.max_range_uj))
        # Fixed width so that an in-place rewrite never leaves a stale tail for a reader.
        (self.root / entry / "energy_uj").write_text(f"{microjoules % zone.max_range_uj:0{width}d}\n")

    def zone(self, entry: str) -> FakeZone:
        return next(z for z in self.zones if z.entry == entry)

    def total_watts(self, names=("package", "dram")) -> float:
        return sum(z.watts for z in self.zones if z.name.startswith(names))

    def truth(self, t0: float, t1: float, names=("package", "dram")) -> float:
        """Return the exact joules the running writer's zones drew between two perf_counter times."""
        return sum(z.schedule.energy(t0 - self.t0, t1 - self.t0) for z in self.zones if z.name.startswith(names))

    def start(self) -> "FakePowercap":
        spec = [
            [str(self.root / z.entry / "energy_uj"), z.schedule.steps, z.max_range_uj, z.start_uj] for z in self.zones
        ]
        self.stalls_path.write_text("")
        self._writer = subprocess.Popen(
            [sys.executable, __file__, json.dumps(spec), str(self.period_s), str(self.stalls_path)],
            stdout=subprocess.PIPE,
        )
        self.t0 = float(self._writer.stdout.readline().split()[1])  # written once; its clock's origin
        return self

    def stalled(self, t0: float, t1: float) -> bool:
        """True when the writer ran more than half a period late at either edge of a window (perf_counter
        times): a counter read then was staler than hardware ever is, and the window says nothing of
        the meter. A stall inside the window does not matter: the counters catch up."""
        for line in self.stalls_path.read_text().splitlines():
            due, written = map(float, line.split())
            if due - self.period_s <= t0 <= written or due - self.period_s <= t1 <= written:
                return True
        return False

    def reset(self) -> None:
        """Make the running writer restart every counter from zero (suspend/resume, driver reload)."""
        self.resets.append(time.monotonic())
        self._writer.send_signal(signal.SIGUSR1)

    def stop(self) -> None:
        if self._writer is not None:
            self._writer.terminate()
            self._writer.wait(5)
            self._writer.stdout.close()
            self._writer = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _advance(spec: list, period_s: float, stalls_path: str) -> None:
    try:
        # Hardware counters never stall; a descheduled writer would. Real-time priority
        # (root or CAP_SYS_NICE) keeps the fake's updates on time on a busy machine.
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    except (AttributeError, PermissionError, OSError):
        pass
    files = [(os.open(path, os.O_WRONLY), Schedule(steps), rng, start, len(str(rng))) for path, steps, rng, start in spec]
    reset_at = []  # ticks at which the counters restarted from zero

    def on_reset(signum, frame):
        reset_at.append(tick)

    signal.signal(signal.SIGUSR1, on_reset)
    stalls = open(stalls_path, "a")
    t0 = time.monotonic()
    tick = 0
    while True:
        due, now = t0 + tick * period_s, time.monotonic()
        if now - due > period_s / 2:  # run late: the counters were staler than a period and a half until now
            stalls.write(f"{due!r} {now!r}\n")
            stalls.flush()
        elapsed = tick * period_s  # the counter's value at this tick, like the hardware's
        since = reset_at[-1] * period_s if reset_at else None
        for fd, schedule, rng, start, width in files:
            if since is None:
                value = (start + int(schedule.cumulative(elapsed) * 1e6)) % rng
            else:
                value = int((schedule.cumulative(elapsed) - schedule.cumulative(since)) * 1e6) % rng
            os.pwrite(fd, f"{value:0{width}d}\n".encode(), 0)
        if tick == 0:
            print(f"ready {t0!r}", flush=True)
        tick += 1
        delay = t0 + tick * period_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)


if __name__ == "__main__":
    _advance(json.loads(sys.argv[1]), float(sys.argv[2]), sys.argv[3])
