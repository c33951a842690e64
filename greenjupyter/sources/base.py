"""The interface every energy source implements."""

from __future__ import annotations

import struct
import threading
import time
from dataclasses import dataclass

NAN = float("nan")
# A component's power may be at most this much above its sustained limit (turbo and
# short-term limits reach about 1.25-2x), and the counters move in steps of up to this long:
# a step beyond that is no real reading.
PLAUSIBLE_OVER_LIMIT = 2.0
STEP_SLACK_S = 0.01


class Source:
    """Report cumulative energy, in joules, for each of a few components.

    ``read(edge)`` returns one float per entry of ``components``: joules since the source was
    opened, or NaN for a component that could not be read (or read something that cannot be
    true) this time. Callers take differences between two reads. The sampler thread calls
    ``read(False)``; window edges call ``read(True)`` from any thread at the same time, so an
    edge read must not change state the sampler relies on.

    Per component, ``update_period_s`` is how often the underlying figure changes,
    ``power_error_w`` the sensor's stated accuracy when energy is integrated from power, and
    ``max_power_w`` the most it can draw (models are capped at it; a counter step above it
    is refused). ``estimated`` is True for models. Sources with ``polled`` True integrate
    polled power and also give, through ``read_polled``, how much the power varied between
    their polls (see PowerIntegral).
    """

    kind = "source"
    estimated = False
    polled = False
    components: tuple[str, ...] = ()
    update_period_s: tuple[float, ...] = ()
    power_error_w: tuple[float, ...] = ()
    max_power_w: tuple[float, ...] = ()

    def read(self, edge: bool = False) -> list[float]:
        """Return cumulative joules per component."""
        raise NotImplementedError

    def read_polled(self, edge: bool = False) -> tuple[list[float], list[float]]:
        """Return (cumulative joules, cumulative power variation in joules) per component."""
        values = self.read(edge)
        return values, [0.0] * len(values)

    def capture(self):
        """Read a window's edge as cheaply as possible; ``values_at`` turns it into joules, later and on
        any thread. ``pack``/``unpack`` keep it in the cell journal. By default it is the joules themselves."""
        return self.read(True)

    def values_at(self, capture, t: float) -> list[float]:
        """Return the joules per component of ``capture``, taken at perf_counter time ``t``."""
        return capture

    def pack(self, capture) -> bytes:
        """Return ``capture`` as bytes for the journal (see ``journal_kind``)."""
        return struct.pack(f"<{len(capture)}d", *capture)

    def journal_kind(self) -> dict:
        """Return what the journal's reader needs to turn this source's packed captures back into joules."""
        return {"kind": "values", "n": len(self.components)}

    def describe(self) -> list[str]:
        """Return one line per component saying what is read and how."""
        return list(self.components)

    def close(self) -> None:
        """Release files and libraries; reads after this are not allowed."""


@dataclass(frozen=True)
class Unavailable:
    """Why a kind of source is not in use, and what would fix it."""

    kind: str
    reason: str
    hint: str = ""


class PowerIntegral:
    """Energy from polled power, by the trapezoid rule through every poll, from any thread.

    Every poll, the sampler's and each window edge's, becomes a node of one piecewise-linear
    power curve, and each value returned lies on the energy curve under it. That curve never
    falls, so no window between two values can be negative, and a value once returned is
    never revised. Nodes are timed under the lock, so they always arrive in order.

    ``poll`` also returns the running sum of |ΔP|·Δt/2 over the polls: if power moved
    monotonically between two polls, the trapezoid is off by at most that much there, so
    its growth across a window bounds the window's integration error.
    """

    __slots__ = ("_lock", "_node", "_gap")

    def __init__(self):
        self._lock = threading.Lock()  # held for a few float operations, never across a read
        self._node = None  # (t, watts, joules, variation) of the newest poll
        self._gap = False

    @property
    def polled(self) -> bool:
        return self._node is not None

    def poll(self, watts: float, t: float | None = None) -> tuple[float, float]:
        """Add the power ``watts`` just read; return (joules, variation) at that moment.

        ``t`` (perf_counter seconds) defaults to now, taken under the lock; an earlier time
        than the newest node's counts as that node's.
        """
        with self._lock:
            now = time.perf_counter() if t is None else t
            node = self._node
            if node is None:
                self._node = (now, watts, 0.0, 0.0)
                return 0.0, 0.0
            t0, w0, j0, v0 = node
            if now < t0:
                now = t0
            if self._gap:  # no energy across a gap in the readings: the curve starts again here
                self._gap = False
                self._node = (now, watts, j0, v0)
                return j0, v0
            joules = j0 + (now - t0) * (w0 + watts) / 2
            variation = v0 + abs(watts - w0) * (now - t0) / 2
            self._node = (now, watts, joules, variation)
            return joules, variation

    def restart(self) -> None:
        """Integrate nothing between the last poll and the next, across a gap in the readings."""
        with self._lock:
            self._gap = True
