"""A Linux powercap tree under a temp dir, faithful to the kernel's files.

Each zone has ``name``, ``energy_uj`` and ``max_energy_range_uj``. With ``start()`` a separate
process (like the hardware, it does not share our GIL) advances every counter in real time
at the zone's wattage, once per ``period_s`` (RAPL updates about every millisecond), wrapping
at ``max_energy_range_uj``. Without it, tests set counter values by hand with ``write()``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

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
    watts: float
    max_range_uj: int = REAL_RANGE_UJ
    start_uj: int = 0


class FakePowercap:
    def __init__(self, root: Path, zones, period_s: float = 0.001):
        self.root = Path(root)
        self.zones = [z if isinstance(z, FakeZone) else FakeZone(*z) for z in zones]
        self.period_s = period_s
        self._writer = None
        for zone in self.zones:
            path = self.root / zone.entry
            path.mkdir(parents=True, exist_ok=True)
            (path / "name").write_text(zone.name + "\n")
            (path / "max_energy_range_uj").write_text(f"{zone.max_range_uj}\n")
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

    def start(self) -> "FakePowercap":
        spec = [
            [str(self.root / z.entry / "energy_uj"), z.watts, z.max_range_uj, z.start_uj] for z in self.zones
        ]
        self._writer = subprocess.Popen(
            [sys.executable, __file__, json.dumps(spec), str(self.period_s)],
            stdout=subprocess.PIPE,
        )
        self._writer.stdout.readline()  # wait until it has written once
        return self

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


def _advance(spec: list, period_s: float) -> None:
    try:
        # Hardware counters never stall; a descheduled writer would. Real-time priority
        # (root or CAP_SYS_NICE) keeps the fake's updates on time on a busy machine.
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    except (AttributeError, PermissionError, OSError):
        pass
    files = [(os.open(path, os.O_WRONLY), watts, rng, start, len(str(rng))) for path, watts, rng, start in spec]
    t0 = time.monotonic()
    tick = 0
    while True:
        elapsed = tick * period_s  # the counter's value at this tick, like the hardware's
        for fd, watts, rng, start, width in files:
            value = (start + int(watts * elapsed * 1e6)) % rng
            os.pwrite(fd, f"{value:0{width}d}\n".encode(), 0)
        if tick == 0:
            print("ready", flush=True)
        tick += 1
        delay = t0 + tick * period_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)


if __name__ == "__main__":
    _advance(json.loads(sys.argv[1]), float(sys.argv[2]))
