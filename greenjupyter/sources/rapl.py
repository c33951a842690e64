"""Linux RAPL energy counters through the powercap sysfs tree."""

from __future__ import annotations

import glob
import os
import re
import struct
import time
from dataclasses import dataclass

from ..errors import SourceUnavailable
from ..fastpath import read_counters
from .base import NAN, PLAUSIBLE_OVER_LIMIT, STEP_SLACK_S, Source

ZONE_NAME = re.compile(r"^intel-rapl:(\d+)(?::(\d+))?$")
# RAPL's hardware updates the energy status registers about once a millisecond.
UPDATE_PERIOD_S = 0.001
# Where a zone states no power limit: more than any package or DRAM zone draws (the largest
# server CPUs are rated 500 W), far less than the jump a reset counter reads as a wrap.
FALLBACK_MAX_POWER_W = 1500.0


@dataclass(frozen=True)
class Zone:
    path: str
    component: str
    max_energy_range_uj: int
    max_power_w: float = FALLBACK_MAX_POWER_W


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
        zones.append(Zone(path, component, int(max_range), _plausible_power_w(path)))
    if not zones:
        raise SourceUnavailable(f"no RAPL package or DRAM zones under {root}")
    return zones, notes


class RaplSource(Source):
    """Read RAPL ``energy_uj`` counters, unwrapping them with ``max_energy_range_uj``.

    Files stay open and are read with ``pread``. The sampler's reads move the state (the last
    raw value per zone and the total before it); an edge read only adds its step to that
    state, so edges never wait for the sampler and never disturb it. A counter that wraps more
    than once between two sampler reads loses energy, so the sampler must read well within a
    wrap period (minutes at real power levels).

    A counter that went backwards is a wrap only if the energy that implies is one the zone
    could draw in the time since the last read; otherwise the counter was reset (suspend and
    resume, a driver reload). Such a step, or any step above the zone's plausible power, reads
    as NaN; the sampler then starts again from the new value, so later windows are exact.
    """

    kind = "rapl"

    def __init__(self, zones: list[Zone], notes: list[str] = ()):
        self.notes = list(notes)
        self.zones, fds, raws = [], [], []
        self.fds: tuple[int, ...] = ()  # each zone's open energy_uj; an edge reads them in one call
        for zone in zones:
            try:
                fd = os.open(os.path.join(zone.path, "energy_uj"), os.O_RDONLY)
            except PermissionError:
                self.fds = tuple(fds)
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
                raws.append(int(os.pread(fd, 32, 0)))
            except (OSError, ValueError) as error:
                os.close(fd)
                self.notes.append(f"{os.path.basename(zone.path)}: unreadable energy_uj ({error}), left out")
                continue
            self.zones.append(zone)
            fds.append(fd)
        if not self.zones:
            raise SourceUnavailable("no RAPL zone could be read: " + "; ".join(self.notes[-len(zones):]))
        self.fds = tuple(fds)
        self.components = tuple(z.component for z in self.zones)
        self.update_period_s = (UPDATE_PERIOD_S,) * len(self.zones)
        self.power_error_w = (0.0,) * len(self.zones)
        self.max_power_w = tuple(z.max_power_w for z in self.zones)
        self._ranges = [z.max_energy_range_uj for z in self.zones]
        self._max_uj_per_s = [w * 1e6 for w in self.max_power_w]
        self.resets = [0] * len(self.zones)
        self._state_struct = struct.Struct(f"<d{len(raws)}q{len(raws)}q")
        self.state = self._new_state(time.perf_counter(), raws, [0] * len(self.zones))

    def _new_state(self, t: float, raws: list[int], totals: list[int]) -> tuple:
        """(perf_counter time, raw counter values, microjoules counted before them, all three packed
        for the journal): replaced whole by the sampler, so an edge on another thread always sees
        one consistent state."""
        return t, raws, totals, self._state_struct.pack(t, *raws, *totals)

    def read(self, edge: bool = False) -> list[float]:
        if edge:
            return self.values_at(self.capture(), time.perf_counter())
        t = time.perf_counter()
        then, raws, totals, _ = self.state
        elapsed = t - then + STEP_SLACK_S
        ranges, max_rates = self._ranges, self._max_uj_per_s
        out = []
        new_raws, new_totals = list(raws), list(totals)
        for i, fd in enumerate(self.fds):
            try:
                raw = int(os.pread(fd, 32, 0))
            except (OSError, ValueError):
                out.append(NAN)
                continue
            step = raw - raws[i]
            if step < 0:  # wrapped, or reset
                step += ranges[i]
            if step > max_rates[i] * elapsed:  # no real zone draws this: the counter was reset
                out.append(NAN)
                if not edge:
                    new_raws[i] = raw  # start again from here; the energy before is unknown
                    self.resets[i] += 1
                continue
            out.append((totals[i] + step) * 1e-6)
            new_raws[i], new_totals[i] = raw, totals[i] + step
        if not edge:
            self.state = self._new_state(t, new_raws, new_totals)
        return out

    def capture(self) -> tuple:
        """A window's edge, kept lean for the cell's path: the state in force and the counters' texts as
        read now (see fastpath.read_counters); ``values_at`` works out the joules. The state is taken
        first, so that it is never newer than the counters read."""
        state = self.state
        return state, read_counters(self.fds)[2]

    def values_at(self, capture, t: float) -> list[float]:
        return counter_values(capture, t, self._ranges, self._max_uj_per_s)

    def pack(self, capture) -> bytes:
        return capture[0][3] + capture[1]

    def journal_kind(self) -> dict:
        return {"kind": "rapl", "n": len(self.zones), "ranges": self._ranges, "rates": self._max_uj_per_s}

    def describe(self) -> list[str]:
        lines = []
        for zone, resets in zip(self.zones, self.resets):
            reset = f"; reset {resets} time(s), the windows that saw it are marked failed" if resets else ""
            lines.append(f"{zone.component}: RAPL counter {zone.path}/energy_uj{reset}")
        return lines

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = ()


