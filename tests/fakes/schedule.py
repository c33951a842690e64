"""Power that follows a schedule (steps, square waves), with its energy integrated exactly.

Real devices change power all the time; a fake at constant power hides every error that
comes from sampling it. A Schedule is a list of (seconds, watts) steps, played once (the last
step then holds) or repeated; ``energy(t0, t1)`` is the exact integral, the truth a meter's
figure is checked against.
"""

from __future__ import annotations

import bisect
import math


class Schedule:
    def __init__(self, steps, repeat: bool = True):
        self.steps = [(float(d), float(w)) for d, w in steps]
        if not self.steps or any(d <= 0 or w < 0 for d, w in self.steps):
            raise ValueError(f"steps need positive durations and non-negative watts: {steps!r}")
        self.repeat = repeat
        self._starts = [0.0]
        self._energy_at = [0.0]
        for d, w in self.steps:
            self._starts.append(self._starts[-1] + d)
            self._energy_at.append(self._energy_at[-1] + d * w)
        self.period_s = self._starts[-1]
        # Benchmarks read fakes at constant power on every edge: keep that path as cheap as the hardware's.
        self._constant = self.steps[0][1] if len(self.steps) == 1 else None

    @classmethod
    def constant(cls, watts: float) -> "Schedule":
        return cls([(1.0, watts)])

    @classmethod
    def square(cls, low: float, high: float, half_period_s: float) -> "Schedule":
        return cls([(half_period_s, high), (half_period_s, low)])

    @property
    def max_watts(self) -> float:
        return max(w for _, w in self.steps)

    def power(self, t: float) -> float:
        """Return watts at ``t`` seconds from the schedule's start."""
        if self._constant is not None:
            return self._constant
        if t < 0:
            return self.steps[0][1]
        if not self.repeat and t >= self.period_s:
            return self.steps[-1][1]
        phase = math.fmod(t, self.period_s)
        return self.steps[bisect.bisect_right(self._starts, phase) - 1][1]

    def cumulative(self, t: float) -> float:
        """Return joules from the schedule's start to ``t``."""
        if self._constant is not None:
            return t * self._constant
        if t <= 0:
            return t * self.steps[0][1]
        if not self.repeat and t >= self.period_s:
            return self._energy_at[-1] + (t - self.period_s) * self.steps[-1][1]
        periods, phase = divmod(t, self.period_s)
        i = bisect.bisect_right(self._starts, phase) - 1
        return periods * self._energy_at[-1] + self._energy_at[i] + (phase - self._starts[i]) * self.steps[i][1]

    def energy(self, t0: float, t1: float) -> float:
        """Return the exact joules drawn between ``t0`` and ``t1`` (seconds from the start)."""
        return self.cumulative(t1) - self.cumulative(t0)
