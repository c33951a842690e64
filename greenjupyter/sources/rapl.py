"""Linux RAPL energy counters through the powercap sysfs tree."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ..errors import SourceUnavailable
from .base import NAN, Source

ZONE_NAME = re.compile(r"^intel-rapl:(\d+)(?::(\d+))?$")
# RAPL's hardware updates the energy status registers about once a millisecond.
UPDATE_PERIOD_S = 0.001


@dataclass(frozen=True)
class Zone:
    path: str
    component: str
    max_energy_range_uj: int


def find_zones(root: str) -> tuple[list[Zone], list[str]]:
    """Return the zones to read under ``root`` and a note for each zone left out.

    Packages and DRAM are read; ``core``/``uncore`` lie inside their package and ``psys``
    covers package and DRAM together, so reading them too would count energy twice.
    ``intel-rapl-mmio`` zones repeat the MSR packages and are never matched.
    """
    try:
        names = sorted(os.listdir(root), key=_zone_sort_key)
    except FileNotFoundError:
        raise SourceUnavailable(f"no powercap tree at {root} (no RAPL on this machine or in this container)") from None
    except PermissionError:
        raise SourceUnavailable(f"cannot list {root}: permission denied", _grant_hint(root)) from None
    except OSError as error:
        raise SourceUnavailable(f"cannot list {root}: {error.strerror}") from None
    zones, notes = [], []
    for entry in names:
        match = ZONE_NAME.match(entry)
        if not match:
            continue
        path = os.path.join(root, entry)
        name = _read_text(os.path.join(path, "name"))
        package, sub = match.group(1), match.group(2)
        if name is None:
            notes.append(f"{entry}: no readable name, left out")
            continue
        if sub is None and name.startswith("package"):
            component = f"cpu:{name}"
        elif name == "dram":
            component = f"dram:{package}"
        elif name == "psys":
            notes.append(f"{entry} (psys): covers package and DRAM, left out to avoid double counting")
            continue
        else:
            notes.append(f"{entry} ({name}): inside its package, left out to avoid double counting")
            continue
        max_range = _read_text(os.path.join(path, "max_energy_range_uj"))
        if max_range is None or not max_range.isdigit() or int(max_range) <= 0:
            notes.append(f"{entry} ({name}): no usable max_energy_range_uj, left out")
            continue
        zones.append(Zone(path, component, int(max_range)))
    if not zones:
        raise SourceUnavailable(f"no RAPL package or DRAM zones under {root}")
    return zones, notes


class RaplSource(Source):
    """Read RAPL ``energy_uj`` counters, unwrapping them with ``max_energy_range_uj``.

    Files stay open and are read with ``pread``. A counter that wraps more than once
    between two reads loses energy, so the sampler must read well within a wrap period
    (minutes at real power levels).
    """

    kind = "rapl"

    def __init__(self, zones: list[Zone], notes: list[str] = ()):
        self.notes = list(notes)
        self.zones, self._fds, self._last = [], [], []
        for zone in zones:
            try:
                fd = os.open(os.path.join(zone.path, "energy_uj"), os.O_RDONLY)
            except PermissionError:
                self.close()
                root = os.path.dirname(zone.path)
                raise SourceUnavailable(
                    f"RAPL counters under {root} are readable by root only (Linux 5.10+ closed them to users)",
                    _grant_hint(root),
                ) from None
            except OSError as error:
                self.notes.append(f"{os.path.basename(zone.path)}: cannot open energy_uj ({error.strerror}), left out")
                continue
            try:
                self._last.append(int(os.pread(fd, 32, 0)))
            except (OSError, ValueError) as error:
                os.close(fd)
                self.notes.append(f"{os.path.basename(zone.path)}: unreadable energy_uj ({error}), left out")
                continue
            self.zones.append(zone)
            self._fds.append(fd)
        if not self.zones:
            raise SourceUnavailable("no RAPL zone could be read: " + "; ".join(self.notes[-len(zones):]))
        self.components = tuple(z.component for z in self.zones)
        self.update_period_s = (UPDATE_PERIOD_S,) * len(self.zones)
        self.power_error_w = (0.0,) * len(self.zones)
        self._ranges = [z.max_energy_range_uj for z in self.zones]
        self._total_uj = [0] * len(self.zones)

    def read(self, edge: bool = False) -> list[float]:
        out = []
        last, ranges, totals = self._last, self._ranges, self._total_uj
        for i, fd in enumerate(self._fds):
            try:
                raw = int(os.pread(fd, 32, 0))
            except (OSError, ValueError):
                out.append(NAN)
                continue
            step = raw - last[i]
            if step < 0:  # the counter wrapped
                step += ranges[i]
            last[i] = raw
            totals[i] = total = totals[i] + step
            out.append(total * 1e-6)
        return out

    def describe(self) -> list[str]:
        return [f"{z.component}: RAPL counter {z.path}/energy_uj" for z in self.zones]

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []


def open_rapl(root: str) -> RaplSource:
    """Return a RaplSource over every package and DRAM zone under ``root``."""
    zones, notes = find_zones(root)
    return RaplSource(zones, notes)


def _grant_hint(root: str) -> str:
    return (
        f"sudo chmod a+r {root}/intel-rapl:*/energy_uj {root}/intel-rapl:*:*/energy_uj"
        "  (until reboot; a udev rule makes it last)"
    )


def _read_text(path: str):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _zone_sort_key(entry: str):
    match = ZONE_NAME.match(entry)
    if not match:
        return (1, entry)
    return (0, int(match.group(1)), int(match.group(2) or -1))
