"""The interface every energy source implements."""

from __future__ import annotations

from dataclasses import dataclass

NAN = float("nan")


class Source:
    """Report cumulative energy, in joules, for each of a few components.

    ``read()`` returns one float per entry of ``components``: joules since the source was
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

    def read(self) -> list[float]:
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
