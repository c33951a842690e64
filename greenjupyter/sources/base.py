"""The interface every energy source implements."""

from __future__ import annotations

from dataclasses import dataclass

NAN = float("nan")


class Source:
    """Report cumulative energy, in joules, for each of a few components.

    ``read(edge)`` returns one float per entry of ``components``: joules since the source was
    opened, never decreasing, or NaN for a component that could not be read this time.
    Callers take differences between two reads. Reads may come from two threads, but
    never at once (the meter holds a lock around them).

    Per component, ``update_period_s`` is how often the underlying figure changes and
    ``power_error_w`` the sensor's stated accuracy when energy is integrated from power;
    the meter turns both into an uncertainty. ``estimated`` is True for models.
    """

    kind = "source"
    estimated = False
    components: tuple[str, ...] = ()
    update_period_s: tuple[float, ...] = ()
    power_error_w: tuple[float, ...] = ()

    def read(self, edge: bool = False) -> list[float]:
        """Return cumulative joules per component. ``edge`` is True at a window's edge, where a
        source may answer from its last poll when a fresh one adds no exactness (polled power)."""
        raise NotImplementedError

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
    """Energy from polled power: trapezoids between polls; past the last poll, its power held.

    Polls come from the sampler; window edges ask ``at(t)`` instead of polling again.
    """

    __slots__ = ("joules", "_t", "_watts")

    def __init__(self):
        self.joules = 0.0
        self._t = None
        self._watts = 0.0

    @property
    def polled(self) -> bool:
        return self._t is not None

    def poll(self, t: float, watts: float) -> float:
        if self._t is not None:
            self.joules += (t - self._t) * (self._watts + watts) / 2
        self._t, self._watts = t, watts
        return self.joules

    def at(self, t: float) -> float:
        return self.joules + (t - self._t) * self._watts if self._t is not None else self.joules

    def restart(self) -> None:
        """Forget the last poll, so that no energy is integrated across a gap in the readings."""
        self._t = None