def counter_values(capture, t: float, ranges, rates) -> list[float]:
    """Return joules per zone of an edge's capture (see RaplSource.capture), taken at perf_counter ``t``.
    Every zone in ``ranges`` gives a value (NaN where the capture has no text for it).

    A counter below the state's raw value wrapped once; a step more than the zone can draw since
    the state was taken is a reset, and reads NaN, as does a counter that could not be read.
    """
    (then, raws, totals, _), texts = capture
    texts = texts[2:].split(b"\0")
    texts += [b""] * (len(ranges) - len(texts))
    elapsed = t - then + STEP_SLACK_S
    out = []
    for text, last, total, span, rate in zip(texts, raws, totals, ranges, rates):
        try:
            step = int(text) - last
        except ValueError:
            out.append(NAN)
            continue
        if step < 0:
            step += span
        out.append(NAN if step > rate * elapsed else (total + step) * 1e-6)
    return out


def unpack(data: bytes, offset: int, n: int) -> tuple[tuple, int]:
    """Return (the capture RaplSource.pack wrote at ``offset`` for ``n`` zones, the offset after it)."""
    state = struct.Struct(f"<d{n}q{n}q")
    numbers = state.unpack_from(data, offset)
    offset += state.size
    length = int.from_bytes(data[offset : offset + 2], "little")
    texts = data[offset : offset + 2 + length]
    found = texts.count(b"\0", 2) + 1
    if found != n:
        raise ValueError(f"{found} counters where {n} zones were expected")
    return ((numbers[0], list(numbers[1 : n + 1]), list(numbers[n + 1 :]), None), texts), offset + 2 + length


def open_rapl(root: str) -> RaplSource:
    """Return a RaplSource over every package and DRAM zone under ``root``."""
    zones, notes = find_zones(root)
    return RaplSource(zones, notes)


def _grant_hint(root: str) -> str:
    return (
        f"sudo chmod a+r {root}/intel-rapl:*/energy_uj {root}/intel-rapl:*:*/energy_uj"
        "  (until reboot; a udev rule makes it last)"
    )


def _plausible_power_w(zone_path: str) -> float:
    """Return the most a zone can draw: twice its highest stated power limit, else a fallback."""
    limits = []
    for path in glob.glob(os.path.join(zone_path, "constraint_*_max_power_uw")):
        text = _read_text(path)
        if text and text.isdigit() and int(text) > 0:
            limits.append(int(text) * 1e-6)
    return PLAUSIBLE_OVER_LIMIT * max(limits) if limits else FALLBACK_MAX_POWER_W


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
